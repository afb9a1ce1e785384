package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// ServiceAccountMountPath is where the ServiceAccount admission plugin
// mounts a pod's API credentials (the kube-api-access projected volume).
const ServiceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// defaultTokenSeconds is the lifetime the ServiceAccount admission plugin
// asks for (3607 s); the kubelet renews a token at 80% of it.
const defaultTokenSeconds = 3607

// A process cannot get a mount namespace of its own here, so the volumes
// of a pod that runs as processes live in the pod's directory on the host,
// and paths under a mountPath in the container's args, env and working
// directory are rewritten to them: the simulator's stand-in for the
// container's filesystem view.

// mountTable maps a container's mount paths to host directories.
type mountTable []mount

type mount struct{ path, host string }

// translate rewrites path if it lies under a mount; other paths (the
// image's own files) are left alone.
func (m mountTable) translate(path string) string {
	for _, mt := range m { // longest mount path first
		if path == mt.path {
			return mt.host
		}
		if rest, ok := strings.CutPrefix(path, strings.TrimSuffix(mt.path, "/")+"/"); ok {
			return filepath.Join(mt.host, rest)
		}
	}
	return path
}

// translateArg rewrites an argument that is a path, or a flag whose value
// is one (--cert-dir=/tmp/certs).
func (m mountTable) translateArg(arg string) string {
	if strings.HasPrefix(arg, "/") {
		return m.translate(arg)
	}
	if name, value, ok := strings.Cut(arg, "="); ok && strings.HasPrefix(name, "-") && strings.HasPrefix(value, "/") {
		return name + "=" + m.translate(value)
	}
	return arg
}

// materialiseVolumes materialises the pod's volumes under dir/volumes, as the
// kubelet's volume manager does before it starts containers, and returns
// the host directory of each volume and of the API credentials (token
// file) if the pod has them.
func (pp *procPod) materialiseVolumes(ctx context.Context) (map[string]string, error) {
	pod := pp.pod
	dirs := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(pp.dir, "volumes", v.Name)
		if err := pp.mkdir(filepath.Join(pp.dir, "volumes")); err != nil {
			return nil, err
		}
		if err := pp.mkdir(dir); err != nil {
			return nil, err
		}
		var files map[string][]byte
		var err error
		switch {
		case v.EmptyDir != nil:
			// emptyDir is world-writable, as the kubelet makes it.
			err = os.Chmod(dir, 0o777)
		case v.Secret != nil:
			files, err = pp.secretFiles(ctx, v.Secret.SecretName, v.Secret.Items, ptr.Deref(v.Secret.Optional, false))
		case v.ConfigMap != nil:
			files, err = pp.configMapFiles(ctx, v.ConfigMap.Name, v.ConfigMap.Items, ptr.Deref(v.ConfigMap.Optional, false))
		case v.DownwardAPI != nil:
			files, err = pp.downwardFiles(v.DownwardAPI.Items)
		case v.Projected != nil:
			files, err = pp.projectedFiles(ctx, v.Projected.Sources)
		case v.PersistentVolumeClaim != nil || v.Ephemeral != nil:
			// The data of a claim outlives the pod: keep it per volume.
			err = os.Chmod(dir, 0o777)
		default:
			pp.recorder.Eventf(pod, corev1.EventTypeWarning, "SimulatedVolume", "huddle-sim: volume %s of this type is an empty directory for processes", v.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
		}
		for name, data := range files {
			path := filepath.Join(dir, name)
			if err := pp.mkdir(filepath.Dir(path)); err != nil {
				return nil, err
			}
			// Replace, never rewrite in place: a reader (the token source,
			// a certificate watcher) must not see half a file.
			tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
			if err := pp.writeFile(tmp, data); err != nil {
				return nil, err
			}
			if err := os.Rename(tmp, path); err != nil {
				return nil, err
			}
		}
		dirs[v.Name] = dir
	}
	return dirs, nil
}

// mountsOf returns the container's mount table, longest path first.
func mountsOf(c *corev1.Container, dirs map[string]string) mountTable {
	var m mountTable
	for _, vm := range c.VolumeMounts {
		host, ok := dirs[vm.Name]
		if !ok {
			continue
		}
		if vm.SubPath != "" {
			host = filepath.Join(host, vm.SubPath)
		}
		m = append(m, mount{path: filepath.Clean(vm.MountPath), host: host})
	}
	sort.Slice(m, func(i, j int) bool { return len(m[i].path) > len(m[j].path) })
	return m
}

