package apiproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/copybuf"
	"github.com/tsinject/tsinject/internal/failover"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Modes.
const (
	ModeAuth   = "auth"
	ModeNoAuth = "noauth"
)

// TLS settings: HTTPS with the tailnet's certificate, or plain HTTP only
// when asked for.
const (
	TLSAuto = "auto"
	TLSHTTP = "http"
)

// Handler proxies requests to the API server.
type Handler struct {
	Mode     string
	Upstream *url.URL
	// Transport reaches the API server (its CA; no client credentials).
	Transport http.RoundTripper
	// Token returns the proxy's own bearer token (auth mode).
	Token func() (string, error)
	// WhoIs identifies the tailnet caller at a remote address (auth mode).
	WhoIs func(ctx context.Context, remoteAddr string) (*apitype.WhoIsResponse, error)
	Logf  logger.Logf
	// Names and Addrs are what the Host header may name: the proxy's
	// MagicDNS names and tailnet addresses. Empty Names and Addrs leave
	// Host unchecked (tests).
	Names []string
	Addrs []netip.Addr
	// CallerTTL is how long one connection's WhoIs answer is reused (with
	// ConnContext installed); 0 means DefaultCallerTTL.
	CallerTTL time.Duration
	// Record records exec and attach sessions where grants ask (nil: none
	// are, and those that must be are refused).
	Record *Recording

	once     sync.Once
	proxy    *httputil.ReverseProxy
	requests *prometheus.CounterVec
	latency  prometheus.Histogram
}

type ctxKey struct{}

type connKey struct{}

// DefaultCallerTTL bounds how long a connection's caller and grants are
// reused: the peer behind a tailnet connection cannot change, but its
// grants can, and a change reaches open connections within this time.
const DefaultCallerTTL = 10 * time.Second

// caller is one connection's last resolved caller.
type caller struct {
	mu  sync.Mutex
	res *resolved
	at  time.Time
}

// resolved is a caller as the proxy acts for it: the impersonated
// identity, and the access log's names for it. Grants are parsed once per
// answer, not once per request.
type resolved struct {
	Identity
	who, as string
	res     *apitype.WhoIsResponse // for a session's recording
}

// resolve maps a WhoIs answer to the caller's identity and log names.
func resolve(res *apitype.WhoIsResponse) (*resolved, error) {
	id, err := IdentityOf(res)
	if err != nil {
		return nil, err
	}
	c := &resolved{Identity: id, who: res.Node.ComputedName, as: id.User, res: res}
	if res.UserProfile != nil && !res.Node.IsTagged() {
		c.who = res.UserProfile.LoginName + "/" + c.who
	}
	if len(id.Groups) > 0 {
		c.as += "[" + strings.Join(id.Groups, ",") + "]"
	}
	return c, nil
}

// ConnContext, installed as the http.Server's, lets requests on one
// connection share its caller: one WhoIs per connection (per CallerTTL)
// instead of one per request.
func (h *Handler) ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &caller{})
}

// identify resolves the request's tailnet caller.
func (h *Handler) identify(r *http.Request) (*resolved, error) {
	lookup := func() (*resolved, error) {
		res, err := h.WhoIs(r.Context(), r.RemoteAddr)
		if err != nil {
			return nil, err
		}
		return resolve(res)
	}
	c, ok := r.Context().Value(connKey{}).(*caller)
	if !ok {
		return lookup()
	}
	ttl := h.CallerTTL
	if ttl <= 0 {
		ttl = DefaultCallerTTL
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.res != nil && time.Since(c.at) < ttl {
		return c.res, nil
	}
	id, err := lookup()
	if err != nil {
		return nil, err
	}
	c.res, c.at = id, time.Now()
	return id, nil
}

// Register adds the handler's metrics to reg.
func (h *Handler) Register(reg prometheus.Registerer) {
	h.init()
	reg.MustRegister(h.requests, h.latency)
}

func (h *Handler) init() {
	h.once.Do(func() {
		h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsinject_apiproxy_requests_total", Help: "Requests proxied to the API server, by status code.",
		}, []string{"code"})
		h.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tsinject_apiproxy_request_duration_seconds", Help: "Time to the end of each proxied request (watches last long).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		})
		h.proxy = &httputil.ReverseProxy{
			Transport:     h.Transport,
			FlushInterval: -1, // watches and logs stream as they come
			BufferPool:    copybuf.Pool{},
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(h.Upstream)
				pr.Out.Host = h.Upstream.Host
				if id, ok := pr.In.Context().Value(ctxKey{}).(*outbound); ok {
					stripClientAuth(pr.Out.Header)
					setIdentity(pr.Out.Header, id.Identity)
					pr.Out.Header.Set("Authorization", "Bearer "+id.token)
				}
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				h.Logf("upstream error for %s %s: %v", r.Method, r.URL.Path, err)
				writeStatus(w, http.StatusBadGateway, "ServiceUnavailable", "tsinject: the API server is unreachable from the proxy: "+err.Error())
			},
		}
	})
}

