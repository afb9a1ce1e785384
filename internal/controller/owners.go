package controller

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// DefaultRecreatingOwners are the controllers known to recreate a pod
// that is evicted or deleted. "Has a controller" is not enough: a
// DaemonSet's pod belongs to its node, a Job counts an evicted pod against
// its backoffLimit, and pipeline and batch operators (Tekton, Argo
// Workflows, Spark) fail the run instead of recreating the pod.
var DefaultRecreatingOwners = []string{"apps/ReplicaSet", "apps/StatefulSet"}

// RecreatingOwners is the set of owner group/kinds whose pods huddle may
// evict: the defaults plus extra ("group/Kind", e.g.
// "apps.kruise.io/CloneSet"; a core kind is written "Kind").
func RecreatingOwners(extra []string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, k := range append(append([]string{}, DefaultRecreatingOwners...), extra...) {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		group, kind, found := strings.Cut(k, "/")
		if !found {
			group, kind = "", k
		}
		if kind == "" || strings.ContainsAny(kind, "/.") || strings.ContainsAny(group, " ") || kind[0] < 'A' || kind[0] > 'Z' {
			return nil, fmt.Errorf("recreating owner %q: want group/Kind, e.g. apps.kruise.io/CloneSet", k)
		}
		set[groupKind(group, kind)] = true
	}
	return set, nil
}

// ownerKind is the group/kind of the pod's controller in the form
// RecreatingOwners keys ("apps/ReplicaSet"; "" for a bare pod).
func ownerKind(p *corev1.Pod) string {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return ""
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return ref.Kind
	}
	return groupKind(gv.Group, ref.Kind)
}

func groupKind(group, kind string) string {
	if group == "" {
		return kind
	}
	return group + "/" + kind
}