func (pp *procPod) secretFiles(ctx context.Context, name string, items []corev1.KeyToPath, optional bool) (map[string][]byte, error) {
	s, err := pp.client.Secrets(pp.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return keyFiles(s.Data, items)
}

func (pp *procPod) configMapFiles(ctx context.Context, name string, items []corev1.KeyToPath, optional bool) (map[string][]byte, error) {
	cm, err := pp.client.ConfigMaps(pp.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("configmap %q: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyFiles(data, items)
}

func keyFiles(data map[string][]byte, items []corev1.KeyToPath) (map[string][]byte, error) {
	if len(items) == 0 {
		return data, nil
	}
	out := map[string][]byte{}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("key %q not found", it.Key)
		}
		out[it.Path] = v
	}
	return out, nil
}

func (pp *procPod) downwardFiles(items []corev1.DownwardAPIVolumeFile) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = pp.fieldValue(it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			v, err = pp.resourceValue(it.ResourceFieldRef)
		}
		if err != nil {
			return nil, err
		}
		out[it.Path] = []byte(v)
	}
	return out, nil
}

// projectedFiles writes the sources of a projected volume; a
// serviceAccountToken source gets a token from the TokenRequest API bound
// to this pod, as the kubelet's token manager asks for it.
func (pp *procPod) projectedFiles(ctx context.Context, sources []corev1.VolumeProjection) (map[string][]byte, error) {
	out := map[string][]byte{}
	add := func(files map[string][]byte, err error) error {
		for k, v := range files {
			out[k] = v
		}
		return err
	}
	for _, s := range sources {
		var err error
		switch {
		case s.ServiceAccountToken != nil:
			var tok string
			tok, err = pp.token(ctx, s.ServiceAccountToken)
			out[s.ServiceAccountToken.Path] = []byte(tok)
		case s.ConfigMap != nil:
			err = add(pp.configMapFiles(ctx, s.ConfigMap.Name, s.ConfigMap.Items, ptr.Deref(s.ConfigMap.Optional, false)))
		case s.Secret != nil:
			err = add(pp.secretFiles(ctx, s.Secret.Name, s.Secret.Items, ptr.Deref(s.Secret.Optional, false)))
		case s.DownwardAPI != nil:
			err = add(pp.downwardFiles(s.DownwardAPI.Items))
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// token asks the TokenRequest API for a token of the pod's service
// account, bound to the pod: it stops working once the pod is deleted.
func (pp *procPod) token(ctx context.Context, src *corev1.ServiceAccountTokenProjection) (string, error) {
	pod := pp.pod
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To(ptr.Deref(src.ExpirationSeconds, defaultTokenSeconds)),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := pp.client.ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token of service account %s: %w", sa, err)
	}
	return tr.Status.Token, nil
}

// writeKubeconfig writes the kubeconfig a process uses in place of
// in-cluster configuration (whose paths are fixed): the API server's URL,
// its CA and the projected token file, which the kubelet renews.
func (pp *procPod) writeKubeconfig(tokenPath string) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["in-cluster"] = &clientcmdapi.Cluster{Server: pp.cfg.Server, CertificateAuthorityData: pp.cfg.CA}
	cfg.AuthInfos["service-account"] = &clientcmdapi.AuthInfo{TokenFile: tokenPath}
	cfg.Contexts["in-cluster"] = &clientcmdapi.Context{Cluster: "in-cluster", AuthInfo: "service-account", Namespace: pp.pod.Namespace}
	cfg.CurrentContext = "in-cluster"
	path := filepath.Join(pp.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", err
	}
	return path, pp.own(path, 0o640)
}

// fieldValue resolves a downward API field path.
func (pp *procPod) fieldValue(path string) (string, error) {
	pod := pp.pod
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return pp.ip, nil
	case "status.hostIP", "status.hostIPs":
		return pp.hostIP, nil
	}
	for _, m := range []struct {
		prefix string
		from   map[string]string
	}{{"metadata.labels['", pod.Labels}, {"metadata.annotations['", pod.Annotations}} {
		if key, ok := strings.CutPrefix(path, m.prefix); ok {
			return m.from[strings.TrimSuffix(key, "']")], nil
		}
	}
	return "", fmt.Errorf("downward API field %q is not supported by huddle-sim", path)
}

