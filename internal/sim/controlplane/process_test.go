package controlplane

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExitedComponentSaysWhyInOneLine: a component that exits during boot
// is reported in one line with its last log line and its log's path.
func TestExitedComponentSaysWhyInOneLine(t *testing.T) {
	log := filepath.Join(t.TempDir(), "etcd.log")
	p, err := startProcess("etcd", log, nil, "/bin/sh", "-c", "echo starting; echo 'cannot access data directory: permission denied' >&2; echo; exit 1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = poll(ctx, 10*time.Millisecond, []*process{p}, func(context.Context) error { return errors.New("not ready") })
	var failed *ComponentError
	if !errors.As(err, &failed) {
		t.Fatalf("poll: %v, want a ComponentError", err)
	}
	want := "etcd exited (exit status 1): cannot access data directory: permission denied; its log: " + log
	if err.Error() != want {
		t.Errorf("error:\n%s\nwant:\n%s", err, want)
	}
	if failed.Component != "etcd" || failed.Log != log {
		t.Errorf("component %q log %q", failed.Component, failed.Log)
	}
	p.stop(time.Second)
	if err := p.running(); err != nil {
		t.Errorf("a stopped process is not a failure: %v", err)
	}
}

// TestLastLine: the last non-blank line, cut to keep a message readable.
func TestLastLine(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"empty", "", ""},
		{"blank lines", "\n\n  \n", ""},
		{"trailing blank", "a\nb\n\n", "b"},
		{"long", strings.Repeat("x", 400), strings.Repeat("x", 300) + "…"},
		{"missing", "-", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if tc.content != "-" {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := lastLine(path); got != tc.want {
				t.Errorf("lastLine = %q, want %q", got, tc.want)
			}
		})
	}
}
