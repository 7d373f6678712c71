// Package apiserverproxies reconciles APIServerProxies into proxy sets running
// `tsinject-proxy apiserver`, binding (auth mode) each proxy to the
// installed ClusterRole that allows exactly impersonating users and groups.
package apiserverproxies

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

// Finalizer lets the controller log devices out and remove the cluster
// RBAC before an APIServerProxy goes.
const Finalizer = "tsinject.dev/apiserverproxy"

const component = "apiserver-proxy"

// ImpersonateRules is all an auth-mode proxy may do itself: the rules of
// ImpersonatorRole, which the install ships (the chart's
// apiServerProxy.enabled, the kustomize component apiserver-proxy). The
// manager only binds it: it holds neither impersonate nor any right to
// write ClusterRoles.
var ImpersonateRules = []rbacv1.PolicyRule{{
	APIGroups: []string{""}, Resources: []string{"users", "groups"}, Verbs: []string{"impersonate"},
}, {
	// The tailnet identity behind each request, for the audit log: these
	// extra keys only (contract.TailnetExtras).
	APIGroups: []string{"authentication.k8s.io"}, Resources: extraResources(), Verbs: []string{"impersonate"},
}}

func extraResources() []string {
	var out []string
	for _, k := range contract.TailnetExtras {
		out = append(out, "userextras/"+k)
	}
	return out
}

// ImpersonatorRole is the installed ClusterRole auth-mode proxies are
// bound to.
const ImpersonatorRole = "tsinject-apiserver-proxy"

// errRoleMissing: the install did not enable API server proxies.
var errRoleMissing = fmt.Errorf("the ClusterRole %s is not installed: install tsinject with API server proxies enabled (Helm: --set apiServerProxy.enabled=true; kustomize: the apiserver-proxy component)", ImpersonatorRole)

// Reconciler reconciles APIServerProxies.
type Reconciler struct {
	Client client.Client
	// Live reads pods from the API server.
	Live       client.Reader
	Namespace  string
	ProxyImage string
	ControlURL string
	// Credential is what the proxies log in with, as it is now.
	Credential func() credential.Wiring
	Logout     proxyset.LogoutFunc
	// Events, if set, records the Ready condition's transitions on the
	// APIServerProxy (proxyset.RecordReady).
	Events events.EventRecorder
	Log    logr.Logger
}

// SetupWithManager watches APIServerProxies and their objects.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	owned, ours := proxyset.Owned(component, r.Namespace)
	return ctrl.NewControllerManagedBy(mgr).
		Named("apiserverproxy").
		For(&v1alpha1.APIServerProxy{}).
		Watches(&appsv1.StatefulSet{}, owned, ours).
		Watches(&corev1.Secret{}, owned, ours).
		Watches(&rbacv1.ClusterRoleBinding{}, owned, ours).
		Watches(&v1alpha1.SidecarProfile{}, proxyset.ProfileUsers(mgr.GetClient(),
			func() client.ObjectList { return &v1alpha1.APIServerProxyList{} },
			func(o client.Object) string { return o.(*v1alpha1.APIServerProxy).Spec.Profile })).
		Complete(r)
}

func mode(p *v1alpha1.APIServerProxy) string {
	if p.Spec.Mode == "" {
		return string(v1alpha1.ModeAuth)
	}
	return string(p.Spec.Mode)
}

