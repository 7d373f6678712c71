// Package egress reconciles egress Services: an ExternalName Service
// annotated with a tailnet target (tsinject.dev/tailnet-fqdn or
// tsinject.dev/tailnet-ip, the Tailscale operator's convention) gets a
// proxy set running `tsinject-proxy egress` in the manager's namespace, a
// ClusterIP Service in front of it, and its externalName pointed there,
// so any pod reaches the target at the Service's own cluster name.
package egress

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
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
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
)

// Annotations on an egress Service.
const (
	AnnotationTailnetFQDN = injector.AnnotationPrefix + "tailnet-fqdn"
	AnnotationTailnetIP   = injector.AnnotationPrefix + "tailnet-ip"
	AnnotationReplicas    = injector.AnnotationPrefix + "replicas"
	// AnnotationTags is the pods' own: the same namespace policy decides.
	AnnotationTags = injector.AnnotationTags
)

// MaxReplicas bounds tsinject.dev/replicas.
const MaxReplicas = 16

// Finalizer lets the controller log the proxies out before the Service goes.
const Finalizer = "tsinject.dev/egress"

// Component names the proxy sets of egress Services.
const Component = "egress"

// ConditionReady is the condition on the Service's status.
const ConditionReady = "TailnetEgressReady"

// Condition reasons besides the target's (contract.EgressTarget*).
const (
	ReasonInvalid       = "InvalidEgressService"
	ReasonProxyNotReady = "ProxyNotReady"
)

// Namespaces reads a namespace's labels and policy annotations.
type Namespaces interface {
	Namespace(ctx context.Context, name string) (injector.Namespace, error)
}

// Reconciler reconciles egress Services.
type Reconciler struct {
	Client client.Client
	// Live reads from the API server what the cache does not hold (pods).
	Live       client.Reader
	Namespace  string // where proxies run
	ProxyImage string
	ControlURL string
	// ClusterDomain completes the proxy Service's name in externalName.
	ClusterDomain string
	Credentials   proxyset.Credentials
	Logout        proxyset.LogoutFunc
	// Namespaces and Injector apply the namespace's policy to the
	// proxies' tags, as to its pods' sidecars.
	Namespaces Namespaces
	Injector   *injector.Injector
	Events     events.EventRecorder
	Log        logr.Logger
}

// Wanted reports whether svc asks for an egress proxy.
func Wanted(svc *corev1.Service) bool {
	return svc.Annotations[AnnotationTailnetFQDN] != "" || svc.Annotations[AnnotationTailnetIP] != ""
}

