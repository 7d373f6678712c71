package webhook

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tsinject/tsinject/injector"
)

// Metrics count admission decisions by the injector's reason codes.
type Metrics struct {
	requests *prometheus.CounterVec
	injected prometheus.Counter
	skipped  *prometheus.CounterVec
	denied   *prometheus.CounterVec
	latency  prometheus.Histogram
}

var (
	defaultOnce    sync.Once
	defaultMetrics *Metrics
)

// DefaultMetrics are registered once with controller-runtime's registry,
// however many managers a process starts (tests, the sandbox).
func DefaultMetrics() *Metrics {
	defaultOnce.Do(func() { defaultMetrics = NewMetrics(crmetrics.Registry) })
	return defaultMetrics
}

// NewMetrics registers the injector's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsinject_admission_requests_total",
			Help: "Admission requests handled, by outcome (injected, skipped, denied, ignored).",
		}, []string{"outcome"}),
		injected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tsinject_injected_total",
			Help: "Pods injected with the tailscale sidecar.",
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsinject_skipped_total",
			Help: "Pods admitted without injection, by reason.",
		}, []string{"reason"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsinject_denied_total",
			Help: "Pods denied, by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tsinject_admission_duration_seconds",
			Help:    "Time to decide on and patch one admission request.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
	}
	reg.MustRegister(m.requests, m.injected, m.skipped, m.denied, m.latency)
	// Every reason shows up as a zero series, so dashboards see them all.
	for _, r := range injector.Reasons {
		switch r.Outcome {
		case injector.OutcomeSkipped:
			m.skipped.WithLabelValues(string(r.Reason))
		case injector.OutcomeDenied:
			m.denied.WithLabelValues(string(r.Reason))
		}
	}
	return m
}

func (m *Metrics) observe(r injector.Reason, d time.Duration) {
	if m == nil {
		return
	}
	m.latency.Observe(d.Seconds())
	if r == "" {
		m.requests.WithLabelValues("ignored").Inc()
		return
	}
	out := r.Info().Outcome
	m.requests.WithLabelValues(string(out)).Inc()
	switch out {
	case injector.OutcomeInjected:
		if r == injector.ReasonInjected { // not a reinvocation's late containers
			m.injected.Inc()
		}
	case injector.OutcomeSkipped:
		m.skipped.WithLabelValues(string(r)).Inc()
	case injector.OutcomeDenied:
		m.denied.WithLabelValues(string(r)).Inc()
	}
}
