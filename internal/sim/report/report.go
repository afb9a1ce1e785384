// Package report builds huddle-sim's placement report: for every claim,
// its volume, where the volume is attached and every pod that mounts it;
// every other pod that is not running; and why each stuck pod is stuck, in
// the words of the component that stopped it (the attach/detach
// controller's Multi-Attach error, the scheduler's FailedScheduling, the
// kubelet's OutOfcpu).
package report

import (
	"context"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// SchemaVersion is the version of the report's JSON form. Version 2 added
// schemaVersion, timing, huddle, waitEnded, pending, refused, skipped,
// nodes and each claim's huddle; version 1's keys are unchanged.
const SchemaVersion = 2

// Report is the placement report. Its JSON form is part of huddle-sim's
// interface; keep the keys stable, and bump SchemaVersion when adding.
type Report struct {
	SchemaVersion int `json:"schemaVersion"`
	// Timing is the timing profile the cluster ran with (eks, fast).
	Timing string `json:"timing"`
	// Huddle says whether huddle was installed.
	Huddle bool `json:"huddle"`
	// WaitEnded says how the wait for the pods ended: allRunning, quiet
	// (nothing changed for the settle period) or timeout.
	WaitEnded Outcome `json:"waitEnded"`
	// Pending lists what huddle still had due when the wait ended (a
	// replacement, a move), each with when it is due.
	Pending []string `json:"pending,omitempty"`
	// Refused lists the objects the API server refused (and Helm hooks
	// that did not succeed); Skipped those not applied by choice.
	Refused []string `json:"refused,omitempty"`
	Skipped []string `json:"skipped,omitempty"`
	// Warnings are what the user should know that stopped nothing, such
	// as a webhook configuration whose Service nothing serves.
	Warnings            []string       `json:"warnings,omitempty"`
	Nodes               []Node         `json:"nodes"`
	Claims              []Claim        `json:"claims"`
	Pods                []Pod          `json:"pods"`
	EventCounts         map[string]int `json:"eventCounts"`
	AllRunning          bool           `json:"allRunning"`
	SettledAfterSeconds float64        `json:"settledAfterSeconds"`
}

// Node is one node of the cluster and how full it is.
type Node struct {
	Name         string `json:"name"`
	Zone         string `json:"zone"`
	InstanceType string `json:"instanceType"`
	Allocatable  Amount `json:"allocatable"`
	// Requested sums the requests of the pods bound to it that have not
	// ended, as the scheduler counts them.
	Requested Amount `json:"requested"`
}

// Amount is an amount of the resources the scheduler counts on a node.
type Amount struct {
	CPU    string `json:"cpu"`
	Memory string `json:"memory"`
	Pods   int64  `json:"pods"`
}

// HuddleStatus is what the claim's Huddle object says, with huddle
// installed.
type HuddleStatus struct {
	Phase      string      `json:"phase"`
	Home       string      `json:"home,omitempty"`
	Members    int32       `json:"members"`
	Ready      int32       `json:"ready"`
	Conditions []Condition `json:"conditions,omitempty"`
	LastMove   string      `json:"lastMove,omitempty"`
}

// Condition is one condition of a Huddle.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// Claim is one PersistentVolumeClaim and the pods that mount it.
type Claim struct {
	Namespace  string     `json:"namespace"`
	Name       string     `json:"name"`
	Volume     string     `json:"volume"`
	AttachedTo []string   `json:"attachedTo"`
	Pods       []ClaimPod `json:"pods"`
	// Huddle is the claim's Huddle status, when huddle made one.
	Huddle *HuddleStatus `json:"huddle,omitempty"`
}

// ClaimPod is a pod that mounts a claim.
type ClaimPod struct {
	Name  string `json:"name"`
	Node  string `json:"node"`
	Phase string `json:"phase"`
	// Status is what kubectl's STATUS column shows (ContainerCreating,
	// Terminating, Completed, ...).
	Status string `json:"status"`
	Ready  bool   `json:"ready"`
	Reason string `json:"reason"`
}

// Pod is a pod that mounts no claim and is not running.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Node      string `json:"node"`
	Phase     string `json:"phase"`
	Status    string `json:"status"`
	Ready     bool   `json:"ready"`
	Reason    string `json:"reason"`
}