// SetupWithManager watches Services that ask for egress (or still carry
// its finalizer) and the objects of their proxy sets.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	owned, ours := proxyset.Owned(Component, r.Namespace)
	ask := predicate.NewPredicateFuncs(func(o client.Object) bool {
		svc, ok := o.(*corev1.Service)
		return ok && (Wanted(svc) || controllerutil.ContainsFinalizer(svc, Finalizer))
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("egress").
		For(&corev1.Service{}, builder.WithPredicates(ask)).
		Watches(&appsv1.StatefulSet{}, owned, ours).
		Watches(&corev1.Secret{}, owned, ours).
		Complete(r)
}

// spec is an egress Service's request, validated.
type spec struct {
	target   string
	ports    []contract.PortMap
	svcPorts []corev1.ServicePort
	replicas int32
	tags     []string
}

// parse validates svc's request; each problem names the field and what is
// allowed.
func (r *Reconciler) parse(ctx context.Context, svc *corev1.Service) (spec, []string) {
	var sp spec
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	a := svc.Annotations
	fqdn, ip := a[AnnotationTailnetFQDN], a[AnnotationTailnetIP]
	switch {
	case fqdn != "" && ip != "":
		bad("annotations %s and %s: give one of them, not both", AnnotationTailnetFQDN, AnnotationTailnetIP)
	case fqdn != "":
		if _, err := netip.ParseAddr(fqdn); err == nil {
			bad("annotation %s: %q is an IP address; use %s", AnnotationTailnetFQDN, fqdn, AnnotationTailnetIP)
		} else if err := contract.ValidateHost(fqdn); err != nil {
			bad("annotation %s: %v (allowed: a MagicDNS name such as db.example.ts.net or db)", AnnotationTailnetFQDN, err)
		}
		sp.target = fqdn
	default:
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			bad("annotation %s: %q is not an IP address (allowed: a tailnet address such as 100.64.0.5, or an address an approved subnet route covers)", AnnotationTailnetIP, ip)
		}
		sp.target = addr.String()
	}
	if svc.Spec.Type != corev1.ServiceTypeExternalName {
		bad("spec.type: %q is not allowed for an egress Service (allowed: ExternalName; tsinject points its externalName at the proxies)", svc.Spec.Type)
	}
	if len(svc.Spec.Ports) == 0 {
		bad("spec.ports: empty; list each port of the target to forward (TCP or UDP), e.g. {port: 5432}")
	}
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
		switch {
		case p.TargetPort.Type == intstr.String:
			bad("spec.ports[%d].targetPort: %q is a named port, which a tailnet target does not have (allowed: a number, or none for the same as port)", i, p.TargetPort.StrVal)
			continue
		case p.TargetPort.IntVal != 0:
			target = p.TargetPort.IntVal
		}
		sp.ports = append(sp.ports, contract.PortMap{Proto: strings.ToLower(string(proto)), Port: uint16(p.Port), TargetPort: uint16(target)})
		sp.svcPorts = append(sp.svcPorts, corev1.ServicePort{Name: p.Name, Protocol: proto, Port: p.Port})
	}
	if _, err := contract.ParsePortMaps(contract.FormatPortMaps(sp.ports)); err != nil {
		bad("spec.ports: %v", err)
	}
	sp.replicas = 1
	if v, ok := a[AnnotationReplicas]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxReplicas {
			bad("annotation %s: %q is not allowed (allowed: 1 to %d)", AnnotationReplicas, v, MaxReplicas)
		} else {
			sp.replicas = int32(n)
		}
	}
	var asked []string
	if v, ok := a[AnnotationTags]; ok {
		tags, err := contract.ParseTags(v)
		if err != nil {
			bad("annotation %s: %v (allowed: comma-separated tag:name)", AnnotationTags, err)
		}
		asked = tags
	}
	ns, err := r.Namespaces.Namespace(ctx, svc.Namespace)
	switch {
	case err != nil:
		bad("namespace %s: %v", svc.Namespace, err)
	case ns.Labels[injector.LabelInjection] != "enabled":
		bad("namespace %s is not enabled for tsinject: a cluster admin labels it %s=enabled", svc.Namespace, injector.LabelInjection)
	default:
		tags, err := r.Injector.ProxyTags(ns, asked)
		if err != nil {
			bad("tags of the egress proxy (annotation %s, else the namespace's %s): %v", AnnotationTags, injector.AnnotationDefaultTags, err)
		}
		sp.tags = tags
	}
	return sp, problems
}

// set is svc's proxy set.
func (r *Reconciler) set(svc *corev1.Service, sp spec) *proxyset.Set {
	host := contract.RenderName(contract.PlaceholderNamespace+"-"+contract.PlaceholderName+"-egress", svc.Name, svc.Namespace)
	env := []corev1.EnvVar{
		{Name: contract.EnvTags, Value: strings.Join(sp.tags, ",")},
		{Name: contract.EnvTarget, Value: sp.target},
		{Name: contract.EnvPorts, Value: contract.FormatPortMaps(sp.ports)},
	}
	if r.ControlURL != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvControlURL, Value: r.ControlURL})
	}
	if sp.replicas <= 1 {
		env = append(env, corev1.EnvVar{Name: contract.EnvHostname, Value: host})
	} else {
		env = append(env, corev1.EnvVar{Name: contract.EnvHostnamePrefix, Value: strings.TrimRight(host[:min(len(host), 58)], "-")})
	}
	owner := svc.DeepCopy()
	owner.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Service"))
	return &proxyset.Set{
		Owner: owner, Component: Component, Namespace: r.Namespace, Replicas: sp.replicas,
		Image: r.ProxyImage, Args: []string{"egress"}, Env: env, Ports: sp.svcPorts,
		Credentials: r.Credentials,
	}
}

// ProxyServiceFQDN is where the egress Service's externalName points.
func (r *Reconciler) ProxyServiceFQDN(s *proxyset.Set) string {
	return s.Name() + "." + r.Namespace + ".svc." + strings.TrimSuffix(r.ClusterDomain, ".")
}

