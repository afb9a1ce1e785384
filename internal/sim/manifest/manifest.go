// Package manifest reads Kubernetes manifests (multi-document YAML or JSON,
// as `helm template` or `kubectl kustomize` print them) and applies them to
// the simulated cluster with server-side apply, in dependency order.
//
// Node objects are not applied: they describe the simulated nodes to
// register (see NodeSpecs). Kinds the cluster does not serve are skipped
// with a warning that names the document, so a chart that ships, say, a
// ServiceMonitor still shows where its pods land.
package manifest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/sim/kubelet"
)

// Object is one document of a manifest.
type Object struct {
	// Source names where it came from: "file.yaml:3" is the third document.
	Source string
	*unstructured.Unstructured
}

// Copy deep-copies objs, to apply them to a second cluster (Apply sets
// namespaces and generated names on what it applies).
func Copy(objs []Object) []Object {
	out := make([]Object, len(objs))
	for i, o := range objs {
		out[i] = Object{Source: o.Source, Unstructured: o.DeepCopy()}
	}
	return out
}

// Load reads every document of every path ("-" is stdin). Errors name the
// file and the document.
func Load(paths []string, stdin io.Reader) ([]Object, error) {
	var out []Object
	for _, path := range paths {
		var r io.Reader
		name := path
		if path == "-" {
			r, name = stdin, "<stdin>"
		} else {
			f, err := os.Open(path)
			if err != nil {
				return nil, fmt.Errorf("read manifest: %w", err)
			}
			defer f.Close()
			r = f
		}
		objs, err := Decode(name, r)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

// Decode reads every document of r; errors name the source as name.
func Decode(name string, r io.Reader) ([]Object, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var out []Object
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, doc, err)
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		jsonDoc, err := utilyaml.ToJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: invalid YAML: %w", name, doc, err)
		}
		if err := u.UnmarshalJSON(jsonDoc); err != nil {
			return nil, fmt.Errorf("%s: document %d: not a Kubernetes object (%w); every document needs apiVersion, kind and metadata.name", name, doc, err)
		}
		src := fmt.Sprintf("%s:%d", name, doc)
		if u.GetAPIVersion() == "" || u.GetKind() == "" {
			return nil, fmt.Errorf("%s: document %d: not a Kubernetes object: apiVersion and kind are required", name, doc)
		}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", src, err)
			}
			for i := range list.Items {
				out = append(out, Object{Source: fmt.Sprintf("%s[%d]", src, i), Unstructured: &list.Items[i]})
			}
			continue
		}
		if u.GetName() == "" && u.GetGenerateName() == "" {
			return nil, fmt.Errorf("%s: %s has no metadata.name", src, u.GetKind())
		}
		out = append(out, Object{Source: src, Unstructured: u})
	}
}

func stripComments(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// NodeSpecs splits Node objects off: they become simulated nodes that
// report exactly the status.capacity and status.allocatable they give (a
// resource given in only one has that value in both), with zone, region
// and instance type from the usual labels; what they leave out comes from
// the instance type (see kubelet.NodeSpec).
func NodeSpecs(objs []Object) ([]kubelet.NodeSpec, []Object, error) {
	var specs []kubelet.NodeSpec
	var rest []Object
	for _, o := range objs {
		if o.GetKind() != "Node" || o.GroupVersionKind().Group != "" {
			rest = append(rest, o)
			continue
		}
		var n corev1.Node
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &n); err != nil {
			return nil, nil, fmt.Errorf("%s: Node %s: %w", o.Source, o.GetName(), err)
		}
		for _, list := range []corev1.ResourceList{n.Status.Capacity, n.Status.Allocatable} {
			for r, q := range list {
				if q.Sign() < 0 {
					return nil, nil, fmt.Errorf("%s: Node %s: negative %s %s", o.Source, n.Name, r, q.String())
				}
			}
		}
		specs = append(specs, kubelet.NodeSpec{
			Name:         n.Name,
			Zone:         n.Labels[corev1.LabelTopologyZone],
			Region:       n.Labels[corev1.LabelTopologyRegion],
			InstanceType: n.Labels[corev1.LabelInstanceTypeStable],
			Capacity:     n.Status.Capacity,
			Allocatable:  n.Status.Allocatable,
			Labels:       n.Labels,
			Annotations:  n.Annotations,
			Taints:       n.Spec.Taints,
		})
	}
	return specs, rest, nil
}

