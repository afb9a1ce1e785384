// Package simtest runs Go tests against a simulated cluster: one cluster
// per test binary (package), started by Main from TestMain and always
// stopped, and one namespace per test, created by New and deleted when the
// test ends. A test that needs nodes of its own (to power them off, fill
// them, or know exactly where pods can go) asks for a node pool: nodes
// labelled and tainted for that test only, which Pod and Deployment
// builders of the Env target automatically.
//
//	func TestMain(m *testing.M) { os.Exit(simtest.Main(m, simtest.Options{})) }
//
//	func TestX(t *testing.T) {
//		env := simtest.New(t)
//		nodes := env.AddNodes(2, simtest.NodeOptions{})
//		env.Create(env.Claim("data"))
//		...
//	}
package simtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"

	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/controlplane"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/podnet"
	"github.com/huddle-io/huddle/internal/sim/timing"
)

// Options configure the package's cluster.
type Options struct {
	// Timing defaults to the fast profile.
	Timing *timing.Profile
	// Nodes are shared by every test; most tests use their own pools.
	Nodes []kubelet.NodeSpec
	// Huddle installs huddle from its chart (mode cluster); its two
	// replicas run on two nodes of their own, added when Nodes is empty.
	Huddle bool
	// HuddleValues are chart values (failover: true, …).
	HuddleValues map[string]any
	// AllowForbidden lets huddle's logs show RBAC denials (a test that
	// takes a permission away); otherwise any such line fails the package,
	// since the chart's RBAC must grant everything huddle does.
	AllowForbidden bool
	// NoSystemPods boots the cluster without the EKS add-ons' pods, for
	// the rare package that needs nodes with nothing on them; by default
	// every node runs them, as on EKS (see Env.SystemRequests).
	NoSystemPods bool
}

var (
	shared *cluster.Cluster
	typed  client.Client
)

