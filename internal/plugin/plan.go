package plugin

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/huddle-io/huddle/internal/controller"
	"github.com/huddle-io/huddle/internal/instancetype"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
)

// assumedProvisioner is the provisioner plan assumes for a claim whose
// StorageClass is not in the manifests: EKS's EBS CSI driver.
const assumedProvisioner = "ebs.csi.aws.com"

// Target is what plan compares each huddle's demand with: one node of an
// instance type (Type), or the nodes of a cluster as they are now (Nodes).
type Target struct {
	// Name describes it ("m5.xlarge (allocatable ...)", "cluster nodes").
	Name  string
	Type  *instancetype.Type
	Nodes placement.Nodes
}

// nodeList is a fixed set of nodes.
type nodeList []*placement.Node

func (l nodeList) Get(name string) *placement.Node {
	for _, n := range l {
		if n.Name == name {
			return n
		}
	}
	return nil
}
func (l nodeList) Len() int                 { return len(l) }
func (l nodeList) At(i int) *placement.Node { return l[i] }

// typeNode is one node of t running only what every EKS node runs (the
// add-ons' DaemonSets, instancetype.EKSAddOns) and what taken takes on
// every node (the manifests' DaemonSets).
func typeNode(t instancetype.Type, taken placement.Resources) nodeList {
	return nodeList{{Name: t.Name, Ready: true, Allocatable: placement.FromList(t.Allocatable()), Requested: taken.Add(placement.FromList(instancetype.EKSAddOns()))}}
}

// Report is plan's result; -o json and -o yaml print it.
type Report struct {
	File    string   `json:"file"`
	Target  string   `json:"target"`
	Huddles []Huddle `json:"huddles"`
	// NotShared are claims mounted by one pod, or whose volume is not
	// huddle's concern (ReadWriteMany, ReadWriteOncePod...).
	NotShared []Note `json:"notShared,omitempty"`
	// PerPod are claims every pod has its own of (volumeClaimTemplates,
	// generic ephemeral volumes).
	PerPod []Note `json:"perPod,omitempty"`
	// NotHuddleable are workloads huddle cannot keep on one node.
	NotHuddleable []Note `json:"notHuddleable,omitempty"`
	Prices        Prices `json:"prices"`
}

// Huddle is one shared claim's plan.
type Huddle struct {
	Claim   string   `json:"claim"`
	Size    string   `json:"size,omitempty"`
	Members []Member `json:"members"`
	// Pods is how many pods mount the claim when every workload runs its
	// replicas; PodsAtOnce counts the rolling-update surge too.
	Pods       int64  `json:"pods"`
	PodsAtOnce int64  `json:"podsAtOnce"`
	Demand     string `json:"demand"`
	Fits       bool   `json:"fits"`
	// Shortfall says what is missing when it does not fit.
	Shortfall string `json:"shortfall,omitempty"`
	// FitsOn are the smallest instance types of each family whose one
	// node holds the whole demand.
	FitsOn []string `json:"fitsOn"`
	// TypesThatFit are all the instance types that fit (-o wide).
	TypesThatFit []string `json:"typesThatFit"`
	Storage      []Option `json:"storage"`
	Notes        []string `json:"notes,omitempty"`
}

// Member is a workload that mounts a shared claim.
type Member struct {
	Workload string `json:"workload"`
	// Pods is what it may run at once (replicas plus surge, parallelism).
	Pods   int64  `json:"pods"`
	PerPod string `json:"perPod"`
}

// Option is one way to store a claim's data.
type Option struct {
	Name     string  `json:"name"`
	Access   string  `json:"access"`
	Monthly  float64 `json:"monthlyUSD"`
	TradeOff string  `json:"tradeOff"`
}

// Note is a claim or workload and what plan says of it.
type Note struct {
	Name string `json:"name"`
	Why  string `json:"why"`
}

// workload is a pod-making object of the manifest.
type workload struct {
	key, namespace string
	// obj is what controller.OwnerFor counts (nil for a bare pod).
	obj      any
	template *corev1.PodTemplateSpec
	// pods it runs when settled (replicas, parallelism, 1).
	pods      int64
	daemonSet bool
	// perPod are its volumeClaimTemplates.
	perPod []corev1.PersistentVolumeClaim
}

