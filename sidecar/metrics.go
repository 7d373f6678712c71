package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the sidecar's Prometheus metrics, on /metrics.
type Metrics struct {
	Registry   *prometheus.Registry
	ready      prometheus.Gauge
	tunUp      prometheus.Gauge
	conns      *prometheus.CounterVec
	active     *prometheus.GaugeVec
	bytes      *prometheus.CounterVec
	dialErrors *prometheus.CounterVec
	dnsQueries *prometheus.CounterVec
}

func newMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tsinject_sidecar_ready", Help: "1 when the node is Running with a home DERP connection.",
		}),
		tunUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tsinject_sidecar_tun_up", Help: "1 when transparent egress carries UDP and ICMP through the pod's TUN; 0 when it carries TCP and DNS only.",
		}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsinject_sidecar_connections_total", Help: "Connections carried, by direction (egress, ingress) and mode (forward, socks5, http, transparent, expose).",
		}, []string{"direction", "mode"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tsinject_sidecar_active_connections", Help: "Connections open now, by direction.",
		}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsinject_sidecar_bytes_total", Help: "Bytes carried over the tailnet, by direction, mode and way (sent to or received from the tailnet).",
		}, []string{"direction", "mode", "way"}),
		dialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsinject_sidecar_dial_errors_total", Help: "Refused or failed dials, by cause.",
		}, []string{"cause"}),
		dnsQueries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsinject_sidecar_dns_queries_total", Help: "DNS queries answered, by result (magicdns, exit-node, forwarded, error).",
		}, []string{"result"}),
	}
	m.Registry.MustRegister(m.ready, m.tunUp, m.conns, m.active, m.bytes, m.dialErrors, m.dnsQueries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range []string{causeNotTailnet, causeUnknownName, causeNoPeer, causeDialFailed, causeNotReady, causeCluster, causeExitOffline} {
		m.dialErrors.WithLabelValues(c)
	}
	return m
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
