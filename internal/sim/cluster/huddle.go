package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/huddle-io/huddle/config"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
	"github.com/huddle-io/huddle/internal/sim/binaries"
	"github.com/huddle-io/huddle/internal/sim/controlplane"
	"github.com/huddle-io/huddle/internal/sim/manifest"
)

// HuddleNamespace is where huddle runs in the simulator.
const HuddleNamespace = "huddle-system"

// installLocalHuddle installs, for the local-process path, huddle's
// namespace, CRD, and generated ClusterRole bound to huddle's identity.
func (c *Cluster) installLocalHuddle(ctx context.Context) error {
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: HuddleNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	var objs []manifest.Object
	err := fs.WalkDir(config.Manifests, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := config.Manifests.ReadFile(path)
		if err != nil {
			return err
		}
		o, err := manifest.Decode("config/"+path, bytes.NewReader(b))
		objs = append(objs, o...)
		return err
	})
	if err != nil {
		return err
	}
	res, err := manifest.Apply(ctx, c.Admin, objs, manifest.Options{Namespace: HuddleNamespace})
	if err != nil {
		return err
	}
	if err := res.Err(); err != nil {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "huddle"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "huddle"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: controlplane.HuddleUser}},
	}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	dyn, err := dynamic.NewForConfig(c.Admin)
	if err != nil {
		return err
	}
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	return waitFor(ctx, 30*time.Second, "the Huddle CRD to be established", func() error {
		u, err := crds.Get(ctx, "huddles.huddle.io", metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return nil
			}
		}
		return fmt.Errorf("not established")
	})
}

// StartHuddle starts huddle again after StopHuddle: the chart's Deployment
// back to its replicas, waiting until huddle serves. On the local-process
// path it starts the process, with extraArgs added to its command line.
func (c *Cluster) StartHuddle(ctx context.Context, extraArgs ...string) error {
	if !c.huddleLocal {
		if len(extraArgs) > 0 {
			return fmt.Errorf("huddle runs from its chart: change flags with UpgradeHuddle (chart values), not %v", extraArgs)
		}
		replicas := int32(2) // the chart's default
		switch r := c.huddleValues["replicas"].(type) {
		case int:
			replicas = int32(r)
		case int64:
			replicas = int32(r)
		case float64:
			replicas = int32(r)
		}
		if err := c.scaleHuddle(ctx, replicas, false); err != nil {
			return err
		}
		return c.waitHuddleServing(ctx)
	}
	return c.startLocalHuddle(ctx, extraArgs...)
}

// startLocalHuddle starts the huddle controller manager as a local process
// with its webhook on loopback (cluster-wide mode on) and waits until the
// webhook is registered with its CA and ready.
func (c *Cluster) startLocalHuddle(ctx context.Context, extraArgs ...string) error {
	bin, err := binaries.Huddle(ctx, c.cacheDir)
	if err != nil {
		return err
	}
	ports, err := controlplane.FreePorts(3)
	if err != nil {
		return err
	}
	webhookPort, metricsPort, healthPort := ports[0], ports[1], ports[2]
	args := append([]string{
		"--kubeconfig=" + c.cp.HuddleKubeconfig,
		"--cluster-wide",
		"--namespace=" + HuddleNamespace,
		"--webhook-host=127.0.0.1",
		"--webhook-port=" + strconv.Itoa(webhookPort),
		fmt.Sprintf("--webhook-url=https://localhost:%d/mutate-v1-pod", webhookPort),
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort),
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", healthPort),
		"--missing-claim-grace=" + c.Timing.MissingClaimGrace().String(),
		"--attach-detach-reconcile-sync-period=" + c.Timing.AttachDetachSyncPeriod.String(),
	}, extraArgs...)
	p, err := c.cp.StartProcess("huddle", nil, bin, args...)
	if err != nil {
		return err
	}
	c.Huddle = p
	c.HuddleMetrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	ready := fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort)
	err = waitFor(ctx, time.Minute, "huddle to be ready", func() error {
		if err := p.Running(); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ready, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		mwc, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "huddle", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, w := range mwc.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				return fmt.Errorf("webhook %s has no CA bundle yet", w.Name)
			}
		}
		return nil
	})
	if err == nil {
		err = c.waitGating(ctx)
	}
	var failed *controlplane.ComponentError
	if err != nil && !errors.As(err, &failed) && ctx.Err() == nil {
		err = &controlplane.ComponentError{Component: "huddle", Log: filepath.Join(c.Dir, "huddle.log"), Err: fmt.Errorf("is not ready: %w", err)}
	}
	return err
}

