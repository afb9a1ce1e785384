package controller

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
)

// eventCacheSize is how many recent events huddle's event recorder
// remembers to aggregate repeats and to rate-limit each object's events
// (client-go's EventCorrelator: three LRU caches of this size). client-go's
// default, 4,096 each, held 8 MB at 2,000 nodes and 20,000 pods, 8% of
// huddle's live heap, mostly for pods that each had one or two events:
// keys carry the whole message. 512 still holds every object of a burst
// that repeats an event within seconds. An object forgotten sooner gets
// a new Event for its next repeat instead of a higher count on the old
// one, and its rate limit starts afresh.
const eventCacheSize = 512

// NewEventRecorder returns the event recorder of huddle's controllers
// (Options.Recorder) and the function that stops it once the manager has
// stopped. It records as the manager's would, as component "huddle",
// with the events also logged at V(1), but with a smaller correlator
// cache (eventCacheSize). The manager's own option for this
// (EventBroadcaster, deprecated) hands one broadcaster to two recorder
// providers; once both have started (the manager's at shutdown, at the
// latest) every event is sent twice.
func NewEventRecorder(cfg *rest.Config, scheme *runtime.Scheme) (record.EventRecorder, func(), error) {
	cs, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), "events"))
	if err != nil {
		return nil, nil, err
	}
	b := record.NewBroadcaster(record.WithCorrelatorOptions(record.CorrelatorOptions{LRUCacheSize: eventCacheSize}))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	logger := ctrl.Log.WithName("events")
	b.StartEventWatcher(func(e *corev1.Event) {
		logger.V(1).Info(e.Message, "type", e.Type, "object", e.InvolvedObject, "reason", e.Reason)
	})
	return b.NewRecorder(scheme, corev1.EventSource{Component: "huddle"}), b.Shutdown, nil
}
