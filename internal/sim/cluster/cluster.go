// Package cluster assembles a simulated EKS cluster: the real control plane
// (package controlplane), simulated kubelets (package kubelet), the
// simulated EC2 and EBS CSI controller (package ebs) and the cloud node
// lifecycle controller over the simulated instances (package cloud), plus
// what an EKS cluster with the EBS CSI driver add-on has from the start:
// the ebs.csi.aws.com CSIDriver and the default StorageClass gp3.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/sim/binaries"
	"github.com/huddle-io/huddle/internal/sim/cloud"
	"github.com/huddle-io/huddle/internal/sim/controlplane"
	"github.com/huddle-io/huddle/internal/sim/ebs"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/podnet"
	"github.com/huddle-io/huddle/internal/sim/timing"
	"github.com/huddle-io/huddle/internal/version"
)

// DefaultStorageClass is the name of the default StorageClass.
const DefaultStorageClass = "gp3"

// maxSocketPath is the longest path of a Unix socket (sun_path, less its
// final NUL).
const maxSocketPath = 107

// Options configure a simulated cluster.
type Options struct {
	Timing timing.Profile
	Nodes  []kubelet.NodeSpec
	// CacheDir holds the built control-plane binaries
	// (binaries.DefaultCacheDir() if empty).
	CacheDir string
	// Progress receives boot progress lines (nil: discard).
	Progress io.Writer
	// Huddle installs huddle from its chart (charts/huddle, with Helm's
	// SDK); the kubelets run its pods as processes of the huddle binary.
	Huddle bool
	// HuddleValues are chart values over huddle-sim's defaults (mode
	// cluster, the profile's claim grace).
	HuddleValues map[string]any
	// HuddleLocal runs huddle as one local process with its webhook on
	// loopback instead of from the chart: the path for machines where pods
	// cannot get network namespaces (not root). HuddleArgs are its extra
	// flags.
	HuddleLocal bool
	HuddleArgs  []string
	// Seed seeds the simulated cloud's attach, detach and provisioning
	// times; 0 picks one at random. Cluster.Seed says which was used.
	Seed uint64
	// NoSystemPods leaves out what EKS runs in kube-system (the add-ons'
	// DaemonSets on every node, CoreDNS): for the rare test that needs a
	// node with nothing on it. By default they run, as on EKS, and take
	// their requests from every node (see SystemRequests).
	NoSystemPods bool
}

