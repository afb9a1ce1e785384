package chaos

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// The soak's flags (go test ./test/chaos -run TestSoak -args -seed N ...).
var (
	flagSeed     = flag.Uint64("seed", 0, "seed of the first run (0: one drawn from the clock, printed)")
	flagSeeds    = flag.Int("seeds", 1, "runs, with seeds seed, seed+1, …")
	flagDuration = flag.Duration("duration", 0, "how long each run injects faults (0: the soak is skipped, so `go test ./...` does not run it)")
	flagGroups   = flag.Int("groups", 1, "workload groups per run (each: 5 Deployments, a two-claim Deployment, a StatefulSet, a Job, a bare pod)")
	flagNodes    = flag.Int("nodes", 6, "nodes in each run's pool at the start")
	flagSettle   = flag.Duration("settle", 3*time.Minute, "bound for every huddle to be Huddled with all replicas Running once the faults stop")
	flagGated    = flag.Duration("gated", time.Minute, "bound for a pod to stay gated")
	flagUnbound  = flag.Duration("unbound", 2*time.Minute, "bound for a pod huddle pinned to stay unbound")
	flagEvery    = flag.Duration("every", 4*time.Second, "mean time between two faults")
)

// unschedulableDeadline is the soak's huddle unschedulableDeadline (chart
// value; the chart's default is 5m).
const unschedulableDeadline = time.Minute

func TestMain(m *testing.M) {
	flag.Parse()
	if *flagDuration <= 0 {
		// No cluster for a run that soaks nothing (go test ./...).
		os.Exit(m.Run())
	}
	if *flagSeeds < 1 || *flagGroups < 1 || *flagNodes < 3 {
		fmt.Fprintln(os.Stderr, "chaos: -seeds and -groups must be at least 1, -nodes at least 3")
		os.Exit(2)
	}
	// A pin that can never bind is replaced after unschedulableDeadline;
	// it is shorter than -unbound here, so the soak sees the replacement
	// work instead of flagging every such pin before huddle acts (the
	// chart's 5 minutes would).
	values := map[string]any{"failover": true, "unschedulableDeadline": unschedulableDeadline.String()}
	if unschedulableDeadline >= *flagUnbound {
		fmt.Fprintf(os.Stderr, "chaos: -unbound must be longer than huddle's unschedulableDeadline (%s)\n", unschedulableDeadline)
		os.Exit(2)
	}
	os.Exit(simtest.Main(m, simtest.Options{Huddle: true, HuddleValues: values}))
}
