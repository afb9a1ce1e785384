package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/huddle-io/huddle/internal/sim/binaries"
)

func newBuild() *cobra.Command {
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the control plane into the cache now (other verbs do it on first use)",
		Long: `build compiles etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and kubectl from the pinned Go modules into the cache directory and prints
where they are. It needs the Go toolchain and the Go module proxy; the first
build takes about 13 minutes on 2 cores, and nothing is rebuilt until the
pins or the Go version change.

Another huddle-sim that needs the same cache meanwhile waits for this
build, and says so. Interrupted (SIGINT, SIGTERM), build stops the
compilers, removes the binary it was writing and exits 130; a failed build
exits 3 with the compiler's last line and the file that holds its output.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			start := time.Now()
			set, err := binaries.Ensure(ctx, cacheDir, cmd.ErrOrStderr())
			if err != nil {
				return interrupted(ctx, err)
			}
			out := cmd.OutOrStdout()
			for _, p := range []string{set.Etcd, set.APIServer, set.ControllerManager, set.Scheduler, set.Kubectl} {
				fmt.Fprintln(out, p)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Control plane ready in %s (Kubernetes %s)\n", time.Since(start).Round(time.Second), binaries.KubernetesVersion)
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache-dir", binaries.DefaultCacheDir(), "where the built control-plane binaries are kept ($HUDDLE_SIM_CACHE)")
	return cmd
}
