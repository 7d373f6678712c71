package certs

import (
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

	cur atomic.Pointer[tls.Certificate]
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

func (s *Source) load(sec *corev1.Secret) {
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
