// Package acme runs Let's Encrypt's test CA, pebble, in the test process:
// the ACME directory over HTTPS, its DNS-01 checks answered by a DNS
// server of its own that serves the TXT records the test control
// server's set-dns endpoint accepted (testcontrol checks, as Tailscale's
// control server does, that a node asks only for its own names). A
// tailnet node pointed at it (NodeEnv) gets certificates for its
// MagicDNS name through the same flow as from Let's Encrypt.
package acme

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/certs"
)

// DirectoryPath is the ACME directory's path on the server.
const DirectoryPath = wfe.DirectoryPath

// Options for Start.
type Options struct {
	// IP to listen on (ACME over HTTPS, DNS over TCP); default 127.0.0.1.
	IP string
	// Port of the ACME directory; 0 picks one. A rig that must name the
	// directory before it can listen there (in a container image built
	// before its network exists) chooses it.
	Port int
	// ServingCA signs the directory's HTTPS certificate; nil makes one.
	// (CAFile holds it either way.)
	ServingCA *certs.KeyPair
	// Validity of the certificates issued; default pebble's 90 days.
	// Short ones force renewals.
	Validity time.Duration
	// Log receives pebble's log; nil discards it.
	Log io.Writer
	// Dir holds CAFile; default a new temporary directory, removed by
	// Close.
	Dir string
}

// Server is a running pebble with its DNS server.
type Server struct {
	// DirectoryURL is the ACME directory.
	DirectoryURL string
	// CAFile holds, PEM-encoded, the CA of the ACME server's own HTTPS
	// certificate: what an ACME client must trust to reach it.
	CAFile string
	// Roots verify the certificates pebble issues.
	Roots *x509.CertPool
	// RootPEM is pebble's root, PEM-encoded.
	RootPEM []byte

	ca      *ca.CAImpl
	https   *http.Server
	dns     *dns.Server
	tempDir string

	mu  sync.Mutex
	txt map[string][]string // fully qualified name -> values
	set int                 // TXT records set, ever
}

// Start runs pebble and its DNS server.
func Start(o Options) (*Server, error) {
	if o.IP == "" {
		o.IP = "127.0.0.1"
	}
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	logger := log.New(logw, "pebble ", log.LstdFlags)
	s := &Server{txt: map[string][]string{}}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "acme-")
		if err != nil {
			return nil, err
		}
		o.Dir, s.tempDir = d, d
	}
	fail := func(err error) (*Server, error) {
		s.Close()
		return nil, err
	}

	// Pebble asks its resolver over TCP.
	dnsLn, err := net.Listen("tcp", net.JoinHostPort(o.IP, "0"))
	if err != nil {
		return fail(err)
	}
	s.dns = &dns.Server{Listener: dnsLn, Handler: dns.HandlerFunc(s.answer)}
	go s.dns.ActivateAndServe()

	// Pebble sleeps up to 15 s before each validation unless told not to;
	// it reads this when its validator is made.
	os.Setenv("PEBBLE_VA_NOSLEEP", "1")
	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{"default": {Description: "tsinject's tests", ValidityPeriod: uint64(o.Validity / time.Second)}}
	s.ca = ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	validator := va.New(logger, 0, 0, false, dnsLn.Addr().String(), store)
	front := wfe.New(logger, store, validator, s.ca, []string{"pebble.letsencrypt.org"}, false, false, 3, 5)

	root := s.ca.GetRootCert(0)
	s.RootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.DER})
	s.Roots = x509.NewCertPool()
	s.Roots.AddCert(root.Cert)

	// The directory's own HTTPS certificate, from a CA of the rig's.
	servingCA := o.ServingCA
	if servingCA == nil {
		if servingCA, err = certs.NewCA(time.Now(), 24*time.Hour); err != nil {
			return fail(err)
		}
	}
	serving, err := certs.Issue(servingCA, []string{"localhost"}, []net.IP{net.ParseIP(o.IP)}, time.Now(), 24*time.Hour)
	if err != nil {
		return fail(err)
	}
	pair, err := tls.X509KeyPair(serving.CertPEM, serving.KeyPEM)
	if err != nil {
		return fail(err)
	}
	s.CAFile = filepath.Join(o.Dir, "acme-ca.pem")
	if err := os.WriteFile(s.CAFile, servingCA.CertPEM, 0o644); err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(o.IP, strconv.Itoa(o.Port)))
	if err != nil {
		return fail(err)
	}
	s.https = &http.Server{Handler: finalizeLocation(front.Handler()), TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}},
		ErrorLog: logger, ReadHeaderTimeout: 10 * time.Second}
	go s.https.ServeTLS(ln, "", "")
	s.DirectoryURL = "https://" + ln.Addr().String() + wfe.DirectoryPath
	return s, nil
}

// finalizeLocation gives order finalization responses the order's URL in
// a Location header, as Let's Encrypt's production server does and this
// pebble does not (RFC 8555 leaves it optional; pebble dropped it to catch
// clients that need it, and golang.org/x/crypto/acme, tailscale's client,
// does: golang/go#77704).
func finalizeLocation(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := strings.CutPrefix(r.URL.Path, "/finalize-order/"); ok && id != "" && !strings.Contains(id, "/") {
			w.Header().Set("Location", "https://"+r.Host+"/my-order/"+id)
		}
		next.ServeHTTP(w, r)
	})
}

// SetDNS keeps a TXT record the control server accepted: the hook for
// testcontrol.Server.OnSetDNS.
func (s *Server) SetDNS(req *tailcfg.SetDNSRequest) error {
	if req.Type != "TXT" {
		return fmt.Errorf("record type %q: only TXT", req.Type)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := dns.Fqdn(strings.ToLower(req.Name))
	// A new challenge replaces the last one for the name, as the control
	// server's DNS does.
	s.txt[name] = []string{req.Value}
	s.set++
	return nil
}

// TXTSet is how many TXT records the control server has set.
func (s *Server) TXTSet() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set
}

// answer serves the TXT records set; every other question gets an empty
// answer for a name it knows, NXDOMAIN otherwise.
func (s *Server) answer(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if len(q.Question) == 1 {
		name := strings.ToLower(q.Question[0].Name)
		s.mu.Lock()
		values, ok := s.txt[name]
		s.mu.Unlock()
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Question[0].Qtype == dns.TypeTXT:
			for _, v := range values {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{v}})
			}
		}
	}
	w.WriteMsg(m)
}

// NodeEnv is the environment that points a tailnet node's certificate
// requests at this server.
func (s *Server) NodeEnv() []string {
	return []string{"TS_DEBUG_ACME_DIRECTORY_URL=" + s.DirectoryURL, "SSL_CERT_FILE=" + s.CAFile}
}

// Verify checks a certificate chain (leaf first, DER) for name against
// pebble's root.
func (s *Server) Verify(chain [][]byte, name string) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: s.Roots, Intermediates: inter})
	return leaf, err
}

// Close stops both servers.
func (s *Server) Close() {
	if s.https != nil {
		s.https.Close()
	}
	if s.dns != nil {
		s.dns.Shutdown()
	}
	if s.tempDir != "" {
		os.RemoveAll(s.tempDir)
	}
}
