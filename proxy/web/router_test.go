package web

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/internal/contract"
)

// Among the routes a request's host and path match: an exact path first,
// then the longest prefix of whole segments, then one naming the host.
func TestMatch(t *testing.T) {
	routes := []contract.WebRoute{
		{Path: "/", Backends: []contract.WebBackend{{Addr: "root:80", Weight: 1}}},
		{Path: "/api", Backends: []contract.WebBackend{{Addr: "api:80", Weight: 1}}},
		{Path: "/api/v2/", Backends: []contract.WebBackend{{Addr: "v2:80", Weight: 1}}},
		{Path: "/login", Exact: true, Backends: []contract.WebBackend{{Addr: "login:80", Weight: 1}}},
		{Host: "grafana.example.com", Path: "/", Backends: []contract.WebBackend{{Addr: "grafana:80", Weight: 1}}},
		{Host: "*.apps.example.com", Path: "/", Backends: []contract.WebBackend{{Addr: "apps:80", Weight: 1}}},
	}
	r := NewRouter(routes, t.Logf)
	for _, tc := range []struct{ host, path, want string }{
		{"web.ts.net", "/", "root:80"},
		{"web.ts.net", "/apix", "root:80"},
		{"web.ts.net", "/api", "api:80"},
		{"web.ts.net", "/api/v1/x", "api:80"},
		{"web.ts.net", "/api/v2", "v2:80"},
		{"web.ts.net", "/api/v2/users", "v2:80"},
		{"web.ts.net", "/login", "login:80"},
		{"web.ts.net", "/login/x", "root:80"},
		{"grafana.example.com", "/d/1", "grafana:80"},
		{"GRAFANA.example.com.", "/", "grafana:80"},
		{"a.apps.example.com", "/", "apps:80"},
		{"a.b.apps.example.com", "/", "root:80"},
		{"apps.example.com", "/", "root:80"},
	} {
		rt := r.match(tc.host, tc.path)
		if got := rt.Backends[0].Addr; got != tc.want {
			t.Errorf("%s%s: routed to %s, want %s", tc.host, tc.path, got, tc.want)
		}
	}
	if rt := NewRouter(routes[1:2], t.Logf).match("web.ts.net", "/other"); rt != nil {
		t.Errorf("/other matched %+v with no route for it", rt.WebRoute)
	}
}

// whoIs answers for a user's device and a tagged one.
func whoIs(_ context.Context, addr string) (*apitype.WhoIsResponse, error) {
	if strings.HasPrefix(addr, "100.64.0.9:") {
		return &apitype.WhoIsResponse{Node: &tailcfg.Node{Name: "ci.tail.ts.net.", Tags: []string{"tag:ci", "tag:prod"}}}, nil
	}
	return &apitype.WhoIsResponse{Node: &tailcfg.Node{Name: "laptop.tail.ts.net."},
		UserProfile: &tailcfg.UserProfile{LoginName: "alice@example.com", DisplayName: "Alice Ærø", ProfilePicURL: "https://pic/a"},
		CapMap:      tailcfg.PeerCapMap{"example.com/cap/grafana": nil}}, nil
}

// The backend sees the caller's identity and never what the client
// claimed under Tailscale-*; a tagged caller is named by its node and
// tags. Callers without a required capability get 403.
func TestIdentityHeaders(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(r.Header)
	}))
	defer backend.Close()
	r := NewRouter([]contract.WebRoute{{Path: "/", Backends: []contract.WebBackend{{Addr: backend.Listener.Addr().String(), Weight: 1}}}}, t.Logf)
	r.WhoIs = whoIs
	call := func(from string) (int, http.Header) {
		req := httptest.NewRequest("GET", "https://web.tail.ts.net/", nil)
		req.RemoteAddr = from
		req.Header.Set("Tailscale-User-Login", "root@example.com")
		req.Header.Set("tailscale-caller-tags", "tag:admin")
		req.Header.Set("Tailscale-Anything", "forged")
		req.Header["Tailscale_User_Login"] = []string{"root@example.com"}
		// Hop-by-hop by the client's word: must not take the identity away.
		req.Header.Set("Connection", "Tailscale-Caller-Tags, Tailscale-Caller-Node, Tailscale-User-Login")
		req.Header.Set("X-Real-Ip", "203.0.113.9")
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		var h http.Header
		json.Unmarshal(w.Body.Bytes(), &h)
		return w.Code, h
	}
	code, h := call("100.64.0.1:40000")
	if code != 200 || h.Get(contract.HeaderUserLogin) != "alice@example.com" || h.Get(contract.HeaderUserName) != "=?utf-8?q?Alice_=C3=86r=C3=B8?=" ||
		h.Get(contract.HeaderUserProfilePic) != "https://pic/a" || h.Get(contract.HeaderCallerNode) != "laptop.tail.ts.net" ||
		h.Get(contract.HeaderCallerTags) != "" || h.Get("Tailscale-Anything") != "" || h.Get("X-Forwarded-For") != "100.64.0.1" ||
		h.Get("Tailscale_User_Login") != "" || h.Get("X-Real-Ip") != "" {
		t.Errorf("user's request: %d %v", code, h)
	}
	code, h = call("100.64.0.9:40000")
	if code != 200 || h.Get(contract.HeaderCallerTags) != "tag:ci,tag:prod" || h.Get(contract.HeaderCallerNode) != "ci.tail.ts.net" ||
		h.Get(contract.HeaderUserLogin) != "" || h.Get("Tailscale-Anything") != "" {
		t.Errorf("tagged node's request: %d %v", code, h)
	}

	r.RequireCapability = "example.com/cap/grafana"
	if code, _ := call("100.64.0.1:40000"); code != 200 {
		t.Errorf("granted caller: %d", code)
	}
	if code, _ := call("100.64.0.9:40000"); code != http.StatusForbidden {
		t.Errorf("caller without the capability: %d, want 403", code)
	}
}

