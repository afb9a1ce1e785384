package controller

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// Each event huddle records reaches the API server once.
func TestEventRecorderSendsEachEventOnce(t *testing.T) {
	var posts atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"kind":"Event","apiVersion":"v1","metadata":{"name":"e","namespace":"ns"}}`))
	}))
	defer api.Close()
	rec, stop, err := NewEventRecorder(&rest.Config{Host: api.URL}, scheme.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, name := range []string{"a", "b", "c"} {
		rec.Event(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)}}, corev1.EventTypeNormal, "Pinned", "pinned to n1")
	}
	deadline := time.Now().Add(10 * time.Second)
	for posts.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a second sink would post by now
	if got := posts.Load(); got != 3 {
		t.Errorf("3 events were sent %d times, want 3", got)
	}
}
