package bench

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"time"

	"github.com/tsinject/tsinject/certs"
)

// tlsServer serves h over TLS on a loopback port with a certificate from a
// CA of its own, as tsinject's manager serves its webhook.
type tlsServer struct {
	URL   string // https://127.0.0.1:port
	CAPEM []byte
	Pool  *x509.CertPool
	srv   *http.Server
}

func serveTLS(h http.Handler) (*tlsServer, error) {
	ca, err := certs.NewCA(time.Now(), time.Hour)
	if err != nil {
		return nil, err
	}
	kp, err := certs.Issue(ca, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Now(), time.Hour)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	s := &tlsServer{URL: "https://" + ln.Addr().String(), CAPEM: ca.CertPEM, Pool: x509.NewCertPool(), srv: &http.Server{Handler: h}}
	s.Pool.AddCert(ca.Cert)
	go s.srv.Serve(ln)
	return s, nil
}

func (s *tlsServer) Close() { s.srv.Close() }