// Plan finds the claims the manifest's pods share and plans each huddle
// against target, and finds the smallest instance types of each family
// that fit it.
func Plan(m *Manifest, target Target, prices Prices) *Report {
	r := &Report{File: m.Path, Target: target.Name, Prices: prices, Huddles: []Huddle{}}
	claims := map[string]*corev1.PersistentVolumeClaim{}
	classes := map[string]*storagev1.StorageClass{}
	var defaultClass *storagev1.StorageClass
	var loads []*workload
	var daemonRequests placement.Resources
	for _, o := range m.Objects {
		switch v := o.(type) {
		case *corev1.PersistentVolumeClaim:
			claims[key(v.Namespace, v.Name)] = v
		case *storagev1.StorageClass:
			classes[v.Name] = v
			if v.Annotations["storageclass.kubernetes.io/is-default-class"] == "true" {
				defaultClass = v
			}
		default:
			if w := asWorkload(o); w != nil {
				loads = append(loads, w)
				if w.daemonSet {
					daemonRequests = daemonRequests.Add(controller.TemplateRequests(w.template))
				}
			}
		}
	}
	// Which workloads mount which claim.
	mounts := map[string][]*workload{}
	var order []string
	for _, w := range loads {
		for _, v := range w.template.Spec.Volumes {
			switch {
			case v.PersistentVolumeClaim != nil:
				k := key(w.namespace, v.PersistentVolumeClaim.ClaimName)
				if _, seen := mounts[k]; !seen {
					order = append(order, k)
				}
				mounts[k] = append(mounts[k], w)
			case v.Ephemeral != nil:
				r.PerPod = append(r.PerPod, Note{Name: w.key + " volume " + v.Name,
					Why: "a generic ephemeral volume: every pod gets a claim of its own, not shared"})
			}
		}
		for _, c := range w.perPod {
			r.PerPod = append(r.PerPod, Note{Name: fmt.Sprintf("%s volumeClaimTemplate %s (%s %s)", w.key, c.Name, size(&c), modes(&c)),
				Why: fmt.Sprintf("one claim per pod (%d), each mounted by its own pod only: not shared; huddle keeps each pod on its own volume's node through rollouts", w.pods)})
		}
		if w.daemonSet && mountsAClaim(w.template) {
			r.NotHuddleable = append(r.NotHuddleable, Note{Name: w.key,
				Why: "a DaemonSet runs a pod on every node, so its pods cannot all share a ReadWriteOnce volume's node: only the one on that node would start. Give it ReadWriteMany storage (EFS) or drop the mount"})
		}
	}
	for k := range claims {
		if _, ok := mounts[k]; !ok {
			r.NotShared = append(r.NotShared, Note{Name: k, Why: "no workload in the manifests mounts it"})
		}
	}
	for _, k := range order {
		pvc := claims[k]
		var notes []string
		if pvc == nil {
			ns, name, _ := strings.Cut(k, "/")
			if name == "" {
				ns, name = "", k
			}
			pvc = &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}}}
			notes = append(notes, "the claim is not in the manifests: assumed ReadWriteOnce on EBS, size unknown")
		}
		class := defaultClass
		if n := pvc.Spec.StorageClassName; n != nil && *n != "" {
			class = classes[*n]
		}
		if class == nil {
			class = &storagev1.StorageClass{Provisioner: assumedProvisioner}
			if claims[k] != nil {
				notes = append(notes, "its StorageClass is not in the manifests: assumed EBS ("+assumedProvisioner+"), as EKS's default gp2/gp3 classes are")
			}
		}
		var members []*workload
		var pods int64
		for _, w := range mounts[k] {
			if !w.daemonSet {
				members = append(members, w)
				pods += w.pods
			}
		}
		if shared, why := scope.Shared(scope.Volume{Claim: pvc, Class: class}); !shared {
			r.NotShared = append(r.NotShared, Note{Name: k + " (" + modes(pvc) + ")", Why: "not huddled: " + why})
			continue
		}
		if pods < 2 {
			why := "mounted by no pod: not shared"
			if len(members) == 1 {
				why = "mounted by one pod (" + members[0].key + "): not shared"
				if strings.HasPrefix(members[0].key, "Deployment/") || strings.HasPrefix(members[0].key, "StatefulSet/") {
					why += "; huddle still pins its rolling-update replacement to the volume's node"
				}
			}
			r.NotShared = append(r.NotShared, Note{Name: k + " (" + modes(pvc) + ")", Why: why})
			continue
		}
		nodes := target.Nodes
		if target.Type != nil {
			nodes = typeNode(*target.Type, daemonRequests)
		}
		h := plan(k, pvc, members, nodes, daemonRequests, prices)
		h.Pods = pods
		h.Notes = append(notes, h.Notes...)
		r.Huddles = append(r.Huddles, h)
	}
	sortNotes(r.NotShared)
	return r
}

