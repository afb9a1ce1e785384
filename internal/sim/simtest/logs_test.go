package simtest

import "testing"

func TestRBACDenied(t *testing.T) {
	for line, want := range map[string]bool{
		// RBAC's refusal as huddle's JSON log writes it.
		`{"level":"error","msg":"Reconciler error","error":"pods \"held\" is forbidden: User \"system:serviceaccount:huddle-system:huddle\" cannot update resource \"pods\" in API group \"\" in the namespace \"x\""}`: true,
		// Admission's, not RBAC's.
		`{"level":"error","error":"huddles.huddle.io \"data\" is forbidden: unable to create new content in namespace x because it is being terminated"}`: false,
		`{"level":"info","msg":"Starting huddle"}`: false,
	} {
		if got := RBACDenied(line); got != want {
			t.Errorf("RBACDenied(%s) = %v, want %v", line, got, want)
		}
	}
}
