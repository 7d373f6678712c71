package manager

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
)

// runner stands in for controller-runtime's manager: Start blocks until
// its context ends and reports when that was.
type runner struct {
	ctrl.Manager
	stopped chan time.Time
}

func (r runner) Start(ctx context.Context) error {
	<-ctx.Done()
	r.stopped <- time.Now()
	return nil
}

// A stopping manager drains: not ready and closing connections at once,
// the underlying manager stopped only after ShutdownDelay.
func TestStartDrainsBeforeStopping(t *testing.T) {
	const delay = 300 * time.Millisecond
	r := runner{stopped: make(chan time.Time, 1)}
	m := &Manager{Manager: r, Options: Options{ShutdownDelay: delay, Log: logr.Discard()}}
	h := m.closeWhileDraining(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	serve := func() string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/inject-pod", nil))
		return rec.Header().Get("Connection")
	}
	if c := serve(); c != "" {
		t.Errorf("running: Connection %q, want keep-alive", c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	cancel()
	signalled := time.Now()
	deadline := time.After(10 * time.Second)
	for !m.draining.Load() {
		select {
		case <-deadline:
			t.Fatal("not draining after the stop signal")
		case <-time.After(time.Millisecond):
		}
	}
	if c := serve(); c != "close" {
		t.Errorf("draining: Connection %q, want close", c)
	}
	select {
	case at := <-r.stopped:
		if waited := at.Sub(signalled); waited < delay {
			t.Errorf("underlying manager stopped %s after the signal, before the %s delay", waited, delay)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("underlying manager never stopped")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