func (r *Reconciler) set(p *v1alpha1.APIServerProxy, proxy *v1alpha1.ProxyConfig) *proxyset.Set {
	replicas := int32(1)
	if p.Spec.Replicas != nil {
		replicas = *p.Spec.Replicas
	}
	host := p.Spec.Hostname
	if host == "" {
		host = p.Name
	}
	tags := []string{"tag:k8s-operator"}
	if len(p.Spec.Tags) > 0 {
		tags = tags[:0]
		for _, t := range p.Spec.Tags {
			tags = append(tags, string(t))
		}
	}
	tls := string(p.Spec.TLS)
	if tls == "" {
		tls = string(v1alpha1.TLSAuto)
	}
	// One name for every replica, so a kubeconfig survives the loss of
	// any of them (package failover).
	env := []corev1.EnvVar{
		{Name: contract.EnvTags, Value: strings.Join(tags, ",")},
		{Name: contract.EnvAPIProxyMode, Value: mode(p)},
		{Name: contract.EnvAPIProxyTLS, Value: tls},
		{Name: contract.EnvHostname, Value: host},
		{Name: contract.EnvOneName, Value: "true"},
	}
	if r.ControlURL != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvControlURL, Value: r.ControlURL})
	}
	p.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("APIServerProxy"))
	return &proxyset.Set{
		Owner: p, Component: component, Namespace: r.Namespace, Replicas: replicas, OneName: true,
		Image: r.ProxyImage, Args: []string{"apiserver"}, Env: env, Proxy: proxy,
		Credential: r.Credential(),
	}
}

// Reconcile brings one APIServerProxy's objects and status in line.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var p v1alpha1.APIServerProxy
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	proxy, ok, err := proxyset.ResolveProxy(ctx, r.Client, r.Events, &p, &p.Status.Conditions, p.Spec.Profile, p.Spec.Proxy)
	if !ok {
		return reconcile.Result{}, err
	}
	s := r.set(&p, proxy)
	if !p.DeletionTimestamp.IsZero() {
		if !controllerutil.ContainsFinalizer(&p, Finalizer) {
			return reconcile.Result{}, nil
		}
		done, err := proxyset.Delete(ctx, r.Client, r.Live, s, r.Logout, r.Log)
		if err != nil || !done {
			return reconcile.Result{RequeueAfter: 2 * time.Second}, err
		}
		if err := r.clusterRBAC(ctx, s, false); err != nil {
			return reconcile.Result{}, err
		}
		_, err = proxyset.Finalize(ctx, r.Client, &p, Finalizer, false)
		return reconcile.Result{}, err
	}
	if added, err := proxyset.Finalize(ctx, r.Client, &p, Finalizer, true); err != nil {
		return reconcile.Result{}, err
	} else if added {
		s = r.set(&p, proxy)
	}
	if err := proxyset.Apply(ctx, r.Client, s); err != nil {
		return reconcile.Result{}, err
	}
	if err := r.clusterRBAC(ctx, s, mode(&p) == string(v1alpha1.ModeAuth)); err != nil {
		if err == errRoleMissing {
			return r.notReady(ctx, &p, "ImpersonationRoleMissing", err.Error())
		}
		return reconcile.Result{}, err
	}
	if err := proxyset.Retire(ctx, r.Client, r.Live, s, r.Logout, r.Log); err != nil {
		return reconcile.Result{}, err
	}
	return r.updateStatus(ctx, &p, s)
}

// clusterRBAC keeps (auth mode) or removes (noauth, deletion) the
// binding of the proxy's ServiceAccount to ImpersonatorRole.
func (r *Reconciler) clusterRBAC(ctx context.Context, s *proxyset.Set, want bool) error {
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: s.Name()}}
	if !want {
		return client.IgnoreNotFound(r.Client.Delete(ctx, binding))
	}
	// Read past the cache: the manager may get this one ClusterRole, not
	// list or watch ClusterRoles.
	if err := r.Live.Get(ctx, client.ObjectKey{Name: ImpersonatorRole}, &rbacv1.ClusterRole{}); err != nil {
		if apierrors.IsNotFound(err) {
			return errRoleMissing
		}
		return err
	}
	roleRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ImpersonatorRole}
	// A binding's roleRef cannot change: one made by an older release
	// (to a per-proxy ClusterRole) is replaced.
	var cur rbacv1.ClusterRoleBinding
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(binding), &cur); err == nil && cur.RoleRef != roleRef {
		if err := client.IgnoreNotFound(r.Client.Delete(ctx, &cur)); err != nil {
			return err
		}
	}
	labels := map[string]string{proxyset.LabelManagedBy: proxyset.ManagedBy, proxyset.LabelComponent: component, proxyset.LabelOwner: s.Owner.GetName()}
	owner := metav1.NewControllerRef(s.Owner, s.Owner.GetObjectKind().GroupVersionKind())
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, binding, func() error {
		binding.Labels, binding.OwnerReferences = labels, []metav1.OwnerReference{*owner}
		binding.RoleRef = roleRef
		binding.Subjects = []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: s.Name(), Namespace: s.Namespace}}
		return nil
	})
	return err
}

