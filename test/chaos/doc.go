// Package chaos is huddle's seeded chaos soak: many huddles on one
// simulated cluster with huddle installed from its chart (failover on),
// a random sequence of faults drawn from a printed seed, and invariants
// checked continuously from watches and the API server's audit log. See
// docs/soak.md; `make soak` runs a long soak, .ci/run a short one.
package chaos
