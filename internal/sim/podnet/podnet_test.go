package podnet

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func needNamespaces(t *testing.T) {
	t.Helper()
	if err := Supported(); err != nil {
		t.Skip(err)
	}
}

// echo serves one line back on ip:port inside s.
func echo(t *testing.T, s *Sandbox, addr string) {
	t.Helper()
	var l net.Listener
	if err := s.do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen in sandbox: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "%s from %s", line, s.IP)
			}()
		}
	}()
}

func roundTrip(t *testing.T, c net.Conn) string {
	t.Helper()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintln(c, "hello")
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func TestSandboxesIsolatePortsAndReachOnlyTheirOwn(t *testing.T) {
	needNamespaces(t)
	n := New(1)
	a, err := n.NewSandbox("198.18.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := n.NewSandbox("198.18.0.2")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Both pods listen on the same port on all addresses, as two replicas do.
	echo(t, a, ":9443")
	echo(t, b, ":9443")
	ctx := context.Background()
	for _, s := range []*Sandbox{a, b} {
		c, err := n.Dial(ctx, "tcp", s.IP+":9443")
		if err != nil {
			t.Fatalf("dial %s: %v", s.IP, err)
		}
		if got := roundTrip(t, c); got != "hello\n from "+s.IP {
			t.Errorf("pod %s answered %q", s.IP, got)
		}
	}
	if _, err := n.Dial(ctx, "tcp", "198.18.0.9:9443"); err == nil || !strings.Contains(err.Error(), "never sends traffic off this machine") {
		t.Errorf("dial to an address of no sandbox: %v, want refused", err)
	}
	// The host has no route into a sandbox: nothing is configured outside
	// it. (Some machines accept every outbound connect, so look at who
	// answers rather than whether the connect succeeds.)
	if c, err := net.DialTimeout("tcp", "198.18.0.1:9443", 300*time.Millisecond); err == nil {
		_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		fmt.Fprintln(c, "hello")
		b, _ := io.ReadAll(c)
		c.Close()
		if strings.Contains(string(b), "from 198.18.0.1") {
			t.Error("the host reached a sandbox's IP directly; sandboxes must not be routed")
		}
	}
	// After Close, the address is gone.
	a.Close()
	if _, err := n.Dial(ctx, "tcp", "198.18.0.1:9443"); err == nil {
		t.Error("a closed sandbox is still reachable")
	}
}

func TestSandboxReachesTheAPIServerOnLoopback(t *testing.T) {
	needNamespaces(t)
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	port := host.Addr().(*net.TCPAddr).Port
	go func() {
		c, err := host.Accept()
		if err == nil {
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "api got %s", line)
			c.Close()
		}
	}()
	n := New(port)
	s, err := n.NewSandbox("198.18.0.3")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// From inside the sandbox, 127.0.0.1:<port> is the forwarder.
	c, err := s.Dial(context.Background(), "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, c); got != "api got hello\n" {
		t.Errorf("through the forwarder: %q", got)
	}
}

func TestEgressProxyConnectsOnlySandboxes(t *testing.T) {
	needNamespaces(t)
	n := New(1)
	s, err := n.NewSandbox("198.18.0.4")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	echo(t, s, "198.18.0.4:8443")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(t.TempDir(), "egress.sock")
	if err := n.ServeEgress(ctx, sock); err != nil {
		t.Fatal(err)
	}
	connect := func(addr string) (net.Conn, *http.Response) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c, resp
	}
	c, resp := connect("198.18.0.4:8443")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT to the sandbox: %s", resp.Status)
	}
	if got := roundTrip(t, c); got != "hello\n from 198.18.0.4" {
		t.Errorf("through the proxy: %q", got)
	}
	c, resp = connect("10.1.2.3:443")
	defer c.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("CONNECT to an address of no sandbox: %s, want 502", resp.Status)
	}
}
