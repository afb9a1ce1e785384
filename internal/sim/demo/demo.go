// Package demo holds huddle-sim's demonstration: the self-hosted Sentry
// case from the design brief, and the explanation printed next to its
// placement report.
package demo

import (
	_ "embed"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/huddle-io/huddle/internal/sim/report"
)

// SentryManifest is the demo's workload: four Deployments (six pods) that
// mount one gp3 claim, sentry/sentry-data.
//
//go:embed sentry.yaml
var SentryManifest []byte

// Claim is the demo's shared claim.
const Claim = "sentry/sentry-data"

// Explain tells, from the report, what the stock scheduler did with the
// Sentry pods and why the stuck ones are stuck.
func Explain(w io.Writer, r *report.Report) {
	var claim *report.Claim
	for i := range r.Claims {
		if r.Claims[i].Namespace+"/"+r.Claims[i].Name == Claim {
			claim = &r.Claims[i]
		}
	}
	if claim == nil {
		fmt.Fprintf(w, "The claim %s was not found: the demo did not apply.\n", Claim)
		return
	}
	nodes := map[string]bool{}
	var stuck []report.ClaimPod
	multiAttach := ""
	for _, p := range claim.Pods {
		if p.Node != "" {
			nodes[p.Node] = true
		}
		if p.Reason != "" {
			stuck = append(stuck, p)
			if i := strings.Index(p.Reason, "Multi-Attach error"); i >= 0 && multiAttach == "" {
				multiAttach = p.Reason[i:]
			}
		}
	}
	spread := make([]string, 0, len(nodes))
	for n := range nodes {
		spread = append(spread, n)
	}
	sort.Strings(spread)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "What happened, with the stock kube-scheduler:")
	fmt.Fprintf(w, "  %s is an EBS gp3 volume: ReadWriteOnce, attachable to one node at a time.\n", Claim)
	fmt.Fprintf(w, "  The scheduler spread the %d pods that mount it over %d nodes (%s).\n", len(claim.Pods), len(spread), strings.Join(spread, ", "))
	if len(claim.AttachedTo) > 0 {
		fmt.Fprintf(w, "  The volume is attached to %s.\n", strings.Join(claim.AttachedTo, ", "))
	}
	if len(stuck) == 0 {
		fmt.Fprintln(w, "  This time every pod happened to land on the volume's node; run the demo again to see the usual spread.")
		return
	}
	fmt.Fprintf(w, "  %d of %d pods are stuck away from it:\n", len(stuck), len(claim.Pods))
	for _, p := range stuck {
		fmt.Fprintf(w, "    %s on %s: %s\n", p.Name, p.Node, p.Status)
	}
	if multiAttach != "" {
		fmt.Fprintln(w, "  The attach/detach controller of kube-controller-manager says why:")
		fmt.Fprintf(w, "    %s\n", multiAttach)
	}
	fmt.Fprintln(w, "  Nothing in Kubernetes will move them: they hang in ContainerCreating until someone")
	fmt.Fprintln(w, "  deletes them by hand, and the next rollout splits the pods again.")
}

// Compare prints the stock and huddle runs side by side.
func Compare(w io.Writer, stock, huddle *report.Report) {
	row := func(what, a, b string) { fmt.Fprintf(w, "  %-38s %-22s %s\n", what, a, b) }
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Side by side:")
	row("", "stock kube-scheduler", "with huddle")
	s, h := summarize(stock), summarize(huddle)
	row("pods that mount "+Claim, fmt.Sprint(s.pods), fmt.Sprint(h.pods))
	row("nodes they were placed on", fmt.Sprint(s.nodes), fmt.Sprint(h.nodes))
	row("pods hung (not running)", fmt.Sprint(s.stuck), fmt.Sprint(h.stuck))
	row("FailedAttachVolume events", fmt.Sprint(stock.EventCounts["FailedAttachVolume"]), fmt.Sprint(huddle.EventCounts["FailedAttachVolume"]))
	row("all Running after", allRunning(stock), allRunning(huddle))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Where each pod ran:")
	for i := 0; i < max(len(s.placements), len(h.placements)); i++ {
		var a, b string
		if i < len(s.placements) {
			a = s.placements[i]
		}
		if i < len(h.placements) {
			b = h.placements[i]
		}
		fmt.Fprintf(w, "  %-58s %s\n", a, b)
	}
}

type summary struct {
	pods, nodes, stuck int
	placements         []string
}

func summarize(r *report.Report) summary {
	var s summary
	nodes := map[string]bool{}
	for _, c := range r.Claims {
		if c.Namespace+"/"+c.Name != Claim {
			continue
		}
		for _, p := range c.Pods {
			s.pods++
			if p.Node != "" {
				nodes[p.Node] = true
			}
			status := "Running"
			if p.Reason != "" {
				s.stuck++
				status = p.Status
			}
			// Pod names differ between runs; show the workload.
			name := p.Name
			if i := strings.LastIndex(name, "-"); i > 0 {
				if j := strings.LastIndex(name[:i], "-"); j > 0 {
					name = name[:j]
				}
			}
			s.placements = append(s.placements, fmt.Sprintf("%s on %s (%s)", name, p.Node, status))
		}
	}
	s.nodes = len(nodes)
	sort.Strings(s.placements)
	return s
}

func allRunning(r *report.Report) string {
	if r.AllRunning {
		return fmt.Sprintf("%.1fs", r.SettledAfterSeconds)
	}
	return "never"
}
