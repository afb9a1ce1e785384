package charts

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/huddle-io/huddle/internal/version"
)

// The release huddle-sim installs, and the names it relies on.
const (
	release   = "huddle"
	namespace = "huddle-system"
)

// everyOption turns on every option the chart has.
func everyOption() map[string]any {
	return map[string]any{
		"mode":                   "cluster",
		"failover":               true,
		"replicas":               1,
		"image":                  map[string]any{"repository": "registry.example.com/huddle", "tag": "dev", "pullPolicy": "Always"},
		"imagePullSecrets":       []any{map[string]any{"name": "regcred"}},
		"leaderElection":         map[string]any{"leaseDuration": "30s", "renewDeadline": "20s", "retryPeriod": "5s"},
		"maxEvictionsPerSecond":  0.5,
		"maxMovesPerHour":        3,
		"moveDeadline":           "20m",
		"unschedulableDeadline":  "90s",
		"attachDetachSyncPeriod": "30s",
		"recreatingOwners":       []any{"apps.kruise.io/CloneSet", "argoproj.io/Rollout"},
		"maxCandidates":          8,
		"missingClaimGrace":      "1m0s",
		"workers":                2,
		"kubeAPI":                map[string]any{"qps": 50, "burst": 80},
		"logLevel":               2,
		"extraArgs":              []any{"--pprof-bind-address=:6060"},
		"webhook":                map[string]any{"timeoutSeconds": 5},
		"certManager":            map[string]any{"enabled": true},
		"crds":                   map[string]any{"install": true},
		"cleanupOnUninstall":     true,
		"serviceAccount":         map[string]any{"create": true, "name": "huddle-sa", "annotations": map[string]any{"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/huddle"}},
		"podDisruptionBudget":    map[string]any{"enabled": true, "maxUnavailable": "50%"},
		"priorityClassName":      "",
		"priorityClassQuota":     map[string]any{"create": true, "pods": 5},
		"topologySpread":         map[string]any{"enabled": true, "maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule"},
		"topologySpreadConstraints": []any{map[string]any{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
			"labelSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "huddle"}}}},
		"nodeSelector": map[string]any{"kubernetes.io/os": "linux"},
		"tolerations":  []any{map[string]any{"key": "CriticalAddonsOnly", "operator": "Exists"}},
		"affinity": map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
			"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "kubernetes.io/arch", "operator": "In", "values": []any{"amd64", "arm64"}}}}}}}},
		"podAnnotations": map[string]any{"example.com/a": "1"},
		"podLabels":      map[string]any{"team": "platform"},
		"resources":      map[string]any{"requests": map[string]any{"cpu": "200m", "memory": "512Mi"}, "limits": map[string]any{"cpu": "2", "memory": nil}},
		"startupProbe":   map[string]any{"enabled": true, "failureThreshold": 60, "periodSeconds": 1},
		"serviceMonitor": map[string]any{"enabled": true, "interval": "15s", "scrapeTimeout": "5s", "labels": map[string]any{"release": "prometheus"}},
	}
}

// manifest is what one rendering of the chart installs.
type manifest struct {
	objects []runtime.Object
	notes   string
}

// decoder decodes Kubernetes kinds strictly: a field the type lacks, or a
// duplicate, is an error, so a misspelt template field fails a test.
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// render renders the chart for huddle-sim's release and decodes every
// object: Kubernetes kinds as their types, others (cert-manager,
// Prometheus Operator) as unstructured.
func render(t *testing.T, values map[string]any) manifest {
	t.Helper()
	m, err := renderAs(values, release, namespace)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func renderAs(values map[string]any, rel, ns string) (manifest, error) {
	out, err := Render(values, rel, ns)
	if err != nil {
		return manifest{}, err
	}
	var m manifest
	names := slices.Sorted(maps.Keys(out))
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			m.notes = out[name]
			continue
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out[name])))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return m, err
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, err := decode(doc)
			if err != nil {
				return m, errors.Join(errors.New(name), err)
			}
			m.objects = append(m.objects, obj)
		}
	}
	return m, nil
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

