package huddle

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/huddle-io/huddle/internal/plugin"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// kubectlHuddle runs kubectl huddle (in process, as the binary would)
// against the test's cluster and namespace.
func kubectlHuddle(env *simtest.Env, args ...string) (string, error) {
	env.T.Helper()
	var out, errOut bytes.Buffer
	cmd := plugin.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(append(args, "--kubeconfig", env.Cluster.Kubeconfig, "-n", env.Namespace))
	err := cmd.ExecuteContext(env.Ctx)
	env.T.Logf("kubectl huddle %s:\n%s%s", strings.Join(args, " "), out.String(), errOut.String())
	return out.String() + errOut.String(), err
}

// TestPluginStatusSentry: on the Sentry demo, kubectl huddle status shows
// one home with all six members, Ready and Huddled, and exits 0; -o wide
// names every member at home.
func TestPluginStatusSentry(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(3, simtest.NodeOptions{})
	sentry(env)
	home := together(env, "app.kubernetes.io/part-of=sentry", 6, time.Minute)
	huddled(env, "sentry-data", home, 6)
	out, err := kubectlHuddle(env, "status")
	if err != nil {
		t.Fatalf("status: %v (exit %d)", err, plugin.ExitCode(err))
	}
	row := regexp.MustCompile(`(?m)^sentry-data\s+` + regexp.QuoteMeta(home) + `\s+` + regexp.QuoteMeta(home) + `:6\s+6/6\s+Huddled\s+yes\s+-\s+`)
	if !row.MatchString(out) {
		t.Fatalf("status has no row: sentry-data, home %s, all 6 members there, 6/6 Ready, Huddled, fits:\n%s", home, out)
	}
	wide, err := kubectlHuddle(env, "status", "sentry-data", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range env.Pods("app.kubernetes.io/part-of=sentry") {
		if !strings.Contains(wide, p.Name+"@"+home) {
			t.Errorf("-o wide lacks %s@%s", p.Name, home)
		}
	}
	if _, err := kubectlHuddle(env, "status", "no-such-claim"); err == nil || !strings.Contains(err.Error(), "no huddle no-such-claim") {
		t.Errorf("status of a missing huddle: %v", err)
	}
}