type outbound struct {
	Identity
	token string
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.init()
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	who := "-"
	as := "-"
	defer func() {
		d := time.Since(start)
		h.requests.WithLabelValues(strconv.Itoa(rec.code)).Inc()
		h.latency.Observe(d.Seconds())
		h.Logf("access: who=%s as=%s %s %s status=%d duration=%s", who, as, r.Method, r.URL.RequestURI(), rec.code, d.Round(time.Microsecond))
	}()
	// The checks below read the path: a request target that is not one
	// (an opaque or relative URL) would go around them.
	if r.URL.Opaque != "" || !strings.HasPrefix(r.URL.Path, "/") {
		who = r.RemoteAddr
		writeStatus(rec, http.StatusBadRequest, "BadRequest", "tsinject: the request target must be an absolute path such as /api/v1/pods")
		return
	}
	if hdr := browserHeader(r.Header); hdr != "" {
		who = r.RemoteAddr
		writeStatus(rec, http.StatusForbidden, "Forbidden", "tsinject: the API proxy refuses requests from web browsers (the request carries "+hdr+"); use kubectl or another API client")
		return
	}
	if (len(h.Names) > 0 || len(h.Addrs) > 0) && !tsnode.HostAllowed(r.Host, h.Names, h.Addrs) {
		who = r.RemoteAddr
		writeStatus(rec, http.StatusForbidden, "Forbidden", fmt.Sprintf("tsinject: Host %q does not name this API proxy (allowed: %s)", r.Host, strings.Join(h.allowedHosts(), ", ")))
		return
	}
	if h.Mode == ModeAuth {
		id, err := h.identify(r)
		if err != nil {
			who = r.RemoteAddr
			writeStatus(rec, http.StatusForbidden, "Forbidden", fmt.Sprintf("tsinject: cannot identify the caller %s on the tailnet (%v); requests must come from a tailnet node", r.RemoteAddr, err))
			return
		}
		who, as = id.who, id.as
		var out http.ResponseWriter = rec
		if isSession(r.URL.Path) {
			// Recorded where grants ask; refused where they require it
			// and it cannot be.
			if h.Record == nil {
				if id.EnforceRecorder {
					writeStatus(rec, http.StatusForbidden, "Forbidden", errRecordingRequired.Error())
					return
				}
				if len(id.Recorders) > 0 {
					h.Logf("warning: session %s by %s is not recorded: the grant names recorders %v, and this proxy does not record sessions", r.URL.Path, who, id.Recorders)
				}
			} else {
				var refused string
				if out, refused = h.Record.recordWriter(r.Context(), rec, r, id); refused != "" {
					h.Logf("session %s by %s refused: %s", r.URL.Path, who, refused)
					writeStatus(rec, http.StatusForbidden, "Forbidden", refused)
					return
				}
				if sw, ok := out.(*sessionWriter); ok {
					defer sw.finish()
				}
			}
		}
		tok, err := h.Token()
		if err != nil {
			writeStatus(rec, http.StatusInternalServerError, "InternalError", "tsinject: the proxy has no service account token: "+err.Error())
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, &outbound{Identity: id.Identity, token: tok}))
		h.proxy.ServeHTTP(out, r)
		return
	}
	h.proxy.ServeHTTP(rec, r)
}

func (h *Handler) allowedHosts() []string {
	out := slices.Clone(h.Names)
	for _, a := range h.Addrs {
		out = append(out, a.String())
	}
	return out
}

