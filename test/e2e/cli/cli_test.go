// Package cli tests the huddle-sim command as users run it: the built
// binary, its output and its exit status.
package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/huddle-io/huddle/internal/sim/report"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "huddle-sim-cli-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "huddle-sim")
	if out, err := exec.Command("go", "build", "-o", binary, "../../../cmd/huddle-sim").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestDemoShowsMultiAttach: the demo prints the stock scheduler's Sentry
// placement with pods stuck in ContainerCreating and the attach/detach
// controller's own Multi-Attach error.
func TestDemoShowsMultiAttach(t *testing.T) {
	stdout, stderr, code := huddleSim(t, nil, "demo")
	if code != 0 {
		t.Fatalf("demo exit %d\n%s", code, stderr)
	}
	for _, w := range []string{
		"== Self-hosted Sentry with the stock kube-scheduler ==",
		"CLAIM sentry/sentry-data",
		"ContainerCreating",
		`FailedAttachVolume: Multi-Attach error for volume "pvc-`,
		"Volume is already used by pod(s) sentry-",
		"are stuck away from it",
		"== Self-hosted Sentry with huddle ==",
		"Side by side:",
	} {
		if !strings.Contains(stdout, w) {
			t.Errorf("demo output lacks %q:\n%s", w, stdout)
		}
	}
	// The side-by-side rows: "<what>  <stock>  <huddle>".
	row := func(what string) (stock, huddle string) {
		m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(what) + `\s+(\S+)\s+(\S+)$`).FindStringSubmatch(stdout)
		if m == nil {
			t.Fatalf("no side-by-side row %q:\n%s", what, stdout)
		}
		return m[1], m[2]
	}
	if s, h := row("pods hung (not running)"); s == "0" || h != "0" {
		t.Errorf("pods hung: stock %s, huddle %s; want some with the stock scheduler and none with huddle", s, h)
	}
	if _, h := row("nodes they were placed on"); h != "1" {
		t.Errorf("with huddle the pods ran on %s nodes, want 1", h)
	}
	if _, h := row("FailedAttachVolume events"); h != "0" {
		t.Errorf("with huddle %s FailedAttachVolume events, want 0", h)
	}
	if s, h := row("all Running after"); s != "never" || !strings.HasSuffix(h, "s") {
		t.Errorf("all Running after: stock %s, huddle %s", s, h)
	}
}

const fits = `apiVersion: v1
kind: Node
metadata:
  name: only
  labels: {topology.kubernetes.io/zone: eu-west-1a}
status:
  capacity: {cpu: "2", memory: 8Gi, pods: "20"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 2
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - name: app
        image: example/app
        resources: {requests: {cpu: 500m}}
        volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: app}
`

// TestRunReportsJSON: run reads Node objects from the manifests, applies
// the rest (skipping a kind the cluster does not serve), and reports JSON;
// exit 0 when everything runs.
func TestRunReportsJSON(t *testing.T) {
	stdout, stderr, code := huddleSim(t, strings.NewReader(fits), "run", "-f", "-", "--timing", "fast", "--output", "json")
	if code != 0 {
		t.Fatalf("run exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "<stdin>:4: ServiceMonitor app skipped") {
		t.Errorf("no warning about the skipped ServiceMonitor:\n%s", stderr)
	}
	var r report.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout)
	}
	if !r.AllRunning || len(r.Claims) != 1 || len(r.Claims[0].Pods) != 2 {
		t.Fatalf("report %+v", r)
	}
	c := r.Claims[0]
	if c.Namespace != "default" || c.Name != "data" || len(c.AttachedTo) != 1 || c.AttachedTo[0] != "only" {
		t.Fatalf("claim %+v: want default/data attached to node only", c)
	}
	for _, p := range c.Pods {
		if p.Node != "only" || p.Phase != "Running" || !p.Ready || p.Reason != "" {
			t.Errorf("pod %+v", p)
		}
	}
	if r.SchemaVersion != report.SchemaVersion || r.Timing != "fast" || r.WaitEnded != report.AllRunning || r.Huddle {
		t.Errorf("schemaVersion %d, timing %q, waitEnded %q, huddle %v: want %d, fast, allRunning, false", r.SchemaVersion, r.Timing, r.WaitEnded, r.Huddle, report.SchemaVersion)
	}
	if len(r.Nodes) != 1 {
		t.Fatalf("nodes %+v, want the one Node of the manifest", r.Nodes)
	}
	n := r.Nodes[0]
	requested := resource.MustParse(n.Requested.CPU)
	if n.Name != "only" || n.Zone != "eu-west-1a" || n.Allocatable.CPU != "2" || n.Allocatable.Pods != 20 || requested.MilliValue() < 1000 || n.Requested.Pods < 2 {
		t.Errorf("node %+v: want only in eu-west-1a, allocatable 2 CPU and 20 pods as the Node says, at least the app's 2x500m and 2 pods requested", n)
	}
}

