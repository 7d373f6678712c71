package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// The HTTPS ingress proxy, `tsinject-proxy web`: what its controller tells
// it, and what the backends it proxies to receive.
const (
	// EnvWebRoutes is its routes, []WebRoute as JSON.
	EnvWebRoutes = "TSINJECT_WEB_ROUTES"
	// EnvWebTLS is where its certificate comes from: WebTLSTailnet or
	// WebTLSFiles.
	EnvWebTLS = "TSINJECT_WEB_TLS"
	// EnvWebCertDir holds tls.crt and tls.key (a kubernetes.io/tls
	// Secret, mounted) with WebTLSFiles.
	EnvWebCertDir = "TSINJECT_WEB_CERT_DIR"
	// EnvWebRequireCapability, if set, admits only callers granted that
	// capability (any value) to the proxy's node; others get 403.
	EnvWebRequireCapability = "TSINJECT_WEB_REQUIRE_CAPABILITY"
)

// Certificate sources of the web proxy.
const (
	// WebTLSTailnet: the node's MagicDNS name, certified through the
	// control server (ACME DNS-01, as tsnet does), renewed before expiry.
	WebTLSTailnet = "tailnet"
	// WebTLSFiles: the files in EnvWebCertDir, re-read when they change.
	WebTLSFiles = "files"
	// WebCertDir is where a web proxy's controller mounts the certificate
	// of the tenant's kubernetes.io/tls Secret (its copy, in the set's
	// files Secret).
	WebCertDir = "/var/run/tsinject/web-cert"
)

// Caller identity headers the web proxy sets on each request to a
// backend, after removing every header the client sent under
// HeaderPrefix. The first three are `tailscale serve`'s, so apps set up
// for it work unchanged; like it, they are set for a user's device only
// (values RFC 2047-encoded when not ASCII). The Caller ones are
// tsinject's: the calling device's MagicDNS name, and its tags when it
// has them.
const (
	HeaderPrefix         = "Tailscale-"
	HeaderUserLogin      = "Tailscale-User-Login"
	HeaderUserName       = "Tailscale-User-Name"
	HeaderUserProfilePic = "Tailscale-User-Profile-Pic"
	HeaderCallerNode     = "Tailscale-Caller-Node"
	HeaderCallerTags     = "Tailscale-Caller-Tags"
)

// MaxWebRoutes bounds the routes of one web proxy.
const MaxWebRoutes = 256

// WebRoute sends the requests it matches to its backends.
type WebRoute struct {
	// Host, if set, must equal the request's host (without port); a
	// leading "*." matches one label.
	Host string `json:"host,omitempty"`
	// Path is matched as a prefix of whole segments ("/api" matches
	// "/api" and "/api/x", not "/apix"), or exactly with Exact.
	Path  string `json:"path"`
	Exact bool   `json:"exact,omitempty"`
	// Backends share the route's requests by Weight.
	Backends []WebBackend `json:"backends"`
}

// WebBackend is one backend of a route: a Service's cluster address.
type WebBackend struct {
	// Addr is host:port.
	Addr string `json:"addr"`
	// H2C speaks HTTP/2 without TLS to it (gRPC backends; a Service port
	// with appProtocol kubernetes.io/h2c).
	H2C bool `json:"h2c,omitempty"`
	// Weight is its share; 0 takes none (a route's backends may not all
	// be 0).
	Weight int32 `json:"weight"`
}

// ParseWebRoutes reads EnvWebRoutes, refusing what the proxy could not
// serve as written.
func ParseWebRoutes(s string) ([]WebRoute, error) {
	var routes []WebRoute
	if err := json.Unmarshal([]byte(s), &routes); err != nil {
		return nil, fmt.Errorf("web routes: %w", err)
	}
	if routes == nil {
		return nil, errors.New("web routes: none given; allowed: a JSON list ([] answers every request 404)")
	}
	if len(routes) > MaxWebRoutes {
		return nil, fmt.Errorf("web routes: %d routes; allowed: at most %d", len(routes), MaxWebRoutes)
	}
	for i, r := range routes {
		if !strings.HasPrefix(r.Path, "/") {
			return nil, fmt.Errorf("web routes[%d]: path %q must start with /", i, r.Path)
		}
		if h := strings.TrimPrefix(r.Host, "*."); r.Host != "" {
			if err := ValidateHost(h); err != nil {
				return nil, fmt.Errorf("web routes[%d]: host: %w", i, err)
			}
		}
		if len(r.Backends) == 0 {
			return nil, fmt.Errorf("web routes[%d]: no backends", i)
		}
		var total int64
		for j, b := range r.Backends {
			host, port, err := net.SplitHostPort(b.Addr)
			if err == nil {
				err = ValidateHost(host)
			}
			if p, perr := strconv.Atoi(port); err == nil && (perr != nil || p < 1 || p > 65535) {
				err = fmt.Errorf("port %q: allowed 1 to 65535", port)
			}
			if err != nil {
				return nil, fmt.Errorf("web routes[%d].backends[%d]: addr %q: %v", i, j, b.Addr, err)
			}
			if b.Weight < 0 {
				return nil, fmt.Errorf("web routes[%d].backends[%d]: weight %d: allowed 0 or more", i, j, b.Weight)
			}
			total += int64(b.Weight)
		}
		if total == 0 {
			return nil, fmt.Errorf("web routes[%d]: every backend has weight 0", i)
		}
	}
	return routes, nil
}

// CertificateState is what a web proxy reports of the certificate it
// serves (DeviceCertificate), for tsinject check.
type CertificateState struct {
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	// Error is why the proxy has no certificate, or could not get its
	// current one (a renewal that failed keeps the old one served).
	Error string `json:"error,omitempty"`
}

// RenewalOverdue reports whether a certificate valid from notBefore to
// notAfter should have been renewed by now: past 5/6 of its lifetime
// (tailscale renews at 2/3, or in the window the CA suggests).
func RenewalOverdue(notBefore, notAfter, now time.Time) bool {
	life := notAfter.Sub(notBefore)
	return life > 0 && now.After(notBefore.Add(life*5/6))
}
