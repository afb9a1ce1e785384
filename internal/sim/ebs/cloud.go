package ebs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// DriverName is the CSI driver the simulator provides.
const DriverName = "ebs.csi.aws.com"

// VolumeState is an EBS volume's state as DescribeVolumes reports it.
type VolumeState string

// The states a simulated volume goes through.
const (
	Available VolumeState = "available"
	Attaching VolumeState = "attaching"
	InUse     VolumeState = "in-use"
	Detaching VolumeState = "detaching"
)

// Volume is one simulated EBS volume.
type Volume struct {
	ID      string
	Zone    string
	SizeGiB int64
	State   VolumeState
	// Instance is the node the volume is attached or attaching to; empty
	// when available.
	Instance string
}

// Cloud is the simulated EC2 volume API. It is safe for concurrent use.
type Cloud struct {
	attachDelay, detachDelay time.Duration

	mu      sync.Mutex
	volumes map[string]*Volume
}

// NewCloud returns an empty cloud whose attach and detach calls take the
// given time.
func NewCloud(attachDelay, detachDelay time.Duration) *Cloud {
	return &Cloud{attachDelay: attachDelay, detachDelay: detachDelay, volumes: map[string]*Volume{}}
}

// CreateVolume creates an available volume in zone.
func (c *Cloud) CreateVolume(zone string, sizeGiB int64) Volume {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	v := &Volume{ID: "vol-" + hex.EncodeToString(b)[:17], Zone: zone, SizeGiB: sizeGiB, State: Available}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.volumes[v.ID] = v
	return *v
}

// Describe returns a copy of the volume, and false if it does not exist.
func (c *Cloud) Describe(id string) (Volume, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.volumes[id]
	if !ok {
		return Volume{}, false
	}
	return *v, true
}

// AttachVolume attaches volume id to instance, which lives in zone. It is
// idempotent for the instance the volume is already attached to.
func (c *Cloud) AttachVolume(ctx context.Context, id, instance, zone string) error {
	c.mu.Lock()
	v, ok := c.volumes[id]
	switch {
	case !ok:
		c.mu.Unlock()
		return fmt.Errorf("InvalidVolume.NotFound: The volume '%s' does not exist.", id)
	case v.Zone != zone:
		c.mu.Unlock()
		return fmt.Errorf("InvalidVolume.ZoneMismatch: The volume '%s' is not in the same availability zone as instance '%s' (%s is in %s)", id, instance, id, v.Zone)
	case v.Instance == instance && v.State == InUse:
		c.mu.Unlock()
		return nil
	case v.Instance != "" && v.Instance != instance:
		c.mu.Unlock()
		return fmt.Errorf("VolumeInUse: %s is already attached to an instance (%s)", id, v.Instance)
	case v.Instance == instance && v.State == Detaching:
		c.mu.Unlock()
		return fmt.Errorf("IncorrectState: %s is detaching from %s; retry when it is available", id, instance)
	}
	v.Instance, v.State = instance, Attaching
	c.mu.Unlock()

	if err := sleep(ctx, c.attachDelay); err != nil {
		c.mu.Lock()
		if v.State == Attaching && v.Instance == instance {
			v.Instance, v.State = "", Available
		}
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v.Instance == instance {
		v.State = InUse
	}
	return nil
}

// DetachVolume detaches volume id from instance. Detaching a volume that is
// not attached to instance succeeds, as the CSI spec requires.
func (c *Cloud) DetachVolume(ctx context.Context, id, instance string) error {
	c.mu.Lock()
	v, ok := c.volumes[id]
	if !ok || v.Instance != instance {
		c.mu.Unlock()
		return nil
	}
	v.State = Detaching
	c.mu.Unlock()

	if err := sleep(ctx, c.detachDelay); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v.Instance == instance && v.State == Detaching {
		v.Instance, v.State = "", Available
	}
	return nil
}

// DeleteVolume deletes an available volume.
func (c *Cloud) DeleteVolume(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.volumes[id]
	if !ok {
		return nil
	}
	if v.State != Available {
		return fmt.Errorf("VolumeInUse: Volume %s is currently attached to %s", id, v.Instance)
	}
	delete(c.volumes, id)
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
