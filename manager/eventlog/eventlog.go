// Package eventlog records the manager's Events (events.k8s.io/v1).
//
// client-go's recorder folds every Event about one object with the same
// type, reason and action into one series and keeps the series' first
// note: when what is wrong changes (a Secret refused for another reason,
// a grant now missing), `kubectl describe` goes on showing the old words
// for minutes. Here an Event with a new note is a new Event; the same
// note again within Window adds to its series, written at most every
// SeriesEvery.
package eventlog

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	eventsclient "k8s.io/client-go/kubernetes/typed/events/v1"
	"k8s.io/client-go/tools/reference"
)

// Bounds of what is remembered and written.
const (
	// Window is how long a note is remembered: the same note after it
	// starts a new Event.
	Window = 10 * time.Minute
	// SeriesEvery is how often a series' count is written at most.
	SeriesEvery = time.Minute
	// queueLen Events wait to be written at most; more are dropped (and
	// logged), as client-go drops them, so a storm cannot hold memory.
	queueLen = 1000
	// maxNote is the API's limit on an Event's note (1 kB).
	maxNote = 1024
	// maxRemembered notes at most: the oldest beyond it are forgotten.
	maxRemembered = 4096
)

// Log writes the Events its recorders record, once started (a
// manager.Runnable that runs on every replica: the key broker records
// too).
type Log struct {
	sink   eventsclient.EventsGetter
	scheme *runtime.Scheme
	log    logr.Logger
	now    func() time.Time

	mu   sync.Mutex
	seen map[key]*series
	work chan write
	// stamp names the last Event written: names stay unique when two
	// are recorded in the same nanosecond (or the clock steps back).
	stamp int64
}

// New writes Events through sink.
func New(sink eventsclient.EventsGetter, scheme *runtime.Scheme, log logr.Logger) *Log {
	return &Log{sink: sink, scheme: scheme, log: log, now: time.Now, seen: map[key]*series{}, work: make(chan write, queueLen)}
}

// Recorder records Events as controller (their reportingController).
type Recorder struct {
	log        *Log
	controller string
	instance   string
}

// For is the recorder of controller.
func (l *Log) For(controller string) *Recorder {
	host, _ := os.Hostname()
	instance := controller + "-" + host
	if len(instance) > 128 {
		instance = instance[:128]
	}
	return &Recorder{log: l, controller: controller, instance: instance}
}

// key is what makes two Events the same one: a new note is a new Event.
type key struct {
	controller         string
	regarding, related corev1.ObjectReference
	kind, reason       string
	action, note       string
}

// series is an Event written (or queued), and how often it happened.
type series struct {
	event   *eventsv1.Event
	count   int32
	last    time.Time
	written time.Time
}

// write is an Event to create, or a series' count to patch.
type write struct {
	event *eventsv1.Event
	patch bool
}

// Eventf records an Event about regarding (and related, if not nil).
func (rec *Recorder) Eventf(regarding, related runtime.Object, kind, reason, action, note string, args ...any) {
	r := rec.log
	ref, err := reference.GetReference(r.scheme, regarding)
	if err != nil {
		r.log.Error(err, "no reference to the Event's object", "reason", reason)
		return
	}
	var rel corev1.ObjectReference
	if related != nil {
		if p, err := reference.GetReference(r.scheme, related); err == nil {
			rel = *p
		}
	}
	if kind != corev1.EventTypeNormal && kind != corev1.EventTypeWarning {
		r.log.Error(nil, "an Event's type is Normal or Warning", "type", kind, "reason", reason)
		return
	}
	msg := fmt.Sprintf(note, args...)
	if len(msg) > maxNote {
		msg = msg[:maxNote-len("…")] + "…"
	}
	now := r.now()
	k := key{controller: rec.controller, regarding: *ref, related: rel, kind: kind, reason: reason, action: action, note: msg}

	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.seen[k]; s != nil && now.Sub(s.last) < Window {
		s.count++
		s.last = now
		if now.Sub(s.written) < SeriesEvery {
			return
		}
		s.written = now
		ev := s.event.DeepCopy()
		ev.Series = &eventsv1.EventSeries{Count: s.count, LastObservedTime: metav1.NewMicroTime(now)}
		r.enqueue(write{event: ev, patch: true})
		return
	}
	r.forget(now)
	r.stamp = max(r.stamp+1, now.UnixNano())
	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", ref.Name, r.stamp), Namespace: ns},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: rec.controller,
		ReportingInstance:   rec.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Note:                msg,
		Type:                kind,
	}
	if rel != (corev1.ObjectReference{}) { // a related object without a reference is left out
		ev.Related = &rel
	}
	r.seen[k] = &series{event: ev, count: 1, last: now, written: now}
	r.enqueue(write{event: ev})
}

// forget drops the notes older than Window, and the oldest beyond
// maxRemembered. r.mu is held.
func (r *Log) forget(now time.Time) {
	if len(r.seen) < maxRemembered/2 {
		return
	}
	var oldest key
	var oldestAt time.Time
	for k, s := range r.seen {
		if now.Sub(s.last) >= Window {
			delete(r.seen, k)
		} else if oldestAt.IsZero() || s.last.Before(oldestAt) {
			oldest, oldestAt = k, s.last
		}
	}
	if len(r.seen) >= maxRemembered {
		delete(r.seen, oldest)
	}
}

func (r *Log) enqueue(w write) {
	select {
	case r.work <- w:
	default:
		r.log.Info("dropping an Event: too many waiting to be written", "reason", w.event.Reason, "regarding", w.event.Regarding.Name)
	}
}

// Start writes the Events recorded until ctx ends.
func (r *Log) Start(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case w := <-r.work:
			r.write(ctx, w)
		}
	}
}

// NeedLeaderElection: every replica records (the key broker's Events).
func (r *Log) NeedLeaderElection() bool { return false }

// write creates an Event, or patches a series' count (creating the Event
// again if it is gone); a failure to reach the API server is tried twice
// more.
func (r *Log) write(ctx context.Context, w write) {
	events := r.sink.Events(w.event.Namespace)
	for try := 1; ; try++ {
		var err error
		if w.patch {
			patch, _ := json.Marshal(map[string]any{"series": w.event.Series})
			_, err = events.Patch(ctx, w.event.Name, types.MergePatchType, patch, metav1.PatchOptions{})
			if apierrors.IsNotFound(err) {
				w.patch = false
				continue
			}
		} else {
			_, err = events.Create(ctx, w.event, metav1.CreateOptions{})
		}
		_, answered := err.(apierrors.APIStatus) // not worth trying again
		switch {
		case err == nil:
			return
		case answered || try == 3:
			r.log.Error(err, "writing an Event", "reason", w.event.Reason, "regarding", w.event.Regarding.Name)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(try) * time.Second):
		}
	}
}
