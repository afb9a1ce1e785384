package controller

import "k8s.io/client-go/tools/record"

// eventCacheSize is how many recent events huddle's event recorder
// remembers to aggregate repeats and to rate-limit each object's events
// (client-go's EventCorrelator: three LRU caches of this size). client-go's
// default, 4,096 each, held 8 MB at 2,000 nodes and 20,000 pods, 8% of
// huddle's live heap, mostly for pods that each had one or two events:
// keys carry the whole message. 512 still holds every object of a burst
// that repeats an event within seconds; an object forgotten sooner is only
// aggregated and rate-limited afresh.
const eventCacheSize = 512

// NewEventBroadcaster returns the event broadcaster of huddle's manager
// (manager.Options.EventBroadcaster): client-go's, with a smaller
// correlator cache (eventCacheSize). The manager lives as long as the
// process, so the option's deprecation (a broadcaster outliving a
// manager that stops early leaks its goroutines) does not apply.
func NewEventBroadcaster() record.EventBroadcaster {
	return record.NewBroadcasterWithCorrelatorOptions(record.CorrelatorOptions{LRUCacheSize: eventCacheSize})
}