// Backends share a route by weight; one of weight 0 gets nothing.
func TestWeights(t *testing.T) {
	hits := map[string]int{}
	var names []string
	var backends []contract.WebBackend
	for _, name := range []string{"a", "b", "never"} {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
		defer s.Close()
		weight := map[string]int32{"a": 3, "b": 1}[name]
		backends = append(backends, contract.WebBackend{Addr: s.Listener.Addr().String(), Weight: weight})
		names = append(names, name)
	}
	r := NewRouter([]contract.WebRoute{{Path: "/", Backends: backends}}, t.Logf)
	r.WhoIs = whoIs
	for range 400 {
		req := httptest.NewRequest("GET", "https://web/", nil)
		req.RemoteAddr = "100.64.0.1:1"
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		hits[w.Body.String()]++
	}
	if hits["never"] != 0 || hits["a"] < 240 || hits["a"] > 360 || hits["a"]+hits["b"] != 400 {
		t.Errorf("hits %v of 400, want a about 300, b about 100, never none (%v)", hits, names)
	}
}

// What could make a route mean another, or carry requests past the
// proxy, is refused: upgrades but WebSocket (h2c would tunnel requests
// without identity), dot segments and encoded slashes in the path; a
// host the proxy does not serve gets 421.
func TestRefusedRequests(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) }))
	defer backend.Close()
	r := NewRouter([]contract.WebRoute{
		{Path: "/public", Backends: []contract.WebBackend{{Addr: backend.Listener.Addr().String(), Weight: 1}}},
		{Host: "grafana.example.com", Path: "/", Backends: []contract.WebBackend{{Addr: backend.Listener.Addr().String(), Weight: 1}}},
	}, t.Logf)
	r.WhoIs = whoIs
	r.Names = []string{"web.tail.ts.net"}
	for _, tc := range []struct {
		name, target, host string
		hdr                map[string]string
		want               int
	}{
		{"plain", "/public/x", "web.tail.ts.net", nil, 200},
		{"name with a port and a dot", "/public/x", "WEB.tail.ts.net.:443", nil, 200},
		{"route's own host", "/x", "grafana.example.com", nil, 200},
		{"websocket upgrade", "/public/ws", "web.tail.ts.net", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}, 200},
		{"h2c upgrade", "/public", "web.tail.ts.net", map[string]string{"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQAAP__"}, 400},
		{"dot dot", "/public/../admin", "web.tail.ts.net", nil, 400},
		{"encoded dot dot", "/public/%2e%2e/admin", "web.tail.ts.net", nil, 400},
		{"encoded slash", "/public/..%2fadmin", "web.tail.ts.net", nil, 400},
		{"another host", "/public/x", "evil.example", nil, http.StatusMisdirectedRequest},
		{"the short name", "/public/x", "web", nil, http.StatusMisdirectedRequest},
	} {
		req := httptest.NewRequest("GET", "http://placeholder"+tc.target, nil)
		req.Host = tc.host
		req.RemoteAddr = "100.64.0.1:1"
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, w.Code, w.Body.String(), tc.want)
		}
	}
}

