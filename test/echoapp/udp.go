package echoapp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// UDPEcho answers every datagram on pc with itself, until pc is closed.
func UDPEcho(pc net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}

// HTTP3Greeting is what ServeHTTP3 answers.
const HTTP3Greeting = "hello over quic"

// ServeHTTP3 serves HTTP3Greeting over HTTP/3 on pc with a self-signed
// certificate for name; it returns the certificate (PEM) for clients to
// trust, and the server to close.
func ServeHTTP3(pc net.PacketConn, name string) (certPEM []byte, srv io.Closer, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	s := &http3.Server{
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}),
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, HTTP3Greeting) }),
	}
	go s.Serve(pc)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), s, nil
}
