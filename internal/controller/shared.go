package controller

import (
	"runtime"
	"strings"
	"sync"
	"unsafe"
	"weak"
)

// shared holds one copy of each distinct value (a slice of T) that
// cached objects hold, by a key that names the value, so that objects
// with equal values hold one copy instead of one each: the trims (see
// TrimPod) give every pod that requests the same one RequestsContainer,
// every member pinned to the same node one node affinity, and every
// cached object one copy of each string that many repeat (shareString).
//
// It holds each copy weakly: a copy that no cached object holds any more
// is collected, and its entry with it (a runtime cleanup). So values
// that are all different (a vertical autoscaler's requests) share nothing
// and cost only their entry while they live, and the table holds nothing
// of objects that are gone.
//
// Cached objects are read-only (controller-runtime copies them for every
// Get and List unless told not to, and those readers only read), so the
// objects that share a value never see each other's changes: an object
// that changes is trimmed again, into other values.
type shared[T any] struct {
	mu    sync.Mutex
	byKey map[string]sharedRef[T]
}

// sharedRef is a copy in the table: its first element, weakly, and its
// length.
type sharedRef[T any] struct {
	first weak.Pointer[T]
	n     int
}

// sharedGone names a copy that was collected.
type sharedGone[T any] struct {
	key   string
	first weak.Pointer[T]
}

func newShared[T any]() *shared[T] {
	return &shared[T]{byKey: map[string]sharedRef[T]{}}
}

// of returns the copy of the value that key names, or, if there is none
// (no cached object holds one), makes the value with build and keeps it
// as the copy. build's slice must be the caller's alone and never changed
// after; one of length 0 is returned as it is, unshared.
func (s *shared[T]) of(key string, build func() []T) []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.byKey[key]; ok {
		if first := r.first.Value(); first != nil {
			return unsafe.Slice(first, r.n)
		}
	}
	v := build()
	if len(v) == 0 {
		return v
	}
	// The entry's key is a copy of its own: the caller's may be part of
	// a larger allocation (a string of a decoded object), which the
	// table would otherwise keep.
	key = strings.Clone(key)
	first := weak.Make(&v[0])
	s.byKey[key] = sharedRef[T]{first: first, n: len(v)}
	runtime.AddCleanup(&v[0], s.forget, sharedGone[T]{key: key, first: first})
	return v[:len(v):len(v)]
}

// forget drops the entry of a collected copy, unless its key has a newer
// copy already.
func (s *shared[T]) forget(g sharedGone[T]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKey[g.key].first == g.first {
		delete(s.byKey, g.key)
	}
}

// sharedStrings are the strings that cached objects repeat: namespaces,
// node names, label keys and values, phases, attachers and the
// conditions of Huddles.
var sharedStrings = newShared[byte]()

// shareString returns the shared copy of s (see shared): each copy a
// decoded object carries is its own allocation, and 20,000 pods repeat a
// few hundred namespaces, nodes and labels. A string of 16 bytes or less
// may share its allocation with other small objects (Go's tiny
// allocator); its entry then stays while they live, a few bytes.
func shareString(s string) string {
	if s == "" {
		return s
	}
	b := sharedStrings.of(s, func() []byte { return []byte(s) })
	return unsafe.String(&b[0], len(b))
}

// shareLabels returns m with its keys and values shared (shareString), in
// a new map; nil stays nil.
func shareLabels(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[shareString(k)] = shareString(v)
	}
	return out
}