// Cluster is a running simulated cluster.
type Cluster struct {
	// Kubeconfig is the path of an admin kubeconfig.
	Kubeconfig string
	// Dir holds the kubeconfig, certificates and component logs.
	Dir string
	// Admin is the admin REST config; Client a clientset for it.
	Admin    *rest.Config
	Client   kubernetes.Interface
	Kubelets *kubelet.Pool
	Cloud    *ebs.Cloud
	// Seed is the seed of the cloud's latencies: the same seed draws the
	// same times again.
	Seed     uint64
	Binaries binaries.Set
	Timing   timing.Profile
	// BootTime is how long Start took once binaries were available.
	BootTime time.Duration
	// Huddle is the running huddle process on the local-process path
	// (nil otherwise); HuddleMetrics its metrics URL.
	Huddle        *controlplane.Process
	HuddleMetrics string
	// SystemPods says whether the EKS add-ons run in kube-system (see
	// Options.NoSystemPods).
	SystemPods bool
	// Network holds the sandboxes of pods that run as processes.
	Network *podnet.Network
	// AuditLog is the API server's audit log of pod deletions and
	// evictions (JSON lines, one per request).
	AuditLog string

	cacheDir     string
	huddleLocal  bool
	huddleValues map[string]any

	cp     *controlplane.ControlPlane
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Start builds the control plane if needed, boots it and registers nodes.
// Every wait ends when ctx does. If Start fails or ctx ends, it stops
// whatever it started and removes its directory before it returns; if a
// component failed, the error is a *controlplane.ComponentError that
// names the component's log, kept outside the directory (see StopAfter).
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		cacheDir = binaries.DefaultCacheDir()
	}
	set, err := binaries.Ensure(ctx, cacheDir, progress)
	if err != nil {
		return nil, err
	}
	local := opts.Huddle && opts.HuddleLocal
	var huddleBin string
	if opts.Huddle {
		if !local {
			if err := podnet.Supported(); err != nil {
				fmt.Fprintf(progress, "warning: %v; huddle runs as a local process instead of from its chart\n", err)
				local = true
			}
		}
		fmt.Fprintln(progress, "Building huddle")
		if huddleBin, err = binaries.Huddle(ctx, cacheDir); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	dir, err := os.MkdirTemp("", "huddle-sim-")
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	network := podnet.New(0)
	c := &Cluster{Dir: dir, Timing: opts.Timing, Binaries: set, Network: network, cancel: cancel, cacheDir: cacheDir, huddleLocal: local}
	// Whatever fails or is interrupted, everything started so far stops and
	// dir goes; a failed component's log is kept, unless interrupted.
	defer func() {
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			c.Stop()
			return
		}
		err = c.StopAfter(err)
	}()
	// Pods' processes run as their runAsUser: they must traverse the
	// cluster's directory to their own (its files stay private).
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	egress := filepath.Join(dir, "egress.sock")
	if len(egress) > maxSocketPath {
		// Too long for a Unix socket (a deep $TMPDIR): an abstract one,
		// named after dir, needs no file and is as much the cluster's own.
		egress = "@" + filepath.Base(dir) + "-egress"
	}
	if err := network.ServeEgress(runCtx, egress); err != nil {
		return nil, err
	}
	cp, err := controlplane.Start(ctx, controlplane.Config{Binaries: set, Dir: dir, Timing: opts.Timing, Progress: progress, EgressSocket: egress})
	if err != nil {
		return nil, err
	}
	network.SetAPIPort(cp.APIPort)
	c.cp, c.Kubeconfig, c.Admin, c.AuditLog = cp, cp.Kubeconfig, cp.Admin, cp.AuditLog
	if c.Client, err = kubernetes.NewForConfig(cp.Admin); err != nil {
		return nil, err
	}
	// Every simulated component has a client (and rate limiter) of its
	// own, as the real processes do; the kubelets have one per node.
	simClient, err := kubernetes.NewForConfig(cp.Simulator)
	if err != nil {
		return nil, err
	}
	// The EBS CSI controller's sidecars have the API limits the EKS
	// add-on gives them (ebs.SidecarConfig).
	attacherClient, err := kubernetes.NewForConfig(ebs.SidecarConfig(cp.Simulator))
	if err != nil {
		return nil, err
	}
	provisionerClient, err := kubernetes.NewForConfig(ebs.SidecarConfig(cp.Simulator))
	if err != nil {
		return nil, err
	}
	cloudClient, err := kubernetes.NewForConfig(cp.Simulator)
	if err != nil {
		return nil, err
	}
	if err := bootstrap(ctx, c.Client); err != nil {
		return nil, fmt.Errorf("create the EBS CSIDriver and StorageClass: %w", err)
	}

	broadcaster := record.NewBroadcaster(record.WithContext(runCtx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: simClient.CoreV1().Events("")})
	factory := informers.NewSharedInformerFactory(simClient, 0)
	c.Seed = opts.Seed
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	fmt.Fprintf(progress, "  simulated EBS times: attach %s, detach %s, provisioning %s; seed %d\n",
		opts.Timing.AttachLatency, opts.Timing.DetachLatency, opts.Timing.ProvisionLatency, c.Seed)
	c.Cloud = ebs.NewCloud(opts.Timing, c.Seed)
	if c.Kubelets, err = kubelet.New(cp.Simulator, factory, opts.Timing, broadcaster); err != nil {
		return nil, err
	}
	if huddleBin != "" {
		c.Kubelets.RunProcesses(&kubelet.Processes{
			Images:  map[string]kubelet.Image{version.Image: {Binary: huddleBin, Entrypoint: "/huddle"}},
			Network: network, Server: cp.URL, CA: cp.CA, Dir: filepath.Join(dir, "pods"),
		})
	}
	attacher := ebs.NewAttacher(attacherClient, c.Cloud, factory)
	// The external-provisioner records its events with its own client,
	// within its own API limits.
	provisionerEvents := record.NewBroadcaster(record.WithContext(runCtx))
	provisionerEvents.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: provisionerClient.CoreV1().Events("")})
	provisioner := ebs.NewProvisioner(provisionerClient, c.Cloud, factory,
		provisionerEvents.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "ebs.csi.aws.com_ebs-csi-controller"}))
	instances, err := cloud.NewInstances(cloudClient, c.Cloud, factory, opts.Timing.CloudNodeMonitorPeriod)
	if err != nil {
		return nil, err
	}
	factory.Start(runCtx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("informer for %v did not sync", typ)
		}
	}
	c.goRun(func() { c.Kubelets.Run(runCtx, 8) })
	c.goRun(func() { attacher.Run(runCtx, ebs.SidecarWorkers) })
	c.goRun(func() { provisioner.Run(runCtx, ebs.SidecarWorkers) })
	c.goRun(func() { instances.Run(runCtx) })
	c.goRun(func() { <-runCtx.Done(); broadcaster.Shutdown(); provisionerEvents.Shutdown() })

	fmt.Fprintf(progress, "Registering %d simulated nodes\n", len(opts.Nodes))
	for _, n := range opts.Nodes {
		if err := c.Kubelets.AddNode(ctx, n); err != nil {
			return nil, err
		}
	}
	if err := c.waitNodesSchedulable(ctx); err != nil {
		return nil, err
	}
	if !opts.NoSystemPods {
		fmt.Fprintln(progress, "Installing the EKS add-ons' system pods (aws-node, kube-proxy, ebs-csi-node, eks-pod-identity-agent on every node; CoreDNS)")
		if err := installSystem(ctx, c.Client); err != nil {
			return nil, fmt.Errorf("install the system pods: %w", err)
		}
		c.SystemPods = true
		names := make([]string, len(opts.Nodes))
		for i, n := range opts.Nodes {
			names[i] = n.Name
		}
		if err := c.WaitSystemPods(ctx, names, SystemPodsTimeout(len(names))); err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			fmt.Fprintf(progress, "warning: %v\n", err)
		}
	}
	switch {
	case opts.Huddle && local:
		fmt.Fprintln(progress, "Installing huddle and starting its controller manager as a local process")
		if err := c.installLocalHuddle(ctx); err != nil {
			return nil, fmt.Errorf("install huddle: %w", err)
		}
		if err := c.startLocalHuddle(ctx, opts.HuddleArgs...); err != nil {
			return nil, fmt.Errorf("start huddle: %w", err)
		}
	case opts.Huddle:
		fmt.Fprintf(progress, "Installing huddle from its chart (helm install %s charts/huddle -n %s)\n", HuddleRelease, HuddleNamespace)
		if err := c.InstallHuddle(ctx, opts.HuddleValues); err != nil {
			return nil, c.huddleFailed(ctx, err)
		}
	}
	c.BootTime = time.Since(start)
	return c, nil
}