// Main starts the cluster, runs the tests and stops the cluster, also on
// SIGINT or SIGTERM. Use it from TestMain: os.Exit(simtest.Main(m, opts)).
func Main(m *testing.M, opts Options) int {
	profile := timing.Fast()
	if opts.Timing != nil {
		profile = *opts.Timing
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	nodes := opts.Nodes
	if opts.Huddle && len(nodes) == 0 {
		// Where huddle's own pods run; tests' pods go to their pools.
		nodes = []kubelet.NodeSpec{{Name: "system-0", Zone: "us-east-1a"}, {Name: "system-1", Zone: "us-east-1b"}}
	}
	local := false
	if opts.Huddle {
		// The scenarios must test the chart as shipped; the local-process
		// fallback (no root) would pass them without it.
		if err := podnet.Supported(); err != nil {
			if os.Getenv("HUDDLE_SIM_ALLOW_LOCAL") == "" {
				fmt.Fprintf(os.Stderr, "simtest: %v.\nThese tests run huddle from its chart, whose pods need network namespaces: run them as root, or set HUDDLE_SIM_ALLOW_LOCAL=1 to run huddle as a local process instead (then the chart, its RBAC and its Service are not tested).\n", err)
				return 1
			}
			local = true
		}
	}
	// HUDDLE_SIM_SEED replays the cloud's latency draws of an earlier run
	// (its seed is printed at boot).
	var seed uint64
	if v := os.Getenv("HUDDLE_SIM_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			fmt.Fprintf(os.Stderr, "simtest: HUDDLE_SIM_SEED=%q: want a number, the seed a run printed\n", v)
			return 1
		}
	}
	c, err := cluster.Start(ctx, cluster.Options{Timing: profile, Nodes: nodes, Progress: os.Stderr, Huddle: opts.Huddle, HuddleLocal: local, HuddleValues: opts.HuddleValues, Seed: seed, NoSystemPods: opts.NoSystemPods})
	if err != nil {
		fmt.Fprintf(os.Stderr, "simtest: cannot start the simulated cluster: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "simtest: cluster ready in %s (timing %s, cloud seed %d: HUDDLE_SIM_SEED=%d draws the same EBS times; logs in %s)\n", c.BootTime.Round(time.Millisecond), profile.Name, c.Seed, c.Seed, c.Dir)
	shared = c
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = huddlev1.AddToScheme(scheme)
	if typed, err = client.New(c.Admin, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintf(os.Stderr, "simtest: %v\n", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigs; ok {
			c.Stop()
			os.Exit(130)
		}
	}()
	defer func() {
		signal.Stop(sigs)
		close(sigs)
		c.Stop()
	}()
	code := m.Run()
	if opts.Huddle && !opts.AllowForbidden {
		// RBAC's denial, not admission's (a namespace being deleted).
		if lines := GrepLogs(c.HuddleLogs(), RBACDenied); len(lines) > 0 {
			fmt.Fprintf(os.Stderr, "simtest: huddle's logs say forbidden %d times: the chart's RBAC lacks a permission huddle uses:\n%s\n", len(lines), strings.Join(lines[:min(len(lines), 10)], "\n"))
			return 1
		}
	}
	return code
}

// RBACDenied says whether a log line reports a request RBAC refused to a
// ServiceAccount: `pods "x" is forbidden: User "system:serviceaccount:…"
// cannot update resource …` (quotes escaped in JSON logs). Admission's
// refusals (a namespace being deleted) are not RBAC's.
func RBACDenied(line string) bool {
	return strings.Contains(line, "is forbidden: User ") && strings.Contains(line, "system:serviceaccount:") && strings.Contains(line, " cannot ")
}

// GrepLogs returns the lines of files that match, prefixed by file.
func GrepLogs(files []string, match func(line string) bool) []string {
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if match(line) {
				out = append(out, f+": "+line)
			}
		}
	}
	return out
}

// Env is one test's view of the cluster.
type Env struct {
	T         testing.TB
	Ctx       context.Context
	Namespace string
	Client    kubernetes.Interface
	// Typed is a controller-runtime client that also knows huddle's API.
	Typed   client.Client
	Cluster *cluster.Cluster
	// Pool is the label value of this test's node pool ("" if none).
	Pool string
}

// LabelPool and TaintPool mark the nodes of a test's pool.
const (
	LabelPool = "sim.huddle.io/pool"
	TaintPool = "sim.huddle.io/pool"
)

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// New creates the test's namespace and waits for its default service
// account. The namespace is deleted when the test ends; if the test failed,
// the state of its pods, claims, volume attachments and events is logged
// first.
func New(t testing.TB) *Env {
	t.Helper()
	if shared == nil {
		t.Fatal("simtest: no cluster; call simtest.Main from TestMain")
	}
	name := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = strings.TrimRight(name[:40], "-")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	ns := name + "-" + hex.EncodeToString(b)
	ctx, cancel := context.WithCancel(context.Background())
	env := &Env{T: t, Ctx: ctx, Namespace: ns, Client: shared.Client, Typed: typed, Cluster: shared}
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			env.dump()
		}
		cancel()
		_ = env.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	env.Eventually("default service account", 30*time.Second, func() error {
		_, err := env.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	return env
}

// NodeOptions shape the nodes of a pool; zero fields get the defaults of
// kubelet.NodeSpec: an m5.xlarge (capacity 4 CPU, about 15.3Gi, 58 pods;
// allocatable 3920m CPU, 993Mi less memory; EBS attach limit 26; the
// add-ons' pods take 180m, 104Mi and 4 pods of that, see Room). Unlike the
// CLI's node groups, a pool stays in one zone, us-east-1a, unless Zone or
// Zones say otherwise: a test's volumes then attach wherever its pods land.
type NodeOptions struct {
	// InstanceType sizes the nodes (default m5.xlarge).
	InstanceType string
	// CPU and Memory replace the instance type's capacity; allocatable is
	// derived from them by the EKS formulas (4 CPU: 3920m allocatable).
	CPU, Memory string
	// Pods is the pod capacity (kubelet's max-pods) in place of the
	// instance type's.
	Pods int64
	// AttachLimit is the CSINode's EBS attach limit in place of the
	// instance type's.
	AttachLimit int32
	Zone        string
	// Zones, if set, are used round-robin instead of Zone.
	Zones []string
}

// AddNodes adds n nodes to the test's pool and returns their names. Pool
// nodes carry the label and NoSchedule taint sim.huddle.io/pool=<namespace>
// so only this test's pods (built with the Env's builders) land there,
// and the EKS add-ons' DaemonSet pods, which tolerate every taint as on
// EKS: AddNodes returns once those run, so the room a test fills next is
// what they leave (Room; CoreDNS stays off pool nodes).
func (e *Env) AddNodes(n int, o NodeOptions) []string {
	e.T.Helper()
	e.Pool = e.Namespace
	var names []string
	// Numbered from the cluster's node count before this call: counting
	// inside the loop skipped numbers, and a second call then reused them.
	base := len(e.Cluster.Kubelets.Nodes())
	for i := range n {
		zone := o.Zone
		if len(o.Zones) > 0 {
			zone = o.Zones[i%len(o.Zones)]
		}
		spec := kubelet.NodeSpec{
			Name:         fmt.Sprintf("%s-n%d", e.Namespace, base+i),
			Zone:         zone,
			InstanceType: o.InstanceType,
			AttachLimit:  o.AttachLimit,
			Labels:       map[string]string{LabelPool: e.Pool},
			Taints:       []corev1.Taint{{Key: TaintPool, Value: e.Pool, Effect: corev1.TaintEffectNoSchedule}},
		}
		if o.CPU != "" {
			spec.CPU = mustQuantity(o.CPU)
		}
		if o.Memory != "" {
			spec.Memory = mustQuantity(o.Memory)
		}
		spec.Pods = o.Pods
		if err := e.Cluster.Kubelets.AddNode(e.Ctx, spec); err != nil {
			e.T.Fatalf("add node: %v", err)
		}
		names = append(names, spec.Name)
	}
	// The node lifecycle controller lifts the not-ready taints a few
	// nodes at a time: a minute was too short for 5,000 nodes, so the
	// wait grows with n as the add-on pods' does. It waits until each
	// node has been seen schedulable once (one tainted again afterwards
	// is not caught here). Each look reads the nodes not yet seen so, up
	// to the first that is not, so the wait adds little load to the API
	// server the benchmarks measure.
	waiting := names
	e.Eventually("pool nodes schedulable", cluster.SystemPodsTimeout(n), func() error {
		for len(waiting) > 0 {
			node, err := e.Client.CoreV1().Nodes().Get(e.Ctx, waiting[0], metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, t := range node.Spec.Taints {
				if t.Key == corev1.TaintNodeNotReady {
					return fmt.Errorf("node %s still has the %s taint (%d of %d nodes not seen schedulable yet)", node.Name, t.Key, len(waiting), len(names))
				}
			}
			waiting = waiting[1:]
		}
		return nil
	})
	if err := e.Cluster.WaitSystemPods(e.Ctx, names, cluster.SystemPodsTimeout(n)); err != nil {
		e.T.Fatalf("pool nodes: %v", err)
	}
	return names
}

// SystemRequests is what the EKS add-ons' DaemonSet pods take on every
// node: cpu, memory and pods (see cluster.SystemRequests; on an
// m5.xlarge 180m CPU, 104Mi, 4 pods). It is empty if the package's
// cluster runs without them (Options.NoSystemPods).
func (e *Env) SystemRequests() corev1.ResourceList {
	if !e.Cluster.SystemPods {
		return corev1.ResourceList{}
	}
	return cluster.SystemRequests()
}

// Room is what a pool node offers the test's pods: its allocatable cpu,
// memory and pods less SystemRequests. A pod requesting exactly the CPU
// of Room fits an otherwise empty pool node; 1m more does not.
func (e *Env) Room(node string) corev1.ResourceList {
	e.T.Helper()
	n, err := e.Client.CoreV1().Nodes().Get(e.Ctx, node, metav1.GetOptions{})
	if err != nil {
		e.T.Fatalf("get node %s: %v", node, err)
	}
	room := corev1.ResourceList{}
	system := e.SystemRequests()
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods} {
		q := n.Status.Allocatable[r].DeepCopy()
		q.Sub(system[r])
		room[r] = q
	}
	return room
}

// Eventually polls f every 100ms until it returns nil, failing the test
// with f's last error after timeout.
func (e *Env) Eventually(what string, timeout time.Duration, f func() error) {
	e.T.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		if cerr := shared.Check(); cerr != nil {
			var died *controlplane.ComponentError
			if errors.As(cerr, &died) {
				e.T.Fatalf("waiting for %s: the control plane died: %v; last lines of its log:\n%s", what, cerr, died.Tail(15))
			}
			e.T.Fatalf("waiting for %s: the control plane died: %v", what, cerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Never polls f for the whole period and fails the test if f ever returns
// an error: the way to assert that something stays true (a pod stays
// stuck, a volume stays attached).
func (e *Env) Never(what string, period time.Duration, f func() error) {
	e.T.Helper()
	deadline := time.Now().Add(period)
	for time.Now().Before(deadline) {
		if err := f(); err != nil {
			e.T.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Timing is the cluster's timing profile.
func (e *Env) Timing() timing.Profile { return e.Cluster.Timing }
