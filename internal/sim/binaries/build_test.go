package binaries

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while another goroutine
// writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLockWaitsAndSaysSo: a second huddle-sim that finds the cache being
// built says it waits, takes the lock once the first is done, and gives
// up when interrupted.
func TestLockWaitsAndSaysSo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "build.lock")
	holder, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := syscall.Flock(int(holder.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}

	// Interrupted while waiting.
	ctx, cancel := context.WithCancel(t.Context())
	var progress syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := lock(ctx, path, &progress)
		done <- err
	}()
	waitFor(t, func() bool {
		return strings.Contains(progress.String(), "Waiting for another huddle-sim to finish building the control plane")
	})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("interrupted lock: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("lock did not return when interrupted")
	}

	// Takes the lock when the holder lets go.
	progress = syncBuffer{}
	go func() {
		unlock, err := lock(t.Context(), path, &progress)
		if err == nil {
			unlock()
		}
		done <- err
	}()
	waitFor(t, func() bool { return strings.Contains(progress.String(), "Waiting") })
	if err := syscall.Flock(int(holder.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("lock after release: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("lock not taken after the holder released it")
	}
}

// TestRunGoFailureIsOneLine: a failed go build is told in one line with
// the file that keeps its whole output.
func TestRunGoFailureIsOneLine(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "go.mod"), "module example.com/broken\n\ngo 1.22\n")
	write(t, filepath.Join(dir, "main.go"), "package main\n\nfunc main() { undefinedThing() }\n")
	logPath := filepath.Join(dir, "out.build.log")
	err := runGo(t.Context(), dir, []string{"GOFLAGS=", "GOWORK=off"}, logPath, "build", "-o", filepath.Join(dir, "out.tmp"), ".")
	if err == nil {
		t.Fatal("building a broken package succeeded")
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "undefined: undefinedThing") || !strings.HasSuffix(msg, "; its output: "+logPath) {
		t.Errorf("error %q: want one line with the compiler's message and the log", msg)
	}
	if b, err := os.ReadFile(logPath); err != nil || !strings.Contains(string(b), "undefinedThing") {
		t.Errorf("log %s: %q, %v", logPath, b, err)
	}
}

// TestRunGoInterrupted: an interrupted build returns the interruption and
// leaves no process, no partial output and no work directory.
func TestRunGoInterrupted(t *testing.T) {
	dir, tmp := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp) // where go keeps its work directory
	write(t, filepath.Join(dir, "go.mod"), "module example.com/slow\n\ngo 1.22\n")
	write(t, filepath.Join(dir, "main.go"), "package main\n\nfunc main() {}\n")
	ctx, cancel := context.WithCancelCause(t.Context())
	cause := errors.New("interrupt signal received")
	time.AfterFunc(time.Second, func() { cancel(cause) })
	out := filepath.Join(dir, "out.tmp")
	// -a rebuilds the standard library: long enough to be interrupted.
	err := runGo(ctx, dir, []string{"GOFLAGS=", "GOWORK=off"}, filepath.Join(dir, "out.build.log"), "build", "-a", "-o", out, ".")
	if !errors.Is(err, cause) {
		t.Errorf("interrupted build: %v, want the interruption", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("partial output %s left behind", out)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in the temporary directory: %v", left)
	}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(tmp)) {
			t.Errorf("a process of the build still runs: %s", bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
