package ebs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mathrand "math/rand/v2"
	"regexp"
	"sync"
	"time"

	"github.com/huddle-io/huddle/internal/sim/timing"
)

// DriverName is the CSI driver the simulator provides.
const DriverName = "ebs.csi.aws.com"

// VolumeState is an EBS volume's state as DescribeVolumes reports it.
type VolumeState string

// The states a simulated volume goes through.
const (
	Creating  VolumeState = "creating"
	Available VolumeState = "available"
	Attaching VolumeState = "attaching"
	InUse     VolumeState = "in-use"
	Detaching VolumeState = "detaching"
)

// InstanceState is an EC2 instance's state as DescribeInstances reports it.
type InstanceState string

// The instance states the simulator uses. An instance the cloud was never
// told about is running: every simulated node is one.
const (
	Running      InstanceState = "running"
	Stopped      InstanceState = "stopped"
	ShuttingDown InstanceState = "shutting-down"
	Terminated   InstanceState = "terminated"
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
	// AvailableAt is when a volume being created becomes available (not an
	// EC2 field: it tells the simulated driver when to look again).
	AvailableAt time.Time
}

// CreateVolumeInput is what CreateVolume takes. ClientToken makes the call
// idempotent, as EC2's ClientToken does: the same token returns the same
// volume, and the same token with other parameters fails with
// IdempotentParameterMismatch.
type CreateVolumeInput struct {
	ClientToken string
	Zone        string
	SizeGiB     int64
}

// volumeIDPattern is the form of EBS volume IDs: "vol-" and 8 (older) or 17
// hexadecimal digits.
var volumeIDPattern = regexp.MustCompile(`^vol-([0-9a-f]{8}|[0-9a-f]{17})$`)

// ValidVolumeID reports whether id has the form of an EBS volume ID.
func ValidVolumeID(id string) bool { return volumeIDPattern.MatchString(id) }

// Cloud is the simulated EC2 volume and instance API. It is safe for
// concurrent use.
//
// Attach, detach and create take times drawn from the profile's latencies.
// Each kind of operation has its own random stream seeded from the cloud's
// seed, so for one seed the n-th attach of a run always takes the same
// time (which volume is the n-th depends on the order the control plane
// issues them in).
type Cloud struct {
	profile timing.Profile
	seed    uint64

	mu        sync.Mutex
	attach    *mathrand.Rand
	detach    *mathrand.Rand
	provision *mathrand.Rand
	volumes   map[string]*Volume
	// tokens maps a CreateVolume client token to the request it was used
	// with; tokenOf is the reverse, so a deletion need not scan them all.
	tokens    map[string]tokenUse
	tokenOf   map[string]string
	instances map[string]*instance
}

type tokenUse struct {
	in       CreateVolumeInput
	volumeID string
}

type instance struct {
	state InstanceState
	// terminated is closed when a shutting-down instance is terminated.
	terminated chan struct{}
}

// NewCloud returns an empty cloud whose operations take the profile's
// times, drawn with seed.
func NewCloud(profile timing.Profile, seed uint64) *Cloud {
	return &Cloud{
		profile:   profile,
		seed:      seed,
		attach:    mathrand.New(mathrand.NewPCG(seed, 1)),
		detach:    mathrand.New(mathrand.NewPCG(seed, 2)),
		provision: mathrand.New(mathrand.NewPCG(seed, 3)),
		volumes:   map[string]*Volume{},
		tokens:    map[string]tokenUse{},
		tokenOf:   map[string]string{},
		instances: map[string]*instance{},
	}
}

// Seed is the seed the cloud's latencies are drawn with.
func (c *Cloud) Seed() uint64 { return c.seed }

