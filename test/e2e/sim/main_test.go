// Package sim holds the simulator's acceptance scenarios: each runs against
// the real control plane (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler) with simulated kubelets and EBS, under the stock
// scheduler, and asserts the behaviour users meet on EKS.
package sim

import (
	"os"
	"testing"

	"github.com/huddle-io/huddle/internal/sim/simtest"
)

func TestMain(m *testing.M) { os.Exit(simtest.Main(m, simtest.Options{})) }
