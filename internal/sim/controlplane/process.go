package controlplane

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// process is one component running as a child process. Its output goes to
// a log file in the cluster's directory, named after the component.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error
	// stopped: we stopped it on purpose; its exit is not a failure.
	stopped atomic.Bool
}

func startProcess(name, logPath string, env []string, bin string, args ...string) (*process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	// Children die with us even if we are killed without a chance to stop
	// them, so a crashed test never leaves an API server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.exited)
	}()
	return p, nil
}

// running reports an error if the process has exited without being
// stopped.
func (p *process) running() error {
	if p.stopped.Load() {
		return nil
	}
	select {
	case <-p.exited:
		err := fmt.Errorf("exited (%v)", p.err)
		if last := lastLine(p.logPath); last != "" {
			err = fmt.Errorf("exited (%v): %s", p.err, last)
		}
		return &ComponentError{Component: p.name, Log: p.logPath, Err: err}
	default:
		return nil
	}
}

// ComponentError says that a component failed and which log tells why.
// Its message is one line: what happened, the component's last log line,
// and the log's path.
type ComponentError struct {
	Component string
	// Log is the path of the component's log. Whoever removes the
	// cluster's directory and keeps the log elsewhere updates it.
	Log string
	Err error
}

func (e *ComponentError) Error() string {
	if e.Log == "" {
		return fmt.Sprintf("%s %v", e.Component, e.Err)
	}
	return fmt.Sprintf("%s %v; its log: %s", e.Component, e.Err, e.Log)
}

func (e *ComponentError) Unwrap() error { return e.Err }

// Tail returns the last n lines of the component's log, for a test's
// failure message.
func (e *ComponentError) Tail(n int) string {
	b, err := os.ReadFile(e.Log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// stop sends SIGTERM and, after grace, SIGKILL.
func (p *process) stop(grace time.Duration) {
	p.stopped.Store(true)
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// FreePorts asks the kernel for n unused loopback ports.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// poll calls check every interval until it returns nil, ctx ends or one of
// the watched processes exits.
func poll(ctx context.Context, interval time.Duration, procs []*process, check func(context.Context) error) error {
	var last error
	for {
		for _, p := range procs {
			if err := p.running(); err != nil {
				return err
			}
		}
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(interval):
		}
	}
}

// lastLine is the last non-blank line of a log, cut to a length that
// keeps an error message readable on one line.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if last == "" {
		return ""
	}
	const limit = 300
	if len(last) > limit {
		last = strings.ToValidUTF8(last[:limit], "") + "…"
	}
	return last
}
