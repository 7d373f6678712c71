package web_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"tailscale.com/envknob"

	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/proxy/web"
	"github.com/tsinject/tsinject/test/acme"
	"github.com/tsinject/tsinject/test/echoapp"
	"github.com/tsinject/tsinject/test/poll"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/tier"
)

// certLifetime is what pebble gives: short, so a test sees a renewal.
const certLifetime = 30 * time.Second

var (
	acmeOnce   sync.Once
	acmeServer *acme.Server
	acmeErr    error
)

// sharedACME is one pebble for the package's tests: this process's
// system roots, read once, must trust its directory before the first
// certificate is asked for.
func sharedACME(t *testing.T) *acme.Server {
	t.Helper()
	acmeOnce.Do(func() {
		acmeServer, acmeErr = acme.Start(acme.Options{Validity: certLifetime})
		if acmeErr != nil {
			return
		}
		for _, kv := range acmeServer.NodeEnv() {
			k, v, _ := strings.Cut(kv, "=")
			envknob.Setenv(k, v)
			os.Setenv(k, v)
		}
	})
	if acmeErr != nil {
		t.Fatal(acmeErr)
	}
	return acmeServer
}

// backend is an app behind the proxy (package echoapp): HTTP on one
// address, gRPC over HTTP/2 without TLS on the other.
type backend struct {
	http, grpc string
}

func startBackend(t *testing.T) backend {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: echoapp.Handler()}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := echoapp.GRPC()
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)
	return backend{http: hl.Addr().String(), grpc: gl.Addr().String()}
}

// startWeb runs a web proxy named host on tn and waits until it is ready.
func startWeb(t *testing.T, tn *tailnet.Tailnet, host string, cfg web.Config) {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "authkey")
	os.WriteFile(keyFile, []byte("tskey-auth-web"), 0o600)
	cfg.Node = tsnode.Options{ControlURL: tn.ControlURL(), AuthKeyFile: keyFile, Hostname: host, State: tsnode.StateDir, Dir: filepath.Join(dir, "state")}
	cfg.HealthAddr = poll.FreeAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs strings.Builder
	var mu sync.Mutex
	go func() {
		done <- web.Run(ctx, cfg, func(f string, a ...any) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(&logs, f+"\n", a...)
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	if err := poll.Until(context.Background(), 2*time.Minute, 100*time.Millisecond, func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("stopped: %v", err)
		default:
		}
		return poll.HTTPOK("http://" + cfg.HealthAddr + "/readyz")
	}); err != nil {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("web proxy %s not ready: %v\n%s", host, err, logs.String())
	}
}

// client is an HTTPS client on the laptop that trusts only roots.
func client(laptop *tailnet.Node, roots *x509.CertPool) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: laptop.Dial, TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true},
		Timeout:   10 * time.Second,
		// Redirects are checked, not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func getJSON(t *testing.T, hc *http.Client, u string, hdr map[string]string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer res.Body.Close()
	var body map[string]any
	json.NewDecoder(res.Body).Decode(&body)
	return res, body
}

// An Ingress's proxy on the tailnet: HTTPS at its name with a certificate
// from the tailnet's ACME flow (verified against the test CA), over
// HTTP/2; the backend sees the caller's identity and not what the client
// claimed; HTTP redirects to HTTPS; WebSocket and gRPC pass through.
func TestWebProxy(t *testing.T) {
	tier.Needs(t, tier.Tailnet)
	ca := sharedACME(t)
	tn, err := tailnet.Start(tailnet.Options{SetDNS: ca.SetDNS})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	be := startBackend(t)
	startWeb(t, tn, "web", web.Config{TLS: contract.WebTLSTailnet, Routes: []contract.WebRoute{
		{Path: "/", Backends: []contract.WebBackend{{Addr: be.http, Weight: 1}}},
		{Path: "/grpc.health.v1.Health/", Backends: []contract.WebBackend{{Addr: be.grpc, H2C: true, Weight: 1}}},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	laptop, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()
	fqdn := tn.FQDN("web")
	hc := client(laptop, ca.Roots)

	res, body := getJSON(t, hc, "https://"+fqdn+"/some/page", map[string]string{contract.HeaderUserLogin: "admin@example.com", contract.HeaderCallerTags: "tag:admin"})
	if res.StatusCode != 200 || res.ProtoMajor != 2 {
		t.Fatalf("GET over HTTPS: %s %s, want 200 over HTTP/2", res.Proto, res.Status)
	}
	if _, err := ca.Verify([][]byte{res.TLS.PeerCertificates[0].Raw, res.TLS.PeerCertificates[1].Raw}, fqdn); err != nil {
		t.Errorf("served certificate: %v", err)
	}
	hdr := body["headers"].(map[string]any)
	first := func(k string) string {
		if v, ok := hdr[k].([]any); ok && len(v) > 0 {
			return v[0].(string)
		}
		return ""
	}
	if body["path"] != "/some/page" || body["host"] != fqdn || first(contract.HeaderCallerNode) != tn.FQDN("laptop") ||
		!strings.HasPrefix(first(contract.HeaderUserLogin), "user-") || first(contract.HeaderCallerTags) != "" {
		t.Errorf("the backend saw %v; want the laptop's identity, not the forged one", body)
	}

	// Plain HTTP: redirected to the same URL over HTTPS.
	res, _ = getJSON(t, hc, "http://"+fqdn+"/a?b=c", nil)
	if res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Location") != "https://"+fqdn+"/a?b=c" {
		t.Errorf("GET over HTTP: %s, Location %q", res.Status, res.Header.Get("Location"))
	}

	// WebSocket (HTTP/1.1 upgrade).
	h1 := &http.Client{Transport: &http.Transport{DialContext: laptop.Dial, TLSClientConfig: &tls.Config{RootCAs: ca.Roots}}}
	ws, _, err := websocket.Dial(ctx, "wss://"+fqdn+"/ws", &websocket.DialOptions{HTTPClient: h1})
	if err != nil {
		t.Fatalf("WebSocket: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "echo: hi" {
		t.Errorf("WebSocket echo: %q, %v", msg, err)
	}

	// gRPC, to a backend speaking HTTP/2 without TLS.
	conn, err := grpc.NewClient("passthrough:///"+fqdn+":443",
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return laptop.Dial(ctx, "tcp", addr) }),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Roots, ServerName: fqdn})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health check through the proxy: %v, %v", hr, err)
	}
}

