//go:build ignore

// This file is not part of the huddle module. huddle-sim writes it into its
// control-plane build module (see ../build.go) as the main package of
// kube-controller-manager. It is upstream's main plus one thing: the
// attach/detach controller's max wait for unmount, a timer that has no flag
// upstream (attachdetach.DefaultTimerConfig is the documented hook for
// speeding up tests), is read from HUDDLE_SIM_MAX_WAIT_FOR_UNMOUNT so the
// fast timing profile can compress the 6-minute force-detach timeout. Every
// controller is the real one.
package main

import (
	"fmt"
	"os"
	"time"
	_ "time/tzdata" // for CronJob Time Zone support

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/pkg/controller/volume/attachdetach"
)

func main() {
	if v := os.Getenv("HUDDLE_SIM_MAX_WAIT_FOR_UNMOUNT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "HUDDLE_SIM_MAX_WAIT_FOR_UNMOUNT=%q: %v\n", v, err)
			os.Exit(2)
		}
		attachdetach.DefaultTimerConfig.ReconcilerMaxWaitForUnmountDuration = d
	}
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