// writeStatus answers with a Kubernetes Status, which kubectl prints.
func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": reason, "code": code,
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) { s.code = code; s.ResponseWriter.WriteHeader(code) }
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Hijack takes the connection over for a session (101 Switching
// Protocols, written by the reverse proxy on it); the recording's
// hijacker asks for it by this method.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	s.code = http.StatusSwitchingProtocols
	return http.NewResponseController(s.ResponseWriter).Hijack()
}

// TokenFile returns a Token func that re-reads a projected service account
// token (the kubelet rotates it) at most once a minute.
func TokenFile(path string) func() (string, error) {
	var mu sync.Mutex
	var tok string
	var read time.Time
	return func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if tok != "" && time.Since(read) < time.Minute {
			return tok, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			if tok != "" {
				return tok, nil
			}
			return "", err
		}
		tok, read = strings.TrimSpace(string(b)), time.Now()
		return tok, nil
	}
}

// UpstreamTransport trusts the API server's CA. Ordinary requests may use
// HTTP/2; upgrades (exec, attach, port-forward over SPDY or WebSocket)
// need HTTP/1.1, so they get a transport of their own.
func UpstreamTransport(caFile string) (http.RoundTripper, error) {
	pool := x509.NewCertPool()
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
	}
	h2 := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	h1 := h2.Clone()
	h1.ForceAttemptHTTP2 = false
	h1.TLSClientConfig.NextProtos = []string{"http/1.1"}
	h1.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	return upgradeAware{h1: h1, h2: h2}, nil
}

type upgradeAware struct{ h1, h2 http.RoundTripper }

func (u upgradeAware) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Upgrade") != "" {
		return u.h1.RoundTrip(r)
	}
	return u.h2.RoundTrip(r)
}

// Config configures Run.
type Config struct {
	Node     tsnode.Options
	Mode     string
	TLS      string // "auto" or "http"
	Upstream *url.URL
	// TokenFile and CAFile are the proxy's service account credentials.
	TokenFile, CAFile string
	HealthAddr        string
}

// Settings is `tsinject-proxy apiserver`'s table of flags and TSINJECT_*
// variables (the controller sets the variables); the upstream and the
// service account files are the command's own flags.
func (cfg *Config) Settings() []cli.Setting {
	return append(cfg.Node.ProxySettings(&cfg.HealthAddr),
		cli.Setting{Flag: "mode", Env: contract.EnvAPIProxyMode, Help: "auth (impersonate tailnet callers) or noauth (transport only)", Default: ModeAuth,
			Set: cli.OneOf(&cfg.Mode, ModeAuth, ModeNoAuth)},
		cli.Setting{Flag: "tls", Env: contract.EnvAPIProxyTLS, Help: "auto (HTTPS with the tailnet's certificate; fails if the tailnet issues none) or http", Default: TLSAuto,
			Set: cli.OneOf(&cfg.TLS, TLSAuto, TLSHTTP)},
	)
}