func decode(doc []byte) (runtime.Object, error) {
	u := &unstructured.Unstructured{}
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, err
	}
	switch u.GroupVersionKind().Group {
	case "cert-manager.io", "monitoring.coreos.com":
		return u, nil
	}
	obj, _, err := decoder.Decode(doc, nil, nil)
	return obj, err
}

// one returns the only object of type T named name.
func one[T runtime.Object](t *testing.T, m manifest, name string) T {
	t.Helper()
	var found []T
	for _, o := range m.objects {
		if x, ok := o.(T); ok && (name == "" || o.(metav1.Object).GetName() == name) {
			found = append(found, x)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("%d objects of type %T named %q, want 1", len(found), zero, name)
	}
	return found[0]
}

func all[T runtime.Object](m manifest) []T {
	var out []T
	for _, o := range m.objects {
		if x, ok := o.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

func unstructuredOf(m manifest, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range m.objects {
		if u, ok := o.(*unstructured.Unstructured); ok && u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

func kinds(m manifest) []string {
	var out []string
	for _, o := range m.objects {
		acc := o.(metav1.Object)
		out = append(out, o.GetObjectKind().GroupVersionKind().Kind+"/"+acc.GetName())
	}
	sort.Strings(out)
	return out
}

func container(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(d.Spec.Template.Spec.Containers))
	}
	return d.Spec.Template.Spec.Containers[0]
}

// TestDefaults pins what huddle-sim and the docs rely on: object names,
// ports, probes, volumes and the command line of the default install.
func TestDefaults(t *testing.T) {
	m := render(t, nil)
	want := []string{
		"ClusterRole/huddle", "ClusterRole/huddle-cleanup", "ClusterRoleBinding/huddle", "ClusterRoleBinding/huddle-cleanup",
		"CustomResourceDefinition/huddles.huddle.io", "Deployment/huddle", "Job/huddle-cleanup",
		"MutatingWebhookConfiguration/huddle", "PodDisruptionBudget/huddle", "Role/huddle", "Role/huddle-cleanup",
		"RoleBinding/huddle", "RoleBinding/huddle-cleanup", "Service/huddle-webhook", "ServiceAccount/huddle", "ServiceAccount/huddle-cleanup",
	}
	if got := kinds(m); !reflect.DeepEqual(got, want) {
		t.Errorf("objects:\n got %v\nwant %v", got, want)
	}
	d := one[*appsv1.Deployment](t, m, "huddle")
	if d.Namespace != namespace || *d.Spec.Replicas != 2 {
		t.Errorf("Deployment %s/%s replicas %d, want %s/huddle with 2", d.Namespace, d.Name, *d.Spec.Replicas, namespace)
	}
	c := container(t, d)
	if c.Name != "huddle" || c.Image != version.Image+":"+version.Version || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("container %s image %s %s", c.Name, c.Image, c.ImagePullPolicy)
	}
	wantArgs := []string{
		"--namespace=huddle-system",
		"--require-namespace-label",
		"--leader-elect",
		"--leader-elect-lease-duration=15s",
		"--leader-elect-renew-deadline=10s",
		"--leader-elect-retry-period=2s",
		"--webhook-configuration=huddle",
		"--webhook-dns-name=huddle-webhook.huddle-system.svc",
		"--webhook-port=9443",
		"--cert-dir=/tmp/k8s-webhook-server/serving-certs",
		"--cert-secret=huddle-webhook-cert",
		"--manage-certs=true",
		"--failover=false",
		"--attach-detach-reconcile-sync-period=1m",
		"--max-evictions-per-second=5",
		"--max-moves-per-hour=6",
		"--move-deadline=10m",
		"--unschedulable-deadline=5m",
		"--max-candidates=16",
		"--missing-claim-grace=30s",
		"--workers=4",
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--zap-log-level=info",
		"--metrics-bind-address=:8080",
		"--health-probe-bind-address=:8081",
	}
	if !reflect.DeepEqual(c.Args, wantArgs) {
		t.Errorf("args:\n got %q\nwant %q", c.Args, wantArgs)
	}
	if len(c.Command) != 0 {
		t.Errorf("command %q, want the image's entrypoint", c.Command)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if !reflect.DeepEqual(ports, map[string]int32{"webhook": 9443, "metrics": 8080, "health": 8081}) {
		t.Errorf("ports %v", ports)
	}
	for _, p := range []struct {
		probe *corev1.Probe
		path  string
	}{{c.LivenessProbe, "/healthz"}, {c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "health" {
			t.Errorf("probe %+v, want httpGet %s on port health", p.probe, p.path)
		}
	}
	if c.StartupProbe != nil {
		t.Error("startup probe rendered by default")
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if f := env["POD_NAMESPACE"].ValueFrom; f == nil || f.FieldRef == nil || f.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("POD_NAMESPACE %+v", env["POD_NAMESPACE"])
	}
	if f := env["POD_NAME"].ValueFrom; f == nil || f.FieldRef == nil || f.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("POD_NAME %+v", env["POD_NAME"])
	}
	if f := env["HUDDLE_MEMORY_LIMIT"].ValueFrom; f == nil || f.ResourceFieldRef == nil || f.ResourceFieldRef.Resource != "limits.memory" || f.ResourceFieldRef.Divisor.String() != "1" {
		t.Errorf("HUDDLE_MEMORY_LIMIT %+v, want limits.memory with divisor 1", env["HUDDLE_MEMORY_LIMIT"])
	}
	if got := c.Resources.Requests.Cpu().String() + " " + c.Resources.Requests.Memory().String() + " " + c.Resources.Limits.Memory().String(); got != "100m 256Mi 1Gi" {
		t.Errorf("resources %s, want requests 100m 256Mi, limit 1Gi", got)
	}
	if !c.Resources.Limits.Cpu().IsZero() {
		t.Error("a CPU limit by default")
	}
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm.MountPath
	}
	if !reflect.DeepEqual(mounts, map[string]string{"tmp": "/tmp"}) {
		t.Errorf("mounts %v, want tmp at /tmp", mounts)
	}
	vols := d.Spec.Template.Spec.Volumes
	if len(vols) != 1 || vols[0].Name != "tmp" || vols[0].EmptyDir == nil {
		t.Errorf("volumes %+v, want the emptyDir tmp", vols)
	}
	ps := d.Spec.Template.Spec
	if ps.PriorityClassName != "system-cluster-critical" || ps.ServiceAccountName != "huddle" {
		t.Errorf("priority class %q, service account %q", ps.PriorityClassName, ps.ServiceAccountName)
	}
	if s := d.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable.IntValue() != 0 || s.MaxSurge.IntValue() != 1 {
		t.Errorf("rolling update %+v, want surge 1, unavailable 0", s)
	}
	tsc := ps.TopologySpreadConstraints
	if len(tsc) != 2 || tsc[0].TopologyKey != corev1.LabelHostname || tsc[1].TopologyKey != corev1.LabelTopologyZone {
		t.Fatalf("topology spread %+v, want hostname and zone", tsc)
	}
	for _, c := range tsc {
		if c.WhenUnsatisfiable != corev1.ScheduleAnyway {
			t.Errorf("spread over %s %s, want ScheduleAnyway (a one-node cluster runs both replicas)", c.TopologyKey, c.WhenUnsatisfiable)
		}
	}

	svc := one[*corev1.Service](t, m, "huddle-webhook")
	svcPorts := map[string]string{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = p.TargetPort.String()
		if (p.Name == "webhook" && p.Port != 443) || (p.Name == "metrics" && p.Port != 8080) {
			t.Errorf("service port %s is %d", p.Name, p.Port)
		}
	}
	if !reflect.DeepEqual(svcPorts, map[string]string{"webhook": "webhook", "metrics": "metrics"}) {
		t.Errorf("service ports %v", svcPorts)
	}

	pdb := one[*policyv1.PodDisruptionBudget](t, m, "huddle")
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("budget %+v, want minAvailable 1", pdb.Spec)
	}
	if !strings.Contains(m.notes, "kubectl label namespace") || !strings.Contains(m.notes, "Mode: namespaces") {
		t.Errorf("NOTES do not explain namespaces mode:\n%s", m.notes)
	}
}

// TestWebhookConfiguration: the gate's contract with the API server.
func TestWebhookConfiguration(t *testing.T) {
	for _, mode := range []string{"namespaces", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			m := render(t, map[string]any{"mode": mode})
			mwc := one[*admissionregistrationv1.MutatingWebhookConfiguration](t, m, "huddle")
			if len(mwc.Webhooks) != 1 {
				t.Fatalf("%d webhooks", len(mwc.Webhooks))
			}
			w := mwc.Webhooks[0]
			s := w.ClientConfig.Service
			if w.Name != "gate.huddle.io" || s == nil || s.Name != "huddle-webhook" || s.Namespace != namespace || *s.Path != "/mutate-v1-pod" || *s.Port != 443 {
				t.Errorf("webhook %s client config %+v", w.Name, s)
			}
			if len(w.ClientConfig.CABundle) != 0 || mwc.Annotations["cert-manager.io/inject-ca-from"] != "" {
				t.Error("the built-in rotator injects the CA bundle, not the chart nor cert-manager")
			}
			if *w.FailurePolicy != admissionregistrationv1.Ignore || *w.SideEffects != admissionregistrationv1.SideEffectClassNone ||
				*w.ReinvocationPolicy != admissionregistrationv1.NeverReinvocationPolicy || *w.MatchPolicy != admissionregistrationv1.Equivalent ||
				*w.TimeoutSeconds != 3 || !reflect.DeepEqual(w.AdmissionReviewVersions, []string{"v1"}) {
				t.Errorf("webhook policies %+v", w)
			}
			r := w.Rules
			if len(r) != 1 || !reflect.DeepEqual(r[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
				!reflect.DeepEqual(r[0].APIGroups, []string{""}) || !reflect.DeepEqual(r[0].APIVersions, []string{"v1"}) || !reflect.DeepEqual(r[0].Resources, []string{"pods"}) {
				t.Errorf("rules %+v, want CREATE pods v1", r)
			}
			sel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				ns      string
				labeled bool
				want    bool
			}{
				{"kube-system", true, false},
				{namespace, true, false},
				{"sentry", true, true},
				{"sentry", false, mode == "cluster"},
			} {
				l := labels.Set{"kubernetes.io/metadata.name": tc.ns}
				if tc.labeled {
					l["huddle.io/enabled"] = "true"
				}
				if got := sel.Matches(l); got != tc.want {
					t.Errorf("namespace %s (labelled %v) calls huddle: %v, want %v", tc.ns, tc.labeled, got, tc.want)
				}
			}
			args := container(t, one[*appsv1.Deployment](t, m, "huddle")).Args
			if got := slices.Contains(args, "--cluster-wide"); got != (mode == "cluster") {
				t.Errorf("--cluster-wide in args: %v, want %v", got, mode == "cluster")
			}
			// The controllers' scope matches the webhook's namespaceSelector.
			if got := slices.Contains(args, "--require-namespace-label"); got != (mode == "namespaces") {
				t.Errorf("--require-namespace-label in args: %v, want %v", got, mode == "namespaces")
			}
			if !strings.Contains(m.notes, "Mode: "+mode) {
				t.Errorf("NOTES do not name mode %s", mode)
			}
		})
	}
}

