// Package services puts Kubernetes Services on the tailnet, both ways:
// egress Services (a tailnet target at a cluster name, for any pod) and
// ingress Services (a cluster Service at a tailnet name, for any peer).
// Each gets a proxy set in the manager's namespace; the Service, in its
// tenant's namespace, is tied to it by labels and a finalizer.
package services

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxypools"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

// AnnotationTags are the proxies' tags: the pods' own annotation, within
// the same namespace policy.
const AnnotationTags = injector.AnnotationTags

// ReasonProxyNotReady: not every replica is on the tailnet yet.
const ReasonProxyNotReady = "ProxyNotReady"

// Namespaces reads a namespace's labels and policy annotations.
type Namespaces interface {
	Namespace(ctx context.Context, name string) (injector.Namespace, error)
}

// Base is what both reconcilers share.
type Base struct {
	Client client.Client
	// Live reads from the API server what the cache does not hold (pods).
	Live       client.Reader
	Namespace  string // where proxies run
	ProxyImage string
	ControlURL string
	// Credential is what the proxies log in with, as it is now.
	Credential func() credential.Wiring
	Logout     proxyset.LogoutFunc
	// Namespaces and Injector apply the namespace's policy to the
	// proxies' tags, as to its pods' sidecars.
	Namespaces Namespaces
	Injector   *injector.Injector
	Events     events.EventRecorder
	Log        logr.Logger
	// ManagerAccount is the manager's ServiceAccount as namespace:name,
	// which a tenant names to grant it one of its Secrets.
	ManagerAccount string
	// ReadsEverySecret: the manager may read every namespace's Secrets
	// (auth-key copy mode), so its reading a tenant's Secret proves no
	// grant, and certificates from Secrets are refused.
	ReadsEverySecret bool
}

// setup watches the Services wants selects (or that still carry the
// finalizer), the objects of their proxy sets, and what shapes those:
// their namespaces' labels and annotations (policy, tags, profile) and
// SidecarProfiles.
func (b *Base) setup(mgr ctrl.Manager, component, finalizer string, wants func(*corev1.Service) bool, r reconcile.Reconciler, more ...func(*builder.Builder) *builder.Builder) error {
	owned, ours := proxyset.Owned(component, b.Namespace)
	handles := func(svc *corev1.Service) bool { return wants(svc) || controllerutil.ContainsFinalizer(svc, finalizer) }
	ask := predicate.NewPredicateFuncs(func(o client.Object) bool {
		svc, ok := o.(*corev1.Service)
		return ok && handles(svc)
	})
	metadataChanged := predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		DeleteFunc: func(event.DeleteEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) ||
				!maps.Equal(e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations())
		},
	}
	bld := ctrl.NewControllerManagedBy(mgr).
		Named(component).
		For(&corev1.Service{}, builder.WithPredicates(ask)).
		Watches(&appsv1.StatefulSet{}, owned, ours).
		Watches(&corev1.Secret{}, owned, ours).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, ns client.Object) []reconcile.Request {
			return b.servicesIn(ctx, ns.GetName(), handles)
		}), builder.WithPredicates(metadataChanged)).
		Watches(&v1alpha1.SidecarProfile{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, sp client.Object) []reconcile.Request {
			return b.servicesUsing(ctx, sp.GetName(), handles)
		}))
	for _, m := range more {
		bld = m(bld)
	}
	return bld.Complete(r)
}

// servicesIn lists, from the cache, the Services in namespace ("": all)
// that handles selects, as requests.
func (b *Base) servicesIn(ctx context.Context, namespace string, handles func(*corev1.Service) bool) []reconcile.Request {
	var list corev1.ServiceList
	if err := b.Client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		b.Log.Error(err, "listing Services", "namespace", namespace)
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if handles(&list.Items[i]) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return out
}

// servicesUsing is servicesIn for every namespace whose proxies the
// SidecarProfile named profile shapes: all of them for the cluster
// default, else those naming it in their profile annotation.
func (b *Base) servicesUsing(ctx context.Context, profile string, handles func(*corev1.Service) bool) []reconcile.Request {
	if profile == v1alpha1.DefaultProfile {
		return b.servicesIn(ctx, "", handles)
	}
	var nss corev1.NamespaceList
	if err := b.Client.List(ctx, &nss); err != nil {
		b.Log.Error(err, "listing Namespaces")
		return nil
	}
	var out []reconcile.Request
	for _, ns := range nss.Items {
		if ns.Annotations[injector.AnnotationProfile] == profile {
			out = append(out, b.servicesIn(ctx, ns.Name, handles)...)
		}
	}
	return out
}

