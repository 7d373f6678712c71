package eventlog

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
)

var _ events.EventRecorder = (*Recorder)(nil)

// drain writes what l has queued, in order.
func drain(t *testing.T, l *Log) {
	t.Helper()
	for {
		select {
		case w := <-l.work:
			l.write(context.Background(), w)
		default:
			return
		}
	}
}

func list(t *testing.T, cs *fake.Clientset) []eventsv1.Event {
	t.Helper()
	evs, err := cs.EventsV1().Events("shop").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return evs.Items
}

// A new note about the same object, type, reason and action is a new
// Event (client-go's recorder keeps the first note, adding to its
// series); the same note again adds to its own series, written at most
// once a SeriesEvery; after Window it is a new Event again.
func TestNewNoteIsNewEvent(t *testing.T) {
	cs := fake.NewClientset()
	l := New(cs.EventsV1(), scheme.Scheme, testr.New(t))
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	rec := l.For("tsinject-web")
	ing := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "u1"}}

	rec.Eventf(ing, nil, corev1.EventTypeWarning, "InvalidWeb", "Reconcile", "may read every Secret in %s", "shop")
	now = now.Add(10 * time.Second)
	rec.Eventf(ing, nil, corev1.EventTypeWarning, "InvalidWeb", "Reconcile", "grant it that one Secret")
	drain(t, l)
	evs := list(t, cs)
	if len(evs) != 2 {
		t.Fatalf("%d Events, want one per note: %+v", len(evs), evs)
	}
	notes := evs[0].Note + "|" + evs[1].Note
	if !strings.Contains(notes, "may read every Secret in shop") || !strings.Contains(notes, "grant it that one Secret") {
		t.Errorf("notes %q", notes)
	}
	for _, ev := range evs {
		if ev.ReportingController != "tsinject-web" || !strings.HasPrefix(ev.ReportingInstance, "tsinject-web-") ||
			ev.Regarding.UID != "u1" || ev.Regarding.Kind != "Pod" || ev.Type != corev1.EventTypeWarning || ev.Reason != "InvalidWeb" || ev.Action != "Reconcile" {
			t.Errorf("event %+v", ev)
		}
	}

	// The second note again, twice in the minute: one write of its
	// series, with both counted, once the minute is up.
	now = now.Add(10 * time.Second)
	rec.Eventf(ing, nil, corev1.EventTypeWarning, "InvalidWeb", "Reconcile", "grant it that one Secret")
	drain(t, l)
	if evs := list(t, cs); len(evs) != 2 || evs[0].Series != nil || evs[1].Series != nil {
		t.Fatalf("a repeat within the minute was written: %+v", evs)
	}
	now = now.Add(SeriesEvery)
	rec.Eventf(ing, nil, corev1.EventTypeWarning, "InvalidWeb", "Reconcile", "grant it that one Secret")
	drain(t, l)
	var series *eventsv1.EventSeries
	for _, ev := range list(t, cs) {
		if ev.Note == "grant it that one Secret" {
			series = ev.Series
		}
	}
	if series == nil || series.Count != 3 || !series.LastObservedTime.Time.Equal(now) {
		t.Fatalf("series %+v, want 3 at %v", series, now)
	}

	// Past the window the note starts a new Event; so does another
	// controller's same note.
	now = now.Add(Window)
	rec.Eventf(ing, nil, corev1.EventTypeWarning, "InvalidWeb", "Reconcile", "grant it that one Secret")
	l.For("tsinject-gateway").Eventf(ing, nil, corev1.EventTypeWarning, "InvalidWeb", "Reconcile", "grant it that one Secret")
	drain(t, l)
	if evs := list(t, cs); len(evs) != 4 {
		t.Fatalf("%d Events, want 4", len(evs))
	}
}

// A series whose Event is gone (Events live an hour) is written anew.
func TestSeriesOfAGoneEventIsCreated(t *testing.T) {
	cs := fake.NewClientset()
	l := New(cs.EventsV1(), scheme.Scheme, testr.New(t))
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	rec := l.For("tsinject-web")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	rec.Eventf(pod, nil, corev1.EventTypeNormal, "Ready", "Reconcile", "serving")
	drain(t, l)
	if err := cs.EventsV1().Events("shop").DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(SeriesEvery)
	rec.Eventf(pod, nil, corev1.EventTypeNormal, "Ready", "Reconcile", "serving")
	drain(t, l)
	if evs := list(t, cs); len(evs) != 1 || evs[0].Series == nil || evs[0].Series.Count != 2 {
		t.Fatalf("Events %+v, want the series written anew", evs)
	}
}

// Bad input is refused, not written: an unknown type; a note beyond the
// API's 1 kB is cut to it.
func TestBoundsAndTypes(t *testing.T) {
	cs := fake.NewClientset()
	l := New(cs.EventsV1(), scheme.Scheme, testr.New(t))
	rec := l.For("tsinject-web")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	rec.Eventf(pod, nil, "Error", "Bad", "Reconcile", "no such type")
	rec.Eventf(pod, nil, corev1.EventTypeWarning, "Long", "Reconcile", "%s", strings.Repeat("x", 5000))
	drain(t, l)
	evs := list(t, cs)
	if len(evs) != 1 || evs[0].Reason != "Long" || len(evs[0].Note) > maxNote {
		t.Fatalf("Events %s", fmt.Sprint(evs))
	}
	if !strings.HasSuffix(evs[0].Note, "…") {
		t.Errorf("a cut note does not say so: …%s", evs[0].Note[len(evs[0].Note)-10:])
	}
}