// TestEveryOption renders with every option on and checks each landed.
func TestEveryOption(t *testing.T) {
	m := render(t, everyOption())
	d := one[*appsv1.Deployment](t, m, "huddle")
	c := container(t, d)
	ps := d.Spec.Template.Spec
	for _, a := range []string{"--cluster-wide", "--failover=true", "--manage-certs=false", "--pprof-bind-address=:6060",
		"--max-evictions-per-second=0.5", "--max-moves-per-hour=3", "--max-candidates=8", "--missing-claim-grace=1m0s",
		"--move-deadline=20m", "--unschedulable-deadline=90s", "--recreating-owners=apps.kruise.io/CloneSet,argoproj.io/Rollout",
		"--workers=2", "--kube-api-qps=50", "--kube-api-burst=80", "--zap-log-level=2",
		"--leader-elect-lease-duration=30s", "--leader-elect-renew-deadline=20s", "--leader-elect-retry-period=5s"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args lack %s: %q", a, c.Args)
		}
	}
	if c.Image != "registry.example.com/huddle:dev" || c.ImagePullPolicy != corev1.PullAlways || ps.ImagePullSecrets[0].Name != "regcred" {
		t.Errorf("image %s %s, pull secrets %v", c.Image, c.ImagePullPolicy, ps.ImagePullSecrets)
	}
	if *d.Spec.Replicas != 1 || ps.PriorityClassName != "" || ps.ServiceAccountName != "huddle-sa" {
		t.Errorf("replicas %d, priority class %q, service account %q", *d.Spec.Replicas, ps.PriorityClassName, ps.ServiceAccountName)
	}
	if len(all[*policyv1.PodDisruptionBudget](m)) != 0 {
		t.Error("a budget for a single replica")
	}
	if ps.NodeSelector["kubernetes.io/os"] != "linux" || len(ps.Tolerations) != 1 || ps.Affinity == nil || ps.Affinity.NodeAffinity == nil {
		t.Errorf("node selector %v, tolerations %v, affinity %v", ps.NodeSelector, ps.Tolerations, ps.Affinity)
	}
	if len(ps.TopologySpreadConstraints) != 1 || ps.TopologySpreadConstraints[0].WhenUnsatisfiable != corev1.DoNotSchedule {
		t.Errorf("topology spread %+v, want the given constraints only", ps.TopologySpreadConstraints)
	}
	tpl := d.Spec.Template
	if tpl.Annotations["example.com/a"] != "1" || tpl.Labels["team"] != "platform" {
		t.Errorf("pod annotations %v, labels %v", tpl.Annotations, tpl.Labels)
	}
	if c.Resources.Requests.Cpu().String() != "200m" || c.Resources.Limits.Cpu().String() != "2" {
		t.Errorf("resources %+v", c.Resources)
	}
	for _, e := range c.Env {
		if e.Name == "HUDDLE_MEMORY_LIMIT" {
			t.Error("HUDDLE_MEMORY_LIMIT without a memory limit")
		}
	}
	if c.StartupProbe == nil || c.StartupProbe.FailureThreshold != 60 || c.StartupProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("startup probe %+v", c.StartupProbe)
	}
	// cert-manager: the Certificate's Secret is mounted at --cert-dir, the
	// CA injected by cainjector.
	var certVolume *corev1.Volume
	for i := range ps.Volumes {
		if ps.Volumes[i].Secret != nil {
			certVolume = &ps.Volumes[i]
		}
	}
	if certVolume == nil || certVolume.Secret.SecretName != "huddle-webhook-cert" {
		t.Fatalf("volumes %+v, want the certificate Secret", ps.Volumes)
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		mounted = mounted || (vm.Name == certVolume.Name && vm.MountPath == "/tmp/k8s-webhook-server/serving-certs" && vm.ReadOnly)
	}
	if !mounted {
		t.Errorf("mounts %+v, want the certificate read-only at the cert dir", c.VolumeMounts)
	}
	mwc := one[*admissionregistrationv1.MutatingWebhookConfiguration](t, m, "huddle")
	if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; got != namespace+"/huddle-webhook" {
		t.Errorf("inject-ca-from %q", got)
	}
	// No object selector ever: every pod of a shared claim must be seen, or
	// repair evicts the unseen ones in a loop.
	if *mwc.Webhooks[0].TimeoutSeconds != 5 || mwc.Webhooks[0].ObjectSelector != nil {
		t.Errorf("timeout %d, object selector %v", *mwc.Webhooks[0].TimeoutSeconds, mwc.Webhooks[0].ObjectSelector)
	}
	certs := unstructuredOf(m, "Certificate")
	issuers := unstructuredOf(m, "Issuer")
	if len(certs) != 1 || len(issuers) != 1 {
		t.Fatalf("%d Certificates, %d Issuers, want 1 each", len(certs), len(issuers))
	}
	dns, _, _ := unstructured.NestedStringSlice(certs[0].Object, "spec", "dnsNames")
	if !reflect.DeepEqual(dns, []string{"huddle-webhook.huddle-system.svc", "huddle-webhook.huddle-system.svc.cluster.local"}) {
		t.Errorf("dnsNames %v", dns)
	}
	if secret, _, _ := unstructured.NestedString(certs[0].Object, "spec", "secretName"); secret != "huddle-webhook-cert" {
		t.Errorf("secretName %q", secret)
	}
	if issuer, _, _ := unstructured.NestedString(certs[0].Object, "spec", "issuerRef", "name"); issuer != issuers[0].GetName() {
		t.Errorf("issuerRef %q, want the self-signed Issuer %s", issuer, issuers[0].GetName())
	}
	sm := unstructuredOf(m, "ServiceMonitor")
	if len(sm) != 1 || sm[0].GetLabels()["release"] != "prometheus" {
		t.Fatalf("ServiceMonitors %v", sm)
	}
	eps, _, _ := unstructured.NestedSlice(sm[0].Object, "spec", "endpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" || eps[0].(map[string]any)["interval"] != "15s" {
		t.Errorf("ServiceMonitor endpoints %v", eps)
	}
	if n := len(all[*corev1.ResourceQuota](m)); n != 0 {
		t.Errorf("%d ResourceQuotas without a priority class to admit", n)
	}
	sa := one[*corev1.ServiceAccount](t, m, "huddle-sa")
	if sa.Annotations["eks.amazonaws.com/role-arn"] == "" {
		t.Errorf("service account annotations %v", sa.Annotations)
	}
}

