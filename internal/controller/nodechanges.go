package controller

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// NodeChanges collects, for one controller, the nodes whose state
// placement reads has changed since the controller last took them. A
// node's free resources change with every pod bound to it or gone from
// it; collecting them and taking them once a period (nodeCoalesce) turns a
// burst of pod churn on a node into one look at the Huddles it concerns,
// and lets the controller look only at the Huddles the change can concern
// instead of every Huddle once a minute.
type NodeChanges struct {
	mu sync.Mutex
	// dirty maps a node to whether more than its free resources changed:
	// it came or went, or its readiness, cordon, taints or labels did.
	dirty map[string]bool
}

// nodeCoalesce is how often changed nodes are handed to their
// controllers: a node that changes many times within it is looked at
// once. It equals statusSpacing, the least time between two status writes
// of a Huddle, so coalescing adds at most one spacing to how late a
// status is.
const nodeCoalesce = time.Second

// mark records a change of node; availability says whether more than its
// free resources changed.
func (n *NodeChanges) mark(node string, availability bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dirty == nil {
		n.dirty = map[string]bool{}
	}
	n.dirty[node] = n.dirty[node] || availability
}

// take returns the nodes changed since the last take, and forgets them.
func (n *NodeChanges) take() map[string]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.dirty
	n.dirty = nil
	return out
}

// flush maps the nodes changed since the last flush to requests and
// queues them (the queue merges a request already waiting).
func (n *NodeChanges) flush(ctx context.Context, q workqueue.TypedInterface[reconcile.Request], mapFn func(context.Context, map[string]bool) []reconcile.Request) int {
	changed := n.take()
	if len(changed) == 0 {
		return 0
	}
	reqs := mapFn(ctx, changed)
	for _, r := range reqs {
		q.Add(r)
	}
	return len(reqs)
}

// Source returns a controller source that, every nodeCoalesce, queues
// the requests mapFn makes of the nodes changed meanwhile.
func (n *NodeChanges) Source(mapFn func(context.Context, map[string]bool) []reconcile.Request) source.Source {
	return source.Func(func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		go func() {
			t := time.NewTicker(nodeCoalesce)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					n.flush(ctx, q, mapFn)
				}
			}
		}()
		return nil
	})
}
