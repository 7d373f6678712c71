package web

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"

	"github.com/tsinject/tsinject/internal/contract"
)

// failing refuses its first n handshakes' certificate with err.
type failing struct {
	n   int
	err error
}

func (f *failing) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if f.n > 0 {
		f.n--
		return nil, f.err
	}
	return &tls.Certificate{}, nil
}

// Why the proxy has no certificate yet is reported once per new reason,
// for the controller to put where the user looks.
func TestFirstCertificateReportsWhyNot(t *testing.T) {
	var reported []contract.CertificateState
	certs := &failing{n: 2, err: errors.New("acme: 429 rate limited")}
	if err := firstCertificate(context.Background(), certs, "web.tail.ts.net", func(st contract.CertificateState) { reported = append(reported, st) }, t.Logf); err != nil {
		t.Fatal(err)
	}
	if len(reported) != 1 || reported[0].Error != "acme: 429 rate limited" {
		t.Errorf("reported %+v, want the refusal once", reported)
	}
}