// Run serves the proxy on the tailnet until ctx ends. A one-name
// replica (cfg.Node.OneName) stands by until it holds the set's name,
// answering probes (ready: able to take over), and serves it until the
// name is lost (then it returns, and its container starts again as a
// standby).
func Run(ctx context.Context, cfg Config, logf logger.Logf) error {
	switch cfg.Mode {
	case ModeAuth, ModeNoAuth:
	default:
		return fmt.Errorf("--mode %q: allowed: %s, %s", cfg.Mode, ModeAuth, ModeNoAuth)
	}
	if cfg.TLS != TLSAuto && cfg.TLS != TLSHTTP {
		return fmt.Errorf("--tls %q: allowed: %s, %s", cfg.TLS, TLSAuto, TLSHTTP)
	}
	tr, err := UpstreamTransport(cfg.CAFile)
	if err != nil {
		return fmt.Errorf("--ca-file: %w", err)
	}
	// The proxy carries every kubectl user's connections.
	if cfg.Node.WindowShare == 0 {
		cfg.Node.WindowShare = tsnode.WindowShareShared
	}
	// The node is set once it serves (readiness), the handler's WhoIs
	// before it does.
	var node atomic.Pointer[tsnode.Node]
	h := &Handler{Mode: cfg.Mode, Upstream: cfg.Upstream, Transport: tr, Token: TokenFile(cfg.TokenFile), Logf: logf}
	h.Record = &Recording{
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			n := node.Load()
			if n == nil {
				return nil, errors.New("the proxy is not on the tailnet yet")
			}
			return n.Server.Dial(ctx, network, addr)
		},
		Recorders: PeerRecorders(func(ctx context.Context) (*ipnstate.Status, error) {
			n := node.Load()
			if n == nil {
				return nil, errors.New("not on the tailnet yet")
			}
			return n.LC.Status(ctx)
		}),
		Ping: func(ctx context.Context, addr netip.Addr) error {
			n := node.Load()
			if n == nil {
				return errors.New("not on the tailnet yet")
			}
			res, err := n.LC.Ping(ctx, addr, tailcfg.PingTSMP)
			if err != nil {
				return err
			}
			if res.Err != "" {
				return errors.New(res.Err)
			}
			return nil
		},
		Logf: logf,
	}
	reg := prometheus.NewRegistry()
	h.Register(reg)
	nodeReady := func(ctx context.Context) error {
		n := node.Load()
		if n == nil {
			return errors.New("joining the tailnet")
		}
		return n.Ready(ctx)
	}
	guard, err := failover.NewGuard(cfg.Node, logf)
	if err != nil {
		return err
	}
	health, err := tsnode.ServeHealth(cfg.HealthAddr, guard.Ready(nodeReady), promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if err != nil {
		return err
	}
	defer health.Close()
	return guard.Run(ctx, func(ctx context.Context) error { return serveNode(ctx, cfg, h, reg, &node, logf) })
}

// serveNode joins the tailnet and serves h there until ctx ends.
func serveNode(ctx context.Context, cfg Config, h *Handler, reg *prometheus.Registry, node *atomic.Pointer[tsnode.Node], logf logger.Logf) error {
	n, err := tsnode.Start(ctx, cfg.Node, logf)
	if err != nil {
		return err
	}
	defer n.Close(context.Background(), logf)
	reg.MustRegister(tsnode.NewPeerCollector(n))

	st, err := n.LC.StatusWithoutPeers(ctx)
	if err != nil {
		return err
	}
	fqdn := strings.TrimSuffix(st.Self.DNSName, ".")
	h.Names, h.Addrs = tsnode.HostNames(fqdn), st.Self.TailscaleIPs
	h.WhoIs = func(ctx context.Context, addr string) (*apitype.WhoIsResponse, error) { return n.LC.WhoIs(ctx, addr) }

	var ln net.Listener
	scheme := "http"
	switch {
	case cfg.TLS == TLSHTTP:
		ln, err = n.Server.Listen("tcp", ":80")
	case len(n.Server.CertDomains()) > 0:
		ln, err = n.Server.ListenTLS("tcp", ":443")
		scheme = "https"
	default:
		// Never fall back to plain HTTP unasked: kubeconfigs written for
		// HTTPS would send bearer tokens in clear to whatever answers.
		return fmt.Errorf("tls %q: the tailnet issues no HTTPS certificate for %s; enable HTTPS certificates on the tailnet, or set tls: %s to serve plain HTTP (WireGuard still encrypts the traffic)", cfg.TLS, fqdn, TLSHTTP)
	}
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ConnContext: h.ConnContext, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("API server proxy stopped serving: %v", err)
		}
	}()
	node.Store(n)
	defer node.Store(nil)

	u := scheme + "://" + fqdn
	logf("API server proxy (%s mode) serving %s -> %s", cfg.Mode, u, cfg.Upstream)
	// Its device (and the peers it talks to, by path) for the
	// APIServerProxy's status.
	go n.ReportLoop(ctx, func(*ipnstate.Status) (map[string]any, error) {
		return map[string]any{contract.DeviceFQDN: fqdn, contract.DeviceURL: u}, nil
	}, logf)

	<-ctx.Done()
	// Requests in flight may finish, as long as failover allows.
	shutdown, cancel := context.WithTimeout(context.Background(), failover.Drain(ctx, cfg.Node.OneName))
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		srv.Close() // watches and the like, cut (the node closes next)
	}
	return nil
}
