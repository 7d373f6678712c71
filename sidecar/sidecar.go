package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Sidecar is a running data plane.
type Sidecar struct {
	cfg     *Config
	node    *Node
	dialer  *Dialer
	metrics *Metrics
	tracker *tracker
	logf    logger.Logf

	mu        sync.Mutex
	listeners []io.Closer
	ready     bool // all listeners are up
}

// Run starts the sidecar and blocks until ctx ends (SIGTERM), then stops
// accepting, drains established connections for the grace period and
// leaves the tailnet.
func Run(ctx context.Context, cfg *Config, logf logger.Logf) error {
	if logf == nil {
		logf = stdLogf
	}
	s := &Sidecar{cfg: cfg, metrics: newMetrics(), tracker: newTracker(), logf: logf}
	health, err := tsnode.ServeHealth(cfg.HealthAddr, s.readyz, promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	if err != nil {
		return err
	}
	defer health.Close()

	// The node outlives ctx by the grace period: draining needs the tailnet.
	nodeCtx, stopNode := context.WithCancel(context.Background())
	defer stopNode()
	startCtx, cancelStart := context.WithCancel(nodeCtx)
	go func() { <-ctx.Done(); cancelStart() }()
	var tun *podTUN
	if cfg.EgressMode == contract.EgressTransparent && cfg.TunDir != "" {
		// Without the TUN the pod still has TCP and DNS: say so, and go on.
		if dev, err := openTUN(cfg.TunDir); err != nil {
			logf("UDP and ICMP to the tailnet are not carried: %v", err)
		} else {
			tun = newPodTUN(dev, &tunCounters{})
			s.metrics.Registry.MustRegister(tun.count)
		}
	}
	s.metrics.tunUp.Set(boolGauge(tun != nil))
	node, err := StartNode(startCtx, cfg, tun, logf)
	cancelStart()
	if err != nil {
		return err
	}
	s.node = node
	s.metrics.Registry.MustRegister(tsnode.NewPeerCollector(node.Node))
	if cfg.ExitNode != "" {
		s.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tsinject_sidecar_exit_node_online", Help: "1 when the pod's exit node (tsinject.dev/exit-node) is chosen and online; 0 while traffic for it waits.",
			ConstLabels: prometheus.Labels{"exit_node": cfg.ExitNode},
		}, func() float64 { return boolGauge(node.view.Load().exitOnline) }))
	}
	s.dialer = &Dialer{node: node, metrics: s.metrics, logf: logf, tracker: s.tracker}
	if err := s.listen(nodeCtx); err != nil {
		node.Close(context.Background())
		return err
	}
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	logf("ready: egress %s %v, expose %v", cfg.EgressMode, contract.FormatEgress(cfg.Egress), contract.FormatExpose(cfg.Expose))

	<-ctx.Done()
	logf("stopping: no new connections; draining for up to %s", cfg.GracePeriod)
	s.mu.Lock()
	s.ready = false
	for _, l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	if left := s.tracker.drain(cfg.GracePeriod); left > 0 {
		logf("closed %d connections still open after the grace period", left)
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node.Close(closeCtx)
	logf("left the tailnet")
	return nil
}

// listen opens every listener the configuration asks for.
func (s *Sidecar) listen(ctx context.Context) error {
	cfg := s.cfg
	add := func(c io.Closer) { s.listeners = append(s.listeners, c) }
	for _, t := range cfg.Egress {
		if t.LocalPort == 0 {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(t.LocalPort))))
		if err != nil {
			return fmt.Errorf("egress %s: %w", t, err)
		}
		add(ln)
		go s.serveForward(ctx, ln, t)
	}
	if cfg.SOCKS5Addr != "" {
		ln, err := net.Listen("tcp", cfg.SOCKS5Addr)
		if err != nil {
			return fmt.Errorf("SOCKS5 proxy: %w", err)
		}
		add(ln)
		go s.serveSOCKS5(ctx, ln)
	}
	if cfg.HTTPProxyAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPProxyAddr)
		if err != nil {
			return fmt.Errorf("HTTP proxy: %w", err)
		}
		srv := &http.Server{Handler: newHTTPProxy(s), ReadHeaderTimeout: 30 * time.Second}
		add(ln)
		go func() { _ = srv.Serve(ln) }() // returns when the listener is closed on shutdown
	}
	if cfg.EgressMode == contract.EgressTransparent {
		if err := s.listenTransparent(ctx); err != nil {
			return err
		}
	}
	for _, e := range cfg.Expose {
		ln, err := s.node.Server.Listen("tcp", ":"+strconv.Itoa(int(e.TailnetPort)))
		if err != nil {
			return fmt.Errorf("expose %s: %w", e, err)
		}
		add(ln)
		go s.serveExpose(ln, e)
	}
	return nil
}

// listenTransparent opens the redirect and DNS listeners on both loopback
// addresses (IPv4 and IPv6 connections are redirected to their family's).
func (s *Sidecar) listenTransparent(ctx context.Context) error {
	dns := &dnsServer{s: s}
	if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		dns.upstream = readResolvConf(bytes.NewReader(b))
		dns.cluster = zonesFromResolvConf(bytes.NewReader(b))
	}
	upstream := dns.upstream
	for _, host := range []string{"127.0.0.1", "::1"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(int(s.cfg.RedirectPort))))
		if err != nil {
			if host == "::1" && noIPv6(err) {
				continue
			}
			return fmt.Errorf("transparent egress listener: %w", err)
		}
		s.listeners = append(s.listeners, ln)
		go s.serveTransparent(ctx, ln)

		dnsAddr := net.JoinHostPort(host, strconv.Itoa(int(s.cfg.DNSPort)))
		pc, err := net.ListenPacket("udp", dnsAddr)
		if err != nil {
			return fmt.Errorf("DNS listener: %w", err)
		}
		s.listeners = append(s.listeners, pc)
		go dns.serveUDP(ctx, pc)
		dl, err := net.Listen("tcp", dnsAddr)
		if err != nil {
			return fmt.Errorf("DNS listener: %w", err)
		}
		s.listeners = append(s.listeners, dl)
		go dns.serveTCP(ctx, dl)
	}
	s.logf("transparent egress on port %d, DNS on port %d, upstream nameservers %v", s.cfg.RedirectPort, s.cfg.DNSPort, upstream)
	return nil
}

// noIPv6 reports whether listening on ::1 failed because the pod has no
// IPv6 (and only then: a port in use must still fail the start).
func noIPv6(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)
}

// readyz is Ready, recorded in the ready gauge.
func (s *Sidecar) readyz(ctx context.Context) error {
	err := s.Ready(ctx)
	if err != nil {
		s.metrics.ready.Set(0)
	} else {
		s.metrics.ready.Set(1)
	}
	return err
}

// Ready reports whether the sidecar carries traffic.
func (s *Sidecar) Ready(ctx context.Context) error {
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if !ready {
		return errors.New("not ready: joining the tailnet or stopping")
	}
	return s.node.Ready(ctx)
}
