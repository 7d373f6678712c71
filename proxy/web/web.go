// Package web is `tsinject-proxy web`: HTTPS on the tailnet for an
// Ingress of class tsinject. It terminates TLS at its node's name (with
// the tailnet's certificate for it, or one the user gives), routes
// HTTP/1.1, HTTP/2, WebSocket and gRPC requests by host and path to the
// Ingress's Services, tells each backend who the tailnet caller is, and
// redirects plain HTTP to HTTPS.
package web

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/tsinject/tsinject/internal/failover"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Config configures a web proxy replica.
type Config struct {
	Node   tsnode.Options
	Routes []contract.WebRoute
	// TLS is contract.WebTLSTailnet or contract.WebTLSFiles (CertDir).
	TLS               string
	CertDir           string
	RequireCapability string
	HealthAddr        string
}

// Settings is `tsinject-proxy web`'s table of flags and TSINJECT_*
// variables (the controller sets the variables).
func (cfg *Config) Settings() []cli.Setting {
	return append(cfg.Node.ProxySettings(&cfg.HealthAddr),
		cli.Setting{Flag: "routes", Env: contract.EnvWebRoutes, Help: "routes as JSON: [{host, path, exact, backends: [{addr, h2c, weight}]}]", Set: func(v string) (err error) {
			cfg.Routes, err = contract.ParseWebRoutes(v)
			return err
		}},
		cli.Setting{Flag: "tls", Env: contract.EnvWebTLS, Help: "the certificate: tailnet (the node's name, from the control server) or files (--cert-dir)", Default: contract.WebTLSTailnet,
			Set: cli.OneOf(&cfg.TLS, contract.WebTLSTailnet, contract.WebTLSFiles)},
		cli.Setting{Flag: "cert-dir", Env: contract.EnvWebCertDir, Help: "directory with tls.crt and tls.key (--tls files), re-read when they change", Set: cli.String(&cfg.CertDir)},
		cli.Setting{Flag: "require-capability", Env: contract.EnvWebRequireCapability, Help: "admit only callers granted this capability (403 for others)", Set: cli.String(&cfg.RequireCapability)},
	)
}

