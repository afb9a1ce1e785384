package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-io/huddle/internal/sim/binaries"
	"github.com/huddle-io/huddle/internal/sim/cli"
)

// TestInterruptedBootLeavesNothing: Ctrl-C at any point of a boot (and
// while run waits for pods) stops every process huddle-sim started,
// removes its directory, says where it was interrupted and exits 130.
//
// huddle-sim runs in this process, so that every process it starts is a
// child of the test, and gets a real SIGINT when it prints the step.
func TestInterruptedBootLeavesNothing(t *testing.T) {
	up := []string{"up", "--timing", "fast", "--nodes", "2"}
	for _, tc := range []struct {
		name, step string
		args       []string
		stdin      string
	}{
		{"before etcd is up", "Starting etcd", up, ""},
		{"while the API server starts", "Starting kube-apiserver", up, ""},
		{"while nodes register", "Registering", up, ""},
		{"while huddle starts", "Installing huddle", append([]string{"up", "--huddle"}, up[1:]...), ""},
		{"while run waits for pods", "Applied", []string{"run", "-f", "-", "--timing", "fast", "--nodes", "1", "--settle", "1m"}, unschedulable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := isolateTemp(t)
			stderr := &interruptAt{step: tc.step}
			var stdout bytes.Buffer
			start := time.Now()
			code := cli.Run(tc.args, strings.NewReader(tc.stdin), &stdout, stderr)
			if !stderr.sent.Load() {
				t.Fatalf("huddle-sim never printed %q (exit %d):\n%s", tc.step, code, stderr.String())
			}
			if code != 130 {
				t.Errorf("exit %d, want 130:\n%s", code, stderr.String())
			}
			sentAt := time.Unix(0, stderr.sentAt.Load())
			t.Logf("interrupted %.1fs after start, ended %.1fs later", sentAt.Sub(start).Seconds(), time.Since(sentAt).Seconds())
			last := lastLine(stderr.String())
			t.Logf("%s", last)
			if !strings.HasPrefix(last, "huddle-sim: interrupt signal received at step ") || !strings.HasSuffix(last, "; stopped everything it had started and removed its files") {
				t.Errorf("last line %q does not say it was interrupted and where", last)
			}
			assertNothingLeft(t, tmp)
		})
	}
}

// unschedulable is a pod that never runs: run waits for it.
const unschedulable = `apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers: [{name: c, image: x, resources: {requests: {cpu: "64"}}}]
`

// TestComponentFailureSaysWhy: a component that cannot start ends the
// boot with its cause in one line, naming its log, which is kept (the
// cluster's directory is not), and exit 3.
func TestComponentFailureSaysWhy(t *testing.T) {
	real, err := binaries.Ensure(t.Context(), binaries.DefaultCacheDir(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// A cache whose etcd refuses to start, as a broken etcd would.
	key, err := binaries.Key()
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	bin := filepath.Join(cache, "bin", key)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	const why = "etcd: cannot access data directory: this etcd fails on purpose"
	if err := os.WriteFile(filepath.Join(bin, "etcd"), []byte("#!/bin/sh\necho 'starting'\necho '"+why+"' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"kube-apiserver": real.APIServer, "kube-controller-manager": real.ControllerManager, "kube-scheduler": real.Scheduler, "kubectl": real.Kubectl} {
		if err := os.Symlink(path, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, ".complete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	tmp := isolateTemp(t)
	var stdout, stderr bytes.Buffer
	code := cli.Run([]string{"up", "--timing", "fast", "--nodes", "1", "--cache-dir", cache}, strings.NewReader(""), &stdout, &stderr)
	if code != 3 {
		t.Errorf("exit %d, want 3:\n%s", code, stderr.String())
	}
	var causes []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.HasPrefix(l, "huddle-sim:") {
			causes = append(causes, l)
		}
	}
	t.Logf("stderr:\n%s", stderr.String())
	if len(causes) != 1 || causes[0] != lastLine(stderr.String()) {
		t.Fatalf("want the cause in one line, last:\n%s", stderr.String())
	}
	cause := causes[0]
	prefix := "huddle-sim: waiting for kube-apiserver ready: etcd exited (exit status 1): " + why + "; its log: "
	if !strings.HasPrefix(cause, prefix) {
		t.Fatalf("cause:\n%s\nwant it to start with:\n%s", cause, prefix)
	}
	log := strings.TrimPrefix(cause, prefix)
	if filepath.Dir(log) != tmp || !strings.HasPrefix(filepath.Base(log), "huddle-sim-etcd-") {
		t.Errorf("log %s: want a huddle-sim-etcd-* file in %s", log, tmp)
	}
	if b, err := os.ReadFile(log); err != nil || !strings.Contains(string(b), why) {
		t.Errorf("log %s: %q, %v", log, b, err)
	}
	if err := os.Remove(log); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, tmp)
}

// TestUpInterruptedBinary: the built binary, sent SIGINT while the API
// server starts, stops, removes its directory and exits 130.
func TestUpInterruptedBinary(t *testing.T) {
	tmp := isolateTemp(t)
	cmd := exec.Command(binary, "up", "--timing", "fast", "--nodes", "1")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var stderr bytes.Buffer
	s := bufio.NewScanner(pipe)
	for s.Scan() {
		fmt.Fprintln(&stderr, s.Text())
		if strings.HasPrefix(s.Text(), "Starting kube-apiserver") {
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d (%v), want 130:\n%s", code, err, stderr.String())
	}
	if last := lastLine(stderr.String()); !strings.HasPrefix(last, "huddle-sim: interrupt signal received at step ") {
		t.Errorf("last line %q does not say it was interrupted", last)
	}
	assertNothingLeft(t, tmp)
}

// isolateTemp gives huddle-sim a temporary directory of its own, so that
// what it leaves there is easy to see.
func isolateTemp(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	// An interrupt meant for huddle-sim must never end the test binary.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			select {
			case <-sigs:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { signal.Stop(sigs); cancel() })
	return tmp
}

// assertNothingLeft fails the test if a process huddle-sim started still
// runs (a child of the test, or any process whose command line names the
// temporary directory) or something is left in the temporary directory.
func assertNothingLeft(t *testing.T, tmp string) {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at its end.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(f), "cmdline"))
		args := string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		if (len(fields) > 1 && fields[1] == fmt.Sprint(os.Getpid())) || strings.Contains(args, tmp) {
			t.Errorf("process left: %s %s", filepath.Base(filepath.Dir(f)), args)
		}
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left in %s: %s", tmp, e.Name())
	}
}

// interruptAt keeps what huddle-sim prints and sends this process SIGINT,
// as Ctrl-C would, when a line begins with step.
type interruptAt struct {
	step   string
	buf    lockedBuffer
	sent   atomic.Bool
	sentAt atomic.Int64 // UnixNano
}

func (w *interruptAt) Write(p []byte) (int, error) {
	n, err := w.buf.Write(p)
	for _, line := range strings.Split(string(p), "\n") {
		if strings.HasPrefix(line, w.step) && w.sent.CompareAndSwap(false, true) {
			w.sentAt.Store(time.Now().UnixNano())
			_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
		}
	}
	return n, err
}

func (w *interruptAt) String() string { return w.buf.String() }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
