package sim

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/huddle-io/huddle/internal/plugin"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestPluginWithoutHuddle: against a cluster where huddle is not installed,
// kubectl huddle status and move say so and how to install it; plan
// --from-cluster, which needs no huddle, plans against the cluster's own
// nodes (here m5.large: a huddle of 5 CPU fits none, and it says so).
func TestPluginWithoutHuddle(t *testing.T) {
	env := simtest.New(t)
	env.AddNodes(2, simtest.NodeOptions{InstanceType: "m5.large"})
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := plugin.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &out})
		cmd.SetArgs(append(args, "--kubeconfig", env.Cluster.Kubeconfig, "-n", env.Namespace))
		err := cmd.ExecuteContext(env.Ctx)
		t.Logf("kubectl huddle %s:\n%s", strings.Join(args, " "), out.String())
		return out.String(), err
	}
	for _, args := range [][]string{{"status"}, {"move", "data"}} {
		_, err := run(args...)
		if err == nil || !strings.Contains(err.Error(), "no Huddle API") || !strings.Contains(err.Error(), "helm install huddle ./charts/huddle") {
			t.Errorf("kubectl huddle %s without huddle: %v; want the missing API named and how to install huddle", args[0], err)
		}
	}
	out, err := run("plan", "-f", "../../../cmd/kubectl-huddle/testdata/too-big.yaml", "--from-cluster")
	if err != nil {
		t.Fatalf("plan --from-cluster: %v", err)
	}
	for _, w := range []string{"HUDDLE media", "fits:", "NO:", "lacks"} {
		if !strings.Contains(out, w) {
			t.Errorf("plan --from-cluster lacks %q", w)
		}
	}
}
