package manifest

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// PersistentVolumes returns the PersistentVolume objects among objs:
// static volumes, whose disks must exist before they are applied.
func PersistentVolumes(objs []Object) ([]*corev1.PersistentVolume, error) {
	var out []*corev1.PersistentVolume
	for _, o := range objs {
		if o.GetKind() != "PersistentVolume" || o.GroupVersionKind().Group != "" {
			continue
		}
		pv := &corev1.PersistentVolume{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, pv); err != nil {
			return nil, fmt.Errorf("%s: PersistentVolume %s: %w", o.Source, o.GetName(), err)
		}
		out = append(out, pv)
	}
	return out, nil
}
