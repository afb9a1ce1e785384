package report

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/api/resource"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for people: one block per claim, then the
// other pods that are not running, then event counts and a summary.
func (r *Report) WriteTable(w io.Writer) error {
	if len(r.Claims) == 0 {
		fmt.Fprintln(w, "No PersistentVolumeClaims.")
	}
	for _, c := range r.Claims {
		volume, attached := c.Volume, strings.Join(c.AttachedTo, ", ")
		if volume == "" {
			volume = "(not bound)"
		}
		if attached == "" {
			attached = "(not attached)"
		}
		fmt.Fprintf(w, "CLAIM %s/%s  volume %s  attached to %s\n", c.Namespace, c.Name, volume, attached)
		if len(c.Pods) == 0 {
			fmt.Fprintln(w, "  (no pod mounts it)")
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		if len(c.Pods) > 0 {
			fmt.Fprintln(tw, "  POD\tNODE\tSTATUS\tREADY\tREASON")
		}
		for _, p := range c.Pods {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%v\t%s\n", p.Name, orNone(p.Node), p.Status, p.Ready, p.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	if len(r.Pods) > 0 {
		fmt.Fprintln(w, "OTHER PODS NOT RUNNING")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAMESPACE\tPOD\tNODE\tSTATUS\tREASON")
		for _, p := range r.Pods {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, orNone(p.Node), p.Status, p.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	if len(r.Nodes) > 0 {
		fmt.Fprintln(w, "NODES (requested / allocatable)")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NODE\tZONE\tTYPE\tCPU\tMEMORY\tPODS")
		for _, n := range r.Nodes {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s / %s\t%s / %s\t%d / %d\n", n.Name, orNone(n.Zone), orNone(n.InstanceType),
				n.Requested.CPU, n.Allocatable.CPU, mebibytes(n.Requested.Memory), mebibytes(n.Allocatable.Memory), n.Requested.Pods, n.Allocatable.Pods)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	for _, list := range []struct {
		title string
		lines []string
	}{
		{"REFUSED (not applied)", r.Refused},
		{"STILL DUE FROM HUDDLE when the wait ended", r.Pending},
		{"WARNINGS", r.Warnings},
	} {
		if len(list.lines) == 0 {
			continue
		}
		fmt.Fprintln(w, list.title)
		for _, l := range list.lines {
			fmt.Fprintf(w, "  %s\n", l)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Events: %s\n", r.eventLine())
	stuck := r.StuckClaimPods()
	switch {
	case r.AllRunning:
		fmt.Fprintf(w, "All pods Running (Jobs: Succeeded) after %.1fs.\n", r.SettledAfterSeconds)
	default:
		fmt.Fprintf(w, "NOT all pods are running: %d pods that mount a claim and %d other pods are stuck (%s).\n", stuck, len(r.Pods), r.waitLine())
	}
	if len(r.Refused) > 0 {
		fmt.Fprintf(w, "%d object(s) were refused by the API server: fix them and run again.\n", len(r.Refused))
	}
	return nil
}

// waitLine says how the wait for the pods ended.
func (r *Report) waitLine() string {
	switch r.WaitEnded {
	case Timeout:
		return fmt.Sprintf("still changing or awaiting huddle when the wait timed out after %.1fs", r.SettledAfterSeconds)
	case Quiet:
		return fmt.Sprintf("nothing changed after %.1fs", r.SettledAfterSeconds)
	}
	return fmt.Sprintf("settled after %.1fs", r.SettledAfterSeconds)
}

// StuckClaimPods counts pods that mount a claim and are not running.
func (r *Report) StuckClaimPods() int {
	n := 0
	for _, c := range r.Claims {
		for _, p := range c.Pods {
			if p.Reason != "" {
				n++
			}
		}
	}
	return n
}

func (r *Report) eventLine() string {
	if len(r.EventCounts) == 0 {
		return "none"
	}
	reasons := make([]string, 0, len(r.EventCounts))
	for k := range r.EventCounts {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	parts := make([]string, len(reasons))
	for i, k := range reasons {
		parts[i] = fmt.Sprintf("%s=%d", k, r.EventCounts[k])
	}
	return strings.Join(parts, " ")
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// mebibytes prints a memory quantity in Mi, as people compare them (the
// JSON keeps the API's own form).
func mebibytes(q string) string {
	v, err := resource.ParseQuantity(q)
	if err != nil {
		return q
	}
	return fmt.Sprintf("%dMi", v.Value()/(1<<20))
}