// Run runs the web proxy until ctx ends: with OneName, one replica
// serves the name and the others stand by (package failover).
func Run(ctx context.Context, cfg Config, logf logger.Logf) error {
	if cfg.Routes == nil {
		return errors.New("nothing to do: give --routes ([] to answer 404 until routes are given)")
	}
	switch {
	case cfg.TLS == contract.WebTLSFiles && cfg.CertDir == "":
		return errors.New("--tls files needs --cert-dir")
	case cfg.TLS != contract.WebTLSFiles && cfg.TLS != contract.WebTLSTailnet:
		return fmt.Errorf("--tls %q: allowed: %s, %s", cfg.TLS, contract.WebTLSTailnet, contract.WebTLSFiles)
	}
	if cfg.Node.WindowShare == 0 {
		cfg.Node.WindowShare = tsnode.WindowShareShared
	}
	var serving atomic.Pointer[tsnode.Node] // set while it serves, certificate in hand
	reg := prometheus.NewRegistry()
	guard, err := failover.NewGuard(cfg.Node, logf)
	if err != nil {
		return err
	}
	health, err := tsnode.ServeHealth(cfg.HealthAddr, guard.Ready(func(ctx context.Context) error {
		n := serving.Load()
		if n == nil {
			return errors.New("not ready: joining the tailnet, getting the certificate, or stopping")
		}
		return n.Ready(ctx)
	}), promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if err != nil {
		return err
	}
	defer health.Close()
	return guard.Run(ctx, func(ctx context.Context) error {
		return serve(ctx, cfg, reg, &serving, logf)
	})
}

func serve(ctx context.Context, cfg Config, reg *prometheus.Registry, serving *atomic.Pointer[tsnode.Node], logf logger.Logf) error {
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

	var certs certSource
	switch cfg.TLS {
	case contract.WebTLSFiles:
		certs = &fileCerts{dir: cfg.CertDir}
	default:
		if len(n.Server.CertDomains()) == 0 {
			return fmt.Errorf("tls %s: the tailnet issues no HTTPS certificate for %s; enable HTTPS certificates on the tailnet, or give a kubernetes.io/tls Secret", cfg.TLS, fqdn)
		}
		certs = &tailnetCerts{lc: n.LC, name: fqdn}
	}
	// The certificate before the first caller: a replica is ready only
	// with one in hand, and a first handshake does not wait on ACME.
	report := func(st contract.CertificateState) {
		if err := n.Report(ctx, map[string]any{contract.DeviceCertificate: st}); err != nil {
			logf("web: reporting the certificate's state: %v", err)
		}
	}
	if err := firstCertificate(ctx, certs, fqdn, report, logf); err != nil {
		return err
	}
	if tc, ok := certs.(*tailnetCerts); ok {
		go tc.keepRenewed(ctx, logf)
	}

	router := NewRouter(cfg.Routes, logf)
	router.RequireCapability = tailcfg.PeerCapability(cfg.RequireCapability)
	router.Names = []string{strings.ToLower(fqdn)} // the tailnet certificate's one name
	if fc, ok := certs.(*fileCerts); ok {
		// A Secret's certificate: its names too, as they are now.
		router.MoreNames = fc.names
	}
	router.WhoIs = func(ctx context.Context, addr string) (*apitype.WhoIsResponse, error) { return n.LC.WhoIs(ctx, addr) }
	tcp443, err := n.Server.Listen("tcp", ":443")
	if err != nil {
		return err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hi.ServerName == "" {
				hi.ServerName = fqdn // a client that dialled an address
			}
			return certs.get(hi)
		}}
	https := &http.Server{Handler: router, ConnContext: router.ConnContext, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 5 * time.Minute}
	tcp80, err := n.Server.Listen("tcp", ":80")
	if err != nil {
		tcp443.Close()
		return err
	}
	redirect := &http.Server{Handler: toHTTPS(fqdn, router.Answers), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second}
	for _, srv := range []struct {
		s  *http.Server
		ln net.Listener
	}{{https, tls.NewListener(tcp443, tlsCfg)}, {redirect, tcp80}} {
		go func() {
			if err := srv.s.Serve(srv.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logf("web proxy stopped serving %s: %v", srv.ln.Addr(), err)
			}
		}()
	}
	serving.Store(n)
	defer serving.Store(nil)

	u := "https://" + fqdn
	logf("web proxy serving %s (%d routes, certificate: %s)", u, len(cfg.Routes), cfg.TLS)
	go n.ReportLoop(ctx, func(*ipnstate.Status) (map[string]any, error) {
		return map[string]any{contract.DeviceFQDN: fqdn, contract.DeviceURL: u, contract.DeviceCertificate: certificateState(certs, fqdn)}, nil
	}, logf)

	<-ctx.Done()
	redirect.Close()
	shutdown, cancel := context.WithTimeout(context.Background(), failover.Drain(ctx, cfg.Node.OneName))
	defer cancel()
	if err := https.Shutdown(shutdown); err != nil {
		https.Close()
	}
	return nil
}

// certificateState is what the proxy serves for name now (asking for it
// also starts tailscale's renewal when one is due).
func certificateState(certs certSource, name string) contract.CertificateState {
	c, err := certs.get(&tls.ClientHelloInfo{ServerName: name})
	if err == nil && c.Leaf == nil && len(c.Certificate) > 0 {
		c.Leaf, err = x509.ParseCertificate(c.Certificate[0])
	}
	if err != nil {
		return contract.CertificateState{Error: err.Error()}
	}
	return contract.CertificateState{NotBefore: c.Leaf.NotBefore.UTC(), NotAfter: c.Leaf.NotAfter.UTC()}
}

