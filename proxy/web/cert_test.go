package web

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/poll"
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

// fakeLC is the node's certificates: one pair now, a renewed one when
// asked for more validity than is left, failures when told.
type fakeLC struct {
	mu      sync.Mutex
	now     *tls.Certificate
	renewed *tls.Certificate
	fail    bool
	asked   []time.Duration
}

func (f *fakeLC) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, errors.New("acme: renewal in progress")
	}
	return f.now, nil
}

func (f *fakeLC) CertPairWithValidity(_ context.Context, _ string, min time.Duration) ([]byte, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, min)
	f.now = f.renewed
	return f.renewedPEM()
}

func (f *fakeLC) renewedPEM() ([]byte, []byte, error) { return renewedCert, renewedKey, nil }

var renewedCert, renewedKey []byte

// pair is a self-signed certificate valid from nb for life.
func pair(t *testing.T, nb time.Time, life time.Duration) (*tls.Certificate, []byte, []byte) {
	t.Helper()
	ca, err := certs.NewCA(nb, life)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &c, ca.CertPEM, ca.KeyPEM
}

// A handshake while tailscale cannot give the certificate (a renewal at
// expiry under way) gets the last good one while it is valid; and the
// certificate is renewed ahead of expiry, whatever the CA's window.
func TestTailnetCertificateRenewedAhead(t *testing.T) {
	old, _, _ := pair(t, time.Now().Add(-25*time.Second), 30*time.Second) // 5 s left
	fresh, cPEM, kPEM := pair(t, time.Now(), 30*time.Second)
	renewedCert, renewedKey = cPEM, kPEM
	lc := &fakeLC{now: old, renewed: fresh}
	c := &tailnetCerts{lc: lc, name: "web.tail.ts.net"}
	hi := &tls.ClientHelloInfo{ServerName: "web.tail.ts.net"}
	if got, err := c.get(hi); err != nil || got != old {
		t.Fatalf("get: %v, %v", got, err)
	}
	lc.mu.Lock()
	lc.fail = true
	lc.mu.Unlock()
	if got, err := c.get(hi); err != nil || got != old {
		t.Errorf("while tailscale fails: %v, %v; want the last good certificate", got, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.keepRenewed(ctx, t.Logf)
	err := poll.Until(ctx, 10*time.Second, 10*time.Millisecond, func() error {
		if l := c.last.Load(); l == nil || l.Leaf == nil || !l.Leaf.NotBefore.Equal(fresh.Leaf.NotBefore) {
			return errors.New("not renewed yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the certificate with 5 s of 30 left was not renewed ahead: %v", err)
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if third := old.Leaf.NotAfter.Sub(old.Leaf.NotBefore) / 3; len(lc.asked) == 0 || lc.asked[0] != third {
		t.Errorf("asked for validity %v, want a third of the lifetime (%s)", lc.asked, third)
	}
}