// TestIssuerRef: a named issuer replaces the self-signed one.
func TestIssuerRef(t *testing.T) {
	m := render(t, map[string]any{"certManager": map[string]any{"enabled": true, "issuerRef": map[string]any{"name": "corp-ca", "kind": "ClusterIssuer"}}})
	if len(unstructuredOf(m, "Issuer")) != 0 {
		t.Error("a self-signed Issuer next to a named one")
	}
	ref, _, _ := unstructured.NestedStringMap(unstructuredOf(m, "Certificate")[0].Object, "spec", "issuerRef")
	if !reflect.DeepEqual(ref, map[string]string{"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}) {
		t.Errorf("issuerRef %v", ref)
	}
}

func TestPriorityClassQuota(t *testing.T) {
	m := render(t, map[string]any{"priorityClassQuota": map[string]any{"create": true}})
	rq := one[*corev1.ResourceQuota](t, m, "huddle-priority-class")
	e := rq.Spec.ScopeSelector.MatchExpressions
	if len(e) != 1 || e[0].ScopeName != corev1.ResourceQuotaScopePriorityClass || !reflect.DeepEqual(e[0].Values, []string{"system-cluster-critical"}) || rq.Spec.Hard.Pods().Value() != 10 {
		t.Errorf("quota %+v", rq.Spec)
	}
}

// TestPodSecurityRestricted: huddle's pods and the uninstall hook's meet
// the restricted Pod Security Standard.
func TestPodSecurityRestricted(t *testing.T) {
	for _, values := range []map[string]any{nil, everyOption()} {
		m := render(t, values)
		specs := map[string]corev1.PodSpec{"Deployment": one[*appsv1.Deployment](t, m, "huddle").Spec.Template.Spec}
		specs["cleanup Job"] = one[*batchv1.Job](t, m, "").Spec.Template.Spec
		for name, ps := range specs {
			sc := ps.SecurityContext
			if sc == nil || !*sc.RunAsNonRoot || *sc.RunAsUser != 65532 || *sc.RunAsGroup != 65532 || *sc.FSGroup != 65532 ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s: pod security context %+v", name, sc)
			}
			if ps.AutomountServiceAccountToken == nil || !*ps.AutomountServiceAccountToken {
				t.Errorf("%s: the pod needs its ServiceAccount token", name)
			}
			if ps.HostNetwork || ps.HostPID || ps.HostIPC {
				t.Errorf("%s: host namespaces", name)
			}
			for _, c := range ps.Containers {
				csc := c.SecurityContext
				if csc == nil || *csc.AllowPrivilegeEscalation || !*csc.ReadOnlyRootFilesystem || csc.Capabilities == nil ||
					!reflect.DeepEqual(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) != 0 ||
					(csc.Privileged != nil && *csc.Privileged) {
					t.Errorf("%s: container %s security context %+v", name, c.Name, csc)
				}
			}
			for _, v := range ps.Volumes {
				if v.HostPath != nil {
					t.Errorf("%s: hostPath volume %s", name, v.Name)
				}
			}
		}
	}
}