// Reconcile brings one egress Service's proxy set and status in line.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var svc corev1.Service
	if err := r.Client.Get(ctx, req.NamespacedName, &svc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !svc.DeletionTimestamp.IsZero() || !Wanted(&svc) {
		return r.finalize(ctx, &svc)
	}
	sp, problems := r.parse(ctx, &svc)
	if len(problems) > 0 {
		// Nothing is torn down for a bad edit: a running proxy keeps
		// serving until the Service is fixed or deleted.
		return reconcile.Result{}, r.setCondition(ctx, &svc, metav1.Condition{
			Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonInvalid, Message: strings.Join(problems, "; "),
		})
	}
	if controllerutil.AddFinalizer(&svc, Finalizer) {
		if err := r.Client.Update(ctx, &svc); err != nil {
			return reconcile.Result{}, err
		}
	}
	s := r.set(&svc, sp)
	if err := proxyset.Apply(ctx, r.Client, s); err != nil {
		return reconcile.Result{}, err
	}
	if err := proxyset.Retire(ctx, r.Client, r.Live, s, r.Logout, r.Log); err != nil {
		return reconcile.Result{}, err
	}
	if fqdn := r.ProxyServiceFQDN(s); svc.Spec.ExternalName != fqdn {
		patch := client.MergeFrom(svc.DeepCopy())
		svc.Spec.ExternalName = fqdn
		if err := r.Client.Patch(ctx, &svc, patch); err != nil {
			return reconcile.Result{}, err
		}
	}
	cond, err := r.readiness(ctx, &svc, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := r.setCondition(ctx, &svc, cond); err != nil {
		return reconcile.Result{}, err
	}
	if cond.Status != metav1.ConditionTrue {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	return reconcile.Result{RequeueAfter: time.Minute}, nil
}

// readiness reads what the replicas reported: on the tailnet, and what
// they know of the target.
func (r *Reconciler) readiness(ctx context.Context, svc *corev1.Service, s *proxyset.Set) (metav1.Condition, error) {
	cond := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, ObservedGeneration: svc.Generation}
	devices, err := proxyset.Devices(ctx, r.Client, s)
	if err != nil {
		return cond, err
	}
	var states []contract.EgressTargetState
	for _, d := range devices {
		var sec corev1.Secret
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.SecretName(int(d.Replica))}, &sec); err != nil {
			return cond, client.IgnoreNotFound(err)
		}
		var st contract.EgressTargetState
		if json.Unmarshal(sec.Data[contract.DeviceEgressTarget], &st) == nil && st.Reason != "" {
			states = append(states, st)
		}
	}
	if len(devices) < int(s.Replicas) || len(states) == 0 {
		cond.Reason = ReasonProxyNotReady
		cond.Message = fmt.Sprintf("%d of %d replicas are on the tailnet", len(devices), s.Replicas)
		return cond, nil
	}
	for _, st := range states {
		if st.Reason == contract.EgressTargetReachable {
			cond.Status, cond.Reason = metav1.ConditionTrue, st.Reason
			cond.Message = fmt.Sprintf("%d replicas on the tailnet; target %s at %s", len(devices), targetOf(svc), strings.Join(st.Addrs, ", "))
			return cond, nil
		}
	}
	cond.Reason, cond.Message = states[0].Reason, fmt.Sprintf("target %s: %s", targetOf(svc), states[0].Message)
	return cond, nil
}

func targetOf(svc *corev1.Service) string {
	if v := svc.Annotations[AnnotationTailnetFQDN]; v != "" {
		return v
	}
	return svc.Annotations[AnnotationTailnetIP]
}

// setCondition records cond on the Service's status (and an Event when it
// changes reason).
func (r *Reconciler) setCondition(ctx context.Context, svc *corev1.Service, cond metav1.Condition) error {
	cond.ObservedGeneration = svc.Generation
	old := meta.FindStatusCondition(svc.Status.Conditions, cond.Type)
	proxyset.RecordReady(r.Events, svc, svc.Status.Conditions, cond)
	if old != nil && old.Status == cond.Status && old.Reason == cond.Reason && old.Message == cond.Message && old.ObservedGeneration == cond.ObservedGeneration {
		return nil
	}
	meta.SetStatusCondition(&svc.Status.Conditions, cond)
	return r.Client.Status().Update(ctx, svc)
}

// finalize logs every proxy out, deletes the set and lets the Service go
// (or stay, without the annotation).
func (r *Reconciler) finalize(ctx context.Context, svc *corev1.Service) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(svc, Finalizer) {
		return reconcile.Result{}, nil
	}
	s := r.set(svc, spec{})
	done, err := proxyset.Delete(ctx, r.Client, r.Live, s, r.Logout, r.Log)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !done {
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	if svc.DeletionTimestamp.IsZero() && meta.RemoveStatusCondition(&svc.Status.Conditions, ConditionReady) {
		if err := r.Client.Status().Update(ctx, svc); err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
	}
	controllerutil.RemoveFinalizer(svc, Finalizer)
	if err := r.Client.Update(ctx, svc); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}
