package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/kube"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/charts"
)

// HuddleRelease is the Helm release huddle-sim installs huddle's chart as,
// in HuddleNamespace. With the chart's naming, the Deployment, the webhook
// configuration and the leader election lease carry this name too.
const HuddleRelease = "huddle"

// Names of what the chart installs for release HuddleRelease.
const (
	huddleWebhookService = HuddleRelease + "-webhook"
	huddleLeaseName      = "huddle.huddle.io"
)

// huddleDefaults are the chart values huddle-sim installs with, under the
// user's: cluster-wide mode, so manifests run with `--huddle` need no
// namespace label, and the timing profile's claim grace and attach/detach
// sync period.
func (c *Cluster) huddleDefaults() map[string]any {
	return map[string]any{
		"mode":                   "cluster",
		"missingClaimGrace":      c.Timing.MissingClaimGrace().String(),
		"attachDetachSyncPeriod": c.Timing.AttachDetachSyncPeriod.String(),
	}
}

// helm returns an action configuration for the release's namespace, as
// the helm CLI builds one from a kubeconfig.
func (c *Cluster) helm() (*action.Configuration, error) {
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = ptr.To(c.Kubeconfig)
	flags.Namespace = ptr.To(HuddleNamespace)
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler))
	if err := cfg.Init(flags, HuddleNamespace, "secret"); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return cfg, nil
}

// chartAndHelm loads the embedded chart and a helm configuration.
func (c *Cluster) chartAndHelm() (*chart.Chart, *action.Configuration, error) {
	ch, err := charts.Load()
	if err != nil {
		return nil, nil, err
	}
	cfg, err := c.helm()
	return ch, cfg, err
}

// InstallHuddle installs huddle's chart (helm install, with the SDK) with
// values over huddle-sim's defaults, and waits until huddle serves: every
// replica Ready, the webhook reachable through its Service with its CA
// injected, and a leader elected.
func (c *Cluster) InstallHuddle(ctx context.Context, values map[string]any) error {
	ch, cfg, err := c.chartAndHelm()
	if err != nil {
		return err
	}
	vals := mergeValues(c.huddleDefaults(), values)
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace, in.CreateNamespace = HuddleRelease, HuddleNamespace, true
	in.WaitStrategy, in.Timeout = kube.HookOnlyStrategy, 2*time.Minute
	if _, err := in.RunWithContext(ctx, ch, vals); err != nil {
		return fmt.Errorf("helm install %s: %w", HuddleRelease, err)
	}
	c.huddleValues = vals
	return c.waitHuddleServing(ctx)
}

// UpgradeHuddle is helm upgrade with values set over the installed ones
// (nil: no change, which still rolls nothing out); it waits for the new
// pods to serve.
func (c *Cluster) UpgradeHuddle(ctx context.Context, values map[string]any) error {
	ch, cfg, err := c.chartAndHelm()
	if err != nil {
		return err
	}
	vals := mergeValues(c.huddleValues, values)
	up := action.NewUpgrade(cfg)
	up.Namespace, up.WaitStrategy, up.Timeout = HuddleNamespace, kube.HookOnlyStrategy, 2*time.Minute
	if _, err := up.RunWithContext(ctx, HuddleRelease, ch, vals); err != nil {
		return fmt.Errorf("helm upgrade %s: %w", HuddleRelease, err)
	}
	c.huddleValues = vals
	return c.waitHuddleServing(ctx)
}

// UninstallHuddle is helm uninstall: its pre-delete hook runs first.
func (c *Cluster) UninstallHuddle(ctx context.Context) error {
	cfg, err := c.helm()
	if err != nil {
		return err
	}
	un := action.NewUninstall(cfg)
	un.WaitStrategy, un.Timeout = kube.HookOnlyStrategy, 2*time.Minute
	if _, err := un.Run(HuddleRelease); err != nil {
		return fmt.Errorf("helm uninstall %s: %w", HuddleRelease, err)
	}
	c.huddleValues = nil
	return nil
}

// HuddleValues are the chart values of the installed release.
func (c *Cluster) HuddleValues() map[string]any { return maps.Clone(c.huddleValues) }

// HuddleInstalled says whether huddle runs in the cluster, from its chart
// or as a local process.
func (c *Cluster) HuddleInstalled() bool { return c.huddleValues != nil || c.Huddle != nil }

// HuddleDuration is one of huddle's durations as it runs with them: the
// release's chart value key (unschedulableDeadline, moveDeadline, ...), or
// the chart's default, which is also the flag's.
func (c *Cluster) HuddleDuration(key string) (time.Duration, error) {
	v, ok := c.huddleValues[key]
	if !ok {
		ch, err := charts.Load()
		if err != nil {
			return 0, err
		}
		v = ch.Values[key]
	}
	s, _ := v.(string)
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("huddle's %s %v: %w", key, v, err)
	}
	return d, nil
}