func (c *Cluster) goRun(f func()) {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); f() }()
}

// waitNodesSchedulable waits until the node lifecycle controller has
// removed the not-ready taint every new node starts with.
func (c *Cluster) waitNodesSchedulable(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, time.Minute)
	defer cancel()
	for {
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		pending := 0
		for _, n := range nodes.Items {
			for _, t := range n.Spec.Taints {
				if t.Key == corev1.TaintNodeNotReady {
					pending++
				}
			}
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			err := fmt.Errorf("did not remove the %s taint from %d nodes: %w", corev1.TaintNodeNotReady, pending, ctx.Err())
			if parent.Err() != nil {
				return err
			}
			return &controlplane.ComponentError{Component: "kube-controller-manager", Log: filepath.Join(c.Dir, "kube-controller-manager.log"), Err: err}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Check returns an error if a control-plane component has exited.
func (c *Cluster) Check() error { return c.cp.Check() }

// Stop stops the simulation and every process, and removes Dir unless
// $HUDDLE_SIM_KEEP is set (to read component logs after a failure).
func (c *Cluster) Stop() { c.stop(nil) }

// StopAfter stops the cluster because of err, as Stop does, and returns
// err. If a component failed (err holds a *controlplane.ComponentError),
// its log is first copied out of Dir, which Stop removes, to a file
// huddle-sim-<component>-*.log in the temporary directory, and the error
// names the copy instead.
func (c *Cluster) StopAfter(err error) error {
	var failed *controlplane.ComponentError
	if !errors.As(err, &failed) {
		c.Stop()
		return err
	}
	log := failed.Log
	c.stop(failed)
	if failed.Log == log {
		return err
	}
	return &movedLog{err: err, from: log, to: failed.Log}
}

// movedLog is an error whose message named a log that has been moved:
// the message was made when the error was wrapped, so the new path is
// put in its place.
type movedLog struct {
	err      error
	from, to string
}

func (e *movedLog) Error() string { return strings.ReplaceAll(e.err.Error(), e.from, e.to) }
func (e *movedLog) Unwrap() error { return e.err }

func (c *Cluster) stop(failed *controlplane.ComponentError) {
	c.once.Do(func() {
		c.cancel()
		c.wg.Wait()
		if c.cp != nil {
			c.cp.Stop()
		}
		if os.Getenv("HUDDLE_SIM_KEEP") != "" {
			return
		}
		if failed != nil {
			if kept, err := keepLog(failed, c.Dir); err == nil {
				failed.Log = kept
			}
		}
		// A pod's process stopped a moment ago may still be closing files.
		for range 3 {
			if os.RemoveAll(c.Dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// keepLog copies a failed component's log out of dir, the cluster's
// directory, and returns the copy's path.
func keepLog(failed *controlplane.ComponentError, dir string) (string, error) {
	if failed.Log == "" || !strings.HasPrefix(failed.Log, dir+string(filepath.Separator)) {
		return failed.Log, nil
	}
	b, err := os.ReadFile(failed.Log)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "huddle-sim-"+failed.Component+"-*.log")
	if err != nil {
		return "", err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), f.Close()
}

// bootstrap creates what the EKS EBS CSI add-on installs: the CSIDriver
// (attach required) and the default gp3 StorageClass.
func bootstrap(ctx context.Context, client kubernetes.Interface) error {
	driver := &storagev1.CSIDriver{
		ObjectMeta: metav1.ObjectMeta{Name: ebs.DriverName},
		Spec: storagev1.CSIDriverSpec{
			AttachRequired:       ptr.To(true),
			PodInfoOnMount:       ptr.To(false),
			FSGroupPolicy:        ptr.To(storagev1.ReadWriteOnceWithFSTypeFSGroupPolicy),
			VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent},
		},
	}
	if _, err := client.StorageV1().CSIDrivers().Create(ctx, driver, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	class := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        DefaultStorageClass,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:          ebs.DriverName,
		Parameters:           map[string]string{"type": "gp3", "csi.storage.k8s.io/fstype": "ext4"},
		ReclaimPolicy:        ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode:    ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
		AllowVolumeExpansion: ptr.To(true),
	}
	if _, err := client.StorageV1().StorageClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}