// TestRunCompare: --compare runs the demo's manifests with the stock
// scheduler and with huddle, prints both reports side by side, and exits 0
// because huddle ran every pod.
func TestRunCompare(t *testing.T) {
	stdout, stderr, code := huddleSim(t, nil, "run", "--compare", "-f", "../../../internal/sim/demo/sentry.yaml", "--timing", "fast", "--zones", "us-east-1a")
	if code != 0 {
		t.Fatalf("run --compare exit %d, want 0 (huddle runs every pod)\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, w := range []string{"== 1/2: the stock kube-scheduler ==", "== 2/2: with huddle =="} {
		if !strings.Contains(stderr, w) {
			t.Errorf("progress lacks %q:\n%s", w, stderr)
		}
	}
	for _, w := range []string{"== With the stock kube-scheduler ==", "== With huddle ==", "Side by side:", "pods that mount sentry/sentry-data", "Where each pod ran:"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("output lacks %q:\n%s", w, stdout)
		}
	}
	if !strings.Contains(stdout, "huddle fixed it") && !strings.Contains(stdout, "Nothing to fix") {
		t.Errorf("no verdict:\n%s", stdout)
	}
	m := regexp.MustCompile(`(?m)^  nodes they were placed on\s+(\S+)\s+(\S+)$`).FindStringSubmatch(stdout)
	if m == nil || m[2] != "1" {
		t.Errorf("with huddle the Sentry pods should share one node; row %q:\n%s", m, stdout)
	}
}

// TestRunRefusalsAndHooks: a pre-install hook Job runs and completes
// before the release; an object the API server refuses is listed and the
// rest still runs; run exits 1 for the refusal; a webhook nothing serves
// is warned about; the JSON says it all.
func TestRunRefusalsAndHooks(t *testing.T) {
	const chart = `apiVersion: v1
kind: Service
metadata: {name: no-ports}
spec: {selector: {app: web}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: example/web}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations: {helm.sh/hook: pre-install, helm.sh/hook-weight: "-1"}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: example/migrate}]
---
apiVersion: v1
kind: Pod
metadata:
  name: smoke-test
  annotations: {helm.sh/hook: test}
spec:
  containers: [{name: c, image: example/test}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: checker}
webhooks:
- name: check.example.com
  clientConfig: {service: {namespace: shop, name: checker}}
  rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}]
  failurePolicy: Ignore
  sideEffects: None
  admissionReviewVersions: [v1]
`
	stdout, stderr, code := huddleSim(t, strings.NewReader(chart), "run", "-f", "-", "-n", "shop", "--timing", "fast", "--nodes", "1", "--output", "json")
	if code != 1 {
		t.Fatalf("run exit %d, want 1 for the refused Service\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	hook, applied := strings.Index(stderr, "hook Job migrate succeeded"), strings.Index(stderr, "Applying the release:")
	if hook < 0 || applied < 0 || hook > applied {
		t.Errorf("the pre-install hook should complete before the release is applied:\n%s", stderr)
	}
	if !strings.Contains(stderr, "refused: <stdin>:1: Service shop/no-ports: spec.ports: Required value") {
		t.Errorf("the refusal is not on stderr:\n%s", stderr)
	}
	var r report.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout)
	}
	if len(r.Refused) != 1 || !strings.Contains(r.Refused[0], "Service shop/no-ports") {
		t.Errorf("refused %q, want the Service", r.Refused)
	}
	if len(r.Skipped) != 1 || !strings.Contains(r.Skipped[0], "Pod smoke-test skipped: a Helm test hook") {
		t.Errorf("skipped %q, want the test hook", r.Skipped)
	}
	if !r.AllRunning {
		t.Errorf("the Deployment (applied after the refusal) and the hook's Job should have run: %+v", r)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "webhook check.example.com calls Service shop/checker, which no ready pod serves") || !strings.Contains(r.Warnings[0], "failurePolicy Ignore requests it matches pass unchecked") {
		t.Errorf("warnings %q, want the unserved webhook", r.Warnings)
	}
}

// TestRunExitsOneWhenStuck: a pod that fits nowhere makes run exit 1 and
// the report says why, in the scheduler's words.
func TestRunExitsOneWhenStuck(t *testing.T) {
	const tooBig = `apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers: [{name: c, image: x, resources: {requests: {cpu: "64"}}}]
`
	stdout, stderr, code := huddleSim(t, strings.NewReader(tooBig), "run", "-f", "-", "--timing", "fast", "--nodes", "1", "--settle", "3s")
	if code != 1 {
		t.Fatalf("run exit %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	for _, w := range []string{"OTHER PODS NOT RUNNING", "huge", "FailedScheduling", "Insufficient cpu"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("report lacks %q:\n%s", w, stdout)
		}
	}
}

// TestUpBootsAndCleansUp: up prints a kubeconfig for a working cluster,
// reports its boot time, and on SIGTERM stops everything and removes its
// files.
func TestUpBootsAndCleansUp(t *testing.T) {
	cmd := exec.Command(binary, "up", "--timing", "fast", "--nodes", "2")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	var kubeconfig string
	select {
	case kubeconfig = <-lines:
	case <-time.After(5 * time.Minute):
		t.Fatalf("up printed no kubeconfig:\n%s", stderr.String())
	}
	// stderr arrives through its own pipe and may lag stdout a little.
	var m []string
	for deadline := time.Now().Add(10 * time.Second); m == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		m = regexp.MustCompile(`Cluster ready in ([0-9.]+)s`).FindStringSubmatch(stderr.String())
	}
	if m == nil {
		t.Fatalf("up did not report its boot time:\n%s", stderr.String())
	}
	boot, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("huddle-sim up: cluster ready in %.1fs", boot)

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	nodes, err := client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 2 {
		t.Fatalf("nodes: %v (%v)", nodes, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("up after SIGTERM: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(filepath.Dir(kubeconfig)); !os.IsNotExist(err) {
		t.Errorf("up left %s behind", filepath.Dir(kubeconfig))
	}
	if _, err := client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{}); err == nil {
		t.Error("the API server still answers after up stopped")
	}
}

// lockedBuffer is a bytes.Buffer safe to read while a process writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func huddleSim(t *testing.T, stdin *strings.Reader, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}
