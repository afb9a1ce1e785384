package report

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
)

// Comparison is `huddle-sim run --compare`'s result: the same manifests
// on the same nodes, with the stock kube-scheduler and with huddle.
type Comparison struct {
	SchemaVersion int     `json:"schemaVersion"`
	Stock         *Report `json:"stock"`
	Huddle        *Report `json:"huddle"`
	// Fixed says whether, with huddle, every pod ran and nothing was
	// refused.
	Fixed bool `json:"fixed"`
}

// WriteJSON writes the comparison as indented JSON.
func (c *Comparison) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(c)
}

// WriteTable writes both reports, the side-by-side summary and the
// verdict.
func (c *Comparison) WriteTable(w io.Writer) error {
	fmt.Fprintln(w, "== With the stock kube-scheduler ==")
	fmt.Fprintln(w)
	if err := c.Stock.WriteTable(w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "== With huddle ==")
	fmt.Fprintln(w)
	if err := c.Huddle.WriteTable(w); err != nil {
		return err
	}
	Compare(w, c.Stock, c.Huddle)
	fmt.Fprintln(w)
	stockStuck := c.Stock.StuckClaimPods() + len(c.Stock.Pods)
	huddleStuck := c.Huddle.StuckClaimPods() + len(c.Huddle.Pods)
	switch {
	case c.Fixed && stockStuck == 0 && c.Stock.AllRunning:
		fmt.Fprintln(w, "Nothing to fix: every pod ran with the stock scheduler too (this time; the stock scheduler's spread varies from run to run).")
	case c.Fixed:
		fmt.Fprintf(w, "huddle fixed it: %d pod(s) hung with the stock scheduler; with huddle every pod runs.\n", stockStuck)
	case len(c.Huddle.Refused) > 0:
		fmt.Fprintf(w, "Not fixed: the API server refused %d object(s) (listed above); fix them first.\n", len(c.Huddle.Refused))
	default:
		fmt.Fprintf(w, "Not fixed: with huddle, %d pod(s) are still not running; their reasons are in the report above (kubectl huddle explain says more on a live cluster).\n", huddleStuck)
	}
	return nil
}

// Compare prints two runs side by side: for each claim that several pods
// mount, how many pods, on how many nodes, how many hung; then where each
// of those pods ran.
func Compare(w io.Writer, stock, huddle *Report) {
	row := func(what, a, b string) { fmt.Fprintf(w, "  %-40s %-22s %s\n", what, a, b) }
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Side by side:")
	row("", "stock kube-scheduler", "with huddle")
	s, h := summarize(stock), summarize(huddle)
	keys := sharedClaims(s, h)
	// With one shared claim its rows read as the demo's; with several,
	// each claim's rows are indented under it.
	sub := ""
	if len(keys) > 1 {
		sub = "  "
	}
	for _, k := range keys {
		a, b := s[k], h[k]
		row("pods that mount "+k, fmt.Sprint(a.pods), fmt.Sprint(b.pods))
		row(sub+"nodes they were placed on", fmt.Sprint(a.nodes), fmt.Sprint(b.nodes))
		row(sub+"pods hung (not running)", fmt.Sprint(a.stuck), fmt.Sprint(b.stuck))
	}
	if len(keys) == 0 {
		row("claims mounted by several pods", "none", "none")
	}
	row("other pods not running", fmt.Sprint(len(stock.Pods)), fmt.Sprint(len(huddle.Pods)))
	row("FailedAttachVolume events", fmt.Sprint(stock.EventCounts["FailedAttachVolume"]), fmt.Sprint(huddle.EventCounts["FailedAttachVolume"]))
	row("all Running after", allRunning(stock), allRunning(huddle))
	if len(keys) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Where each pod ran:")
	for _, k := range keys {
		if len(keys) > 1 {
			fmt.Fprintf(w, "  %s:\n", k)
		}
		a, b := s[k].placements, h[k].placements
		for i := 0; i < max(len(a), len(b)); i++ {
			var x, y string
			if i < len(a) {
				x = a[i]
			}
			if i < len(b) {
				y = b[i]
			}
			fmt.Fprintf(w, "  %-58s %s\n", x, y)
		}
	}
}

// claimSummary is one claim's pods in one run.
type claimSummary struct {
	pods, nodes, stuck int
	placements         []string
}

func summarize(r *Report) map[string]claimSummary {
	out := map[string]claimSummary{}
	for _, c := range r.Claims {
		var s claimSummary
		nodes := map[string]bool{}
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
			s.placements = append(s.placements, fmt.Sprintf("%s on %s (%s)", workload(p.Name), orNone(p.Node), status))
		}
		s.nodes = len(nodes)
		sort.Strings(s.placements)
		out[c.Namespace+"/"+c.Name] = s
	}
	return out
}

// sharedClaims are the claims that several pods mount in either run.
func sharedClaims(runs ...map[string]claimSummary) []string {
	set := map[string]bool{}
	for _, run := range runs {
		for k, s := range run {
			if s.pods > 1 {
				set[k] = true
			}
		}
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// generated matches the suffixes a Deployment's pods get (the
// ReplicaSet's pod-template hash and the pod's random suffix), or a Job's
// or bare generateName pod's random suffix, which differ between runs.
var generated = regexp.MustCompile(`(-[bcdfghjklmnpqrstvwxz2456789]{6,10})?-[bcdfghjklmnpqrstvwxz2456789]{5}$`)

// workload is a pod's name without the suffixes its controller generated;
// a StatefulSet's pod (web-0) keeps its name.
func workload(name string) string {
	if loc := generated.FindStringIndex(name); loc != nil && loc[0] > 0 {
		return name[:loc[0]]
	}
	return name
}

func allRunning(r *Report) string {
	if r.AllRunning {
		return fmt.Sprintf("%.1fs", r.SettledAfterSeconds)
	}
	return "never"
}