// StopHuddle stops huddle: the chart's Deployment scaled to 0 (kill:
// its pods deleted at once, their processes killed as in a crash), or the
// local process (kill: SIGKILL).
func (c *Cluster) StopHuddle(kill bool) {
	if !c.huddleLocal {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.scaleHuddle(ctx, 0, kill); err != nil {
			fmt.Fprintf(os.Stderr, "huddle-sim: stop huddle: %v\n", err)
			return
		}
		_ = waitFor(ctx, time.Minute, "huddle's pods to stop", func() error {
			pods, err := c.Client.CoreV1().Pods(HuddleNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=huddle"})
			if err != nil {
				return err
			}
			if len(pods.Items) > 0 {
				return fmt.Errorf("%d pods left", len(pods.Items))
			}
			return nil
		})
		return
	}
	if c.Huddle == nil {
		return
	}
	if kill {
		c.Huddle.Kill()
	} else {
		c.Huddle.Stop(10 * time.Second)
	}
	c.Huddle = nil
}

// ProbeNamespace is the namespace, opted in to huddle, where huddle-sim
// checks that a new pod is really gated before it reports huddle ready.
const ProbeNamespace = "huddle-sim-probe"

// gatedInARow is how many probe pods in a row must come back gated: the
// Service balances reviews over huddle's replicas.
const gatedInARow = 3

// waitGating waits until a pod created in an opted-in namespace comes back
// from the API server with huddle's scheduling gate. Huddle's readiness,
// its Service's endpoints and the CA bundle in the webhook configuration
// are what huddle-sim checks first, but each is seen through its own
// watch: the API server's view of the webhook configuration and of the
// Service's endpoints lags them, and with failurePolicy: Ignore a pod
// created meanwhile is silently ungated (scheduled anywhere, then evicted
// by repair). The probe pods are created with dry run: the API server runs
// admission, webhooks included, and stores nothing.
func (c *Cluster) waitGating(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ProbeNamespace, Labels: map[string]string{scope.LabelEnabled: "true"}}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "gate-probe-", Namespace: ProbeNamespace},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "probe", Image: "registry.k8s.io/pause:3.10"}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "gate-probe"}}}},
		},
	}
	gated := 0
	return waitFor(ctx, time.Minute, "a new pod to be created gated", func() error {
		got, err := c.Client.CoreV1().Pods(ProbeNamespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			gated = 0
			return err
		}
		if !placement.HasGate(got) {
			gated = 0
			return fmt.Errorf("a probe pod in namespace %s was created without the gate %s: the API server does not call huddle's webhook yet, or cannot reach it", ProbeNamespace, placement.Gate)
		}
		if gated++; gated < gatedInARow {
			return fmt.Errorf("%d of %d probe pods in a row gated", gated, gatedInARow)
		}
		return nil
	})
}

func waitFor(ctx context.Context, timeout time.Duration, what string, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// huddleFailed turns a failed install from the chart into one line that
// names the log of huddle's most recent container, if one ever started.
func (c *Cluster) huddleFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	cause, _, _ := strings.Cut(err.Error(), "\n") // huddleDiagnostics follow the first line
	var newest string
	var newestTime time.Time
	for _, f := range c.HuddleLogs() {
		if st, err := os.Stat(f); err == nil && !st.ModTime().Before(newestTime) {
			newest, newestTime = f, st.ModTime()
		}
	}
	if newest == "" {
		return fmt.Errorf("install huddle: %s", cause)
	}
	return &controlplane.ComponentError{Component: "huddle", Log: newest, Err: fmt.Errorf("did not start from its chart: %s", cause)}
}
