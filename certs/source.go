package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
)

// Source serves the certificate held in a Secret and picks up every
// change to it at once (an informer on that one Secret), on every replica:
// no restart, no kubelet volume-sync delay. The Rotator or cert-manager
// writes the Secret.
type Source struct {
	Secret    types.NamespacedName
	Clientset kubernetes.Interface
	Log       logr.Logger

	// OnCABundle, if set, is called with the CA bundle (PEM) whenever the
	// Secret brings a new one, before the certificate is served.
	OnCABundle func([]byte)

	cur atomic.Pointer[tls.Certificate]
	ca  atomic.Pointer[[]byte]
}

// GetCertificate is a tls.Config.GetCertificate.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cur.Load(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("no serving certificate loaded yet from Secret %s", s.Secret)
}

// Loaded reports whether a certificate is being served (a readiness check).
func (s *Source) Loaded() error {
	if s.cur.Load() == nil {
		return errors.New("webhook serving certificate not loaded yet")
	}
	return nil
}

// Current is the certificate being served, nil before one is loaded; a
// new pointer whenever the Secret brings a new certificate.
func (s *Source) Current() *tls.Certificate { return s.cur.Load() }

// TrustedBy reports whether a client trusting the CA bundle (a webhook
// configuration's caBundle) accepts the certificate being served: until it
// does, the API server refuses this webhook with "certificate signed by
// unknown authority", so the replica is not ready.
func (s *Source) TrustedBy(caBundle []byte) error {
	c := s.cur.Load()
	if c == nil || c.Leaf == nil {
		return errors.New("webhook serving certificate not loaded yet")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caBundle) {
		return errors.New("the webhook configuration has no CA bundle yet")
	}
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ic)
		}
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("the webhook configuration's CA bundle does not (yet) trust the serving certificate: %w", err)
	}
	return nil
}

// Start watches the Secret until ctx ends (a manager.Runnable).
func (s *Source) Start(ctx context.Context) error {
	lw := toolscache.NewListWatchFromClient(s.Clientset.CoreV1().RESTClient(), "secrets", s.Secret.Namespace,
		fields.OneTermEqualSelector("metadata.name", s.Secret.Name))
	inf := toolscache.NewSharedInformer(lw, &corev1.Secret{}, 10*time.Minute)
	update := func(obj any) {
		if sec, ok := obj.(*corev1.Secret); ok {
			s.load(sec)
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, obj any) { update(obj) },
	}); err != nil {
		return err
	}
	inf.Run(ctx.Done())
	return nil
}

// NeedLeaderElection is false: every replica serves.
func (s *Source) NeedLeaderElection() bool { return false }

// CABundle is the CA bundle that verifies the served certificate: the
// self-managed bundle (old and new CA during a rotation), else cert-manager's
// ca.crt; nil until loaded.
func (s *Source) CABundle() []byte {
	if p := s.ca.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Source) load(sec *corev1.Secret) {
	bundle := sec.Data[KeyBundle]
	if len(bundle) == 0 {
		bundle = sec.Data[KeyCA]
	}
	if len(bundle) > 0 && !bytes.Equal(bundle, s.CABundle()) {
		b := bytes.Clone(bundle)
		s.ca.Store(&b)
		if s.OnCABundle != nil {
			s.OnCABundle(b)
		}
	}
	crt, key := sec.Data[KeyCert], sec.Data[KeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return
	}
	c, err := tls.X509KeyPair(crt, key)
	if err != nil {
		s.Log.Error(err, "ignoring unusable serving certificate", "secret", s.Secret)
		return
	}
	if old := s.cur.Load(); old != nil && string(old.Certificate[0]) == string(c.Certificate[0]) {
		return
	}
	s.cur.Store(&c)
	if leaf := c.Leaf; leaf != nil {
		s.Log.Info("serving certificate loaded", "secret", s.Secret, "serial", leaf.SerialNumber.String(), "notAfter", leaf.NotAfter)
	}
}