// Gather reads the report for the given namespaces: the nodes, the claims
// and pods, and with huddles (nil: huddle not installed) their Huddles.
func Gather(ctx context.Context, client kubernetes.Interface, huddles dynamic.Interface, namespaces []string) (*Report, error) {
	r := &Report{SchemaVersion: SchemaVersion, Huddle: huddles != nil, EventCounts: map[string]int{}, AllRunning: true, Claims: []Claim{}, Pods: []Pod{}}
	nodes, err := gatherNodes(ctx, client)
	if err != nil {
		return nil, err
	}
	r.Nodes = nodes
	statuses := map[string]*HuddleStatus{}
	if huddles != nil {
		if statuses, err = gatherHuddles(ctx, huddles, namespaces); err != nil {
			return nil, err
		}
	}
	vas, err := client.StorageV1().VolumeAttachments().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	attached := map[string][]string{} // PV name -> nodes
	for _, va := range vas.Items {
		if va.Status.Attached && va.Spec.Source.PersistentVolumeName != nil {
			pv := *va.Spec.Source.PersistentVolumeName
			attached[pv] = append(attached[pv], va.Spec.NodeName)
		}
	}
	for _, ns := range namespaces {
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		claims, err := client.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		events, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		warnings := latestWarnings(events.Items)
		for _, ev := range events.Items {
			r.EventCounts[ev.Reason] += max(int(ev.Count), 1)
		}
		mounted := map[string]bool{}
		byClaim := map[string][]ClaimPod{}
		sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
		for i := range pods.Items {
			p := &pods.Items[i]
			if !OK(p) {
				r.AllRunning = false
			}
			reason := Reason(p, warnings[p.Name])
			for _, c := range ClaimNames(p) {
				mounted[p.Name] = true
				byClaim[c] = append(byClaim[c], ClaimPod{Name: p.Name, Node: p.Spec.NodeName, Phase: string(p.Status.Phase), Status: displayStatus(p), Ready: ready(p), Reason: reason})
			}
			if !mounted[p.Name] && !OK(p) {
				r.Pods = append(r.Pods, Pod{Namespace: ns, Name: p.Name, Node: p.Spec.NodeName, Phase: string(p.Status.Phase), Status: displayStatus(p), Ready: ready(p), Reason: reason})
			}
		}
		sort.Slice(claims.Items, func(i, j int) bool { return claims.Items[i].Name < claims.Items[j].Name })
		for _, c := range claims.Items {
			nodes := append([]string{}, attached[c.Spec.VolumeName]...)
			sort.Strings(nodes)
			cp := byClaim[c.Name]
			if cp == nil {
				cp = []ClaimPod{}
			}
			r.Claims = append(r.Claims, Claim{Namespace: ns, Name: c.Name, Volume: c.Spec.VolumeName, AttachedTo: nodes, Pods: cp, Huddle: statuses[ns+"/"+c.Name]})
		}
	}
	return r, nil
}

// OK reports whether a pod reached where it should: Running, or Succeeded
// for a pod that is meant to finish (restartPolicy other than Always).
func OK(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	switch p.Status.Phase {
	case corev1.PodRunning:
		return true
	case corev1.PodSucceeded:
		return p.Spec.RestartPolicy != corev1.RestartPolicyAlways
	}
	return false
}

// ClaimNames lists the claims a pod mounts, including generic ephemeral
// volumes' claims.
func ClaimNames(p *corev1.Pod) []string {
	var out []string
	for _, v := range p.Spec.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			out = append(out, v.PersistentVolumeClaim.ClaimName)
		case v.Ephemeral != nil:
			out = append(out, p.Name+"-"+v.Name)
		}
	}
	return out
}

// Reason says why a pod is not running, from the most telling source:
// the latest warning event about it, then its status, then its waiting
// containers, then the scheduler's condition. Empty for a running pod.
func Reason(p *corev1.Pod, warning *corev1.Event) string {
	if OK(p) {
		return ""
	}
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	if warning != nil {
		return warning.Reason + ": " + oneLine(warning.Message)
	}
	if p.Status.Reason != "" {
		return p.Status.Reason + ": " + oneLine(p.Status.Message)
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Waiting != nil && c.State.Waiting.Reason != "" {
			return c.State.Waiting.Reason
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return c.Reason + ": " + oneLine(c.Message)
		}
	}
	if p.Spec.NodeName == "" && len(p.Spec.SchedulingGates) > 0 {
		return "SchedulingGated: waiting for gate " + p.Spec.SchedulingGates[0].Name
	}
	return string(p.Status.Phase)
}

// latestWarnings maps pod name to its most recent Warning event.
func latestWarnings(events []corev1.Event) map[string]*corev1.Event {
	out := map[string]*corev1.Event{}
	for i := range events {
		ev := &events[i]
		if ev.Type != corev1.EventTypeWarning || ev.InvolvedObject.Kind != "Pod" {
			continue
		}
		if prev, ok := out[ev.InvolvedObject.Name]; !ok || EventTime(prev).Time.Before(EventTime(ev).Time) {
			out[ev.InvolvedObject.Name] = ev
		}
	}
	return out
}

// EventTime is when an event last happened: its series' last
// observation, else its last timestamp, else its event time, else when it
// was created.
func EventTime(ev *corev1.Event) metav1.Time {
	switch {
	case ev.Series != nil:
		return metav1.NewTime(ev.Series.LastObservedTime.Time)
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp
	case !ev.EventTime.IsZero():
		return metav1.NewTime(ev.EventTime.Time)
	}
	return ev.CreationTimestamp
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