// CreateVolume creates a volume in in.Zone; it is creating until the
// profile's provisioning time has passed, then available. A repeated call
// with the same client token returns the same volume.
func (c *Cloud) CreateVolume(in CreateVolumeInput) (Volume, error) {
	if in.Zone == "" || in.SizeGiB < 1 {
		return Volume{}, fmt.Errorf("InvalidParameterValue: CreateVolume needs an availability zone and a size of at least 1 GiB (zone %q, size %d)", in.Zone, in.SizeGiB)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if in.ClientToken != "" {
		if used, ok := c.tokens[in.ClientToken]; ok {
			if used.in != in {
				return Volume{}, fmt.Errorf("IdempotentParameterMismatch: client token %s was used to create %s in %s (%d GiB); this request asks for %d GiB in %s", in.ClientToken, used.volumeID, used.in.Zone, used.in.SizeGiB, in.SizeGiB, in.Zone)
			}
			if v, ok := c.volumes[used.volumeID]; ok {
				return c.describe(v), nil
			}
		}
	}
	v := &Volume{
		ID: newVolumeID(), Zone: in.Zone, SizeGiB: in.SizeGiB, State: Creating,
		AvailableAt: time.Now().Add(c.profile.ProvisionLatency.Draw(c.provision)),
	}
	c.volumes[v.ID] = v
	if in.ClientToken != "" {
		c.tokens[in.ClientToken] = tokenUse{in: in, volumeID: v.ID}
		c.tokenOf[v.ID] = in.ClientToken
	}
	return *v, nil
}

// AddExistingVolume puts an available volume with a given ID into the
// cloud: a disk the user already has, named by a static PersistentVolume.
func (c *Cloud) AddExistingVolume(id, zone string, sizeGiB int64) error {
	if !ValidVolumeID(id) {
		return fmt.Errorf("InvalidVolumeID.Malformed: Invalid id: %q (expecting \"vol-...\")", id)
	}
	if zone == "" {
		return fmt.Errorf("volume %s needs an availability zone", id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.volumes[id]; ok {
		if v.Zone != zone {
			return fmt.Errorf("volume %s already exists in %s, not %s", id, v.Zone, zone)
		}
		return nil
	}
	c.volumes[id] = &Volume{ID: id, Zone: zone, SizeGiB: max(sizeGiB, 1), State: Available}
	return nil
}

// describe returns a copy of v, first completing a creation that is due.
// Call with c.mu held.
func (c *Cloud) describe(v *Volume) Volume {
	if v.State == Creating && !time.Now().Before(v.AvailableAt) {
		v.State = Available
	}
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
	return c.describe(v), true
}

// AttachVolume attaches volume id to instance, which lives in zone. It is
// idempotent for the instance the volume is already attached to.
func (c *Cloud) AttachVolume(ctx context.Context, id, instance, zone string) error {
	c.mu.Lock()
	v, ok := c.volumes[id]
	if ok {
		c.describe(v)
	}
	state := c.instanceState(instance)
	switch {
	case !ok && !ValidVolumeID(id):
		c.mu.Unlock()
		return fmt.Errorf("InvalidVolumeID.Malformed: Invalid id: %q (expecting \"vol-...\")", id)
	case !ok:
		c.mu.Unlock()
		return fmt.Errorf("InvalidVolume.NotFound: The volume '%s' does not exist.", id)
	case state != Running && state != Stopped:
		c.mu.Unlock()
		return fmt.Errorf("IncorrectInstanceState: Instance '%s' is not 'running' or 'stopped' (it is %s).", instance, state)
	case v.State == Creating:
		c.mu.Unlock()
		return fmt.Errorf("IncorrectState: The volume '%s' is not 'available'.", id)
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
	delay := c.profile.AttachLatency.Draw(c.attach)
	c.mu.Unlock()

	if err := sleep(ctx, delay); err != nil {
		c.mu.Lock()
		if v.State == Attaching && v.Instance == instance {
			v.Instance, v.State = "", Available
		}
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v.Instance != instance || v.State != Attaching {
		// The instance was terminated meanwhile, which detached it.
		return fmt.Errorf("IncorrectInstanceState: Instance '%s' was terminated while %s was attaching", instance, id)
	}
	v.State = InUse
	return nil
}

// DetachVolume detaches volume id from instance. Detaching a volume that is
// not attached to instance succeeds, as the CSI spec requires. From an
// instance that is shutting down, the detach completes only when the
// instance is terminated, as on EC2.
func (c *Cloud) DetachVolume(ctx context.Context, id, instance string) error {
	c.mu.Lock()
	v, ok := c.volumes[id]
	if !ok || v.Instance != instance {
		c.mu.Unlock()
		return nil
	}
	v.State = Detaching
	var terminated <-chan struct{}
	var delay time.Duration
	if in := c.instances[instance]; in != nil && in.state == ShuttingDown {
		terminated = in.terminated
	} else {
		delay = c.profile.DetachLatency.Draw(c.detach)
	}
	c.mu.Unlock()

	if terminated != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-terminated:
		}
	} else if err := sleep(ctx, delay); err != nil {
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
	c.describe(v)
	if v.State != Available {
		return fmt.Errorf("VolumeInUse: Volume %s is currently %s (instance %q)", id, v.State, v.Instance)
	}
	delete(c.volumes, id)
	if token, ok := c.tokenOf[id]; ok {
		delete(c.tokens, token)
		delete(c.tokenOf, id)
	}
	return nil
}

// InstanceState returns the state of the instance of a node.
func (c *Cloud) InstanceState(name string) InstanceState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.instanceState(name)
}

func (c *Cloud) instanceState(name string) InstanceState {
	if in := c.instances[name]; in != nil {
		return in.state
	}
	return Running
}

// StopInstance stops a running instance; its volumes stay attached.
func (c *Cloud) StopInstance(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.instanceState(name) == Running {
		c.instances[name] = &instance{state: Stopped}
	}
}

// StartInstance starts a stopped instance.
func (c *Cloud) StartInstance(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.instanceState(name) == Stopped {
		delete(c.instances, name)
	}
}

// TerminateInstance terminates an instance for good: it is shutting-down
// for the profile's InstanceTerminateDelay, then terminated, and then every
// volume attached to it is detached (its volumes are not root volumes and
// outlive it, as EBS volumes with DeleteOnTermination false do). Calling
// it again changes nothing.
func (c *Cloud) TerminateInstance(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.instanceState(name); s == ShuttingDown || s == Terminated {
		return
	}
	in := &instance{state: ShuttingDown, terminated: make(chan struct{})}
	c.instances[name] = in
	time.AfterFunc(c.profile.InstanceTerminateDelay, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		in.state = Terminated
		for _, v := range c.volumes {
			if v.Instance == name {
				v.Instance, v.State = "", Available
			}
		}
		close(in.terminated)
	})
}

func newVolumeID() string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return "vol-" + hex.EncodeToString(b)[:17]
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
