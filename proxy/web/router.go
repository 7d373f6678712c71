package web

import (
	"cmp"
	"context"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/contract"
)

// Router sends each request to a backend of the route it matches, as the
// tailnet caller it came from.
type Router struct {
	routes []route
	// WhoIs identifies a caller by its address on the tailnet.
	WhoIs func(ctx context.Context, addr string) (*apitype.WhoIsResponse, error)
	// RequireCapability, if set, admits only callers granted it.
	RequireCapability tailcfg.PeerCapability
	// Names are the hosts the proxy answers for besides its routes' own
	// (its MagicDNS name); others get 421. None: any.
	Names []string
	// MoreNames, if set, adds names that change while it runs (those of a
	// certificate re-read from files); "*." matches one label.
	MoreNames func() []string
	// IdentityTTL is how long a connection's caller, once looked up,
	// stands for its later requests (default DefaultIdentityTTL); with
	// ConnContext set as the server's.
	IdentityTTL time.Duration
	Logf        logger.Logf
}

// DefaultIdentityTTL bounds how long a grant or tag change takes to reach
// a connection that stays open: a lookup through the node's local API
// costs more than the rest of a small request's way through the proxy.
const DefaultIdentityTTL = 2 * time.Second

// callerKey carries the caller's WhoIs answer from ServeHTTP to the
// outgoing request.
type callerKey struct{}

// connKey carries a connection's last lookup of its caller.
type connKey struct{}

type connCaller struct {
	mu  sync.Mutex
	who *apitype.WhoIsResponse
	at  time.Time
}

// ConnContext is the server's ConnContext: it gives each connection a
// place for its caller's identity, looked up again after IdentityTTL.
func (r *Router) ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &connCaller{})
}

// caller is the tailnet node and user behind req.
func (r *Router) caller(req *http.Request) (*apitype.WhoIsResponse, error) {
	cc, _ := req.Context().Value(connKey{}).(*connCaller)
	if cc == nil {
		return r.WhoIs(req.Context(), req.RemoteAddr)
	}
	// Requests of one HTTP/2 connection wait for one lookup.
	cc.mu.Lock()
	defer cc.mu.Unlock()
	ttl := cmp.Or(r.IdentityTTL, DefaultIdentityTTL)
	if cc.who != nil && time.Since(cc.at) < ttl {
		return cc.who, nil
	}
	who, err := r.WhoIs(req.Context(), req.RemoteAddr)
	if err != nil || who == nil || who.Node == nil {
		cc.who = nil
		return who, err
	}
	cc.who, cc.at = who, time.Now()
	return who, nil
}

type route struct {
	contract.WebRoute
	proxies []*httputil.ReverseProxy // one per backend
	total   int64                    // sum of weights
}

// NewRouter builds the proxies of routes: HTTP/1.1 (WebSocket upgrades
// included) to each backend, or HTTP/2 without TLS to an H2C one.
func NewRouter(routes []contract.WebRoute, logf logger.Logf) *Router {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	h1 := &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		ResponseHeaderTimeout: 0, ExpectContinueTimeout: time.Second}
	h2c := &http.Transport{DialContext: dialer.DialContext, IdleConnTimeout: 90 * time.Second, Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)

	r := &Router{Logf: logf}
	for _, wr := range routes {
		rt := route{WebRoute: wr}
		for _, b := range wr.Backends {
			target := &url.URL{Scheme: "http", Host: b.Addr}
			p := &httputil.ReverseProxy{
				// The identity goes on the outgoing request, after the
				// hop-by-hop headers the client named in Connection are
				// gone: naming them there cannot remove it.
				Rewrite: func(pr *httputil.ProxyRequest) {
					pr.SetURL(target)
					pr.Out.Host = pr.In.Host // the name the client asked for
					pr.SetXForwarded()
					pr.Out.Header.Del("X-Real-Ip")
					who, _ := pr.In.Context().Value(callerKey{}).(*apitype.WhoIsResponse)
					setIdentity(pr.Out.Header, who)
				},
				Transport: h1,
				// Streams (server-sent events, gRPC) reach the client as
				// they come.
				FlushInterval: -1,
				ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
					logf("web: %s %s to %s: %v", req.Method, req.URL.Path, b.Addr, err)
					w.WriteHeader(http.StatusBadGateway)
				},
			}
			if b.H2C {
				p.Transport = h2c
			}
			rt.proxies = append(rt.proxies, p)
			rt.total += int64(b.Weight)
		}
		r.routes = append(r.routes, rt)
	}
	return r
}

// match is the route for host and path: among those whose host matches,
// an exact path first, then the longest prefix; a route naming a host
// before one naming none.
func (r *Router) match(host, path string) *route {
	var best *route
	score := func(rt *route) (int, int, int) {
		specific := 0
		if rt.Host != "" {
			specific = 1
		}
		exact := 0
		if rt.Exact {
			exact = 1
		}
		return exact, len(rt.Path), specific
	}
	for i := range r.routes {
		rt := &r.routes[i]
		if !hostMatches(rt.Host, host) || !pathMatches(rt.Path, rt.Exact, path) {
			continue
		}
		if best == nil {
			best = rt
			continue
		}
		e1, l1, s1 := score(rt)
		e2, l2, s2 := score(best)
		if e1 > e2 || (e1 == e2 && (l1 > l2 || (l1 == l2 && s1 > s2))) {
			best = rt
		}
	}
	return best
}