// plan computes one huddle's demand with placement.Demand, as the
// controller does: each workload's pods at once times one pod's requests
// (controller.OwnerFor), a bare pod's own requests.
func plan(k string, pvc *corev1.PersistentVolumeClaim, members []*workload, nodes placement.Nodes, daemons placement.Resources, prices Prices) Huddle {
	name := pvc.Name
	c := placement.Claim{Key: k, Shared: true, Owners: map[string]placement.Owner{}}
	h := Huddle{Claim: k, Size: size(pvc)}
	for _, w := range members {
		m := placement.Member{Name: w.key}
		if w.obj == nil {
			m.Requests = controller.TemplateRequests(w.template)
			h.Members = append(h.Members, Member{Workload: w.key, Pods: 1, PerPod: formatResources(m.Requests)})
		} else {
			_, owner, _ := controller.OwnerFor(w.obj, name)
			m.Owner, m.Requests = w.key, owner.PerPod
			c.Owners[w.key] = owner
			h.Members = append(h.Members, Member{Workload: w.key, Pods: max(owner.MaxPods, 1), PerPod: formatResources(owner.PerPod)})
		}
		c.Members = append(c.Members, m)
	}
	demand := placement.Demand([]*placement.Claim{&c})
	h.PodsAtOnce = demand.Pods
	h.Demand = formatResources(demand)
	a := placement.Assess(&c, nodes, 0)
	h.Fits, h.Shortfall = a.Fits, a.Shortfall
	if !daemons.Equal(placement.Resources{}) {
		h.Notes = append(h.Notes, "each node also runs the manifests' DaemonSets ("+formatResources(daemons)+"), counted as taken")
	}
	h.FitsOn, h.TypesThatFit = []string{}, []string{}
	family := map[string]bool{}
	for _, name := range instancetype.Names() {
		t, _ := instancetype.Lookup(name)
		f, _, _ := strings.Cut(name, ".")
		if !placement.Assess(&c, typeNode(t, daemons), 0).Fits {
			continue
		}
		h.TypesThatFit = append(h.TypesThatFit, name)
		if !family[f] {
			family[f] = true
			h.FitsOn = append(h.FitsOn, name)
		}
	}
	h.Storage = storage(pvc, prices)
	return h
}

// storage lists where the claim's data could live, with the monthly price
// of its size.
func storage(pvc *corev1.PersistentVolumeClaim, p Prices) []Option {
	gb := 0.0
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; ok {
		gb = float64(q.Value()) / (1 << 30)
	}
	opt := func(name, price, access, why string) Option {
		return Option{Name: name, Access: access, Monthly: gb * p.GBMonth[price], TradeOff: why}
	}
	return []Option{
		opt("EBS gp3 + huddle", PriceEBSGP3, "RWO", "all members on one node in one zone; lowest price, local-disk latency, 3000 IOPS and 125 MB/s included; the huddle must fit one node, and a lost node or zone stops it until the volume attaches elsewhere"),
		opt("EFS Standard", PriceEFSStandard, "RWX", "any node in any zone, survives a zone; NFS latency, bills the bytes stored (not the claim's size) plus Elastic Throughput per GB read and written"),
		opt("EFS One Zone", PriceEFSOneZone, "RWX", "any node in one zone; about half Standard's price, no multi-AZ durability"),
		opt("EFS Standard-IA", PriceEFSStandardIA, "RWX", "for data read rarely (lifecycle policy moves files there); every read billed per GB, first-byte latency in tens of ms"),
		opt("EFS One Zone-IA", PriceEFSOneZoneIA, "RWX", "One Zone's trade-offs with Infrequent Access's"),
	}
}

