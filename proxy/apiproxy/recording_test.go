package apiproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
	"tailscale.com/types/views"

	"github.com/tsinject/tsinject/proxy/recorder"
	"github.com/tsinject/tsinject/test/poll"
)

// A real recorder on loopback (what tsinject-proxy recorder serves on the
// tailnet), with dir as its storage.
func loopbackRecorder(t *testing.T, dir string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: &recorder.Store{Dir: dir, AckEvery: 100 * time.Millisecond, Logf: t.Logf}, Protocols: recorder.Protocols(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// The recorder is asked before the request goes on: a session that must
// be recorded and that no recorder takes never reaches the API server
// (so never the pod); one the API server refuses leaves no recording.
func TestSessionRecorderFirst(t *testing.T) {
	var reached atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		http.Error(w, "pods \"web\" is forbidden", http.StatusForbidden)
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	good, broken := t.TempDir(), filepath.Join(t.TempDir(), "gone")
	goodAP, brokenAP := loopbackRecorder(t, good), loopbackRecorder(t, broken)
	port := map[string]uint16{"tag:rec": goodAP.Port(), "tag:broken": brokenAP.Port()}
	for _, tc := range []struct {
		name, grant, upgrade string
		reached              bool
		status               int
		says                 string
	}{
		{"no recorder online", `{"recorder":["tag:none"],"enforceRecorder":true}`, "websocket", false, 403, "no recorder tagged tag:none is on the tailnet"},
		{"the recorder cannot store", `{"recorder":["tag:broken"],"enforceRecorder":true}`, "websocket", false, 403, "no recorder took the session"},
		{"not a stream", `{"recorder":["tag:rec"],"enforceRecorder":true}`, "", false, 403, "neither a SPDY nor a WebSocket stream"},
		// tailscale.com's SPDY parser can be made to miss a stream.
		{"SPDY, required", `{"recorder":["tag:rec"],"enforceRecorder":true}`, "SPDY/3.1", false, 403, "only WebSocket sessions can be recorded"},
		{"recorded, then refused by the API server", `{"recorder":["tag:rec"],"enforceRecorder":true}`, "websocket", true, 403, "is forbidden"},
		{"asked for, not required: unrecorded", `{"recorder":["tag:none"]}`, "SPDY/3.1", true, 403, "is forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reached.Store(0)
			logs := &strings.Builder{}
			h := &Handler{Mode: ModeAuth, Upstream: u, Transport: http.DefaultTransport,
				Logf:  func(f string, a ...any) { fmt.Fprintf(logs, f+"\n", a...) },
				Token: func() (string, error) { return "proxy-token", nil },
				WhoIs: func(context.Context, string) (*apitype.WhoIsResponse, error) {
					return &apitype.WhoIsResponse{Node: &tailcfg.Node{Name: "laptop.tail-x.ts.net.", ComputedName: "laptop"}, UserProfile: &tailcfg.UserProfile{LoginName: "alice@example.com"},
						CapMap: tailcfg.PeerCapMap{CapKubernetes: {tailcfg.RawMessage(tc.grant)}}}, nil
				},
				Record: &Recording{
					Dial: (&net.Dialer{}).DialContext,
					Recorders: func(_ context.Context, tags []string) ([]netip.AddrPort, error) {
						var out []netip.AddrPort
						for _, tag := range tags {
							if p, ok := port[tag]; ok {
								out = append(out, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p))
							}
						}
						return out, nil
					},
					Logf: func(f string, a ...any) { fmt.Fprintf(logs, f+"\n", a...) },
				}}
			srv := httptest.NewServer(h)
			defer srv.Close()
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/namespaces/default/pods/web/exec?command=sh&tty=true", nil)
			if tc.upgrade != "" {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", tc.upgrade)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.status || !strings.Contains(string(body), tc.says) || (reached.Load() > 0) != tc.reached {
				t.Errorf("%d %s (the API server reached: %v), want %d saying %q (reached: %v)\n%s", res.StatusCode, body, reached.Load() > 0, tc.status, tc.says, tc.reached, logs)
			}
		})
	}
	// The session the API server refused leaves nothing behind, once the
	// recorder has the end of its upload.
	if err := poll.Until(context.Background(), 30*time.Second, 50*time.Millisecond, func() error {
		if ents, _ := os.ReadDir(good); len(ents) != 0 {
			return fmt.Errorf("recordings of sessions that never started: %v", ents)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// Recorders are the peers with the grant's tags, online ones first, each
// at every address's port 80.
func TestPeerRecorders(t *testing.T) {
	tagged := func(name string, online bool, ip string, tags ...string) *ipnstate.PeerStatus {
		v := views.SliceOf(tags)
		return &ipnstate.PeerStatus{DNSName: name, Online: online, Tags: &v, TailscaleIPs: []netip.Addr{netip.MustParseAddr(ip)}}
	}
	st := &ipnstate.Status{Peer: map[key.NodePublic]*ipnstate.PeerStatus{}}
	for _, p := range []*ipnstate.PeerStatus{
		tagged("rec-b.", true, "100.64.0.2", "tag:rec"),
		tagged("rec-a.", false, "100.64.0.1", "tag:rec"),
		tagged("rec-c.", true, "100.64.0.3", "tag:other", "tag:rec"),
		tagged("laptop.", true, "100.64.0.4"),
		tagged("db.", true, "100.64.0.5", "tag:db"),
	} {
		st.Peer[key.NewNode().Public()] = p
	}
	got, err := PeerRecorders(func(context.Context) (*ipnstate.Status, error) { return st, nil })(context.Background(), []string{"tag:rec"})
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, ap := range got {
		s = append(s, ap.String())
	}
	if want := "100.64.0.2:80 100.64.0.3:80 100.64.0.1:80"; strings.Join(s, " ") != want {
		t.Errorf("recorders %v, want %s", s, want)
	}
}

// A request target that is not an absolute path would go around the
// session checks, which read the path: refused.
func TestOpaqueTargetRefused(t *testing.T) {
	h := &Handler{Mode: ModeAuth, Logf: t.Logf,
		WhoIs: func(context.Context, string) (*apitype.WhoIsResponse, error) {
			t.Error("asked who is calling about a request it should have refused")
			return nil, fmt.Errorf("no")
		}}
	for _, target := range []string{"http:api/v1/namespaces/default/pods/web/exec?command=sh", "*"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "absolute path") {
			t.Errorf("%s: %d %s, want 400", target, rec.Code, rec.Body)
		}
	}
}
