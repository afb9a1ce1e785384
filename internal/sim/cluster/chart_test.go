package cluster

import (
	"reflect"
	"testing"
)

func TestMergeValues(t *testing.T) {
	base := map[string]any{"mode": "cluster", "kubeAPI": map[string]any{"qps": 100, "burst": 200}, "failover": true}
	got := mergeValues(base, map[string]any{"kubeAPI": map[string]any{"qps": 50}, "failover": nil, "workers": 2})
	want := map[string]any{"mode": "cluster", "kubeAPI": map[string]any{"qps": 50, "burst": 200}, "workers": 2}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged %v, want %v (nil removes a key, maps merge)", got, want)
	}
	if base["failover"] != true || base["kubeAPI"].(map[string]any)["qps"] != 100 {
		t.Errorf("the base changed: %v", base)
	}
}