// scaleHuddle sets the Deployment's replicas; kill deletes the current
// pods at once (grace 0), so their processes die as in a crash.
func (c *Cluster) scaleHuddle(ctx context.Context, replicas int32, kill bool) error {
	deploys := c.Client.AppsV1().Deployments(HuddleNamespace)
	// The Deployment controller writes the object too (its status): a
	// conflict is retried on a fresh copy, never left as a huddle that
	// stays stopped.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := deploys.Get(ctx, HuddleRelease, metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Replicas = &replicas
		_, err = deploys.Update(ctx, d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	if !kill {
		return nil
	}
	pods, err := c.HuddlePods(ctx)
	if err != nil {
		return err
	}
	for _, p := range pods {
		err := c.Client.CoreV1().Pods(HuddleNamespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// HuddlePods lists huddle's running pods (not terminating), by name.
func (c *Cluster) HuddlePods(ctx context.Context) ([]corev1.Pod, error) {
	list, err := c.Client.CoreV1().Pods(HuddleNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=huddle,app.kubernetes.io/instance=" + HuddleRelease})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && len(p.OwnerReferences) > 0 && p.OwnerReferences[0].Kind == "ReplicaSet" {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// HuddleLeader is the pod that holds the controllers' leader lease.
func (c *Cluster) HuddleLeader(ctx context.Context) (string, error) {
	l, err := c.Client.CoordinationV1().Leases(HuddleNamespace).Get(ctx, huddleLeaseName, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	holder := ptr.Deref(l.Spec.HolderIdentity, "")
	pod, _, _ := strings.Cut(holder, "_") // controller-runtime: <hostname>_<uuid>
	if pod == "" {
		return "", errors.New("no leader")
	}
	return pod, nil
}

// waitHuddleServing waits until every replica of the Deployment is
// updated and Ready, the webhook's Service has a ready endpoint, the
// webhook configuration has its CA bundle, a running pod leads, and a new
// pod is really created gated (waitGating).
func (c *Cluster) waitHuddleServing(ctx context.Context) error {
	replicas := int32(0)
	err := waitFor(ctx, 2*time.Minute, "huddle to serve", func() error {
		d, err := c.Client.AppsV1().Deployments(HuddleNamespace).Get(ctx, HuddleRelease, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := deploymentRolledOut(d); err != nil {
			return err
		}
		slices, err := c.Client.DiscoveryV1().EndpointSlices(HuddleNamespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + huddleWebhookService})
		if err != nil {
			return err
		}
		if readyEndpoints(slices.Items) == 0 {
			return fmt.Errorf("service %s has no ready endpoint", huddleWebhookService)
		}
		mwc, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, HuddleRelease, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, w := range mwc.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				return fmt.Errorf("webhook %s has no CA bundle yet", w.Name)
			}
		}
		if replicas = ptr.Deref(d.Spec.Replicas, 1); replicas == 0 {
			return nil
		}
		leader, err := c.HuddleLeader(ctx)
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		pods, err := c.HuddlePods(ctx)
		if err != nil {
			return err
		}
		for _, p := range pods {
			if p.Name == leader {
				return nil
			}
		}
		return fmt.Errorf("the lease is held by %s, which is not running", leader)
	})
	if err == nil && replicas > 0 {
		err = c.waitGating(ctx)
	}
	if err != nil {
		return fmt.Errorf("%w\n%s", err, c.huddleDiagnostics(ctx))
	}
	return nil
}

func deploymentRolledOut(d *appsv1.Deployment) error {
	want := ptr.Deref(d.Spec.Replicas, 1)
	s := d.Status
	if s.ObservedGeneration < d.Generation || s.UpdatedReplicas != want || s.ReadyReplicas != want || s.Replicas != want || s.AvailableReplicas != want {
		return fmt.Errorf("deployment %s: %d/%d updated, %d ready, %d available, %d in all", d.Name, s.UpdatedReplicas, want, s.ReadyReplicas, s.AvailableReplicas, s.Replicas)
	}
	return nil
}

func readyEndpoints(slices []discoveryv1.EndpointSlice) int {
	n := 0
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if ptr.Deref(e.Conditions.Ready, false) {
				n++
			}
		}
	}
	return n
}

// huddleDiagnostics says what huddle's pods are doing, with the last log
// lines of each, for an error message.
func (c *Cluster) huddleDiagnostics(ctx context.Context) string {
	var b strings.Builder
	list, err := c.Client.CoreV1().Pods(HuddleNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	for _, p := range list.Items {
		fmt.Fprintf(&b, "pod %s: %s on %q", p.Name, p.Status.Phase, p.Spec.NodeName)
		for _, cs := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, " ready=%v restarts=%d", cs.Ready, cs.RestartCount)
			if w := cs.State.Waiting; w != nil {
				fmt.Fprintf(&b, " waiting=%s %s", w.Reason, w.Message)
			}
		}
		for _, cd := range p.Status.Conditions {
			if cd.Type == corev1.PodScheduled && cd.Status != corev1.ConditionTrue {
				fmt.Fprintf(&b, " unscheduled: %s", cd.Message)
			}
		}
		b.WriteString("\n")
		for _, f := range c.podLogs(p) {
			fmt.Fprintf(&b, "  last lines of %s:\n%s\n", f, indent(tail(f, 8)))
		}
	}
	return b.String()
}

// HuddleLogs lists the log files of huddle's containers, every restart of
// every pod, as /var/log/pods would hold them.
func (c *Cluster) HuddleLogs() []string {
	files, _ := filepath.Glob(filepath.Join(c.Dir, "pods", HuddleNamespace+"_*", "*", "*.log"))
	sort.Strings(files)
	return files
}

func (c *Cluster) podLogs(p corev1.Pod) []string {
	files, _ := filepath.Glob(filepath.Join(c.Dir, "pods", fmt.Sprintf("%s_%s_%s", p.Namespace, p.Name, p.UID), "*", "*.log"))
	return files
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

// mergeValues returns base with over merged in, maps recursively; a nil
// value removes the key (back to the chart's default), as null does in
// helm's values.
func mergeValues(base, over map[string]any) map[string]any {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]any{}
	}
	for k, v := range over {
		if v == nil {
			delete(out, k)
			continue
		}
		if vm, ok := v.(map[string]any); ok {
			if bm, ok := out[k].(map[string]any); ok {
				out[k] = mergeValues(bm, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// ForwardHuddleMetrics serves, on a host port of 127.0.0.1 until ctx ends,
// the metrics endpoint (:8080) of whichever pod leads huddle's controllers
// when a connection arrives, as a port-forward to the leader would. It
// returns the URL.
func (c *Cluster) ForwardHuddleMetrics(ctx context.Context) (string, error) {
	addr, err := c.Network.Forward(ctx, func(ctx context.Context) (string, error) {
		ip, err := c.huddleLeaderIP(ctx)
		if err != nil {
			return "", err
		}
		return net.JoinHostPort(ip, "8080"), nil
	})
	if err != nil {
		return "", err
	}
	return "http://" + addr + "/metrics", nil
}

func (c *Cluster) huddleLeaderIP(ctx context.Context) (string, error) {
	leader, err := c.HuddleLeader(ctx)
	if err != nil {
		return "", err
	}
	p, err := c.Client.CoreV1().Pods(HuddleNamespace).Get(ctx, leader, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if p.Status.PodIP == "" {
		return "", fmt.Errorf("leader %s has no IP", leader)
	}
	return p.Status.PodIP, nil
}

// HuddleMetricsText scrapes the leader's metrics (on the local-process
// path: the process's).
func (c *Cluster) HuddleMetricsText(ctx context.Context) (string, error) {
	url := c.HuddleMetrics
	if !c.huddleLocal {
		ip, err := c.huddleLeaderIP(ctx)
		if err != nil {
			return "", err
		}
		url = "http://" + net.JoinHostPort(ip, "8080") + "/metrics"
	}
	b, err := c.huddleGet(ctx, url)
	return string(b), err
}

// HuddlePprofPort is where HuddleHeapProfile looks for the leader's pprof
// endpoints: install huddle with extraArgs
// ["--pprof-bind-address=:6060"] to serve them.
const HuddlePprofPort = 6060

// HuddleHeapProfile fetches the leader's heap profile, taken after a
// garbage collection (so it shows what is live), from its pprof endpoint
// (see HuddlePprofPort; chart installs only).
func (c *Cluster) HuddleHeapProfile(ctx context.Context) ([]byte, error) {
	if c.huddleLocal {
		return nil, fmt.Errorf("huddle runs as a local process here; its heap profile is served only from the chart's pods")
	}
	ip, err := c.huddleLeaderIP(ctx)
	if err != nil {
		return nil, err
	}
	return c.huddleGet(ctx, "http://"+net.JoinHostPort(ip, strconv.Itoa(HuddlePprofPort))+"/debug/pprof/heap?gc=1")
}

// huddleGet reads url, served by huddle, through the pods' network.
func (c *Cluster) huddleGet(ctx context.Context, url string) ([]byte, error) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: c.Network.Dial}}
	if c.huddleLocal {
		client.Transport = http.DefaultTransport
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return b, nil
}