// A connection's caller is looked up once per IdentityTTL, not once per
// request (a lookup costs more than the rest of a small request's way),
// and again after it: a grant taken away reaches an open connection
// within the TTL. Each connection has its own.
func TestIdentityPerConnection(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get(contract.HeaderUserLogin))
	}))
	defer backend.Close()
	r := NewRouter([]contract.WebRoute{{Path: "/", Backends: []contract.WebBackend{{Addr: backend.Listener.Addr().String(), Weight: 1}}}}, t.Logf)
	var lookups atomic.Int32
	granted := atomic.Bool{}
	granted.Store(true)
	r.WhoIs = func(ctx context.Context, addr string) (*apitype.WhoIsResponse, error) {
		lookups.Add(1)
		who, err := whoIs(ctx, "100.64.0.1:1")
		if !granted.Load() {
			who.CapMap = nil
		}
		return who, err
	}
	r.RequireCapability = "example.com/cap/grafana"
	r.IdentityTTL = time.Hour
	srv := httptest.NewUnstartedServer(r)
	srv.Config.ConnContext = r.ConnContext
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	get := func(c *http.Client) int {
		t.Helper()
		res, err := c.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 {
			t.Fatalf("%s, want HTTP/2", res.Proto)
		}
		return res.StatusCode
	}
	c1 := srv.Client()
	for range 20 {
		if code := get(c1); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if n := lookups.Load(); n != 1 {
		t.Errorf("%d lookups for 20 requests on one connection, want 1", n)
	}
	c2 := &http.Client{Transport: c1.Transport.(*http.Transport).Clone()} // srv.Client() is one client
	get(c2)
	if n := lookups.Load(); n != 2 {
		t.Errorf("%d lookups after a second connection's request, want 2", n)
	}
	granted.Store(false)
	r.IdentityTTL = time.Nanosecond
	if code := get(c1); code != http.StatusForbidden {
		t.Errorf("after the grant went and the TTL passed: %d, want 403", code)
	}
}

// Two callers on their own connections, one granted and one not, each
// with an hour's cache: neither's identity reaches the other's requests.
func TestIdentityStaysOnItsConnection(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get(contract.HeaderUserLogin))
	}))
	defer backend.Close()
	r := NewRouter([]contract.WebRoute{{Path: "/", Backends: []contract.WebBackend{{Addr: backend.Listener.Addr().String(), Weight: 1}}}}, t.Logf)
	var mu sync.Mutex
	first := ""
	r.WhoIs = func(_ context.Context, addr string) (*apitype.WhoIsResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		if first == "" {
			first = addr
		}
		if addr == first {
			return &apitype.WhoIsResponse{Node: &tailcfg.Node{Name: "a."}, UserProfile: &tailcfg.UserProfile{LoginName: "alice@example.com"},
				CapMap: tailcfg.PeerCapMap{"example.com/cap/x": nil}}, nil
		}
		return &apitype.WhoIsResponse{Node: &tailcfg.Node{Name: "b."}, UserProfile: &tailcfg.UserProfile{LoginName: "bob@example.com"}}, nil
	}
	r.RequireCapability = "example.com/cap/x"
	r.IdentityTTL = time.Hour
	srv := httptest.NewUnstartedServer(r)
	srv.Config.ConnContext = r.ConnContext
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	alice := srv.Client()
	bob := &http.Client{Transport: alice.Transport.(*http.Transport).Clone()}
	get := func(c *http.Client) (int, string) {
		res, err := c.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for range 5 {
		if code, body := get(alice); code != 200 || body != "alice@example.com" {
			t.Errorf("alice: %d %q", code, body)
		}
		if code, _ := get(bob); code != http.StatusForbidden {
			t.Errorf("bob, without the capability: %d, want 403", code)
		}
	}
}

// With a Secret's certificate the proxy answers for that certificate's
// names (a wildcard for one label) and its tailnet name, and no other Host
// (421), as with the tailnet's certificate; plain HTTP is redirected to
// the name asked for when the proxy answers for it, else to its own.
func TestNamesOfAFileCertificate(t *testing.T) {
	var seen string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.Host; io.WriteString(w, "ok") }))
	defer backend.Close()
	r := NewRouter([]contract.WebRoute{{Path: "/", Backends: []contract.WebBackend{{Addr: backend.Listener.Addr().String(), Weight: 1}}}}, t.Logf)
	r.WhoIs = whoIs
	r.Names = []string{"shop-grafana.tail.ts.net"}
	r.MoreNames = func() []string { return []string{"grafana.shop.example", "*.apps.shop.example"} }
	for host, want := range map[string]int{
		"shop-grafana.tail.ts.net": 200, "grafana.shop.example": 200, "a.apps.shop.example": 200,
		"evil.example": http.StatusMisdirectedRequest, "a.b.apps.shop.example": http.StatusMisdirectedRequest, "apps.shop.example": http.StatusMisdirectedRequest,
	} {
		seen = ""
		req := httptest.NewRequest("GET", "https://"+host+"/reset", nil)
		req.RemoteAddr = "100.64.0.1:1"
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != want || (want == 200 && seen != host) {
			t.Errorf("Host %s: %d (the backend saw %q), want %d", host, w.Code, seen, want)
		}
	}
	redirect := toHTTPS("shop-grafana.tail.ts.net", r.Answers)
	for host, want := range map[string]string{"grafana.shop.example": "https://grafana.shop.example/x", "evil.example": "https://shop-grafana.tail.ts.net/x", "100.64.0.7": "https://shop-grafana.tail.ts.net/x"} {
		w := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "http://"+host+"/x", nil)
		redirect.ServeHTTP(w, req)
		if got := w.Header().Get("Location"); got != want {
			t.Errorf("plain HTTP to %s: Location %q, want %q", host, got, want)
		}
	}
}
