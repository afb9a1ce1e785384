package plugin

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/cleanup"
	"github.com/huddle-io/huddle/internal/controller"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/webhook"
)

func newExplainCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "explain pod/NAME | huddle/NAME",
		Short: "Why a pod is where it is, or why it waits; why a huddle is in its phase; and what to do",
		Long: `explain gathers what huddle and the scheduler recorded about a pod or a huddle
and ends with what to do:

  - the pod's huddle annotations: huddle.io/pinned-by (where huddle pinned it
    and why), huddle.io/held (why it is still gated), huddle.io/repair,
    huddle.io/released-by;
  - its scheduling gate and the scheduler's verdict (PodScheduled condition,
    FailedScheduling events);
  - the events huddle recorded on it;
  - for each shared claim it mounts, its Huddle: home, phase, and the Fits,
    Huddled and Moving conditions with their messages (the shortfall).

For huddle/NAME it shows the Huddle, its members and its events.`,
		Example: `  # A pending pod
  kubectl huddle explain pod/sentry-web-7c9f-x2bq -n sentry

  # A huddle that is Pending, Split or Degraded
  kubectl huddle explain huddle/sentry-data -n sentry`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, c, ns, err := o.clients()
			if err != nil {
				return err
			}
			kind, name, ok := strings.Cut(args[0], "/")
			if !ok {
				return fmt.Errorf("name what to explain as pod/NAME or huddle/NAME, not %q", args[0])
			}
			e := &explainer{cs: cs, c: c, ns: ns, out: o.Streams.Out, now: time.Now()}
			switch strings.ToLower(kind) {
			case "pod", "pods", "po":
				return e.pod(cmd.Context(), name)
			case "huddle", "huddles", "hud":
				return e.huddle(cmd.Context(), name)
			}
			return fmt.Errorf("explain knows pod/NAME and huddle/NAME, not %s", kind)
		},
	}
}

type explainer struct {
	cs  kubernetes.Interface
	c   client.Client
	ns  string
	out io.Writer
	now time.Time
}

// The reasons huddle records on a pod, newest decides the advice.
var huddleReasons = map[string]bool{
	placement.ReasonNotShared: true, placement.ReasonClaimMissing: true, placement.ReasonWaitClaim: true,
	placement.ReasonHome: true, placement.ReasonCandidates: true, placement.ReasonNoFit: true,
	placement.ReasonFollowing: true, placement.ReasonHomeConflict: true, placement.ReasonNoCandidates: true,
	placement.ReasonHomeLeaving: true, placement.ReasonMoveTarget: true, placement.ReasonWaitDetach: true,
	ReasonReleasedByUser: true, cleanup.ReasonReleasedOnUninstall: true,
}

func (e *explainer) pod(ctx context.Context, name string) error {
	pod, err := e.cs.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("no pod %s in namespace %s", name, e.ns)
		}
		return err
	}
	w := e.out
	fmt.Fprintf(w, "Pod %s/%s\n", pod.Namespace, pod.Name)
	gated := placement.HasGate(pod)
	switch {
	case pod.Spec.NodeName != "":
		fmt.Fprintf(w, "  node:       %s (%s)\n", pod.Spec.NodeName, pod.Status.Phase)
	case gated:
		fmt.Fprintf(w, "  node:       none: held by huddle (scheduling gate %s)\n", placement.Gate)
	default:
		fmt.Fprintf(w, "  node:       none: Pending at the scheduler\n")
	}
	for _, a := range []string{placement.AnnotationPinnedBy, placement.AnnotationHeld, placement.AnnotationReleased, controller.AnnotationRepair, cleanup.AnnotationReleasedBy} {
		if v := pod.Annotations[a]; v != "" {
			fmt.Fprintf(w, "  %s: %s\n", a, v)
		}
	}
	var unschedulable string
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
			unschedulable = c.Message
			fmt.Fprintf(w, "  scheduler:  %s: %s (for %s)\n", c.Reason, c.Message, duration.HumanDuration(e.now.Sub(c.LastTransitionTime.Time)))
		}
	}
	events, err := e.events(ctx, "Pod", pod.Name)
	if err != nil {
		return err
	}
	last := ""
	if len(events) > 0 {
		fmt.Fprintf(w, "\nEvents:\n")
		for _, ev := range events {
			fmt.Fprintf(w, "  %s ago\t%s\t%s\t%s\n", duration.HumanDuration(e.now.Sub(eventTime(ev))), ev.Source.Component, ev.Reason, ev.Message)
			if huddleReasons[ev.Reason] {
				last = ev.Reason
			}
		}
	}
	var huddles []*huddlev1.Huddle
	for _, claim := range webhook.ClaimNames(pod) {
		h := &huddlev1.Huddle{}
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: claim}, h); err != nil {
			if apierrors.IsNotFound(err) {
				fmt.Fprintf(w, "\nClaim %s: no Huddle (not shared, not opted in, or not seen by huddle yet)\n", claim)
				continue
			}
			return apiError(err)
		}
		huddles = append(huddles, h)
		e.describeHuddle(h)
	}
	fmt.Fprintf(w, "\nWhat to do:\n")
	for _, a := range podAdvice(pod, last, gated, unschedulable, huddles) {
		fmt.Fprintf(w, "  - %s\n", a)
	}
	return nil
}

