package apiproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"
)

// Upgraded connections (exec, attach, port-forward over SPDY/3.1 or
// WebSocket) pass through both ways, carrying the impersonation headers in
// auth mode. envtest has no kubelet for a real exec, so the upstream is a
// TLS server that speaks the upgrade handshake and echoes.
func TestUpgradePassThrough(t *testing.T) {
	var seen = make(chan http.Header, 8)
	upstream := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto := r.Header.Get("Upgrade")
		if proto == "" || !strings.EqualFold(r.Header.Get("Connection"), "Upgrade") {
			http.Error(w, "want an upgrade", 400)
			return
		}
		seen <- r.Header.Clone()
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", proto)
		rw.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := rw.Read(buf)
			if err != nil {
				return
			}
			rw.Write([]byte(strings.ToUpper(string(buf[:n]))))
			rw.Flush()
		}
	}))
	defer upstream.Close()
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	writeCert(t, caFile, upstream)
	tr, err := UpstreamTransport(caFile)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(upstream.URL)
	for _, mode := range []string{ModeNoAuth, ModeAuth} {
		for _, proto := range []string{"SPDY/3.1", "websocket"} {
			t.Run(mode+"/"+proto, func(t *testing.T) {
				h := &Handler{Mode: mode, Upstream: u, Transport: tr, Logf: t.Logf,
					Token: func() (string, error) { return "proxy-token", nil },
					WhoIs: func(context.Context, string) (*apitype.WhoIsResponse, error) {
						return &apitype.WhoIsResponse{Node: &tailcfg.Node{ComputedName: "laptop"}, UserProfile: &tailcfg.UserProfile{LoginName: "alice@example.com"},
							CapMap: tailcfg.PeerCapMap{CapKubernetes: {`{"impersonate":{"groups":["ops"]}}`}}}, nil
					}}
				front := httptest.NewServer(h)
				defer front.Close()
				c, err := net.Dial("tcp", strings.TrimPrefix(front.URL, "http://"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\nAuthorization: Bearer client\r\nImpersonate-Group: system:masters\r\n\r\n", proto)
				br := bufio.NewReader(c)
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if res.StatusCode != http.StatusSwitchingProtocols {
					b, _ := io.ReadAll(res.Body)
					t.Fatalf("status %s: %s", res.Status, b)
				}
				for _, msg := range []string{"hello", "stream two"} {
					io.WriteString(c, msg)
					buf := make([]byte, len(msg))
					if _, err := io.ReadFull(br, buf); err != nil || string(buf) != strings.ToUpper(msg) {
						t.Fatalf("echo %q, %v", buf, err)
					}
				}
				hdr := <-seen
				if mode == ModeAuth {
					if hdr.Get("Authorization") != "Bearer proxy-token" || hdr.Get("Impersonate-User") != "alice@example.com" ||
						strings.Join(hdr.Values("Impersonate-Group"), ",") != "ops" {
						t.Errorf("upstream saw %v", hdr)
					}
				} else if hdr.Get("Authorization") != "Bearer client" {
					t.Errorf("noauth changed the client's credentials: %v", hdr)
				}
			})
		}
	}
}

func writeCert(t *testing.T, path string, s *httptest.Server) {
	t.Helper()
	var b strings.Builder
	for _, c := range s.TLS.Certificates {
		for _, der := range c.Certificate {
			b.WriteString(pemEncode(der))
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}
