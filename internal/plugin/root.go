package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

// Output formats.
const (
	OutputTable = "table"
	OutputWide  = "wide"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// Options are the flags every command shares: kubectl's own connection
// flags (cli-runtime's ConfigFlags), -A and -o.
type Options struct {
	Config        *genericclioptions.ConfigFlags
	Streams       genericiooptions.IOStreams
	AllNamespaces bool
	Output        string
}

// ExitError is an error that asks for a particular exit code; status
// returns one with code 2 when a huddle is Split or Degraded, after
// printing. Silent suppresses printing the message again.
type ExitError struct {
	Code   int
	Err    error
	Silent bool
}

func (e *ExitError) Error() string { return e.Err.Error() }

// ExitCode is the process exit code for err (0 for nil).
func ExitCode(err error) int {
	var e *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return e.Code
	}
	return 1
}

// NewCommand is kubectl huddle with its subcommands.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{Config: genericclioptions.NewConfigFlags(true), Streams: streams}
	cmd := &cobra.Command{
		Use:   "kubectl huddle",
		Short: "See, explain and plan huddles: pods that share a ReadWriteOnce volume, kept on its node",
		Long: `kubectl huddle shows what huddle does in a cluster and plans a chart before it is installed.

huddle keeps every pod that mounts one shared ReadWriteOnce claim (an EBS volume,
say) on the node that holds the volume. The pods of one claim are a huddle; the
node is its home. Each huddle has a Huddle object (kubectl get huddles) and
huddle writes why it put a pod where it is on the pod (huddle.io/pinned-by,
huddle.io/held) and in events. These commands read all of that for you.

Commands:
  status    every huddle: home, members per node, ready, phase, fits, last move
  explain   why a pod is where it is, or why it waits, and what to do
  plan      offline, from manifests: which claims are shared, does each huddle
            fit one node, which instance types would, what storage would cost
  release   the escape hatch: let a held pod go to the scheduler now
  move      move a whole huddle now, to a node or to one that fits it
            (refused, with every reason, when it could not finish safely)`,
		Example: `  # Where is every huddle of the cluster, and is any split?
  kubectl huddle status -A

  # Why is this pod pending?
  kubectl huddle explain pod/sentry-web-7c9f-x2bq -n sentry

  # Will the chart fit on one m5.xlarge, and what would EFS cost instead?
  helm template sentry sentry/sentry | kubectl huddle plan -f -`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	o.Config.AddFlags(cmd.PersistentFlags())
	cmd.AddCommand(newPlanCommand(o), newStatusCommand(o), newReleaseCommand(o), newExplainCommand(o), newMoveCommand(o))
	return cmd
}

// addOutput adds -o to a command.
func (o *Options) addOutput(cmd *cobra.Command, formats string) {
	cmd.Flags().StringVarP(&o.Output, "output", "o", OutputTable, "output format: "+formats)
}

func (o *Options) checkOutput(allowed ...string) error {
	for _, a := range allowed {
		if o.Output == a {
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q: use one of %v", o.Output, allowed)
}

// clients are the typed clients of the cluster the flags name.
func (o *Options) clients() (kubernetes.Interface, client.Client, string, error) {
	cfg, err := o.Config.ToRESTConfig()
	if err != nil {
		return nil, nil, "", err
	}
	ns, _, err := o.Config.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, nil, "", err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, "", err
	}
	s := runtime.NewScheme()
	if err := scheme.AddToScheme(s); err != nil {
		return nil, nil, "", err
	}
	if err := huddlev1.AddToScheme(s); err != nil {
		return nil, nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, nil, "", err
	}
	return cs, c, ns, nil
}

// printData writes v as JSON or YAML.
func printData(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == OutputYAML {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
	} else {
		b = append(b, '\n')
	}
	_, err = w.Write(b)
	return err
}
