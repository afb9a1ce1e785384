package huddle

import (
	"testing"
	"time"

	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestSentryHuddles: every pod that mounts sentry-data runs on one node,
// no attach ever fails, and the Huddle says so.
func TestSentryHuddles(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(3, simtest.NodeOptions{})
	sentry(env)
	home := together(env, "app.kubernetes.io/part-of=sentry", 6, time.Minute)
	huddled(env, "sentry-data", home, 6)
	if n := eventCount(env, "FailedAttachVolume"); n != 0 {
		t.Fatalf("%d FailedAttachVolume events, want 0", n)
	}
}
