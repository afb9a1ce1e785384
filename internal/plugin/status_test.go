package plugin

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/printers"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

func huddle(name string, phase huddlev1.Phase, members ...huddlev1.Member) huddlev1.Huddle {
	h := huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}}
	h.Status.Phase, h.Status.Members, h.Status.MemberCount = phase, members, int32(len(members))
	return h
}

func TestUnhealthyExitCode(t *testing.T) {
	ok := huddle("a", huddlev1.PhaseHuddled)
	if err := unhealthy([]huddlev1.Huddle{ok, huddle("b", huddlev1.PhasePending)}); err != nil {
		t.Fatalf("Huddled and Pending: %v", err)
	}
	err := unhealthy([]huddlev1.Huddle{ok, huddle("s", huddlev1.PhaseSplit), huddle("d", huddlev1.PhaseDegraded)})
	if ExitCode(err) != ExitUnhealthy || !strings.Contains(err.Error(), "ns/s (Split), ns/d (Degraded)") {
		t.Fatalf("exit %d: %v", ExitCode(err), err)
	}
	if ExitCode(errors.New("x")) != 1 || ExitCode(nil) != 0 {
		t.Fatal("other errors exit 1, none 0")
	}
}

func TestMissingCRDSaysHowToInstall(t *testing.T) {
	err := apiError(&meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "huddle.io", Kind: "Huddle"}, SearchedVersions: []string{"v1alpha1"}})
	if !strings.Contains(err.Error(), "no Huddle API") || !strings.Contains(err.Error(), "helm install huddle ./charts/huddle") {
		t.Fatal(err)
	}
}

func TestStatusTable(t *testing.T) {
	h := huddle("data", huddlev1.PhaseSplit,
		huddlev1.Member{Pod: "a", Node: "n1"}, huddlev1.Member{Pod: "b", Node: "n1"},
		huddlev1.Member{Pod: "c", Node: "n2", Reason: "away from home"}, huddlev1.Member{Pod: "d"})
	h.Status.Home = "n1"
	h.Status.ReadyCount = 3
	h.Status.Conditions = []metav1.Condition{{Type: huddlev1.ConditionFits, Status: metav1.ConditionFalse}}
	now := time.Now()
	h.CreationTimestamp = metav1.NewTime(now.Add(-2 * time.Hour))
	h.Status.LastMove = &huddlev1.Move{From: "n0", To: "n1", Result: "Succeeded", Started: metav1.NewTime(now.Add(-10 * time.Minute))}
	var out bytes.Buffer
	p := printers.NewTablePrinter(printers.PrintOptions{Wide: true})
	if err := p.PrintObj(statusTable([]huddlev1.Huddle{h}, now), &out); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"NAME", "LAST MOVE", "data", "n1:2 n2:1 unbound:1", "3/4", "Split", "no", "n0->n1 Succeeded 10m ago", "120m", "c@n2 (away from home), d@-"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, out.String())
		}
	}
}
