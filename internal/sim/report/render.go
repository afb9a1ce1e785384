package report

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
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
	fmt.Fprintf(w, "Events: %s\n", r.eventLine())
	stuck := r.StuckClaimPods()
	switch {
	case r.AllRunning:
		fmt.Fprintf(w, "All pods Running (Jobs: Succeeded) after %.1fs.\n", r.SettledAfterSeconds)
	default:
		fmt.Fprintf(w, "NOT all pods are running: %d pods that mount a claim and %d other pods are stuck (settled after %.1fs).\n", stuck, len(r.Pods), r.SettledAfterSeconds)
	}
	return nil
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
