package apiproxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"
)

// One WhoIs per connection (per CallerTTL), not one per request; a new
// connection, or an answer older than the TTL, asks again.
func TestCallerPerConnection(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("Impersonate-User"))
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	for _, tc := range []struct {
		name          string
		ttl           time.Duration
		conns, perCon int
		want          int64
	}{
		{"one connection", time.Hour, 1, 5, 1},
		{"two connections", time.Hour, 2, 5, 2},
		{"expired answers", time.Nanosecond, 1, 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			h := &Handler{Mode: ModeAuth, Upstream: u, Transport: http.DefaultTransport, Logf: t.Logf, CallerTTL: tc.ttl,
				Token: func() (string, error) { return "proxy-token", nil },
				WhoIs: func(context.Context, string) (*apitype.WhoIsResponse, error) {
					calls.Add(1)
					return &apitype.WhoIsResponse{Node: &tailcfg.Node{ComputedName: "laptop"}, UserProfile: &tailcfg.UserProfile{LoginName: "alice@example.com"}}, nil
				}}
			front := httptest.NewUnstartedServer(h)
			front.Config.ConnContext = h.ConnContext
			front.Start()
			defer front.Close()
			for c := 0; c < tc.conns; c++ {
				tr := &http.Transport{MaxIdleConnsPerHost: 1}
				hc := &http.Client{Transport: tr}
				for i := 0; i < tc.perCon; i++ {
					res, err := hc.Get(front.URL + "/api")
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(res.Body)
					res.Body.Close()
					if string(b) != "alice@example.com" {
						t.Fatalf("upstream saw user %q", b)
					}
				}
				tr.CloseIdleConnections()
			}
			if got := calls.Load(); got != tc.want {
				t.Errorf("WhoIs called %d times, want %d", got, tc.want)
			}
		})
	}
}