// toHTTPS redirects a plain HTTP request to the same path over HTTPS: at
// the host it asked for if the proxy answers for it (a name of its
// certificate), else at its own tailnet name (a short MagicDNS name the
// certificate does not cover, or a name of the client's choosing).
func toHTTPS(fqdn string, answers func(host string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := strings.ToLower(strings.TrimSuffix(r.Host, "."))
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = strings.TrimSuffix(h, ".")
		}
		if host == "" || net.ParseIP(host) != nil || !answers(host) {
			host = fqdn
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// certSource gives the serving certificate for a handshake.
type certSource interface {
	get(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// firstCertificate waits for certs to give one for name, trying again on
// failure (ACME and the control server may refuse for a while). Each new
// failure is reported (its state Secret's DeviceCertificate): the
// controller puts it on the Ingress or Gateway, where the user looks.
func firstCertificate(ctx context.Context, certs certSource, name string, report func(contract.CertificateState), logf logger.Logf) error {
	wait := time.Second
	last := ""
	for {
		_, err := certs.get(&tls.ClientHelloInfo{ServerName: name})
		if err == nil {
			return nil
		}
		if msg := err.Error(); msg != last {
			last = msg
			report(contract.CertificateState{Error: msg})
		}
		logf("web: no certificate for %s yet: %v (trying again in %s)", name, err, wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// tailnetCerts are the node's own, through its control server: tailscale
// keeps them in the node's state and renews them when the CA's renewal
// window (ARI) says, in the background (the handshake after renewal is
// due still gets the old one). A window may end at expiry: keepRenewed
// renews ahead of it, and a failed fetch serves the last good
// certificate while it is valid, so no handshake fails on a renewal.
type tailnetCerts struct {
	lc interface {
		GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
		CertPairWithValidity(ctx context.Context, domain string, minValidity time.Duration) (certPEM, keyPEM []byte, err error)
	}
	name string
	last atomic.Pointer[tls.Certificate]
}

func (c *tailnetCerts) get(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !strings.EqualFold(strings.TrimSuffix(hi.ServerName, "."), c.name) {
		return nil, fmt.Errorf("no certificate for %q: this is %s", hi.ServerName, c.name)
	}
	cert, err := c.lc.GetCertificate(hi)
	if err == nil {
		c.last.Store(cert)
		return cert, nil
	}
	if last := c.last.Load(); last != nil && last.Leaf != nil && time.Now().Before(last.Leaf.NotAfter) {
		return last, nil
	}
	return nil, err
}

// keepRenewed asks for a certificate valid a third of its lifetime more
// whenever less is left, so that renewal (synchronous for that call,
// here and not in a handshake) happens before expiry whatever the CA's
// window says. It checks every tenth of the lifetime, at least every
// second and at most every hour.
func (c *tailnetCerts) keepRenewed(ctx context.Context, logf logger.Logf) {
	for {
		wait := time.Minute
		if last := c.last.Load(); last != nil && last.Leaf != nil {
			life := last.Leaf.NotAfter.Sub(last.Leaf.NotBefore)
			if time.Until(last.Leaf.NotAfter) < life/3 {
				rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				certPEM, keyPEM, err := c.lc.CertPairWithValidity(rctx, c.name, life/3)
				cancel()
				if err != nil {
					logf("web: renewing the certificate for %s ahead of expiry: %v", c.name, err)
				} else if pair, err := tls.X509KeyPair(certPEM, keyPEM); err == nil {
					c.last.Store(&pair)
				}
			}
			wait = min(max(life/10, time.Second), time.Hour)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// fileCerts are tls.crt and tls.key in dir, re-read when either changes
// (a mounted Secret's update, cert-manager's renewal).
type fileCerts struct {
	dir string
	// dnsNames are the loaded certificate's.
	dnsNames atomic.Pointer[[]string]

	mu      sync.Mutex
	stamp   string
	cert    *tls.Certificate
	checked time.Time
}

func (c *fileCerts) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && time.Since(c.checked) < 5*time.Second {
		return c.cert, nil
	}
	crt, key := filepath.Join(c.dir, "tls.crt"), filepath.Join(c.dir, "tls.key")
	stamp := ""
	for _, f := range []string{crt, key} {
		fi, err := os.Stat(f)
		if err != nil {
			if c.cert != nil {
				return c.cert, nil // mid-update: keep serving the last
			}
			return nil, err
		}
		stamp += fi.ModTime().String() + fmt.Sprint(fi.Size())
	}
	c.checked = time.Now()
	if stamp == c.stamp && c.cert != nil {
		return c.cert, nil
	}
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		if c.cert != nil {
			return c.cert, nil
		}
		return nil, fmt.Errorf("%s: %w", c.dir, err)
	}
	c.cert, c.stamp = &pair, stamp
	if leaf, err := x509.ParseCertificate(pair.Certificate[0]); err == nil {
		c.dnsNames.Store(&leaf.DNSNames)
	}
	return c.cert, nil
}

// names are the DNS names of the certificate loaded last.
func (c *fileCerts) names() []string {
	if n := c.dnsNames.Load(); n != nil {
		return *n
	}
	return nil
}