// TestSelectors: the Service and the budget select exactly the
// Deployment's pods, never the uninstall hook's.
func TestSelectors(t *testing.T) {
	m := render(t, map[string]any{"podLabels": map[string]any{"team": "platform"}})
	d := one[*appsv1.Deployment](t, m, "huddle")
	podLabels := labels.Set(d.Spec.Template.Labels)
	hookLabels := labels.Set(one[*batchv1.Job](t, m, "").Spec.Template.Labels)
	want := map[string]string{"app.kubernetes.io/name": "huddle", "app.kubernetes.io/instance": release}
	if !reflect.DeepEqual(d.Spec.Selector.MatchLabels, want) {
		t.Errorf("Deployment selector %v, want %v", d.Spec.Selector.MatchLabels, want)
	}
	svc := one[*corev1.Service](t, m, "huddle-webhook")
	pdb := one[*policyv1.PodDisruptionBudget](t, m, "huddle")
	pdbSel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	for name, sel := range map[string]labels.Selector{
		"Deployment": labels.SelectorFromSet(d.Spec.Selector.MatchLabels),
		"Service":    labels.SelectorFromSet(svc.Spec.Selector),
		"budget":     pdbSel,
	} {
		if !sel.Matches(podLabels) {
			t.Errorf("%s selector %s does not match the pods (%v)", name, sel, podLabels)
		}
		if sel.Matches(hookLabels) {
			t.Errorf("%s selector %s matches the uninstall hook's pod", name, sel)
		}
	}
}