// resourceValue resolves a resourceFieldRef (limits.memory → HUDDLE_MEMORY_LIMIT),
// with the kubelet's rule that an unset limit is the node's allocatable.
func (pp *procPod) resourceValue(ref *corev1.ResourceFieldSelector) (string, error) {
	var c *corev1.Container
	for i := range pp.pod.Spec.Containers {
		if pp.pod.Spec.Containers[i].Name == ref.ContainerName || (ref.ContainerName == "" && c == nil) {
			c = &pp.pod.Spec.Containers[i]
		}
	}
	if c == nil {
		return "", fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)
	}
	kind, name, _ := strings.Cut(ref.Resource, ".")
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		q, ok = pp.allocatable[corev1.ResourceName(name)]
	}
	if !ok {
		return "", fmt.Errorf("resourceFieldRef %q is not supported by huddle-sim", ref.Resource)
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if name == string(corev1.ResourceCPU) {
		return strconv.FormatInt((q.MilliValue()+divisor.MilliValue()-1)/divisor.MilliValue(), 10), nil
	}
	return strconv.FormatInt((q.Value()+divisor.Value()-1)/divisor.Value(), 10), nil
}

// envOf resolves a container's environment as the kubelet does: envFrom
// first, then env in order, with $(VAR) references to earlier variables.
func (pp *procPod) envOf(ctx context.Context, c *corev1.Container) ([]string, map[string]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, from := range c.EnvFrom {
		var data map[string][]byte
		var err error
		switch {
		case from.ConfigMapRef != nil:
			data, err = pp.configMapFiles(ctx, from.ConfigMapRef.Name, nil, ptr.Deref(from.ConfigMapRef.Optional, false))
		case from.SecretRef != nil:
			data, err = pp.secretFiles(ctx, from.SecretRef.Name, nil, ptr.Deref(from.SecretRef.Optional, false))
		}
		if err != nil {
			return nil, nil, err
		}
		for k, v := range data {
			set(from.Prefix+k, string(v))
		}
	}
	for _, e := range c.Env {
		v := expand(e.Value, vars)
		if f := e.ValueFrom; f != nil {
			var err error
			switch {
			case f.FieldRef != nil:
				v, err = pp.fieldValue(f.FieldRef.FieldPath)
			case f.ResourceFieldRef != nil:
				v, err = pp.resourceValue(f.ResourceFieldRef)
			case f.SecretKeyRef != nil:
				var data map[string][]byte
				data, err = pp.secretFiles(ctx, f.SecretKeyRef.Name, []corev1.KeyToPath{{Key: f.SecretKeyRef.Key, Path: "v"}}, ptr.Deref(f.SecretKeyRef.Optional, false))
				v = string(data["v"])
			case f.ConfigMapKeyRef != nil:
				var data map[string][]byte
				data, err = pp.configMapFiles(ctx, f.ConfigMapKeyRef.Name, []corev1.KeyToPath{{Key: f.ConfigMapKeyRef.Key, Path: "v"}}, ptr.Deref(f.ConfigMapKeyRef.Optional, false))
				v = string(data["v"])
			}
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
		}
		set(e.Name, v)
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env, vars, nil
}

// expand replaces $(VAR) with vars' values; $$ escapes a $, and an
// unknown reference is left as it is, as Kubernetes does.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// A pod's files belong to root and the pod's group (fsGroup, else
// runAsGroup), readable by that group only, as the kubelet sets volume
// ownership: its processes read them, other users of the machine do not.

func (pp *procPod) own(path string, mode os.FileMode) error {
	if err := os.Chown(path, 0, pp.gid); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

func (pp *procPod) mkdir(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	return pp.own(dir, 0o750)
}

func (pp *procPod) writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o640); err != nil {
		return err
	}
	return pp.own(path, 0o640)
}

// podGroup is the group a pod's files belong to.
func podGroup(pod *corev1.Pod) int {
	if sc := pod.Spec.SecurityContext; sc != nil {
		if sc.FSGroup != nil {
			return int(*sc.FSGroup)
		}
		if sc.RunAsGroup != nil {
			return int(*sc.RunAsGroup)
		}
	}
	return 0
}
