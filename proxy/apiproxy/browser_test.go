package apiproxy

import (
	"context"
	"fmt"
	"github.com/tsinject/tsinject/internal/tsnode"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"
)

func TestBrowserHeader(t *testing.T) {
	for _, tc := range []struct {
		header http.Header
		want   string
	}{
		{http.Header{"Accept": {"application/json"}, "User-Agent": {"kubectl/v1.37.2"}}, ""},
		{http.Header{"Origin": {"null"}}, "Origin"},
		{http.Header{"Origin": {""}}, "Origin"},
		{http.Header{"Sec-Fetch-Site": {"cross-site"}}, "Sec-Fetch-Site"},
		{http.Header{"Sec-Fetch-Mode": {"websocket"}}, "Sec-Fetch-Mode"},
	} {
		if got := browserHeader(tc.header); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.header, got, tc.want)
		}
	}
}

func TestIsSession(t *testing.T) {
	for path, want := range map[string]bool{
		"/api/v1/namespaces/default/pods/web/exec":        true,
		"/api/v1/namespaces/default/pods/web/attach":      true,
		"/api/v1/namespaces/default/pods/web/exec/":       true,
		"/api/v1/namespaces/default/pods/web/log":         false,
		"/api/v1/namespaces/default/pods/web/portforward": false,
		"/api/v1/namespaces/default/pods/web":             false,
		"/api/v1/namespaces/default/services/web/exec":    false,
		"/apis/apps/v1/namespaces/default/pods/web/exec":  false,
		// The kubelet's API, through the node proxy: its /exec, /run and
		// /attach reach every pod on the node.
		"/api/v1/nodes/node-1/proxy/exec/default/web/app": true,
		"/api/v1/nodes/node-1/proxy/run/default/web/app":  true,
		"/api/v1/nodes/node-1/proxy":                      true,
		"/api/v1/nodes/node-1":                            false,
		"/api/v1/nodes/node-1/status":                     false,
	} {
		if got := isSession(path); got != want {
			t.Errorf("isSession(%q) = %v, want %v", path, got, want)
		}
	}
}

// A handler that does not record (no Recording): a grant that requires
// recording refuses exec and attach (fail closed); one that only names
// recorders lets them through with a warning; other requests are
// unaffected.
func TestSessionRecordingGrants(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream") }))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	for _, tc := range []struct {
		name, grant, path string
		want              int
		log               string
	}{
		{"enforced exec", `{"recorder":["tag:rec"],"enforceRecorder":true}`, "/api/v1/namespaces/default/pods/web/exec?command=sh", 403, ""},
		{"enforced attach", `{"enforceRecorder":true}`, "/api/v1/namespaces/default/pods/web/attach", 403, ""},
		{"enforced, not a session", `{"recorder":["tag:rec"],"enforceRecorder":true}`, "/api/v1/namespaces/default/pods", 200, ""},
		{"recorder only", `{"recorder":["tag:rec"]}`, "/api/v1/namespaces/default/pods/web/exec?command=sh", 200, "is not recorded"},
		{"no recording asked", `{"impersonate":{"groups":["ops"]}}`, "/api/v1/namespaces/default/pods/web/exec?command=sh", 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &strings.Builder{}
			h := &Handler{Mode: ModeAuth, Upstream: u, Transport: http.DefaultTransport,
				Logf:  func(f string, a ...any) { fmt.Fprintf(logs, f+"\n", a...) },
				Token: func() (string, error) { return "proxy-token", nil },
				WhoIs: func(context.Context, string) (*apitype.WhoIsResponse, error) {
					return &apitype.WhoIsResponse{Node: &tailcfg.Node{ComputedName: "laptop"}, UserProfile: &tailcfg.UserProfile{LoginName: "alice@example.com"},
						CapMap: tailcfg.PeerCapMap{CapKubernetes: {tailcfg.RawMessage(tc.grant)}}}, nil
				}}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, tc.path, nil))
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if tc.want == 403 && !strings.Contains(rec.Body.String(), "enforceRecorder") {
				t.Errorf("refusal does not say why: %s", rec.Body)
			}
			if tc.log != "" && !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs)
			}
		})
	}
}

// The handler refuses browser-made requests and foreign Host names before
// it asks who the caller is.
func TestHandlerRefusesBrowsers(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream") }))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	h := &Handler{Mode: ModeNoAuth, Upstream: u, Transport: http.DefaultTransport, Logf: t.Logf,
		Names: tsnode.HostNames("k8s.tail-x.ts.net"), Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.7")}}
	for _, tc := range []struct {
		name, host string
		header     http.Header
		want       int
	}{
		{"kubectl", "k8s.tail-x.ts.net", nil, 200},
		{"by address", "100.64.0.7:80", nil, 200},
		{"Origin", "k8s.tail-x.ts.net", http.Header{"Origin": {"https://evil.example"}}, 403},
		{"Sec-Fetch-Site", "k8s.tail-x.ts.net", http.Header{"Sec-Fetch-Site": {"cross-site"}}, 403},
		{"rebound name", "evil.example", nil, 403},
	} {
		req := httptest.NewRequest(http.MethodGet, "/api/v1/pods", nil)
		req.Host = tc.host
		for k, v := range tc.header {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.name, rec.Code, tc.want, rec.Body)
		}
	}
}
