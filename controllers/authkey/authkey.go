// Package authkey keeps a copy of the configured auth-key Secret, named
// tsinject-auth, in every namespace labelled tsinject.dev/injection=enabled,
// and removes it elsewhere. A pod opting in elsewhere pulls no key into its
// namespace (the webhook denies it in this mode: no-credential), so the key
// goes only where a cluster admin enabled tsinject. Sidecars mount it; they never see the key in env.
// The manager runs a Syncer only with --copy-auth-key; in every other mode
// no key is distributed and it holds no Secret rights outside its
// namespace.
package authkey

import (
	"bytes"
	"context"
	"slices"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
)

// Labels on every object tsinject manages.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "tsinject"
)

// Syncer reconciles namespaces.
type Syncer struct {
	Client client.Client
	// Source is the operator's auth-key Secret; Key is its data key.
	Source types.NamespacedName
	Key    string
	// SystemNamespace is tsinject's own (never a target).
	SystemNamespace string
	Log             logr.Logger
}

// SetupWithManager watches namespaces, the copies and the source Secret.
// The manager's cache must hold the tsinject-managed copies.
func (s *Syncer) SetupWithManager(mgr ctrl.Manager) error {
	toNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetNamespace()}}}
	})
	allNamespaces := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list corev1.NamespaceList
		if err := mgr.GetClient().List(ctx, &list); err != nil {
			s.Log.Error(err, "listing namespaces")
			return nil
		}
		out := make([]reconcile.Request, len(list.Items))
		for i, ns := range list.Items {
			out[i] = reconcile.Request{NamespacedName: types.NamespacedName{Name: ns.Name}}
		}
		return out
	})
	isSource := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == s.Source.Namespace && o.GetName() == s.Source.Name
	})
	isCopy := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetName() == contract.AuthSecret && o.GetLabels()[LabelManagedBy] == ManagedBy
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("auth-key").
		For(&corev1.Namespace{}).
		Watches(&corev1.Secret{}, toNamespace, builder.WithPredicates(isCopy)).
		Watches(&corev1.Secret{}, allNamespaces, builder.WithPredicates(isSource)).
		Complete(s)
}

// Reconcile makes the namespace's copy match the source, or removes it.
func (s *Syncer) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ns corev1.Namespace
	if err := s.Client.Get(ctx, req.NamespacedName, &ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	want := s.wanted(&ns)
	key := types.NamespacedName{Namespace: ns.Name, Name: contract.AuthSecret}
	var cur corev1.Secret
	err := s.Client.Get(ctx, key, &cur)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	if exists && cur.Labels[LabelManagedBy] != ManagedBy {
		s.Log.Info("leaving a tsinject-auth Secret tsinject does not manage alone", "namespace", ns.Name)
		return reconcile.Result{}, nil
	}
	if !want {
		if exists {
			s.Log.Info("removing auth key copy", "namespace", ns.Name)
			return reconcile.Result{}, client.IgnoreNotFound(s.Client.Delete(ctx, &cur))
		}
		return reconcile.Result{}, nil
	}

	var src corev1.Secret
	if err := s.Client.Get(ctx, s.Source, &src); err != nil {
		if apierrors.IsNotFound(err) {
			s.Log.Info("auth key Secret not found; sidecars will wait for it", "secret", s.Source)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	value, ok := src.Data[s.Key]
	if !ok {
		s.Log.Info("auth key Secret has no such key; sidecars will wait for it", "secret", s.Source, "key", s.Key)
		return reconcile.Result{}, nil
	}
	if exists {
		if bytes.Equal(cur.Data[contract.AuthSecretKey], value) && len(cur.Data) == 1 {
			return reconcile.Result{}, nil
		}
		cur.Data = map[string][]byte{contract.AuthSecretKey: value}
		s.Log.Info("updating auth key copy", "namespace", ns.Name)
		return reconcile.Result{}, s.Client.Update(ctx, &cur)
	}
	s.Log.Info("copying auth key", "namespace", ns.Name)
	return reconcile.Result{}, client.IgnoreAlreadyExists(s.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: contract.AuthSecret, Namespace: ns.Name,
			Labels: map[string]string{LabelManagedBy: ManagedBy},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{contract.AuthSecretKey: value},
	}))
}

// wanted: the namespace is enabled (and not tsinject's or the system's).
func (s *Syncer) wanted(ns *corev1.Namespace) bool {
	if ns.DeletionTimestamp != nil || ns.Name == s.SystemNamespace || slices.Contains(injector.SystemNamespaces, ns.Name) {
		return false
	}
	return ns.Labels[injector.LabelInjection] == "enabled"
}
