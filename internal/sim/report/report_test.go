package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func sample() *Report {
	return &Report{
		SchemaVersion: SchemaVersion, Timing: "fast", Huddle: true, WaitEnded: Timeout,
		Pending: []string{"pod web-2: replacement (Unschedulable since 10:00:00, unschedulable deadline 5m0s), due in 1m0s"},
		Refused: []string{"app.yaml:3: Service default/bad: spec.ports: Required value (Invalid)"},
		Nodes: []Node{{Name: "n1", Zone: "us-east-1a", InstanceType: "m5.xlarge",
			Allocatable: Amount{CPU: "3920m", Memory: "14Gi", Pods: 58}, Requested: Amount{CPU: "200m", Memory: "128Mi", Pods: 2}}},
		Claims: []Claim{{
			Namespace: "sentry", Name: "sentry-data", Volume: "pvc-1", AttachedTo: []string{"n1"},
			Huddle: &HuddleStatus{Phase: "Split", Home: "n1", Members: 2, Ready: 1, Conditions: []Condition{{Type: "Huddled", Status: "False", Reason: "Split"}}},
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
	for _, k := range []string{"schemaVersion", "timing", "huddle", "waitEnded", "pending", "refused", "nodes", "claims", "pods", "eventCounts", "allRunning", "settledAfterSeconds"} {
		if _, ok := m[k]; !ok {
			t.Errorf("top-level key %q missing", k)
		}
	}
	claim := m["claims"].([]any)[0].(map[string]any)
	for _, k := range []string{"namespace", "name", "volume", "attachedTo", "pods", "huddle"} {
		if _, ok := claim[k]; !ok {
			t.Errorf("claims[] key %q missing", k)
		}
	}
	if m["schemaVersion"] != float64(SchemaVersion) || m["waitEnded"] != "timeout" || m["timing"] != "fast" {
		t.Errorf("schemaVersion %v, waitEnded %v, timing %v: want %d, timeout, fast", m["schemaVersion"], m["waitEnded"], m["timing"], SchemaVersion)
	}
	node := m["nodes"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "zone", "instanceType", "allocatable", "requested"} {
		if _, ok := node[k]; !ok {
			t.Errorf("nodes[] key %q missing", k)
		}
	}
	alloc := node["allocatable"].(map[string]any)
	if alloc["cpu"] != "3920m" || alloc["pods"] != float64(58) {
		t.Errorf("nodes[].allocatable %v, want cpu 3920m and 58 pods", alloc)
	}
	hud := claim["huddle"].(map[string]any)
	for _, k := range []string{"phase", "home", "members", "ready", "conditions"} {
		if _, ok := hud[k]; !ok {
			t.Errorf("claims[].huddle key %q missing", k)
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
		"NOT all pods are running: 1 pods that mount a claim and 1 other pods are stuck (still changing or awaiting huddle when the wait timed out after 3.5s)",
		"REFUSED (not applied)\n  app.yaml:3: Service default/bad",
		"STILL DUE FROM HUDDLE when the wait ended\n  pod web-2: replacement",
		"n1    us-east-1a  m5.xlarge  200m / 3920m  128Mi / 14336Mi  2 / 58",
		"1 object(s) were refused by the API server",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("table lacks %q:\n%s", w, out)
		}
	}
}

// TestWorkload: the side-by-side names workloads, not pods: a
// Deployment's generated suffixes go, a StatefulSet's ordinal stays.
func TestWorkload(t *testing.T) {
	for name, want := range map[string]string{
		"sentry-web-7c9fd6b5c4-x2bqz":      "sentry-web",
		"sentry-ingest-consumer-65fd44558": "sentry-ingest-consumer-65fd44558", // no pod suffix: kept
		"pg-db-0":                          "pg-db-0",
		"migrate-k8x4z":                    "migrate",
		"web":                              "web",
	} {
		if got := workload(name); got != want {
			t.Errorf("workload(%q) = %q, want %q", name, got, want)
		}
	}
}
