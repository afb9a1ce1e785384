package controller

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/huddle-io/huddle/internal/placement"
)

// BenchmarkCacheMemory measures the heap an informer store retains for
// realistic pods and nodes (realisticPod, realisticNode), each decoded
// from its own JSON as an informer decodes it from the wire, under the
// transform huddle used before (managedFields stripped) and the trims.
// The pods come from 250 templates that request different CPU, 20 pods
// each, so the trim's shared requests (see shared) are shared as in a
// cluster of ReplicaSets, not once by every pod; the members are in
// huddles of 10 on 500 nodes, each pinned to its home with its own
// claim, and the other pods spread over the nodes. It reports the
// bytes retained per object and, scaled, the MiB at 20,000 pods and
// 2,000 nodes:
//
//	go test -run '^$' -bench CacheMemory -benchtime 1x ./internal/controller/
func BenchmarkCacheMemory(b *testing.B) {
	const pods, nodes, templates, groupSize = 5000, 500, 250, 10
	// fromTemplate gives p the CPU request of the i-th pod's template.
	fromTemplate := func(p *corev1.Pod, i int) *corev1.Pod {
		p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(100+i%templates), resource.DecimalSI)
		return p
	}
	pod := realisticPod("web-0", "n1", "data", false)
	pod.ManagedFields[0].FieldsV1.Raw = must(json.Marshal(map[string]any{"f:spec": map[string]any{"f:containers": map[string]any{}, "f:volumes": map[string]any{}}}))
	// The same pod without its claim: no huddle's member, like most pods.
	plain := pod.DeepCopy()
	plain.Spec.Volumes = slices.DeleteFunc(plain.Spec.Volumes, func(v corev1.Volume) bool { return v.PersistentVolumeClaim != nil })
	node := realisticNode("n1")
	owner := realisticOwners("data")[1]
	for _, tc := range []struct {
		name      string
		transform toolscache.TransformFunc
	}{
		{"strip-managed-fields", cache.TransformStripManagedFields()},
		{"trim", nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				podBytes := retained(b, pods, func(i int) any {
					p := fromTemplate(decode[corev1.Pod](b, pod, fmt.Sprintf("web-%d", i)), i)
					return transformed(b, tc.transform, TrimPod, inHuddle(p, i/groupSize, nodes))
				})
				// Each in a huddle of its own (a StatefulSet's pods,
				// each with its claim): nothing of the claim to share.
				aloneBytes := retained(b, pods, func(i int) any {
					p := fromTemplate(decode[corev1.Pod](b, pod, fmt.Sprintf("db-%d", i)), i)
					return transformed(b, tc.transform, TrimPod, inHuddle(p, i, nodes))
				})
				nodeBytes := retained(b, nodes, func(i int) any {
					n := decode[corev1.Node](b, node, fmt.Sprintf("n%d", i))
					return transformed(b, tc.transform, TrimNode, n)
				})
				plainBytes := retained(b, pods, func(i int) any {
					p := fromTemplate(decode[corev1.Pod](b, plain, fmt.Sprintf("plain-%d", i)), i)
					p.Spec.NodeName = fmt.Sprintf("n%d", i%nodes)
					return transformed(b, tc.transform, TrimPod, p)
				})
				// A ReplicaSet per template (a Deployment keeps up to 10
				// old ones too): what the owners of the pods cost.
				rsBytes := retained(b, templates, func(i int) any {
					rs := decode[appsv1.ReplicaSet](b, owner, fmt.Sprintf("web-%d", i))
					rs.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(100+i), resource.DecimalSI)
					return transformed(b, tc.transform, TrimWorkload, rs)
				})
				b.ReportMetric(podBytes, "B/pod")
				b.ReportMetric(aloneBytes, "B/pod-alone")
				b.ReportMetric(plainBytes, "B/plain-pod")
				b.ReportMetric(nodeBytes, "B/node")
				b.ReportMetric(rsBytes, "B/replicaset")
				// The scale benchmark's mix: 5,000 of 20,000 pods in huddles.
				b.ReportMetric((5000*podBytes+15000*plainBytes+2000*nodeBytes)/(1<<20), "MiB@20k-pods-5k-members-2k-nodes")
			}
		})
	}
}

// inHuddle makes p, a realisticPod, a member of the group-th huddle of
// groupSize pods: on its home, one of nodes, pinned there, mounting the
// huddle's claim. The strings are new, as each pod decoded from the wire
// has its own.
func inHuddle(p *corev1.Pod, group, nodes int) *corev1.Pod {
	home, claim := fmt.Sprintf("n%d", group%nodes), fmt.Sprintf("data-%d", group)
	p.Spec.NodeName = home
	p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchFields[0].Values = []string{fmt.Sprintf("n%d", group%nodes)}
	p.Annotations[placement.AnnotationPinnedBy] = "claim " + p.Namespace + "/" + claim + " home " + home
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			v.PersistentVolumeClaim.ClaimName = claim
		}
	}
	return p
}

// decode returns a fresh copy of obj named name, decoded from JSON so
// that it shares no memory with another.
func decode[T any, P interface {
	*T
	SetName(string)
	SetUID(types.UID)
}](b *testing.B, obj any, name string) P {
	raw := must(json.Marshal(obj))
	var out P = new(T)
	if err := json.Unmarshal(raw, out); err != nil {
		b.Fatal(err)
	}
	out.SetName(name)
	out.SetUID(types.UID("uid-" + name))
	return out
}

func transformed(b *testing.B, old toolscache.TransformFunc, trim func(any) (any, error), obj any) any {
	t := trim
	if old != nil {
		t = old
	}
	out, err := t(obj)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// retained is the heap, per object, that a store of n objects made by
// make keeps after a collection.
func retained(b *testing.B, n int, make func(int) any) float64 {
	b.Helper()
	store := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	var before, after runtime.MemStats
	// Twice, a moment apart: cleanups of what the last store held
	// (shared's entries) run after the first collection and
	// free more.
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		if err := store.Add(make(i)); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(store)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}