// servicePorts reads svc's ports as the proxies' port maps (and the
// Service ports of the proxies' own Service). remap lets a numeric
// targetPort pick the far side's port (egress: the target's); otherwise
// the far side's port is the Service's own (ingress: its ClusterIP's).
func servicePorts(svc *corev1.Service, remap bool) ([]contract.PortMap, []corev1.ServicePort, []string) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if len(svc.Spec.Ports) == 0 {
		bad("spec.ports: empty; list each port to forward (TCP or UDP), e.g. {port: 5432}")
	}
	var maps []contract.PortMap
	var ports []corev1.ServicePort
	for i, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if proto != corev1.ProtocolTCP && proto != corev1.ProtocolUDP {
			bad("spec.ports[%d].protocol: %q is not allowed (allowed: TCP, UDP)", i, proto)
			continue
		}
		target := p.Port
		if remap {
			switch {
			case p.TargetPort.Type == intstr.String:
				bad("spec.ports[%d].targetPort: %q is a named port, which a tailnet target does not have (allowed: a number, or none for the same as port)", i, p.TargetPort.StrVal)
				continue
			case p.TargetPort.IntVal != 0:
				target = p.TargetPort.IntVal
			}
		}
		maps = append(maps, contract.PortMap{Proto: strings.ToLower(string(proto)), Port: uint16(p.Port), TargetPort: uint16(target)})
		ports = append(ports, corev1.ServicePort{Name: p.Name, Protocol: proto, Port: p.Port})
	}
	if _, err := contract.ParsePortMaps(contract.FormatPortMaps(maps)); err != nil {
		bad("spec.ports: %v", err)
	}
	return maps, ports, problems
}

// namespacePolicy checks that obj's namespace is enabled for tsinject and
// returns it and the proxies' tags (obj's tags annotation, else the
// namespace's default tags), within the namespace's policy. The
// namespace is nil when it cannot be used.
func (b *Base) namespacePolicy(ctx context.Context, obj metav1.Object) (*injector.Namespace, []string, []string) {
	var asked []string
	var problems []string
	if v, ok := obj.GetAnnotations()[AnnotationTags]; ok {
		tags, err := contract.ParseTags(v)
		if err != nil {
			problems = append(problems, fmt.Sprintf("annotation %s: %v (allowed: comma-separated tag:name)", AnnotationTags, err))
		}
		asked = tags
	}
	ns, err := b.Namespaces.Namespace(ctx, obj.GetNamespace())
	switch {
	case err != nil:
		return nil, nil, append(problems, fmt.Sprintf("namespace %s: %v", obj.GetNamespace(), err))
	case ns.Labels[injector.LabelInjection] != "enabled":
		return nil, nil, append(problems, fmt.Sprintf("namespace %s is not enabled for tsinject: a cluster admin labels it %s=enabled", obj.GetNamespace(), injector.LabelInjection))
	}
	tags, err := b.Injector.ProxyTags(ns, asked)
	if err != nil {
		problems = append(problems, fmt.Sprintf("tags of the proxies (annotation %s, else the namespace's %s): %v", AnnotationTags, injector.AnnotationDefaultTags, err))
	}
	if err := injector.OwnProfileMissing(ns); err != nil {
		problems = append(problems, err.Error()+"; a cluster admin creates it or fixes the annotation")
	}
	return &ns, tags, problems
}

// profileProxy is what the namespace's SidecarProfiles set for proxy
// pods: the cluster default's spec.proxy, the namespace's profile's over it.
func profileProxy(ns *injector.Namespace) *v1alpha1.ProxyConfig {
	if ns == nil {
		return nil
	}
	var out *v1alpha1.ProxyConfig
	for _, name := range []string{v1alpha1.DefaultProfile, ns.Annotations[injector.AnnotationProfile]} {
		if sp := ns.Profiles[name]; sp != nil {
			out = proxyset.MergeProxy(out, sp.Spec.Proxy)
		}
	}
	return out
}

// proxySet is svc's proxy set of component, with the environment every
// proxy needs added to env.
func (b *Base) proxySet(svc *corev1.Service, component string, replicas int32, env []corev1.EnvVar, proxy *v1alpha1.ProxyConfig) *proxyset.Set {
	owner := svc.DeepCopy()
	owner.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Service"))
	return b.ownedSet(owner, component, replicas, env, proxy)
}

// ownedSet is owner's proxy set of component (owner carries its kind),
// with the environment every proxy needs added to env.
func (b *Base) ownedSet(owner client.Object, component string, replicas int32, env []corev1.EnvVar, proxy *v1alpha1.ProxyConfig) *proxyset.Set {
	if b.ControlURL != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvControlURL, Value: b.ControlURL})
	}
	return &proxyset.Set{
		Owner: owner, Component: component, Namespace: b.Namespace, Replicas: replicas,
		Image: b.ProxyImage, Args: []string{component}, Env: env, Proxy: proxy,
		Credential: b.Credential(),
	}
}

