// Package podnet gives the pods huddle-sim runs as real processes (huddle's
// own, installed from its chart) a network of their own, as a CNI plugin
// would: each pod sandbox is a Linux network namespace whose loopback
// carries the pod's IP. Two replicas can both listen on :9443, and a process
// that binds only 127.0.0.1 is not reachable through its Service, as on a
// real node.
//
// Nothing is routed: no veth, no route, no address in the host's own
// namespace, so no packet can leave the machine. The simulator reaches into
// a sandbox by opening sockets inside its namespace:
//
//   - Dial: the kubelet's probes, port-forwards, and the API server's egress
//     proxy. kube-apiserver sends its traffic to the cluster (calls to
//     webhooks behind Services) through an HTTP CONNECT proxy on a Unix
//     socket (its EgressSelectorConfiguration); the proxy connects only to
//     the IPs of sandboxes and refuses every other address.
//   - The API server: each sandbox listens on 127.0.0.1:<API server port>
//     and forwards to the real API server, so a pod's kubeconfig uses the
//     same URL as every other client.
//
// Namespaces are never bind-mounted: they vanish when the simulator and the
// pod processes exit, however they exit. Creating them needs CAP_SYS_ADMIN
// and CAP_NET_ADMIN (root); Supported says whether this machine allows it.
package podnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Network is the set of sandboxes of one simulated cluster.
type Network struct {
	apiPort int

	mu   sync.Mutex
	byIP map[string]*Sandbox
}

// New returns a network whose sandboxes forward 127.0.0.1:apiPort to the
// host's API server on the same port (0: set it later with SetAPIPort,
// before the first sandbox).
func New(apiPort int) *Network {
	return &Network{apiPort: apiPort, byIP: map[string]*Sandbox{}}
}

// SetAPIPort sets the API server's port, once it is known.
func (n *Network) SetAPIPort(port int) {
	n.mu.Lock()
	n.apiPort = port
	n.mu.Unlock()
}

// Supported returns nil if this process can create network namespaces.
func Supported() error {
	ns, err := inNewNamespace(func(netns.NsHandle) error { return nil })
	if err != nil {
		return fmt.Errorf("pods cannot get network namespaces here (needs root: CAP_SYS_ADMIN and CAP_NET_ADMIN): %w", err)
	}
	return ns.Close()
}

// Sandbox is one pod's network namespace.
type Sandbox struct {
	// IP is the pod's IP, on the sandbox's loopback.
	IP string

	ns      netns.NsHandle
	api     net.Listener
	apiPort int
	net     *Network
	// mu keeps the namespace's handle open while a thread is switched
	// into it (read) and Close from closing it meanwhile (write).
	mu     sync.RWMutex
	closed bool
}

// NewSandbox creates a network namespace with loopback up, ip on it, and
// the API server forwarder listening.
func (n *Network) NewSandbox(ip string) (*Sandbox, error) {
	addr := net.ParseIP(ip)
	if addr == nil || addr.To4() == nil {
		return nil, fmt.Errorf("pod IP %q is not an IPv4 address", ip)
	}
	n.mu.Lock()
	apiPort := n.apiPort
	n.mu.Unlock()
	s := &Sandbox{IP: ip, apiPort: apiPort, net: n}
	ns, err := inNewNamespace(func(ns netns.NsHandle) error {
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
		if err := h.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: addr, Mask: net.CIDRMask(32, 32)}}); err != nil {
			return fmt.Errorf("add %s to lo: %w", ip, err)
		}
		// A socket keeps the namespace it was created in.
		s.api, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(apiPort))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create the network namespace of pod IP %s: %w", ip, err)
	}
	s.ns = ns
	go s.forwardAPI()
	n.mu.Lock()
	n.byIP[ip] = s
	n.mu.Unlock()
	return s, nil
}