// The tailnet's certificate is renewed before it expires, and a client
// asking once a second sees no failed request across the renewal.
func TestWebCertificateRenewal(t *testing.T) {
	tier.Needs(t, tier.Tailnet)
	ca := sharedACME(t)
	tn, err := tailnet.Start(tailnet.Options{SetDNS: ca.SetDNS})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	be := startBackend(t)
	startWeb(t, tn, "renewing", web.Config{TLS: contract.WebTLSTailnet, Routes: []contract.WebRoute{{Path: "/", Backends: []contract.WebBackend{{Addr: be.http, Weight: 1}}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	laptop, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()
	u := "https://" + tn.FQDN("renewing") + "/"
	var first *x509.Certificate
	var failures []string
	// A new connection each time, as a fresh handshake sees the
	// certificate served now.
	for i := 0; i < int(3*certLifetime/time.Second); i++ {
		hc := client(laptop, ca.Roots)
		hc.Transport.(*http.Transport).DisableKeepAlives = true
		res, err := hc.Get(u)
		if err != nil {
			failures = append(failures, err.Error())
		} else {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			leaf := res.TLS.PeerCertificates[0]
			switch {
			case res.StatusCode != 200:
				failures = append(failures, res.Status)
			case first == nil:
				first = leaf
			case leaf.SerialNumber.Cmp(first.SerialNumber) != 0:
				if len(failures) > 0 {
					t.Fatalf("renewed after %d requests, %d failed: %v", i, len(failures), failures)
				}
				t.Logf("renewed %s after %s of its %s (request %d): no request failed", leaf.SerialNumber, leaf.NotBefore.Sub(first.NotBefore).Round(time.Second), certLifetime, i)
				return
			}
		}
		time.Sleep(time.Second) // the client's pace, not a wait for a condition
	}
	t.Fatalf("no renewal seen within %s (failures: %v)", 3*certLifetime, failures)
}

// A certificate the user gives (a kubernetes.io/tls Secret, mounted) is
// served, and its replacement is served once the files change.
func TestWebCertificateFromFiles(t *testing.T) {
	tier.Needs(t, tier.Tailnet)
	tn, err := tailnet.Start(tailnet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	be := startBackend(t)
	dir := t.TempDir()
	issuer, err := certs.NewCA(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string) *x509.Certificate {
		kp, err := certs.Issue(issuer, []string{name, tn.FQDN("files")}, nil, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		// As the kubelet updates a Secret volume: new files, then the swap.
		for f, b := range map[string][]byte{"tls.crt": kp.CertPEM, "tls.key": kp.KeyPEM} {
			os.WriteFile(filepath.Join(dir, f+".new"), b, 0o600)
			os.Rename(filepath.Join(dir, f+".new"), filepath.Join(dir, f))
		}
		return kp.Cert
	}
	want := write("grafana.example.com")
	startWeb(t, tn, "files", web.Config{TLS: contract.WebTLSFiles, CertDir: dir, Routes: []contract.WebRoute{{Path: "/", Backends: []contract.WebBackend{{Addr: be.http, Weight: 1}}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	laptop, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()
	roots := x509.NewCertPool()
	roots.AddCert(issuer.Cert)
	served := func() (*x509.Certificate, error) {
		raw, err := laptop.Dial(ctx, "tcp", tn.FQDN("files")+":443")
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, &tls.Config{RootCAs: roots, ServerName: "grafana.example.com"})
		defer c.Close()
		if err := c.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		return c.ConnectionState().PeerCertificates[0], nil
	}
	got, err := served()
	if err != nil || !got.Equal(want) {
		t.Fatalf("served %v (%v), want the Secret's certificate", got, err)
	}
	want = write("grafana.example.com")
	if err := poll.Until(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		got, err := served()
		if err != nil {
			return err
		}
		if !got.Equal(want) {
			return errors.New("still the old certificate")
		}
		return nil
	}); err != nil {
		t.Fatalf("after the files changed: %v", err)
	}
}