func (e *explainer) huddle(ctx context.Context, name string) error {
	h := &huddlev1.Huddle{}
	if err := e.c.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: name}, h); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("no huddle %s in namespace %s (kubectl huddle status lists them)", name, e.ns)
		}
		return apiError(err)
	}
	e.describeHuddle(h)
	w := e.out
	fmt.Fprintf(w, "  members:\n")
	for _, m := range h.Status.Members {
		fmt.Fprintf(w, "    %s on %s, %s, ready %v", m.Pod, orDash(m.Node), m.Phase, m.Ready)
		if m.Reason != "" {
			fmt.Fprintf(w, ": %s", m.Reason)
		}
		fmt.Fprintln(w)
	}
	events, err := e.events(ctx, "Huddle", name)
	if err != nil {
		return err
	}
	if len(events) > 0 {
		fmt.Fprintf(w, "\nEvents:\n")
		for _, ev := range events {
			fmt.Fprintf(w, "  %s ago\t%s\t%s\n", duration.HumanDuration(e.now.Sub(eventTime(ev))), ev.Reason, ev.Message)
		}
	}
	fmt.Fprintf(w, "\nWhat to do:\n")
	for _, a := range huddleAdvice(h) {
		fmt.Fprintf(w, "  - %s\n", a)
	}
	return nil
}

func (e *explainer) describeHuddle(h *huddlev1.Huddle) {
	w := e.out
	s := h.Status
	fmt.Fprintf(w, "\nHuddle %s/%s: phase %s, home %s, %d/%d members ready, move %s, repair %s\n",
		h.Namespace, h.Name, orDash(string(s.Phase)), orDash(s.Home), s.ReadyCount, s.MemberCount, orDefault(string(h.Spec.Move), "Never"), orDefault(string(h.Spec.Repair), "Evict"))
	if len(s.Demand) > 0 {
		fmt.Fprintf(w, "  demand:     %s\n", formatResources(placement.FromList(s.Demand)))
	}
	for _, t := range []string{huddlev1.ConditionFits, huddlev1.ConditionHuddled, huddlev1.ConditionMoving} {
		if c := meta.FindStatusCondition(s.Conditions, t); c != nil {
			fmt.Fprintf(w, "  %-11s %s (%s) %s\n", t+":", c.Status, c.Reason, c.Message)
		}
	}
	if m := s.LastMove; m != nil {
		fmt.Fprintf(w, "  last move:  %s\n", lastMove(m, e.now))
	}
}

// events are the events of one object of the namespace, oldest first.
func (e *explainer) events(ctx context.Context, kind, name string) ([]corev1.Event, error) {
	sel := fields.Set{"involvedObject.kind": kind, "involvedObject.name": name}.AsSelector().String()
	list, err := e.cs.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(list.Items, func(i, j int) bool { return eventTime(list.Items[i]).Before(eventTime(list.Items[j])) })
	return list.Items, nil
}

func eventTime(ev corev1.Event) time.Time {
	switch {
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.Time
	case !ev.EventTime.IsZero():
		return ev.EventTime.Time
	}
	return ev.CreationTimestamp.Time
}

// fitsMessage is the Fits=False message of the first huddle that has one.
func fitsMessage(hs []*huddlev1.Huddle) (string, *huddlev1.Huddle) {
	for _, h := range hs {
		if c := meta.FindStatusCondition(h.Status.Conditions, huddlev1.ConditionFits); c != nil && c.Status == metav1.ConditionFalse {
			return c.Message, h
		}
	}
	return "", nil
}

