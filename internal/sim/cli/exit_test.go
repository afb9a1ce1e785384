package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/huddle-io/huddle/internal/sim/controlplane"
)

// TestFinish: how each way a command ends is told, in one line, and its
// exit code.
func TestFinish(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("interrupt signal received"))
	etcd := &controlplane.ComponentError{Component: "etcd", Log: "/tmp/huddle-sim-etcd-1.log", Err: errors.New("exited (exit status 1): bad flag")}
	for _, tc := range []struct {
		name string
		err  error
		step string
		code int
		want string // all of stderr
	}{
		{"success", nil, "", exitOK, ""},
		{"not every pod runs", &exitError{code: exitNotRunning, err: errSilent}, "", exitNotRunning, ""},
		{"usage", usageErrorf("--output %q: use table or json", "yaml"), "", exitUsage,
			"huddle-sim: --output \"yaml\": use table or json\nRun 'huddle-sim --help' for usage.\n"},
		{"unknown verb", errors.New(`unknown command "launch" for "huddle-sim"`), "", exitUsage,
			"huddle-sim: unknown command \"launch\" for \"huddle-sim\"\nRun 'huddle-sim --help' for usage.\n"},
		{"a component failed", fmt.Errorf("waiting for kube-apiserver ready: %w", etcd), "Starting kube-apiserver", exitFailed,
			"huddle-sim: waiting for kube-apiserver ready: etcd exited (exit status 1): bad flag; its log: /tmp/huddle-sim-etcd-1.log\n"},
		{"a message of several lines", errors.New("helm install huddle: values don't meet the schema:\n- at '/replicas':\n  got string"), "", exitFailed,
			"huddle-sim: helm install huddle: values don't meet the schema: - at '/replicas': got string\n"},
		{"interrupted", interrupted(ctx, errors.New("context canceled")), "Starting kube-apiserver", exitSignaled,
			"huddle-sim: interrupt signal received at step \"Starting kube-apiserver\"; stopped everything it had started and removed its files\n"},
		{"interrupted before any step", interrupted(ctx, errors.New("context canceled")), "", exitSignaled,
			"huddle-sim: interrupt signal received; stopped everything it had started and removed its files\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := finish(tc.err, tc.step, &stderr); code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if stderr.String() != tc.want {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), tc.want)
			}
		})
	}
	if err := interrupted(context.Background(), errors.New("boom")); err.Error() != "boom" {
		t.Errorf("an error without an interrupt is kept: %v", err)
	}
}

// TestStepWriter: the step an interrupt names is the last line begun
// without indentation, warnings aside, without its explanation.
func TestStepWriter(t *testing.T) {
	var out bytes.Buffer
	w := &stepWriter{w: &out}
	if w.last() != "" {
		t.Errorf("no step yet: %q", w.last())
	}
	for _, tc := range []struct{ write, want string }{
		{"Starting etcd\n", "Starting etcd"},
		{"Starting kube-apiserver\n  kube-apiserver ready\n", "Starting kube-apiserver"},
		{"warning: something\n", "Starting kube-apiserver"},
		{"Installing huddle from its chart (helm install huddle charts/huddle -n huddle-system)\n", "Installing huddle from its chart"},
		{"Building the control plane from pinned modules (Kubernetes v1.36.3, etcd): the first build takes long\n", "Building the control plane from pinned modules"},
		{"Applied 3 objects in namespaces [default]; waiting for pods to settle\n", "Applied 3 objects in namespaces [default]"},
	} {
		fmt.Fprint(w, tc.write)
		if got := w.last(); got != tc.want {
			t.Errorf("after %q: step %q, want %q", tc.write, got, tc.want)
		}
	}
	if !strings.HasPrefix(out.String(), "Starting etcd\nStarting kube-apiserver\n") {
		t.Errorf("progress not passed on:\n%s", out.String())
	}
}