// Close removes the sandbox. Its processes must have exited.
func (s *Sandbox) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.net.mu.Lock()
	if s.net.byIP[s.IP] == s {
		delete(s.net.byIP, s.IP)
	}
	s.net.mu.Unlock()
	s.api.Close()
	s.ns.Close()
}

// Start starts cmd inside the sandbox: the child inherits the namespace of
// the thread that forks it.
func (s *Sandbox) Start(cmd *exec.Cmd) error {
	return s.do(cmd.Start)
}

// Dial connects to addr from inside the sandbox.
func (s *Sandbox) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := s.do(func() error {
		var err error
		// An IP literal dials synchronously on this (locked) thread, so
		// the socket is created in the sandbox's namespace.
		c, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// Dial connects to ip:port of a sandbox; addresses of no sandbox are
// refused, so nothing dialled through the network leaves the machine.
func (n *Network) Dial(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	s := n.byIP[host]
	n.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("%w: no pod running as a process has IP %s (huddle-sim never sends traffic off this machine)", ErrNoSandbox, host)
	}
	return s.Dial(ctx, addr)
}

// ErrNoSandbox: the address belongs to no sandbox.
var ErrNoSandbox = errors.New("no such pod")

// Forward listens on a free host port of 127.0.0.1 and forwards every
// connection to port in the sandbox, as kubectl port-forward does. It
// returns the host address; forwarding stops with ctx.
func (s *Sandbox) Forward(ctx context.Context, port int) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { <-ctx.Done(); l.Close() }()
	target := net.JoinHostPort(s.IP, strconv.Itoa(port))
	go serve(l, func(ctx context.Context) (net.Conn, error) { return s.Dial(ctx, target) })
	return l.Addr().String(), nil
}

// Forward listens on a free host port of 127.0.0.1 and forwards each
// connection to the sandbox address target returns at that moment (so a
// forward can follow a leader from pod to pod). It returns the host
// address; forwarding stops with ctx.
func (n *Network) Forward(ctx context.Context, target func(context.Context) (string, error)) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { <-ctx.Done(); l.Close() }()
	go serve(l, func(ctx context.Context) (net.Conn, error) {
		addr, err := target(ctx)
		if err != nil {
			return nil, err
		}
		return n.Dial(ctx, "tcp", addr)
	})
	return l.Addr().String(), nil
}

// forwardAPI carries the sandbox's connections to 127.0.0.1:<API port> to
// the host's API server.
func (s *Sandbox) forwardAPI() {
	target := "127.0.0.1:" + strconv.Itoa(s.apiPort)
	serve(s.api, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", target)
	})
}

// serve accepts until l closes and pipes each connection to dial's.
func serve(l net.Listener, dial func(context.Context) (net.Conn, error)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := dial(context.Background())
			if err != nil {
				c.Close()
				return
			}
			pipe(c, up)
		}()
	}
}

// pipe copies both ways until either side is done, then closes both.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}

// ErrClosed: the sandbox was closed.
var ErrClosed = errors.New("pod sandbox closed")

// do runs f on a thread switched into the sandbox's namespace.
func (s *Sandbox) do(f func() error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(s.ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// The thread is in the wrong namespace for good: keep it locked,
		// so it ends with this goroutine instead of serving others.
		return errors.Join(ferr, fmt.Errorf("restore network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// inNewNamespace creates a network namespace, runs f inside it and
// returns its handle.
func inNewNamespace(f func(netns.NsHandle) error) (netns.NsHandle, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return netns.None(), err
	}
	defer orig.Close()
	ns, err := netns.New() // unshare(CLONE_NEWNET): this thread is now in ns
	if err != nil {
		// unshare failed: the thread is still where it was.
		runtime.UnlockOSThread()
		return netns.None(), err
	}
	ferr := f(ns)
	if err := netns.Set(orig); err != nil {
		ns.Close()
		return netns.None(), errors.Join(ferr, fmt.Errorf("restore network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	if ferr != nil {
		ns.Close()
		return netns.None(), ferr
	}
	return ns, nil
}
