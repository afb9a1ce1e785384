// Command kubectl-huddle is the kubectl plugin of huddle: kubectl huddle
// status, explain, plan, release and move. Install it with
// go install github.com/huddle-io/huddle/cmd/kubectl-huddle@latest (or
// krew, plugins/huddle.yaml); kubectl finds it on the PATH.
package main

import (
	"fmt"
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/huddle-io/huddle/internal/plugin"
)

func main() {
	cmd := plugin.NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	err := cmd.Execute()
	if err != nil {
		if e, ok := err.(*plugin.ExitError); !ok || !e.Silent {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
	}
	os.Exit(plugin.ExitCode(err))
}
