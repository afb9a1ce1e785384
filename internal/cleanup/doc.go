// Package cleanup undoes what a running huddle leaves in a cluster, for
// `huddle cleanup`, which the chart's pre-delete hook runs on helm
// uninstall.
//
// Three steps, in this order:
//
//  1. Delete the MutatingWebhookConfiguration, so no new pod is gated.
//  2. Remove the scheduling gate huddle.io/placement from every pod that
//     still carries it. Gated pods are never bound, so only unscheduled
//     pods are listed, a page at a time. A pod keeps everything else: any
//     other gate, and its node affinity (a gated pod is not pinned yet, so
//     it goes to the default scheduler unpinned). Each released pod gets
//     the annotation huddle.io/released-by: uninstall and a Normal event
//     ReleasedOnUninstall. The look is repeated once after a short wait,
//     for admissions that were in flight when the configuration went.
//  3. Delete the certificate Secret.
//
// Every step tolerates what is already gone, so a retried hook finishes
// the work. Which gates a pod keeps, the patch and the event are pure
// functions (ungate.go), tested without a cluster.
package cleanup
