// Package expiry warns before a tailnet credential the manager holds
// expires. A static auth key does not say when it expires, and neither
// Tailscale nor Headscale lets its holder ask without an API credential of
// its own; the admin who creates the key knows, and records it on the
// Secret as the annotation tsinject.dev/expires. The manager exports it as
// a metric (for alerts) and leaves Warning Events on the Secret as the
// date nears and after it passes, so nodes that fail to register later are
// not the first sign.
package expiry

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// Annotation on a credential Secret: when the credential expires (RFC 3339).
const Annotation = "tsinject.dev/expires"

// DefaultWarning is how long before expiry the Events start.
const DefaultWarning = 14 * 24 * time.Hour

// Event reasons.
const (
	ReasonExpiresSoon = "CredentialExpiresSoon"
	ReasonExpired     = "CredentialExpired"
	ReasonInvalid     = "CredentialExpiryInvalid"
)

// Reconciler watches the credential Secrets in Secrets.
type Reconciler struct {
	Client  client.Reader
	Events  events.EventRecorder
	Secrets []types.NamespacedName
	// Warning is how long before expiry to warn (DefaultWarning if zero).
	Warning time.Duration
	Now     func() time.Time // time.Now if nil
	Log     logr.Logger
}

var (
	gaugeOnce sync.Once
	gauge     *prometheus.GaugeVec
)

// Gauge is tsinject_credential_expiry_timestamp_seconds, registered once
// per process with controller-runtime's registry.
func Gauge() *prometheus.GaugeVec {
	gaugeOnce.Do(func() {
		gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tsinject_credential_expiry_timestamp_seconds",
			Help: "When a tailnet credential the manager holds expires (Unix time), from its Secret's " + Annotation + " annotation.",
		}, []string{"secret"})
		crmetrics.Registry.MustRegister(gauge)
	})
	return gauge
}

// SetupWithManager watches only the named Secrets.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	named := predicate.NewPredicateFuncs(func(o client.Object) bool {
		for _, s := range r.Secrets {
			if o.GetNamespace() == s.Namespace && o.GetName() == s.Name {
				return true
			}
		}
		return false
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("credential-expiry").
		For(&corev1.Secret{}, builder.WithPredicates(named)).
		Complete(r)
}

// Reconcile exports the Secret's expiry and warns if it is near or past.
// It comes back daily while it warns, and when the warning period starts.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	label := req.Namespace + "/" + req.Name
	var s corev1.Secret
	if err := r.Client.Get(ctx, req.NamespacedName, &s); err != nil {
		if apierrors.IsNotFound(err) {
			Gauge().DeleteLabelValues(label)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	v, ok := s.Annotations[Annotation]
	if !ok {
		Gauge().DeleteLabelValues(label)
		return ctrl.Result{}, nil
	}
	at, err := time.Parse(time.RFC3339, v)
	if err != nil {
		Gauge().DeleteLabelValues(label)
		r.warn(&s, ReasonInvalid, "annotation %s: %q is not a time: want RFC 3339, e.g. 2027-02-28T00:00:00Z", Annotation, v)
		return ctrl.Result{}, nil
	}
	Gauge().WithLabelValues(label).Set(float64(at.Unix()))
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	warning := r.Warning
	if warning <= 0 {
		warning = DefaultWarning
	}
	left := at.Sub(now)
	switch {
	case left <= 0:
		r.warn(&s, ReasonExpired, "the tailnet credential in this Secret expired at %s (%s): nodes cannot register with it; put a new one in and update %s", v, Annotation, Annotation)
		return ctrl.Result{RequeueAfter: 24 * time.Hour}, nil
	case left <= warning:
		r.warn(&s, ReasonExpiresSoon, "the tailnet credential in this Secret expires in %s, at %s (%s): replace it before then and update %s", days(left), v, Annotation, Annotation)
		return ctrl.Result{RequeueAfter: min(24*time.Hour, left)}, nil
	default:
		return ctrl.Result{RequeueAfter: left - warning}, nil
	}
}

// days is d in whole days, rounded up.
func days(d time.Duration) string {
	n := int(math.Ceil(d.Hours() / 24))
	if n == 1 {
		return "1 day"
	}
	return fmt.Sprintf("%d days", n)
}

func (r *Reconciler) warn(s *corev1.Secret, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.Log.Info(msg, "secret", s.Namespace+"/"+s.Name, "reason", reason)
	if r.Events != nil {
		r.Events.Eventf(s, nil, corev1.EventTypeWarning, reason, "CheckExpiry", "%s", msg)
	}
}