// notReady reports a condition the proxy cannot get past by itself.
func (r *Reconciler) notReady(ctx context.Context, p *v1alpha1.APIServerProxy, reason, msg string) (reconcile.Result, error) {
	cond := metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: p.Generation}
	if c := meta.FindStatusCondition(p.Status.Conditions, "Ready"); c == nil || c.Reason != reason || c.Message != msg {
		meta.SetStatusCondition(&p.Status.Conditions, cond)
		if err := r.Client.Status().Update(ctx, p); err != nil {
			return reconcile.Result{}, err
		}
	}
	r.Log.Info("API server proxy not ready", "name", p.Name, "reason", reason, "message", msg)
	return reconcile.Result{RequeueAfter: 10 * time.Second}, nil
}

func (r *Reconciler) updateStatus(ctx context.Context, p *v1alpha1.APIServerProxy, s *proxyset.Set) (reconcile.Result, error) {
	devices, err := proxyset.Devices(ctx, r.Client, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	// The replicas share one state Secret: its device is the name's, its
	// serving record says which replica serves it.
	var urls []string
	var servedBy string
	var sec corev1.Secret
	switch err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.SecretName(0)}, &sec); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return reconcile.Result{}, err
	default:
		var u string
		if json.Unmarshal(sec.Data[contract.DeviceURL], &u) == nil && u != "" {
			urls = append(urls, u)
		}
		servedBy = contract.ParseServing(sec.Annotations[contract.AnnotationServing]).Pod
	}
	var standbys int32
	var sts appsv1.StatefulSet
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name()}, &sts); client.IgnoreNotFound(err) != nil {
		return reconcile.Result{}, err
	} else if servedBy != "" && sts.Status.ReadyReplicas > 0 {
		standbys = sts.Status.ReadyReplicas - 1 // every ready replica but the serving one
	}
	cond := metav1.Condition{Type: "Ready", ObservedGeneration: p.Generation}
	switch {
	case s.Replicas == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "ProxyNotReady", "0 replicas"
	case len(urls) == 0 || servedBy == "":
		cond.Status, cond.Reason = metav1.ConditionFalse, "ProxyNotReady"
		cond.Message = fmt.Sprintf("no replica of %d serves the name on the tailnet yet", s.Replicas)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, "ProxyReady"
		cond.Message = "kubectl: tsinject kubeconfig " + strings.TrimPrefix(strings.TrimPrefix(urls[0], "https://"), "http://")
		if strings.HasPrefix(urls[0], "http://") {
			cond.Message += " --http"
		}
	}
	// Semantic equality: a replica's new IP or name must reach status,
	// not only a change in how many there are.
	changed := !slices.Equal(p.Status.URLs, urls) || !equality.Semantic.DeepEqual(p.Status.Devices, devices) || p.Status.ObservedGeneration != p.Generation ||
		p.Status.ServedBy != servedBy || p.Status.StandbysReady != standbys
	if c := meta.FindStatusCondition(p.Status.Conditions, "Ready"); c == nil || c.Status != cond.Status || c.Reason != cond.Reason || c.Message != cond.Message {
		changed = true
	}
	if changed {
		proxyset.RecordReady(r.Events, p, p.Status.Conditions, cond)
		p.Status.URLs, p.Status.Devices, p.Status.ObservedGeneration = urls, devices, p.Generation
		p.Status.ServedBy, p.Status.StandbysReady = servedBy, standbys
		meta.SetStatusCondition(&p.Status.Conditions, cond)
		if err := r.Client.Status().Update(ctx, p); err != nil {
			return reconcile.Result{}, err
		}
	}
	if cond.Status != metav1.ConditionTrue {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	return reconcile.Result{RequeueAfter: time.Minute}, nil
}
