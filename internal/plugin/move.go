package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

func newMoveCommand(o *Options) *cobra.Command {
	var to string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "move HUDDLE [--to NODE]",
		Short: "Ask huddle to move a whole huddle now, to NODE or to a node that fits it",
		Long: `move asks huddle to move every pod of a huddle, and its volume, to another
node now: to --to NODE, or without it to the node an automatic move would
choose (one that holds the whole huddle). It sets the Huddle's
spec.moveRequest; huddle answers it once, with the same safety rules as an
automatic move (spec.move: WhenStuck), and records the answer in
status.moveRequest:

  Started   the move began: huddle evicts every member through the Eviction
            API, and their replacements are pinned to the target, where the
            volume follows. 'kubectl huddle status HUDDLE' follows it
            (phase Moving, then the last move's result).
  Refused   the move would not be safe, and nothing was touched. The reason
            says what to change: a target that is cordoned, not Ready, too
            small for the whole huddle or outside what the members require;
            a member that would not be recreated (a bare pod, a Job's pod);
            spec.repair: Report; a PodDisruptionBudget that cannot allow
            every eviction; a move under way or too recent
            (--max-moves-per-hour).

A move takes the members down while the volume detaches and attaches at the
target (on EKS, typically 10-60 s). move waits for huddle's answer (up to
--timeout) and exits 1 when the move is refused or unanswered.`,
		Example: `  # Move the Sentry huddle to a bigger node
  kubectl huddle move sentry-data -n sentry --to ip-10-0-3-17.ec2.internal

  # Move it to wherever it fits
  kubectl huddle move sentry-data -n sentry`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, ns, err := o.clients()
			if err != nil {
				return err
			}
			msg, err := Move(cmd.Context(), c, ns, strings.TrimPrefix(strings.TrimPrefix(args[0], "huddle/"), "huddles/"), to, time.Now(), timeout)
			if err != nil {
				return err
			}
			fmt.Fprintln(o.Streams.Out, msg)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the node to move to (default: the node an automatic move would choose)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for huddle's answer")
	return cmd
}

// Move sets huddle namespace/name's spec.moveRequest and waits up to
// timeout for huddle's answer in status.moveRequest; it returns what
// huddle said of a started move, and an error for a refused one.
func Move(ctx context.Context, c client.Client, namespace, name, to string, now time.Time, timeout time.Duration) (string, error) {
	h := &huddlev1.Huddle{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, h); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("no huddle %s in namespace %s: huddle creates one per shared claim, named as the claim (kubectl huddle status lists them)", name, namespace)
		}
		return "", apiError(err)
	}
	// A request is known by its time, which the API keeps to the second:
	// a second request within the same second as the last gets the next.
	at := metav1.NewTime(now.Truncate(time.Second))
	if last := h.Spec.MoveRequest; last != nil && !at.After(last.RequestedAt.Time) {
		at = metav1.NewTime(last.RequestedAt.Add(time.Second))
	}
	req := map[string]any{"requestedAt": at}
	if to != "" {
		req["to"] = to
	} else {
		req["to"] = nil
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"moveRequest": req}})
	if err != nil {
		return "", err
	}
	if err := c.Patch(ctx, h, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		return "", apiError(err)
	}
	var answer *huddlev1.MoveRequestStatus
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, h); err != nil {
			return false, apiError(err)
		}
		if s := h.Status.MoveRequest; s != nil && s.RequestedAt.Equal(&at) {
			answer = s
			return true, nil
		}
		return false, nil
	})
	if answer == nil {
		if err != nil && !wait.Interrupted(err) {
			return "", err
		}
		return "", fmt.Errorf("huddle did not answer the move request within %s: is huddle running (kubectl -n huddle-system get pods)? The request stays in spec.moveRequest and huddle answers it when it can", timeout)
	}
	if answer.Result != huddlev1.MoveRequestStarted {
		return "", fmt.Errorf("huddle %s: %s", name, answer.Message)
	}
	return fmt.Sprintf("huddle/%s: %s. Follow it with: kubectl huddle status %s -n %s", name, answer.Message, name, namespace), nil
}
