package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestGoMemoryLimitLeavesRoomForTheCode(t *testing.T) {
	for _, c := range []struct{ container, want int64 }{
		{1 << 30, 1<<30 - 32<<20},
		{150 << 20, 118 << 20},
		{48 << 20, 24 << 20}, // half, not 16Mi
	} {
		if got := goMemoryLimit(c.container); got != c.want {
			t.Errorf("goMemoryLimit(%d) = %d, want %d", c.container, got, c.want)
		}
	}
}

func TestSetMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	t.Setenv("GOMEMLIMIT", "")
	got, err := setMemoryLimit("150Mi")
	if err != nil || got != 118<<20 {
		t.Fatalf("setMemoryLimit(150Mi) = %d, %v; want %d", got, err, 118<<20)
	}
	if now := debug.SetMemoryLimit(-1); now != 118<<20 {
		t.Errorf("Go's memory limit %d after setMemoryLimit(150Mi), want %d", now, 118<<20)
	}
	if got, err := setMemoryLimit(""); got != 0 || err != nil {
		t.Errorf("setMemoryLimit(\"\") = %d, %v; want no limit set", got, err)
	}
	for _, bad := range []string{"lots", "0", "-1Gi"} {
		if _, err := setMemoryLimit(bad); err == nil || !strings.Contains(err.Error(), "such as 512Mi") {
			t.Errorf("setMemoryLimit(%q) error %v, want one that names a valid quantity", bad, err)
		}
	}
	t.Setenv("GOMEMLIMIT", "200MiB")
	if got, err := setMemoryLimit("150Mi"); got != 0 || err != nil {
		t.Errorf("setMemoryLimit with GOMEMLIMIT set = %d, %v; want GOMEMLIMIT to win", got, err)
	}
}
