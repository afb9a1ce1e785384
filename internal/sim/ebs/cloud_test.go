package ebs

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/huddle-io/huddle/internal/sim/timing"
)

// constant is a latency without a tail.
func constant(d time.Duration) timing.Latency { return timing.Latency{Median: d, P99: d, Max: d} }

// testProfile is a profile whose cloud operations take fixed times.
func testProfile(attach, detach time.Duration) timing.Profile {
	p := timing.Fast()
	p.AttachLatency, p.DetachLatency = constant(attach), constant(detach)
	p.ProvisionLatency = constant(time.Millisecond)
	p.InstanceTerminateDelay = 50 * time.Millisecond
	return p
}

// available creates a volume and waits until it is available.
func available(t *testing.T, c *Cloud, zone string) Volume {
	t.Helper()
	v, err := c.CreateVolume(CreateVolumeInput{ClientToken: t.Name() + zone, Zone: zone, SizeGiB: 10})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(v.AvailableAt))
	if got, _ := c.Describe(v.ID); got.State != Available {
		t.Fatalf("volume %s after its creation time, want available", got.State)
	}
	return v
}

func TestCloudFollowsEBSRules(t *testing.T) {
	ctx := context.Background()
	c := NewCloud(testProfile(time.Millisecond, time.Millisecond), 1)
	v := available(t, c, "us-east-1a")

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
		{"unknown volume", func() error { return c.AttachVolume(ctx, "vol-0123456789abcdef0", "b", "us-east-1a") }, "InvalidVolume.NotFound", InUse, "b"},
		{"malformed volume ID", func() error { return c.AttachVolume(ctx, "my-disk", "b", "us-east-1a") }, "InvalidVolumeID.Malformed", InUse, "b"},
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
	c := NewCloud(testProfile(200*time.Millisecond, time.Millisecond), 1)
	v := available(t, c, "us-east-1a")
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

// TestCreateVolumeClientToken: CreateVolume is idempotent per client
// token, as EC2's is, and a volume is creating until its provisioning time
// has passed.
func TestCreateVolumeClientToken(t *testing.T) {
	p := testProfile(time.Millisecond, time.Millisecond)
	p.ProvisionLatency = constant(100 * time.Millisecond)
	c := NewCloud(p, 1)
	in := CreateVolumeInput{ClientToken: ClientToken("pvc-1"), Zone: "us-east-1a", SizeGiB: 10}
	first, err := c.CreateVolume(in)
	if err != nil {
		t.Fatal(err)
	}
	if first.State != Creating {
		t.Fatalf("new volume %s, want creating", first.State)
	}
	if err := c.AttachVolume(context.Background(), first.ID, "a", "us-east-1a"); err == nil || !strings.Contains(err.Error(), "IncorrectState") {
		t.Fatalf("attach while creating: %v, want IncorrectState", err)
	}
	again, err := c.CreateVolume(in)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID {
		t.Fatalf("same token gave volume %s, then %s", first.ID, again.ID)
	}
	other, err := c.CreateVolume(CreateVolumeInput{ClientToken: ClientToken("pvc-2"), Zone: "us-east-1a", SizeGiB: 10})
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == first.ID {
		t.Fatalf("another token gave the same volume %s", other.ID)
	}
	for _, mismatch := range []CreateVolumeInput{
		{ClientToken: in.ClientToken, Zone: "us-east-1b", SizeGiB: 10},
		{ClientToken: in.ClientToken, Zone: "us-east-1a", SizeGiB: 20},
	} {
		if _, err := c.CreateVolume(mismatch); err == nil || !strings.HasPrefix(err.Error(), "IdempotentParameterMismatch") {
			t.Errorf("token reused for %d GiB in %s: %v, want IdempotentParameterMismatch", mismatch.SizeGiB, mismatch.Zone, err)
		}
	}
	time.Sleep(time.Until(first.AvailableAt))
	if got, _ := c.CreateVolume(in); got.ID != first.ID || got.State != Available {
		t.Fatalf("after its creation time the token gives %s %s, want %s available", got.ID, got.State, first.ID)
	}
}

// TestClientTokenIsTheDriversToken: the token is the EBS CSI driver's, the
// hex SHA-256 of the CSI volume name, within EC2's 64 characters.
func TestClientTokenIsTheDriversToken(t *testing.T) {
	got := ClientToken("pvc-0c6a5b8e-3f1d-4d2a-9c1e-2b7f3c4d5e6f")
	if len(got) != 64 || got != ClientToken("pvc-0c6a5b8e-3f1d-4d2a-9c1e-2b7f3c4d5e6f") || got == ClientToken("pvc-other") {
		t.Fatalf("ClientToken %q: want 64 hex digits, stable per name", got)
	}
	// sha256("pvc-1"), as `printf pvc-1 | sha256sum` prints it.
	if want := "f2868e1aa7cab669517cd9f5ab1b7957c0b92df38fef583267e34e1acc8253fe"; ClientToken("pvc-1") != want {
		t.Fatalf("ClientToken(pvc-1) = %s, want %s", ClientToken("pvc-1"), want)
	}
}

// TestTerminateInstanceDetachesVolumes: a terminated instance is
// shutting-down for a while, then terminated, and its volumes are then
// detached and can attach elsewhere; a detach asked for meanwhile ends
// with the termination; nothing attaches to it any more.
func TestTerminateInstanceDetachesVolumes(t *testing.T) {
	ctx := context.Background()
	c := NewCloud(testProfile(time.Millisecond, time.Millisecond), 1)
	a, b := available(t, c, "us-east-1a"), available(t, c, "us-east-1a")
	for _, v := range []Volume{a, b} {
		if err := c.AttachVolume(ctx, v.ID, "node-1", "us-east-1a"); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	c.TerminateInstance("node-1")
	if s := c.InstanceState("node-1"); s != ShuttingDown {
		t.Fatalf("instance %s right after terminate, want shutting-down", s)
	}
	if got, _ := c.Describe(a.ID); got.State != InUse {
		t.Fatalf("volume %s while the instance shuts down, want in-use", got.State)
	}
	if err := c.DetachVolume(ctx, b.ID, "node-1"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 40*time.Millisecond {
		t.Fatalf("detach from a shutting-down instance returned after %s, before it was terminated", took)
	}
	if s := c.InstanceState("node-1"); s != Terminated {
		t.Fatalf("instance %s, want terminated", s)
	}
	for _, v := range []Volume{a, b} {
		if got, _ := c.Describe(v.ID); got.State != Available || got.Instance != "" {
			t.Fatalf("volume %s on %q after termination, want available", got.State, got.Instance)
		}
	}
	if err := c.AttachVolume(ctx, a.ID, "node-1", "us-east-1a"); err == nil || !strings.Contains(err.Error(), "IncorrectInstanceState") {
		t.Fatalf("attach to a terminated instance: %v, want IncorrectInstanceState", err)
	}
	if err := c.AttachVolume(ctx, a.ID, "node-2", "us-east-1a"); err != nil {
		t.Fatalf("attach elsewhere after termination: %v", err)
	}
	c.StartInstance("node-1")
	if s := c.InstanceState("node-1"); s != Terminated {
		t.Fatalf("a terminated instance started again: %s", s)
	}
}

// TestStoppedInstanceKeepsVolumes: stopping an instance leaves its volumes
// attached, as on EC2.
func TestStoppedInstanceKeepsVolumes(t *testing.T) {
	c := NewCloud(testProfile(time.Millisecond, time.Millisecond), 1)
	v := available(t, c, "us-east-1a")
	if err := c.AttachVolume(context.Background(), v.ID, "node-1", "us-east-1a"); err != nil {
		t.Fatal(err)
	}
	c.StopInstance("node-1")
	if s := c.InstanceState("node-1"); s != Stopped {
		t.Fatalf("instance %s, want stopped", s)
	}
	if got, _ := c.Describe(v.ID); got.State != InUse || got.Instance != "node-1" {
		t.Fatalf("volume %s on %q after stop, want in-use on node-1", got.State, got.Instance)
	}
	c.StartInstance("node-1")
	if s := c.InstanceState("node-1"); s != Running {
		t.Fatalf("instance %s after start, want running", s)
	}
}

// TestAddExistingVolume: a user's existing disk is available at once, in
// its zone; a malformed ID is refused as EC2 refuses it.
func TestAddExistingVolume(t *testing.T) {
	c := NewCloud(testProfile(time.Millisecond, time.Millisecond), 1)
	if err := c.AddExistingVolume("vol-0123456789abcdef0", "us-east-1b", 5); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.Describe("vol-0123456789abcdef0"); !ok || got.State != Available || got.Zone != "us-east-1b" {
		t.Fatalf("existing volume %+v, want available in us-east-1b", got)
	}
	if err := c.AddExistingVolume("vol-0123456789abcdef0", "us-east-1a", 5); err == nil {
		t.Fatal("the same volume in another zone: no error")
	}
	if err := c.AddExistingVolume("disk-1", "us-east-1a", 5); err == nil || !strings.Contains(err.Error(), "InvalidVolumeID.Malformed") {
		t.Fatalf("malformed ID: %v, want InvalidVolumeID.Malformed", err)
	}
}

// TestCloudDrawsReproducible: two clouds with one seed take the same times
// for their n-th attach.
func TestCloudDrawsReproducible(t *testing.T) {
	p := timing.EKS()
	a, b := NewCloud(p, 7), NewCloud(p, 7)
	for i := range 20 {
		if x, y := p.AttachLatency.Draw(a.attach), p.AttachLatency.Draw(b.attach); x != y {
			t.Fatalf("attach %d: %s and %s with one seed", i, x, y)
		}
	}
	c := NewCloud(p, 8)
	same := 0
	for range 20 {
		if p.AttachLatency.Draw(a.attach) == p.AttachLatency.Draw(c.attach) {
			same++
		}
	}
	if same == 20 {
		t.Fatal("seeds 7 and 8 drew the same attach times")
	}
}