func hostMatches(pattern, host string) bool {
	if pattern == "" {
		return true
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		_, tail, found := strings.Cut(host, ".")
		return found && tail == rest
	}
	return host == pattern
}

func pathMatches(pattern string, exact bool, path string) bool {
	if exact {
		return path == pattern
	}
	if pattern == "/" {
		return true
	}
	p := strings.TrimSuffix(pattern, "/")
	return path == p || strings.HasPrefix(path, p+"/")
}

// pick chooses a backend by weight.
func (rt *route) pick() *httputil.ReverseProxy {
	n := rand.Int64N(rt.total)
	for i, b := range rt.Backends {
		if n < int64(b.Weight) {
			return rt.proxies[i]
		}
		n -= int64(b.Weight)
	}
	return rt.proxies[len(rt.proxies)-1]
}

// ServeHTTP identifies the caller, sets its identity headers in place of
// any the client sent, and proxies to the matching route.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	who, err := r.caller(req)
	if err != nil || who == nil || who.Node == nil {
		http.Error(w, "tsinject: the caller is not an identifiable tailnet node", http.StatusForbidden)
		return
	}
	if r.RequireCapability != "" {
		if _, ok := who.CapMap[r.RequireCapability]; !ok {
			http.Error(w, "tsinject: your tailnet grants do not include "+string(r.RequireCapability)+", which this site requires", http.StatusForbidden)
			return
		}
	}
	// Only WebSocket may take a connection over: another upgrade (h2c)
	// would carry requests the proxy never sees, without identity.
	if up := req.Header.Get("Upgrade"); up != "" && !strings.EqualFold(up, "websocket") {
		http.Error(w, "tsinject: upgrade "+up+" is not allowed (allowed: websocket)", http.StatusBadRequest)
		return
	}
	req.Header.Del("Http2-Settings")
	// Routes match the path the backend will act on: one with dot
	// segments or encoded slashes could match one route and mean another.
	if unclean(req.URL) {
		http.Error(w, "tsinject: the path has dot segments or encoded slashes", http.StatusBadRequest)
		return
	}
	host := strings.ToLower(strings.TrimSuffix(req.Host, "."))
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = strings.TrimSuffix(h, ".")
	}
	rt := r.match(host, req.URL.Path)
	if rt == nil || (rt.Host == "" && !r.Answers(host)) {
		if rt == nil {
			http.NotFound(w, req)
		} else {
			http.Error(w, "tsinject: this proxy does not serve "+host, http.StatusMisdirectedRequest)
		}
		return
	}
	rt.pick().ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), callerKey{}, who)))
}

// unclean reports whether u's path has "." or ".." segments, or encoded
// slashes or backslashes.
func unclean(u *url.URL) bool {
	raw := strings.ToLower(u.EscapedPath())
	if strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") || strings.Contains(u.Path, "\\") {
		return true
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// isIdentityHeader reports whether a header name is one backends may
// take for the proxy's (Tailscale-*, also spelt with underscores, which
// CGI-style servers read as the same).
func isIdentityHeader(k string) bool {
	return strings.HasPrefix(http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-")), contract.HeaderPrefix)
}

// setIdentity replaces every Tailscale-* header with the caller's
// identity (none without one).
func setIdentity(h http.Header, who *apitype.WhoIsResponse) {
	for k := range h {
		if isIdentityHeader(k) {
			delete(h, k)
		}
	}
	if who == nil || who.Node == nil {
		return
	}
	h.Set(contract.HeaderCallerNode, strings.TrimSuffix(who.Node.Name, "."))
	if who.Node.IsTagged() {
		h.Set(contract.HeaderCallerTags, strings.Join(who.Node.Tags, ","))
		return
	}
	if u := who.UserProfile; u != nil {
		h.Set(contract.HeaderUserLogin, headerValue(u.LoginName))
		h.Set(contract.HeaderUserName, headerValue(u.DisplayName))
		if u.ProfilePicURL != "" {
			h.Set(contract.HeaderUserProfilePic, u.ProfilePicURL)
		}
	}
}

// headerValue is v as a header value: as is in ASCII, RFC 2047-encoded
// otherwise, empty if it is not UTF-8 (as tailscale serve writes them).
func headerValue(v string) string {
	if !utf8.ValidString(v) {
		return ""
	}
	return mime.QEncoding.Encode("utf-8", v)
}

// Answers reports whether the proxy answers for host besides its routes'
// own hosts: one of Names or MoreNames, or any when neither is set.
func (r *Router) Answers(host string) bool {
	if len(r.Names) == 0 && r.MoreNames == nil {
		return true
	}
	if slices.Contains(r.Names, host) {
		return true
	}
	if r.MoreNames == nil {
		return false
	}
	for _, n := range r.MoreNames() {
		n = strings.ToLower(n)
		if n == host || (strings.HasPrefix(n, "*.") && strings.HasSuffix(host, n[1:]) && !strings.Contains(strings.TrimSuffix(host, n[1:]), ".") && len(host) > len(n)-1) {
			return true
		}
	}
	return false
}