// kindOrder applies what others depend on first, as Helm orders installs.
var kindOrder = []string{
	"Namespace", "CustomResourceDefinition", "PriorityClass", "StorageClass", "CSIDriver",
	"ServiceAccount", "Secret", "ConfigMap", "PersistentVolume", "PersistentVolumeClaim",
	"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
	"PodDisruptionBudget", "DaemonSet", "Pod", "ReplicaSet", "Deployment", "StatefulSet",
	"Job", "CronJob",
}

func rank(kind string) int {
	for i, k := range kindOrder {
		if k == kind {
			return i
		}
	}
	return len(kindOrder)
}

// Result says what Apply did.
type Result struct {
	// Namespaces that the applied objects live in, sorted.
	Namespaces []string
	Applied    int
	// Skipped explains each object that was not applied, by choice: a
	// kind the cluster does not serve, a Helm hook that install does not
	// run.
	Skipped []string
	// Refused names each object the API server refused, with its reason,
	// and each Helm hook that did not succeed.
	Refused []string
}

// Err is nil if nothing was refused, else an error listing the refusals.
func (r *Result) Err() error {
	if len(r.Refused) == 0 {
		return nil
	}
	return fmt.Errorf("%d object(s) refused: %s", len(r.Refused), strings.Join(r.Refused, "; "))
}

// Options shape Apply.
type Options struct {
	// Namespace is where namespaced objects without one go.
	Namespace string
	// Progress receives a line per namespace created and per Helm hook.
	Progress io.Writer
	// HookTimeout bounds the wait for each Helm hook Job or Pod, as helm
	// install --timeout does (default 5m, Helm's).
	HookTimeout time.Duration
}

// Apply applies objs in Helm's install order: pre-install hooks one at a
// time by weight, each awaited; then the release's objects, dependencies
// first; then post-install hooks. Namespaced objects without a namespace
// go to o.Namespace; namespaces that do not exist are created. An object
// the API server refuses is listed in Result.Refused and the rest are
// still applied (as kubectl apply does); the error is for failures that
// stop everything (the API server unreachable, a cancelled context).
func Apply(ctx context.Context, cfg *rest.Config, objs []Object, o Options) (*Result, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.HookTimeout == 0 {
		o.HookTimeout = 5 * time.Minute
	}
	a, err := newApplier(cfg, o)
	if err != nil {
		return nil, err
	}
	pre, release, post, skipped := byHookPhase(objs)
	a.res.Skipped = append(a.res.Skipped, skipped...)
	for _, h := range pre {
		if err := a.hook(ctx, h); err != nil {
			return a.res, err
		}
	}
	sort.SliceStable(release, func(i, j int) bool { return rank(release[i].GetKind()) < rank(release[j].GetKind()) })
	if len(pre)+len(post) > 0 {
		fmt.Fprintf(o.Progress, "Applying the release: %d objects\n", len(release))
	}
	for _, obj := range release {
		if err := a.apply(ctx, obj); err != nil {
			return a.res, err
		}
	}
	for _, h := range post {
		if err := a.hook(ctx, h); err != nil {
			return a.res, err
		}
	}
	for ns := range a.namespaces {
		a.res.Namespaces = append(a.res.Namespaces, ns)
	}
	sort.Strings(a.res.Namespaces)
	return a.res, nil
}

// applier applies objects one at a time, remembering what it did.
type applier struct {
	opts       Options
	client     kubernetes.Interface
	dyn        dynamic.Interface
	cached     discovery.CachedDiscoveryInterface
	mapper     *restmapper.DeferredDiscoveryRESTMapper
	res        *Result
	namespaces map[string]bool
}

func newApplier(cfg *rest.Config, o Options) (*applier, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	cached := memory.NewMemCacheClient(disc)
	return &applier{
		opts: o, client: client, dyn: dyn, cached: cached,
		mapper:     restmapper.NewDeferredDiscoveryRESTMapper(cached),
		res:        &Result{},
		namespaces: map[string]bool{},
	}, nil
}

// apply applies one object. A refusal is recorded; the error is for what
// stops everything.
func (a *applier) apply(ctx context.Context, o Object) error {
	_, err := a.applyObject(ctx, o)
	return err
}