// apply adds the finalizer to obj, then applies the set and retires
// replicas scaled away.
func (b *Base) apply(ctx context.Context, obj client.Object, finalizer string, s *proxyset.Set) error {
	if err := b.patchFinalizers(ctx, obj, func() bool { return controllerutil.AddFinalizer(obj, finalizer) }); err != nil {
		return err
	}
	if err := proxyset.Apply(ctx, b.Client, s); err != nil {
		return err
	}
	return proxyset.Retire(ctx, b.Client, b.Live, s, b.Logout, b.Log)
}

// invalid reports a bad request. Nothing is torn down for a bad edit: a
// running proxy keeps serving until the Service is fixed or deleted.
func (b *Base) invalid(ctx context.Context, svc *corev1.Service, condType, reason string, problems []string) (reconcile.Result, error) {
	return reconcile.Result{}, b.setCondition(ctx, svc, metav1.Condition{
		Type: condType, Status: metav1.ConditionFalse, Reason: reason, Message: strings.Join(problems, "; "),
	})
}

// report records cond and re-checks soon while it is not true: the
// control server does not tell us when a target appears.
func (b *Base) report(ctx context.Context, svc *corev1.Service, cond metav1.Condition) (reconcile.Result, error) {
	if err := b.setCondition(ctx, svc, cond); err != nil {
		return reconcile.Result{}, err
	}
	if cond.Status != metav1.ConditionTrue {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	return reconcile.Result{RequeueAfter: time.Minute}, nil
}

// setCondition records cond on the Service's status (and an Event when it
// changes reason).
func (b *Base) setCondition(ctx context.Context, svc *corev1.Service, cond metav1.Condition) error {
	cond.ObservedGeneration = svc.Generation
	old := meta.FindStatusCondition(svc.Status.Conditions, cond.Type)
	proxyset.RecordReady(b.Events, svc, svc.Status.Conditions, cond)
	if old != nil && old.Status == cond.Status && old.Reason == cond.Reason && old.Message == cond.Message && old.ObservedGeneration == cond.ObservedGeneration {
		return nil
	}
	orig := svc.DeepCopy()
	meta.SetStatusCondition(&svc.Status.Conditions, cond)
	return b.patchStatus(ctx, svc, orig)
}

// finalize logs every proxy out, deletes the set and lets the Service go
// (or stay, without its request): its condition goes, and clear undoes
// what else the controller wrote in its status.
func (b *Base) finalize(ctx context.Context, svc *corev1.Service, finalizer string, s *proxyset.Set, condType string, clear func(*corev1.ServiceStatus) bool) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(svc, finalizer) {
		return reconcile.Result{}, nil
	}
	done, err := proxyset.Delete(ctx, b.Client, b.Live, s, b.Logout, b.Log)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !done {
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	if svc.DeletionTimestamp.IsZero() {
		orig := svc.DeepCopy()
		changed := meta.RemoveStatusCondition(&svc.Status.Conditions, condType)
		if clear != nil && clear(&svc.Status) {
			changed = true
		}
		if changed {
			if err := b.patchStatus(ctx, svc, orig); err != nil && !apierrors.IsNotFound(err) {
				return reconcile.Result{}, err
			}
		}
	}
	if err := b.patchFinalizers(ctx, svc, func() bool { return controllerutil.RemoveFinalizer(svc, finalizer) }); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}

// patchStatus writes what changed in svc's status since orig, and nothing
// else. A Service's status update replaces its labels and annotations too
// (the status strategy keeps only the spec), and the cached Service is
// trimmed: an update of it would take the tenant's away.
func (b *Base) patchStatus(ctx context.Context, svc, orig *corev1.Service) error {
	return b.Client.Status().Patch(ctx, svc, client.MergeFrom(orig))
}

// patchFinalizers writes obj's finalizers as change leaves them, and
// nothing else: the manager's cache holds Services trimmed to what it
// reads (no tenant annotations, no selector), and an update of the
// trimmed object would take those away from the tenant.
func (b *Base) patchFinalizers(ctx context.Context, obj client.Object, change func() bool) error {
	orig := obj.DeepCopyObject().(client.Object)
	if !change() {
		return nil
	}
	return b.Client.Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// Annotations are the Service annotations these controllers read: the
// manager's cache keeps these and no other.
var Annotations = []string{AnnotationTailnetFQDN, AnnotationTailnetIP, AnnotationReplicas, AnnotationTags, AnnotationHostname,
	AnnotationProxyPool, proxypools.AnnotationTarget, proxypools.AnnotationPorts}

// Handled reports whether a controller of this package takes svc on (or
// still has its finalizer on it): the manager's cache keeps the spec of
// these Services only.
func Handled(svc *corev1.Service) bool {
	return WantsEgress(svc) || WantsIngress(svc) ||
		controllerutil.ContainsFinalizer(svc, EgressFinalizer) || controllerutil.ContainsFinalizer(svc, IngressFinalizer)
}
