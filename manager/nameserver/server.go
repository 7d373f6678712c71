package nameserver

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Recorder records an Event (manager/eventlog's Recorder).
type Recorder interface {
	Eventf(regarding, related runtime.Object, kind, reason, action, note string, args ...any)
}

// ReasonNoEgressPath is the Event on a pod that asked for a tailnet name
// its namespace has no egress Service for.
const ReasonNoEgressPath = "TailnetNameNotFound"

// Bounds of the server's work.
const (
	maxTCPConns = 256
	tcpIdle     = 10 * time.Second
	udpReaders  = 4
	// Bounds of the Events about misses: a pod asking for random names
	// must not write an Event for each, nor one namespace use up the
	// others' share.
	missEvents      = rate.Limit(5)
	missBurst       = 20
	nsMissEvents    = rate.Limit(1)
	nsMissBurst     = 5
	maxMissLimiters = 4096
)

// Server serves an Answerer over UDP and TCP.
type Server struct {
	Answerer *Answerer
	Addr     string
	Events   Recorder
	Log      logr.Logger
	Queries  *prometheus.CounterVec // by result; nil: not counted

	ready  atomic.Bool
	misses *rate.Limiter
	once   sync.Once

	mu       sync.Mutex
	nsMisses map[string]*rate.Limiter
}

// QueriesMetric is the counter Server.Queries expects.
func QueriesMetric() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tsinject_nameserver_queries_total",
		Help: "DNS queries by result: answered, nodata, nxdomain (no egress path in the namespace), no-namespace (SERVFAIL: not through CoreDNS with tsinject's snippet, or before CoreDNS knows the pod), outside-zones, malformed, notimp.",
	}, []string{"result"})
}

// Ready reports whether the server listens (its readiness check).
func (s *Server) Ready() bool { return s.ready.Load() }

// NeedLeaderElection: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	s.once.Do(func() { s.misses = rate.NewLimiter(missEvents, missBurst) })
	pc, err := net.ListenPacket("udp", s.Addr)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		pc.Close()
		return err
	}
	return s.Serve(ctx, pc, l)
}

// Serve answers on pc and l until ctx ends, then closes them.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	if s.misses == nil {
		s.misses = rate.NewLimiter(missEvents, missBurst)
	}
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { s.ready.Store(false); pc.Close(); l.Close() })
	defer stop()
	for range udpReaders {
		wg.Go(func() { s.serveUDP(ctx, pc) })
	}
	wg.Go(func() { s.serveTCP(ctx, l) })
	s.ready.Store(true)
	s.Log.Info("serving", "addr", s.Addr, "zones", s.Answerer.Zones)
	<-ctx.Done()
	wg.Wait()
	return nil
}

func (s *Server) serveUDP(ctx context.Context, pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if out := s.answer(ctx, buf[:n], true); out != nil {
			_, _ = pc.WriteTo(out, from)
		}
	}
}

func (s *Server) serveTCP(ctx context.Context, l net.Listener) {
	sem := make(chan struct{}, maxTCPConns)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close() // full: the client retries
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			s.serveConn(ctx, c)
		})
	}
}

// serveConn answers length-prefixed messages until the client stops, is
// idle for tcpIdle, or ctx ends.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var lenBuf [2]byte
	buf := make([]byte, 65535)
	for {
		_ = c.SetDeadline(time.Now().Add(tcpIdle))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		out := s.answer(ctx, buf[:n], false)
		if out == nil {
			return
		}
		msg := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(out)), uint16(len(out)))
		if _, err := c.Write(append(msg, out...)); err != nil {
			return
		}
	}
}

func (s *Server) answer(ctx context.Context, req []byte, udp bool) []byte {
	out, result, miss := s.Answerer.Answer(ctx, req, udp)
	if s.Queries != nil {
		s.Queries.WithLabelValues(result).Inc()
	}
	if miss != nil {
		s.missed(*miss)
	}
	return out
}

// missed records the Event on the pod that asked (CoreDNS names it) and
// logs it; bounded, so that random names cost little.
func (s *Server) missed(m Miss) {
	if !s.allowMiss(m.Namespace) {
		return
	}
	s.Log.V(1).Info("no egress path", "namespace", m.Namespace, "pod", m.Pod, "name", m.Name, "why", m.Why)
	if m.Pod == "" || s.Events == nil {
		return
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: m.Pod}}
	s.Events.Eventf(pod, nil, corev1.EventTypeWarning, ReasonNoEgressPath, "Resolve", "%s: %s", m.Name, m.Why)
}

// allowMiss takes a token of namespace's own limit, then of the server's.
func (s *Server) allowMiss(namespace string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nsMisses == nil || len(s.nsMisses) >= maxMissLimiters {
		s.nsMisses = map[string]*rate.Limiter{}
	}
	l := s.nsMisses[namespace]
	if l == nil {
		l = rate.NewLimiter(nsMissEvents, nsMissBurst)
		s.nsMisses[namespace] = l
	}
	return l.Allow() && s.misses.Allow()
}
