package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// Keys of the certificate Secret (the tls.* and ca.crt names are what
// cert-manager writes too, so Source reads either).
const (
	KeyCert   = corev1.TLSCertKey
	KeyKey    = corev1.TLSPrivateKeyKey
	KeyCA     = "ca.crt"
	KeyCAKey  = "ca.key"
	KeyBundle = "ca-bundle.crt"
	// annotationPublished records when the current CA was first seen in the
	// webhook configuration's caBundle.
	annotationPublished = "tsinject.dev/ca-published-at"
)

// Rotator keeps a self-managed CA and serving certificate in a Secret and
// the CA bundle in the webhook configuration. Rotation never breaks
// admission: a new CA is published in the caBundle next to the old one, and
// only after PropagationDelay does the serving certificate switch to it;
// the old CA stays in the bundle until it expires.
type Rotator struct {
	Client client.Client
	// Secret holds the CA, serving certificate and bundle.
	Secret types.NamespacedName
	// WebhookConfig is the MutatingWebhookConfiguration whose caBundle is kept.
	WebhookConfig string
	DNSNames      []string
	IPs           []net.IP
	// CAValidity and CertValidity default to 1 year and 30 days; each is
	// renewed with a third of its lifetime left.
	CAValidity, CertValidity time.Duration
	// PropagationDelay is how long a new CA is in the caBundle before the
	// serving certificate switches to it (API servers watch the webhook
	// configuration; default 1 minute).
	PropagationDelay time.Duration
	Now              func() time.Time
	Log              logr.Logger
}

func (r *Rotator) defaults() {
	if r.CAValidity == 0 {
		r.CAValidity = 365 * 24 * time.Hour
	}
	if r.CertValidity == 0 {
		r.CertValidity = 30 * 24 * time.Hour
	}
	if r.PropagationDelay == 0 {
		r.PropagationDelay = time.Minute
	}
	if r.Now == nil {
		r.Now = time.Now
	}
}

// SetupWithManager runs the rotator, leader-elected, on changes to the
// Secret or the webhook configuration (a `kubectl apply` that empties the
// caBundle is repaired at once) and on its own timers.
func (r *Rotator) SetupWithManager(mgr ctrl.Manager) error {
	r.defaults()
	only := func(name, ns string) predicate.Predicate {
		return predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetName() == name && o.GetNamespace() == ns
		})
	}
	key := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: r.Secret}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("webhook-certs").
		WatchesRawSource(newKick(r.Secret)).
		Watches(&corev1.Secret{}, key, builder.WithPredicates(only(r.Secret.Name, r.Secret.Namespace))).
		Watches(&admissionregistrationv1.MutatingWebhookConfiguration{}, key, builder.WithPredicates(only(r.WebhookConfig, ""))).
		Complete(r)
}

// Reconcile brings the Secret and caBundle to the desired state and asks
// to be called again when the next step is due.
func (r *Rotator) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	r.defaults()
	next, err := r.Sync(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: next}, nil
}

// Sync runs one rotation step and returns when the next one is due.
func (r *Rotator) Sync(ctx context.Context) (time.Duration, error) {
	r.defaults()
	now := r.Now()
	var sec corev1.Secret
	err := r.Client.Get(ctx, r.Secret, &sec)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, err
	}
	st := r.load(&sec)
	before := sec.DeepCopy()

	if st.ca == nil {
		r.Log.Info("creating webhook CA", "secret", r.Secret)
		if st.ca, err = NewCA(now, r.CAValidity); err != nil {
			return 0, err
		}
		st.bundle = append([]*x509.Certificate{st.ca.Cert}, st.bundle...)
		st.published = time.Time{}
		st.serving = nil
	} else if dueForRenewal(st.ca.Cert, now) {
		r.Log.Info("rotating webhook CA; the old one stays trusted until it expires", "expires", st.ca.Cert.NotAfter)
		if st.ca, err = NewCA(now, r.CAValidity); err != nil {
			return 0, err
		}
		st.bundle = append([]*x509.Certificate{st.ca.Cert}, st.bundle...)
		st.published = time.Time{}
	}
	st.bundle = slices.DeleteFunc(st.bundle, func(c *x509.Certificate) bool { return now.After(c.NotAfter) })
	bundle := Bundle(st.bundle)

	// Publish the bundle before serving anything the new CA signed.
	published, err := r.publish(ctx, bundle)
	if err != nil {
		return 0, err
	}
	if published && st.published.IsZero() {
		st.published = now
	}

	wait := time.Duration(0)
	switch {
	case st.serving == nil && !exists:
		// First start: nothing trusts any CA yet, so there is nothing to break.
		err = r.issue(st, now)
	case st.serving == nil || !r.servingMatches(st) || !signedBy(st.serving.Cert, st.ca.Cert) || dueForRenewal(st.serving.Cert, now):
		if ready := st.published.Add(r.PropagationDelay); !st.published.IsZero() && !now.Before(ready) {
			r.Log.Info("issuing webhook serving certificate", "ca", st.ca.Cert.SerialNumber.String())
			err = r.issue(st, now)
		} else if st.published.IsZero() {
			wait = 2 * time.Second // webhook configuration not there yet
		} else {
			wait = ready.Sub(now)
		}
	}
	if err != nil {
		return 0, err
	}

	r.store(&sec, st, bundle)
	switch {
	case !exists:
		sec.Name, sec.Namespace = r.Secret.Name, r.Secret.Namespace
		sec.Type = corev1.SecretTypeTLS
		if err := r.Client.Create(ctx, &sec); err != nil {
			return 0, err
		}
	case !equalSecret(before, &sec):
		if err := r.Client.Update(ctx, &sec); err != nil {
			return 0, err
		}
	}
	return r.nextDue(st, wait, now), nil
}