// TestFullname: the usual Helm naming.
func TestFullname(t *testing.T) {
	long := strings.Repeat("x", 70)
	for _, tc := range []struct {
		release string
		values  map[string]any
		want    string
	}{
		{"huddle", nil, "huddle"},
		{"prod", nil, "prod-huddle"},
		{"huddle-prod", nil, "huddle-prod"},
		{long, nil, long[:63]},
		{"prod", map[string]any{"fullnameOverride": "placement"}, "placement"},
		{"prod", map[string]any{"nameOverride": "keeper"}, "prod-keeper"},
	} {
		m, err := renderAs(tc.values, tc.release, "ops")
		if err != nil {
			t.Fatalf("%s: %v", tc.release, err)
		}
		d := one[*appsv1.Deployment](t, m, "")
		if d.Name != tc.want {
			t.Errorf("release %s %v: Deployment %s, want %s", tc.release, tc.values, d.Name, tc.want)
		}
		args := container(t, d).Args
		for _, a := range []string{"--webhook-configuration=" + tc.want, "--namespace=ops"} {
			if !slices.Contains(args, a) {
				t.Errorf("release %s: args lack %s", tc.release, a)
			}
		}
		mwc := one[*admissionregistrationv1.MutatingWebhookConfiguration](t, m, "")
		if mwc.Name != tc.want || mwc.Webhooks[0].ClientConfig.Service.Namespace != "ops" {
			t.Errorf("release %s: webhook configuration %s", tc.release, mwc.Name)
		}
	}
}