// podAdvice is what to do about a pod, from huddle's last reason for it,
// whether it is gated, the scheduler's message and its huddles.
func podAdvice(pod *corev1.Pod, reason string, gated bool, unschedulable string, hs []*huddlev1.Huddle) []string {
	short, h := fitsMessage(hs)
	move := "set spec.move: WhenStuck on the Huddle (kubectl patch huddle NAME --type merge -p '{\"spec\":{\"move\":\"WhenStuck\"}}') so the whole huddle moves to a node that fits it"
	bigger := "add a node that holds the whole huddle: kubectl huddle plan -f <your manifests> names the smallest instance types that fit"
	var out []string
	if short != "" {
		out = append(out, "the huddle does not fit: "+short)
	}
	switch {
	case pod.Spec.NodeName != "" && pod.Status.Phase == corev1.PodRunning:
		return append(out, "nothing: the pod runs on "+pod.Spec.NodeName+(map[bool]string{true: ", its huddle's home", false: ""}[len(hs) > 0 && hs[0].Status.Home == pod.Spec.NodeName]))
	case reason == placement.ReasonNoCandidates:
		return append(out, "no Ready, schedulable node satisfies every member's node selector, affinity and tolerations, the volume's zone and the EBS attach limit: add such a node (in the volume's zone), or make the members' selectors and tolerations agree",
			"to let this one pod go anyway: kubectl huddle release "+pod.Name)
	case reason == placement.ReasonHomeConflict:
		return append(out, "the pod mounts two shared claims whose volumes are on different nodes; it can only run where both are: move one huddle to the other's home, or stop mounting both")
	case reason == placement.ReasonWaitClaim || reason == placement.ReasonClaimMissing:
		return append(out, "create the claim the pod mounts (kubectl get pvc shows which exist)")
	case reason == placement.ReasonHomeLeaving || reason == placement.ReasonWaitDetach:
		return append(out, "wait: the volume must leave the old node first; if that node is unreachable, confirm the machine is off and force-delete its Terminating pods, or run huddle with --failover to fence nodes the cloud shut down")
	case reason == placement.ReasonFollowing:
		return append(out, "wait: the huddle's first member goes first and the others follow it to its node; kubectl huddle explain huddle/"+firstName(hs)+" shows it")
	case gated:
		return append(out, "wait for huddle to place it (is huddle running? kubectl get pods -n huddle-system), or let it go now: kubectl huddle release "+pod.Name)
	case unschedulable != "" && (h != nil || strings.Contains(pod.Annotations[placement.AnnotationPinnedBy], " home ")):
		return append(out, "the pod is pinned to its huddle's home and waits there while the volume is in use ("+unschedulable+")",
			"free room at home (fewer or smaller pods there), or "+bigger, "or "+move,
			"keep room for rollouts with spec.headroom on the Huddle")
	case unschedulable != "":
		return append(out, "the scheduler cannot place it: "+unschedulable, bigger)
	case short != "":
		return append(out, bigger, "or "+move)
	}
	return append(out, "nothing huddle-specific: the pod is "+string(pod.Status.Phase))
}

func firstName(hs []*huddlev1.Huddle) string {
	if len(hs) == 0 {
		return "NAME"
	}
	return hs[0].Name
}

// huddleAdvice is what to do about a huddle in its phase.
func huddleAdvice(h *huddlev1.Huddle) []string {
	var out []string
	if c := meta.FindStatusCondition(h.Status.Conditions, huddlev1.ConditionFits); c != nil && c.Status == metav1.ConditionFalse {
		out = append(out, "it does not fit: "+c.Message+"; add a node that holds it (kubectl huddle plan names instance types that fit) or set spec.move: WhenStuck so it moves to one")
	}
	switch h.Status.Phase {
	case huddlev1.PhaseHuddled:
		out = append(out, "nothing: every member runs at home "+h.Status.Home)
	case huddlev1.PhaseSplit:
		if h.Spec.Repair == huddlev1.RepairReport {
			out = append(out, "members run on more than one node and spec.repair is Report: set spec.repair: Evict, or delete the members away from home")
		} else {
			out = append(out, "members run on more than one node; repair evicts those away from home (members listed with a reason say why one is not evicted)")
		}
	case huddlev1.PhaseDegraded:
		out = append(out, "home is not Ready or a member cannot be placed: kubectl huddle explain pod/<member> for each member listed with a reason")
	case huddlev1.PhasePending:
		out = append(out, "members wait at home: kubectl huddle explain pod/<member> for the waiting ones")
	case huddlev1.PhaseMoving:
		out = append(out, "wait: the huddle is moving; it finishes or is abandoned with a message within huddle's move deadline")
	case huddlev1.PhasePlacing:
		out = append(out, "wait: huddle is placing the first member")
	}
	return out
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
