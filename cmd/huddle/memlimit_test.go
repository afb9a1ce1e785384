package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestSetMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	t.Setenv("GOMEMLIMIT", "")
	for _, c := range []struct {
		limit string
		want  int64
	}{
		{"150Mi", 118 << 20},
		{"157286400", 118 << 20}, // what the kubelet passes for 150Mi
		{"1.5Gi", 1536<<20 - 32<<20},
		{"64Mi", 32 << 20},
	} {
		debug.SetMemoryLimit(1 << 40)
		got, ignored, err := setMemoryLimit(c.limit)
		if err != nil || ignored || got != c.want {
			t.Errorf("setMemoryLimit(%q) = %d, %v, %v; want %d", c.limit, got, ignored, err, c.want)
		}
		if now := debug.SetMemoryLimit(-1); now != c.want {
			t.Errorf("Go's memory limit %d after setMemoryLimit(%q), want %d", now, c.limit, c.want)
		}
	}
	if got, ignored, err := setMemoryLimit(""); got != 0 || ignored || err != nil {
		t.Errorf("setMemoryLimit(\"\") = %d, %v, %v; want no limit set", got, ignored, err)
	}
	for _, bad := range []string{"lots", "1.5 Gi"} {
		if _, _, err := setMemoryLimit(bad); err == nil || !strings.Contains(err.Error(), "such as 512Mi") {
			t.Errorf("setMemoryLimit(%q) error %v, want one that names a valid quantity", bad, err)
		}
	}
	for _, small := range []string{"0", "-1Gi", "1e3", "63Mi"} {
		if _, _, err := setMemoryLimit(small); err == nil || !strings.Contains(err.Error(), "raise the chart's resources.limits.memory") {
			t.Errorf("setMemoryLimit(%q) error %v, want one that says to raise the limit", small, err)
		}
	}

	const sentinel = 200 << 20
	debug.SetMemoryLimit(sentinel)
	t.Setenv("GOMEMLIMIT", "200MiB")
	if got, ignored, err := setMemoryLimit("150Mi"); got != 0 || !ignored || err != nil {
		t.Errorf("setMemoryLimit with GOMEMLIMIT set = %d, %v, %v; want it ignored", got, ignored, err)
	}
	if now := debug.SetMemoryLimit(-1); now != sentinel {
		t.Errorf("Go's memory limit %d with GOMEMLIMIT set, want GOMEMLIMIT's %d left alone", now, sentinel)
	}
}
