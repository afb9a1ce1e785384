package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func sample() *Report {
	return &Report{
		Claims: []Claim{{
			Namespace: "sentry", Name: "sentry-data", Volume: "pvc-1", AttachedTo: []string{"n1"},
			Pods: []ClaimPod{
				{Name: "web-1", Node: "n1", Phase: "Running", Status: "Running", Ready: true},
				{Name: "web-2", Node: "n2", Phase: "Pending", Status: "ContainerCreating", Reason: `FailedAttachVolume: Multi-Attach error for volume "pvc-1" Volume is already used by pod(s) web-1`},
			},
		}},
		Pods:                []Pod{{Namespace: "sentry", Name: "big", Phase: "Pending", Status: "Pending", Reason: "FailedScheduling: 0/3 nodes are available"}},
		EventCounts:         map[string]int{"FailedAttachVolume": 1, "Scheduled": 2},
		SettledAfterSeconds: 3.5,
	}
}

// TestJSONKeys pins the report's JSON interface.
func TestJSONKeys(t *testing.T) {
	var b bytes.Buffer
	if err := sample().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"claims", "pods", "eventCounts", "allRunning", "settledAfterSeconds"} {
		if _, ok := m[k]; !ok {
			t.Errorf("top-level key %q missing", k)
		}
	}
	claim := m["claims"].([]any)[0].(map[string]any)
	for _, k := range []string{"namespace", "name", "volume", "attachedTo", "pods"} {
		if _, ok := claim[k]; !ok {
			t.Errorf("claims[] key %q missing", k)
		}
	}
	pod := claim["pods"].([]any)[1].(map[string]any)
	for _, k := range []string{"name", "node", "phase", "ready", "reason"} {
		if _, ok := pod[k]; !ok {
			t.Errorf("claims[].pods[] key %q missing", k)
		}
	}
	other := m["pods"].([]any)[0].(map[string]any)
	for _, k := range []string{"namespace", "name", "node", "phase", "ready", "reason"} {
		if _, ok := other[k]; !ok {
			t.Errorf("pods[] key %q missing", k)
		}
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	if err := sample().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, w := range []string{
		"CLAIM sentry/sentry-data  volume pvc-1  attached to n1",
		"Multi-Attach error for volume",
		"OTHER PODS NOT RUNNING",
		"Events: FailedAttachVolume=1 Scheduled=2",
		"NOT all pods are running: 1 pods that mount a claim and 1 other pods are stuck",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("table lacks %q:\n%s", w, out)
		}
	}
}