// asWorkload is o as a pod-making workload, nil if it is not one.
func asWorkload(o any) *workload {
	n := func(r *int32, d int32) int64 {
		if r == nil {
			return int64(d)
		}
		return int64(*r)
	}
	switch v := o.(type) {
	case *appsv1.Deployment:
		return &workload{key: "Deployment/" + v.Name, namespace: v.Namespace, obj: v, template: &v.Spec.Template, pods: n(v.Spec.Replicas, 1)}
	case *appsv1.ReplicaSet:
		return &workload{key: "ReplicaSet/" + v.Name, namespace: v.Namespace, obj: v, template: &v.Spec.Template, pods: n(v.Spec.Replicas, 1)}
	case *appsv1.StatefulSet:
		return &workload{key: "StatefulSet/" + v.Name, namespace: v.Namespace, obj: v, template: &v.Spec.Template, pods: n(v.Spec.Replicas, 1), perPod: v.Spec.VolumeClaimTemplates}
	case *batchv1.Job:
		return &workload{key: "Job/" + v.Name, namespace: v.Namespace, obj: v, template: &v.Spec.Template, pods: n(v.Spec.Parallelism, 1)}
	case *batchv1.CronJob:
		// Each run is a Job; the controller counts the running one.
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: v.Name, Namespace: v.Namespace}, Spec: v.Spec.JobTemplate.Spec}
		return &workload{key: "CronJob/" + v.Name, namespace: v.Namespace, obj: j, template: &j.Spec.Template, pods: n(j.Spec.Parallelism, 1)}
	case *appsv1.DaemonSet:
		return &workload{key: "DaemonSet/" + v.Name, namespace: v.Namespace, template: &v.Spec.Template, daemonSet: true}
	case *corev1.Pod:
		return &workload{key: "Pod/" + v.Name, namespace: v.Namespace, template: &corev1.PodTemplateSpec{ObjectMeta: v.ObjectMeta, Spec: v.Spec}, pods: 1}
	}
	return nil
}

func mountsAClaim(t *corev1.PodTemplateSpec) bool {
	return slices.ContainsFunc(t.Spec.Volumes, func(v corev1.Volume) bool { return v.PersistentVolumeClaim != nil })
}

// key is namespace/name, or name for an object that names no namespace
// (helm template leaves it to the install).
func key(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

func size(pvc *corev1.PersistentVolumeClaim) string {
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; ok {
		return q.String()
	}
	return ""
}

func modes(pvc *corev1.PersistentVolumeClaim) string {
	var s []string
	for _, m := range pvc.Spec.AccessModes {
		s = append(s, string(m))
	}
	if len(s) == 0 {
		return "no access mode"
	}
	return strings.Join(s, ",")
}

// formatResources writes r as a user reads it: "2350m CPU, 7.5Gi memory,
// 8 pods".
func formatResources(r placement.Resources) string {
	out := fmt.Sprintf("%s CPU, %s memory, %s",
		resource.NewMilliQuantity(r.MilliCPU, resource.DecimalSI), memory(r.Memory), plural(r.Pods, "pod"))
	names := make([]string, 0, len(r.Scalar))
	for k := range r.Scalar {
		names = append(names, string(k))
	}
	sort.Strings(names)
	for _, k := range names {
		out += fmt.Sprintf(", %s %s", resource.NewQuantity(r.Scalar[corev1.ResourceName(k)], resource.DecimalSI), k)
	}
	return out
}

// memory is bytes in Mi or Gi, rounded to a tenth of a Gi when it is not
// a whole number of Mi (a node's allocatable).
func memory(b int64) string {
	if b%(1<<20) == 0 {
		return resource.NewQuantity(b, resource.BinarySI).String()
	}
	return fmt.Sprintf("%.1fGi", float64(b)/(1<<30))
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func sortNotes(n []Note) { sort.Slice(n, func(i, j int) bool { return n[i].Name < n[j].Name }) }
