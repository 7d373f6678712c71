package apiproxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"
)

// BenchmarkProxyGet is one small GET through the handler in auth mode, on
// a kept connection, to an HTTP/2 upstream: the proxy's own work per
// request, without the tailnet (make bench measures that path).
func BenchmarkProxyGet(b *testing.B) {
	body := strings.Repeat("x", 2048) // about one pod's JSON
	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Impersonate-User") != "alice@example.com" {
			http.Error(w, "not impersonated", http.StatusForbidden)
			return
		}
		io.WriteString(w, body)
	}))
	upstream.EnableHTTP2 = true
	upstream.StartTLS()
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	tr := upstream.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	h := &Handler{Mode: ModeAuth, Upstream: u, Transport: tr, Logf: func(string, ...any) {},
		Token: func() (string, error) { return "proxy-token", nil },
		WhoIs: func(context.Context, string) (*apitype.WhoIsResponse, error) {
			return &apitype.WhoIsResponse{Node: &tailcfg.Node{ComputedName: "laptop"}, UserProfile: &tailcfg.UserProfile{LoginName: "alice@example.com"},
				CapMap: tailcfg.PeerCapMap{CapKubernetes: {`{"impersonate":{"groups":["dev","ops"]}}`}}}, nil
		}}
	front := httptest.NewUnstartedServer(h)
	front.Config.ConnContext = h.ConnContext
	front.Start()
	defer front.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	b.ReportAllocs()
	for b.Loop() {
		res, err := hc.Get(front.URL + "/api/v1/namespaces/default/pods/p00")
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || n != int64(len(body)) {
			b.Fatalf("status %d, %d bytes", res.StatusCode, n)
		}
	}
}
