package expiry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestReconcile(t *testing.T) {
	now := time.Date(2027, 1, 1, 12, 0, 0, 0, time.UTC)
	key := types.NamespacedName{Namespace: "tsinject-system", Name: "tsinject-authkey"}
	for _, tc := range []struct {
		name       string
		annotation *string // nil: none
		wantEvent  string  // reason, "" for none
		wantIn     string  // in the event's message
		wantGauge  float64 // 0: no series
		wantAfter  time.Duration
	}{
		{name: "no annotation"},
		{name: "far off", annotation: ptr("2027-03-01T12:00:00Z"), wantGauge: float64(time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC).Unix()),
			wantAfter: time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC).Sub(now) - DefaultWarning},
		{name: "within the warning", annotation: ptr("2027-01-04T00:00:00Z"), wantEvent: ReasonExpiresSoon, wantIn: "expires in 3 days",
			wantGauge: float64(time.Date(2027, 1, 4, 0, 0, 0, 0, time.UTC).Unix()), wantAfter: 24 * time.Hour},
		{name: "hours left", annotation: ptr("2027-01-01T18:00:00Z"), wantEvent: ReasonExpiresSoon, wantIn: "expires in 1 day,",
			wantGauge: float64(time.Date(2027, 1, 1, 18, 0, 0, 0, time.UTC).Unix()), wantAfter: 6 * time.Hour},
		{name: "expired", annotation: ptr("2026-12-31T00:00:00Z"), wantEvent: ReasonExpired, wantIn: "expired at 2026-12-31T00:00:00Z",
			wantGauge: float64(time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC).Unix()), wantAfter: 24 * time.Hour},
		{name: "not a time", annotation: ptr("next spring"), wantEvent: ReasonInvalid, wantIn: `annotation tsinject.dev/expires: "next spring" is not a time: want RFC 3339`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
			if tc.annotation != nil {
				s.Annotations = map[string]string{Annotation: *tc.annotation}
			}
			rec := events.NewFakeRecorder(4)
			r := &Reconciler{Client: fake.NewClientBuilder().WithObjects(s).Build(), Events: rec, Secrets: []types.NamespacedName{key},
				Now: func() time.Time { return now }, Log: logr.Discard()}
			Gauge().Reset()
			res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key})
			if err != nil {
				t.Fatal(err)
			}
			if res.RequeueAfter != tc.wantAfter {
				t.Errorf("requeue after %s, want %s", res.RequeueAfter, tc.wantAfter)
			}
			series := countSeries(Gauge())
			switch {
			case tc.wantGauge == 0 && series != 0:
				t.Errorf("%d gauge series, want none", series)
			case tc.wantGauge != 0:
				if got := value(t, Gauge().WithLabelValues(key.String())); got != tc.wantGauge {
					t.Errorf("gauge %v, want %v", got, tc.wantGauge)
				}
			}
			select {
			case e := <-rec.Events:
				if tc.wantEvent == "" {
					t.Errorf("event %q, want none", e)
				} else if !strings.HasPrefix(e, "Warning "+tc.wantEvent+" ") || !strings.Contains(e, tc.wantIn) {
					t.Errorf("event %q: want Warning %s containing %q", e, tc.wantEvent, tc.wantIn)
				}
			default:
				if tc.wantEvent != "" {
					t.Errorf("no event, want %s", tc.wantEvent)
				}
			}
		})
	}

	t.Run("deleted", func(t *testing.T) {
		Gauge().WithLabelValues(key.String()).Set(1)
		r := &Reconciler{Client: fake.NewClientBuilder().Build(), Secrets: []types.NamespacedName{key}, Log: logr.Discard()}
		if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		if n := countSeries(Gauge()); n != 0 {
			t.Errorf("%d gauge series left for a deleted Secret", n)
		}
	})
}

func ptr[T any](v T) *T { return &v }

func countSeries(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

func value(t *testing.T, m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetGauge().GetValue()
}
