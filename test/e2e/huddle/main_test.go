// Package huddle holds huddle's acceptance scenarios: the real control
// plane with simulated nodes and EBS, with huddle running (cluster-wide
// mode, webhook over TLS on loopback).
package huddle

import (
	"os"
	"testing"

	"github.com/huddle-io/huddle/internal/sim/simtest"
)

func TestMain(m *testing.M) { os.Exit(simtest.Main(m, simtest.Options{Huddle: true})) }
