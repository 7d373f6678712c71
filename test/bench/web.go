package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/acme"
	"github.com/tsinject/tsinject/test/tailnet"
)

// Names of the HTTPS ingress rows.
const (
	PathWebProxy    = "tsinject web proxy (Ingress, Gateway)"
	PathWebBaseline = "tailscaled: serve --https"
)

// Web compares the HTTPS ingress proxy with `tailscale serve --https` on
// tailscaled in the same run: a tailnet peer downloads over HTTPS from an
// HTTP server on the proxy's host, each terminating TLS with a
// certificate for its tailnet name from Let's Encrypt's test CA (through
// the control server's DNS-01 flow), and times small requests on one
// connection.
func Web(ctx context.Context, proxyBin, tsBins string, size int64, repeats int) (res []PathResult, skipped []string, err error) {
	ca, err := acme.Start(acme.Options{})
	if err != nil {
		return nil, nil, err
	}
	defer ca.Close()
	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-bench", SetDNS: ca.SetDNS})
	if err != nil {
		return nil, nil, err
	}
	defer tn.Close()
	// The app both proxies forward to: /bulk?bytes=N, and "ok" otherwise.
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer app.Close()
	go http.Serve(app, appHandler())
	client, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{})
	if err != nil {
		return nil, nil, err
	}
	defer client.Close()

	measure := func(name, host, note string) {
		r := PathResult{Name: name}
		proto := ""
		for i := 0; i < repeats; i++ {
			g, p, err := httpsDownload(ctx, client, ca, host, size)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("%s: %v", name, err))
				return
			}
			proto = p
			r.Gbps = append(r.Gbps, g)
			p50, p99, err := httpsLatency(ctx, client, ca, host, 300)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("%s: %v", name, err))
				return
			}
			r.P50, r.P99 = append(r.P50, p50), append(r.P99, p99)
		}
		r.Note = note + "; " + proto
		res = append(res, r)
	}

	dir, _ := os.MkdirTemp("", "bench-web-")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "authkey"), []byte(tn.AuthKey), 0o600)
	routes, _ := json.Marshal([]contract.WebRoute{{Path: "/", Backends: []contract.WebBackend{{Addr: app.Addr().String(), Weight: 1}}}})
	health := freeAddr()
	web, err := startProc(proxyBin, []string{"web"}, append([]string{
		contract.EnvControlURL + "=" + tn.ControlURL(), contract.EnvAuthKeyFile + "=" + filepath.Join(dir, "authkey"),
		contract.EnvStateDir + "=" + filepath.Join(dir, "web"), contract.EnvState + "=dir", contract.EnvHostname + "=web",
		contract.EnvHealthAddr + "=" + health, contract.EnvWebRoutes + "=" + string(routes), contract.EnvWebTLS + "=" + contract.WebTLSTailnet,
	}, ca.NodeEnv()...))
	if err != nil {
		return nil, nil, err
	}
	// Ready only with its certificate.
	if err := waitUntil(ctx, 2*time.Minute, func() error { return httpOK("http://" + health + "/readyz") }); err != nil {
		web.stop()
		return nil, nil, fmt.Errorf("web proxy: %v\n%s", err, web.logs.String())
	}
	measure(PathWebProxy, tn.FQDN("web"), "a tailnet peer, to the proxy's tailnet name")
	web.stop()

	ts, err := startTailscaledEnv(ctx, tsBins, tn, "tailscaled-web", ca.NodeEnv())
	if err != nil {
		skipped = append(skipped, fmt.Sprintf("%s: tailscaled: %v", PathWebBaseline, err))
		return res, skipped, nil
	}
	defer ts.close()
	sock := "--socket=" + filepath.Join(ts.dir, "sock")
	if out, err := exec.CommandContext(ctx, ts.cli, sock, "serve", "--bg", "--https=443", "http://"+app.Addr().String()).CombinedOutput(); err != nil {
		skipped = append(skipped, fmt.Sprintf("%s: tailscale serve: %v: %s", PathWebBaseline, err, strings.TrimSpace(string(out))))
		return res, skipped, nil
	}
	// tailscaled fetches its certificate at the first handshake: one
	// request first, untimed, as the proxy's was before it was ready.
	host := tn.FQDN("tailscaled-web")
	if err := waitUntil(ctx, 2*time.Minute, func() error { _, _, err := httpsLatency(ctx, client, ca, host, 1); return err }); err != nil {
		skipped = append(skipped, fmt.Sprintf("%s: no certificate: %v\n%s", PathWebBaseline, err, ts.logs.String()))
		return res, skipped, nil
	}
	measure(PathWebBaseline, host, "--tun=userspace-networking (the baseline)")
	return res, skipped, nil
}

// appHandler is the app behind both proxies.
func appHandler() http.Handler {
	chunk := make([]byte, 64<<10)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
		if r.URL.Path != "/bulk" || n <= 0 {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for sent := int64(0); sent < n; sent += int64(len(chunk)) {
			if _, err := w.Write(chunk[:min(int64(len(chunk)), n-sent)]); err != nil {
				return
			}
		}
	})
}

// httpsClient is a client on the laptop trusting only the test CA, over
// HTTP/2 where the server offers it.
func httpsClient(laptop *tailnet.Node, ca *acme.Server) (*http.Client, *http.Transport) {
	tr := &http.Transport{DialContext: laptop.Dial, TLSClientConfig: &tls.Config{RootCAs: ca.Roots}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 1}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, tr
}

// httpsDownload fetches size bytes over a fresh connection and returns
// Gbit/s and the protocol spoken.
func httpsDownload(ctx context.Context, laptop *tailnet.Node, ca *acme.Server, host string, size int64) (float64, string, error) {
	hc, tr := httpsClient(laptop, ca)
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("https://%s/bulk?bytes=%d", host, size), nil)
	start := time.Now()
	res, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	if err != nil {
		return 0, "", err
	}
	if n != size {
		return 0, "", fmt.Errorf("%d of %d bytes from %s", n, size, host)
	}
	return float64(n) * 8 / time.Since(start).Seconds() / 1e9, res.Proto, nil
}

// httpsLatency times n sequential small requests on one connection (after
// 20 to warm it).
func httpsLatency(ctx context.Context, laptop *tailnet.Node, ca *acme.Server, host string, n int) (p50, p99 float64, err error) {
	hc, tr := httpsClient(laptop, ca)
	defer tr.CloseIdleConnections()
	warm := min(20, n)
	var ds []time.Duration
	for i := 0; i < n+warm; i++ {
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+host+"/", nil)
		t := time.Now()
		res, err := hc.Do(req)
		if err != nil {
			return 0, 0, err
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "ok" {
			return 0, 0, fmt.Errorf("%s: %s %q", host, res.Status, b)
		}
		if i >= warm {
			ds = append(ds, time.Since(t))
		}
	}
	return float64(Percentile(ds, 50)) / 1e6, float64(Percentile(ds, 99)) / 1e6, nil
}
