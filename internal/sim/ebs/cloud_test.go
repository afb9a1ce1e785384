package ebs

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestCloudFollowsEBSRules(t *testing.T) {
	ctx := context.Background()
	c := NewCloud(time.Millisecond, time.Millisecond)
	v := c.CreateVolume("us-east-1a", 10)

	steps := []struct {
		name    string
		do      func() error
		wantErr string
		state   VolumeState
		on      string
	}{
		{"attach in zone", func() error { return c.AttachVolume(ctx, v.ID, "a", "us-east-1a") }, "", InUse, "a"},
		{"attach again is idempotent", func() error { return c.AttachVolume(ctx, v.ID, "a", "us-east-1a") }, "", InUse, "a"},
		{"second instance refused", func() error { return c.AttachVolume(ctx, v.ID, "b", "us-east-1a") }, "VolumeInUse", InUse, "a"},
		{"delete while attached refused", func() error { return c.DeleteVolume(v.ID) }, "VolumeInUse", InUse, "a"},
		{"detach from another instance is a no-op", func() error { return c.DetachVolume(ctx, v.ID, "b") }, "", InUse, "a"},
		{"detach", func() error { return c.DetachVolume(ctx, v.ID, "a") }, "", Available, ""},
		{"other zone refused", func() error { return c.AttachVolume(ctx, v.ID, "c", "us-east-1b") }, "ZoneMismatch", Available, ""},
		{"second instance after detach", func() error { return c.AttachVolume(ctx, v.ID, "b", "us-east-1a") }, "", InUse, "b"},
		{"unknown volume", func() error { return c.AttachVolume(ctx, "vol-nope", "b", "us-east-1a") }, "NotFound", InUse, "b"},
	}
	for _, s := range steps {
		err := s.do()
		switch {
		case s.wantErr == "" && err != nil:
			t.Fatalf("%s: %v", s.name, err)
		case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
			t.Fatalf("%s: error %v, want %s", s.name, err, s.wantErr)
		}
		got, _ := c.Describe(v.ID)
		if got.State != s.state || got.Instance != s.on {
			t.Fatalf("%s: volume %s on %q, want %s on %q", s.name, got.State, got.Instance, s.state, s.on)
		}
	}
}

// TestAttachingBlocksOthers: while an attach is in flight the volume
// already belongs to that instance.
func TestAttachingBlocksOthers(t *testing.T) {
	c := NewCloud(200*time.Millisecond, time.Millisecond)
	v := c.CreateVolume("us-east-1a", 1)
	done := make(chan error)
	go func() { done <- c.AttachVolume(context.Background(), v.ID, "a", "us-east-1a") }()
	time.Sleep(20 * time.Millisecond)
	if err := c.AttachVolume(context.Background(), v.ID, "b", "us-east-1a"); err == nil || !strings.Contains(err.Error(), "VolumeInUse") {
		t.Fatalf("attach during another attach: %v, want VolumeInUse", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
