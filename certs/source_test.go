package certs

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
)

// A replica is ready only once the webhook configuration's CA bundle
// trusts the certificate it serves (a fresh install races the leader that
// publishes the bundle).
func TestTrustedBy(t *testing.T) {
	now := time.Now()
	ca, err := NewCA(now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA(now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := Issue(ca, []string{"tsinject-webhook.tsinject-system.svc"}, []net.IP{net.ParseIP("127.0.0.1")}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := &Source{Log: logr.Discard()}
	if err := s.TrustedBy(ca.CertPEM); err == nil || !strings.Contains(err.Error(), "not loaded") {
		t.Errorf("nothing loaded: %v", err)
	}
	s.load(&corev1.Secret{Data: map[string][]byte{KeyCert: serving.CertPEM, KeyKey: serving.KeyPEM}})
	for _, tc := range []struct {
		name   string
		bundle []byte
		want   string // "" = trusted
	}{
		{"its CA", ca.CertPEM, ""},
		{"both CAs, as during rotation", append(append([]byte{}, other.CertPEM...), ca.CertPEM...), ""},
		{"another CA", other.CertPEM, "does not (yet) trust"},
		{"empty", nil, "no CA bundle"},
	} {
		err := s.TrustedBy(tc.bundle)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