// TestCRDMatchesGenerated: the chart installs exactly the generated CRD,
// kept on uninstall; crds.install=false leaves it out.
func TestCRDMatchesGenerated(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "config", "crd", "huddle.io_huddles.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	generated := obj.(*apiextensionsv1.CustomResourceDefinition)
	chart := one[*apiextensionsv1.CustomResourceDefinition](t, render(t, nil), "huddles.huddle.io")
	if chart.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("CRD annotations %v, want helm.sh/resource-policy: keep", chart.Annotations)
	}
	delete(chart.Annotations, "helm.sh/resource-policy")
	if !reflect.DeepEqual(chart, generated) {
		t.Error("charts/huddle/templates/crd.yaml differs from config/crd/huddle.io_huddles.yaml: run hack/generate.sh")
	}
	if n := len(all[*apiextensionsv1.CustomResourceDefinition](render(t, map[string]any{"crds": map[string]any{"install": false}}))); n != 0 {
		t.Errorf("%d CRDs with crds.install=false", n)
	}
}

func TestAppVersion(t *testing.T) {
	ch, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if ch.Metadata.AppVersion != version.Version {
		t.Errorf("Chart.yaml appVersion %q, want internal/version.Version %q", ch.Metadata.AppVersion, version.Version)
	}
	if ch.Metadata.APIVersion != "v2" || ch.Metadata.KubeVersion != ">=1.30.0-0" || ch.Metadata.Name != "huddle" {
		t.Errorf("Chart.yaml %+v", ch.Metadata)
	}
	if err := ch.Validate(); err != nil {
		t.Error(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(mustRead(t, "huddle/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	if repo := values["image"].(map[string]any)["repository"]; repo != version.Image {
		t.Errorf("image.repository %v, want internal/version.Image %s", repo, version.Image)
	}
}

// TestCleanupHook: the pre-delete hook and its own RBAC.
func TestCleanupHook(t *testing.T) {
	m := render(t, nil)
	job := one[*batchv1.Job](t, m, "huddle-cleanup")
	if job.Annotations["helm.sh/hook"] != "pre-delete" || job.Annotations["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" {
		t.Errorf("Job annotations %v", job.Annotations)
	}
	if *job.Spec.BackoffLimit != 2 || *job.Spec.ActiveDeadlineSeconds != 120 || job.Spec.Template.Spec.ServiceAccountName != "huddle-cleanup" {
		t.Errorf("Job spec %+v", job.Spec)
	}
	c := job.Spec.Template.Spec.Containers[0]
	wantArgs := []string{"cleanup", "--webhook-configuration=huddle", "--namespace=huddle-system", "--cert-secret=huddle-webhook-cert"}
	if !reflect.DeepEqual(c.Args, wantArgs) || c.Image != version.Image+":"+version.Version {
		t.Errorf("hook container %s args %q", c.Image, c.Args)
	}
	// Every object of the hook is a pre-delete hook; its RBAC comes first.
	for _, o := range m.objects {
		acc := o.(metav1.Object)
		if !strings.HasSuffix(acc.GetName(), "-cleanup") {
			continue
		}
		a := acc.GetAnnotations()
		if a["helm.sh/hook"] != "pre-delete" {
			t.Errorf("%s %s is not a pre-delete hook", o.GetObjectKind().GroupVersionKind().Kind, acc.GetName())
		}
		weight, err := strconv.Atoi(a["helm.sh/hook-weight"])
		if err != nil {
			t.Errorf("%s: hook weight %q", acc.GetName(), a["helm.sh/hook-weight"])
		}
		if _, isJob := o.(*batchv1.Job); !isJob && weight >= 0 {
			t.Errorf("%s %s has weight %s, want below the Job's", o.GetObjectKind().GroupVersionKind().Kind, acc.GetName(), a["helm.sh/hook-weight"])
		}
	}
	off := render(t, map[string]any{"cleanupOnUninstall": false})
	for _, k := range kinds(off) {
		if strings.HasSuffix(k, "-cleanup") {
			t.Errorf("%s rendered with cleanupOnUninstall=false", k)
		}
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := files.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