// applyObject applies o and says whether it was applied.
func (a *applier) applyObject(ctx context.Context, o Object) (bool, error) {
	gvk := o.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.cached.Invalidate() // a CRD applied earlier may serve it now
		a.mapper.Reset()
		mapping, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if meta.IsNoMatchError(err) {
		a.res.Skipped = append(a.res.Skipped, fmt.Sprintf("%s: %s %s skipped: the cluster serves no kind %s in %s; put its CustomResourceDefinition in an earlier -f file to include it", o.Source, gvk.Kind, o.GetName(), gvk.Kind, gvk.GroupVersion()))
		return false, nil
	}
	if err != nil {
		return false, a.fatal(ctx, fmt.Errorf("%s: %s %s: %w", o.Source, gvk.Kind, o.GetName(), err))
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.GetNamespace()
		if ns == "" {
			ns = a.opts.Namespace
			o.SetNamespace(ns)
		}
		if !a.namespaces[ns] {
			if err := ensureNamespace(ctx, a.client, ns, a.opts.Progress); err != nil {
				if ctx.Err() != nil {
					return false, err
				}
				a.refuse(o, err.Error())
				return false, nil
			}
			a.namespaces[ns] = true
		}
		ri = a.dyn.Resource(mapping.Resource).Namespace(ns)
	} else if gvk.Kind == "Namespace" {
		a.namespaces[o.GetName()] = true
	}
	body, err := o.MarshalJSON()
	if err != nil {
		return false, err
	}
	if o.GetName() == "" { // generateName: create, apply needs a name
		var created *unstructured.Unstructured
		created, err = ri.Create(ctx, o.Unstructured, metav1.CreateOptions{FieldManager: "huddle-sim"})
		if err == nil {
			o.SetName(created.GetName())
		}
	} else {
		_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "huddle-sim", Force: ptr.To(true)})
	}
	if err != nil {
		if !isRefusal(err) {
			return false, a.fatal(ctx, fmt.Errorf("%s: apply %s %s: %w", o.Source, gvk.Kind, qualified(o), err))
		}
		a.refuse(o, reason(err))
		return false, nil
	}
	a.res.Applied++
	if gvk.Kind == "Namespace" {
		if err := waitServiceAccount(ctx, a.client, o.GetName()); err != nil {
			return true, err
		}
	}
	return true, nil
}

func (a *applier) refuse(o Object, why string) {
	a.res.Refused = append(a.res.Refused, fmt.Sprintf("%s: %s %s: %s", o.Source, o.GetKind(), qualified(o), why))
}

// fatal passes on the context's error when it is cancelled, else err.
func (a *applier) fatal(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// isRefusal tells the API server's verdicts on an object (invalid,
// forbidden, conflicting, refused by a webhook...) from failures to reach
// it, which stop the apply.
func isRefusal(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	switch {
	case apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsServiceUnavailable(err),
		apierrors.IsTooManyRequests(err), apierrors.IsUnauthorized(err):
		return false
	}
	return true
}

// ensureNamespace creates ns if missing and waits for its default service
// account, without which the API server refuses pods.
func ensureNamespace(ctx context.Context, client kubernetes.Interface, ns string, progress io.Writer) error {
	_, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err == nil {
			fmt.Fprintf(progress, "Created namespace %s (the manifests use it but do not define it)\n", ns)
		}
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return waitServiceAccount(ctx, client, ns)
}

func waitServiceAccount(ctx context.Context, client kubernetes.Interface, ns string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace %s: default service account not created: %w", ns, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func qualified(o Object) string {
	if ns := o.GetNamespace(); ns != "" {
		return ns + "/" + o.GetName()
	}
	return o.GetName()
}

// reason shortens an API error to what the user must fix.
func reason(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		s := status.Status()
		msg := s.Message
		if s.Details != nil && len(s.Details.Causes) > 0 {
			var causes []string
			for _, c := range s.Details.Causes {
				causes = append(causes, strings.TrimSpace(c.Field+": "+c.Message))
			}
			msg = strings.Join(causes, "; ")
		}
		return fmt.Sprintf("%s (%s)", msg, s.Reason)
	}
	return err.Error()
}
