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