type state struct {
	ca, serving *KeyPair
	bundle      []*x509.Certificate
	published   time.Time
}

func (r *Rotator) load(sec *corev1.Secret) *state {
	st := &state{}
	if ca, err := ParseKeyPair(sec.Data[KeyCA], sec.Data[KeyCAKey]); err == nil {
		st.ca = ca
	}
	if kp, err := ParseKeyPair(sec.Data[KeyCert], sec.Data[KeyKey]); err == nil {
		st.serving = kp
	}
	if b, err := ParseCerts(sec.Data[KeyBundle]); err == nil {
		st.bundle = b
	}
	if st.ca != nil && !slices.ContainsFunc(st.bundle, func(c *x509.Certificate) bool { return c.Equal(st.ca.Cert) }) {
		st.bundle = append([]*x509.Certificate{st.ca.Cert}, st.bundle...)
	}
	if t, err := time.Parse(time.RFC3339Nano, sec.Annotations[annotationPublished]); err == nil {
		st.published = t
	}
	return st
}

func (r *Rotator) store(sec *corev1.Secret, st *state, bundle []byte) {
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[KeyCA], sec.Data[KeyCAKey] = st.ca.CertPEM, st.ca.KeyPEM
	if st.serving != nil {
		sec.Data[KeyCert], sec.Data[KeyKey] = st.serving.CertPEM, st.serving.KeyPEM
	}
	sec.Data[KeyBundle] = bundle
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	if st.published.IsZero() {
		delete(sec.Annotations, annotationPublished)
	} else {
		sec.Annotations[annotationPublished] = st.published.UTC().Format(time.RFC3339Nano)
	}
	if sec.Labels == nil {
		sec.Labels = map[string]string{}
	}
	sec.Labels["app.kubernetes.io/managed-by"] = "tsinject"
}

func (r *Rotator) issue(st *state, now time.Time) error {
	kp, err := Issue(st.ca, r.DNSNames, r.IPs, now, r.CertValidity)
	if err != nil {
		return err
	}
	st.serving = kp
	return nil
}

// publish sets every webhook's caBundle; it reports whether the webhook
// configuration now carries bundle.
func (r *Rotator) publish(ctx context.Context, bundle []byte) (bool, error) {
	var wh admissionregistrationv1.MutatingWebhookConfiguration
	if err := r.Client.Get(ctx, client.ObjectKey{Name: r.WebhookConfig}, &wh); err != nil {
		if apierrors.IsNotFound(err) {
			r.Log.Info("webhook configuration not found; will publish the CA bundle when it exists", "name", r.WebhookConfig)
			return false, nil
		}
		return false, err
	}
	patch := client.MergeFrom(wh.DeepCopy())
	changed := false
	for i := range wh.Webhooks {
		if !bytes.Equal(wh.Webhooks[i].ClientConfig.CABundle, bundle) {
			wh.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if changed {
		if err := r.Client.Patch(ctx, &wh, patch); err != nil {
			return false, fmt.Errorf("patching caBundle of %s: %w", r.WebhookConfig, err)
		}
		r.Log.Info("published CA bundle", "webhookConfiguration", r.WebhookConfig, "cas", bytes.Count(bundle, []byte("BEGIN CERTIFICATE")))
	}
	return true, nil
}

func (r *Rotator) servingMatches(st *state) bool {
	c := st.serving.Cert
	if !slices.Equal(c.DNSNames, r.DNSNames) || len(c.IPAddresses) != len(r.IPs) {
		return false
	}
	for i := range r.IPs {
		if !c.IPAddresses[i].Equal(r.IPs[i]) {
			return false
		}
	}
	return true
}

func (r *Rotator) nextDue(st *state, wait time.Duration, now time.Time) time.Duration {
	due := func(c *x509.Certificate) time.Duration { return renewAt(c).Sub(now) }
	next := min(due(st.ca.Cert), time.Hour)
	if st.serving != nil {
		next = min(next, due(st.serving.Cert))
	}
	if wait > 0 {
		next = min(next, wait)
	}
	return max(next, 500*time.Millisecond)
}

func signedBy(c, ca *x509.Certificate) bool { return c.CheckSignatureFrom(ca) == nil }

func equalSecret(a, b *corev1.Secret) bool {
	if len(a.Data) != len(b.Data) || a.Annotations[annotationPublished] != b.Annotations[annotationPublished] ||
		a.Labels["app.kubernetes.io/managed-by"] != b.Labels["app.kubernetes.io/managed-by"] {
		return false
	}
	for k, v := range a.Data {
		if !bytes.Equal(v, b.Data[k]) {
			return false
		}
	}
	return true
}

// newKick is a source that enqueues key once when the controller starts,
// so the first certificate is created even when neither object exists.
func newKick(key types.NamespacedName) source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(reconcile.Request{NamespacedName: key})
		return nil
	})
}
