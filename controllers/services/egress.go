package services

// Egress Services: an ExternalName Service annotated with a tailnet
// target (tsinject.dev/tailnet-fqdn or tsinject.dev/tailnet-ip, the
// Tailscale operator's convention) gets a proxy set running
// `tsinject-proxy egress` in the manager's namespace, a ClusterIP Service
// in front of it, and its externalName pointed there, so any pod reaches
// the target at the Service's own cluster name.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
)

// Annotations on an egress Service.
const (
	AnnotationTailnetFQDN = injector.AnnotationPrefix + "tailnet-fqdn"
	AnnotationTailnetIP   = injector.AnnotationPrefix + "tailnet-ip"
	AnnotationReplicas    = injector.AnnotationPrefix + "replicas"
)

// MaxReplicas bounds tsinject.dev/replicas.
const MaxReplicas = 16

// replicasOf is a Service's tsinject.dev/replicas (default 1), or what is
// wrong with it.
func replicasOf(obj metav1.Object) (int32, string) {
	v, ok := obj.GetAnnotations()[AnnotationReplicas]
	if !ok {
		return 1, ""
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxReplicas {
		return 1, fmt.Sprintf("annotation %s: %q is not allowed (allowed: 1 to %d)", AnnotationReplicas, v, MaxReplicas)
	}
	return int32(n), ""
}

// EgressFinalizer lets the controller log the proxies out before the
// Service goes.
const EgressFinalizer = "tsinject.dev/egress"

// EgressComponent names the proxy sets of egress Services.
const EgressComponent = "egress"

// EgressReady is the condition on an egress Service's status.
const EgressReady = "TailnetEgressReady"

// ReasonInvalidEgress: the Service asks for something not allowed.
const ReasonInvalidEgress = "InvalidEgressService"

// EgressReconciler reconciles egress Services.
type EgressReconciler struct {
	Base
	// ClusterDomain completes the proxy Service's name in externalName.
	ClusterDomain string
}

// WantsEgress reports whether svc asks for an egress proxy.
func WantsEgress(svc *corev1.Service) bool {
	return svc.Annotations[AnnotationTailnetFQDN] != "" || svc.Annotations[AnnotationTailnetIP] != ""
}

// SetupWithManager watches Services that ask for egress (or still carry
// its finalizer) and the objects of their proxy sets.
func (r *EgressReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.setup(mgr, EgressComponent, EgressFinalizer, WantsEgress, r, r.watchPools)
}

// egressSpec is an egress Service's request, validated.
type egressSpec struct {
	target   string
	ports    []contract.PortMap
	svcPorts []corev1.ServicePort
	replicas int32
	tags     []string
	proxy    *v1alpha1.ProxyConfig // from the namespace's SidecarProfiles
	ns       *injector.Namespace   // nil when it cannot be used
}

// parse validates svc's request; each problem names the field and what is
// allowed.
func (r *EgressReconciler) parse(ctx context.Context, svc *corev1.Service) (egressSpec, []string) {
	var sp egressSpec
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
	ports, svcPorts, portProblems := servicePorts(svc, true)
	sp.ports, sp.svcPorts = ports, svcPorts
	problems = append(problems, portProblems...)
	var problem string
	if sp.replicas, problem = replicasOf(svc); problem != "" {
		problems = append(problems, problem)
	}
	ns, tags, policyProblems := r.namespacePolicy(ctx, svc)
	sp.tags, sp.proxy, sp.ns = tags, profileProxy(ns), ns
	problems = append(problems, policyProblems...)
	return sp, problems
}

// set is svc's proxy set.
func (r *EgressReconciler) set(svc *corev1.Service, sp egressSpec) *proxyset.Set {
	host := contract.RenderName(contract.PlaceholderNamespace+"-"+contract.PlaceholderName+"-egress", svc.Name, svc.Namespace)
	env := []corev1.EnvVar{
		{Name: contract.EnvTags, Value: strings.Join(sp.tags, ",")},
		{Name: contract.EnvTarget, Value: sp.target},
		{Name: contract.EnvPorts, Value: contract.FormatPortMaps(sp.ports)},
	}
	if sp.replicas <= 1 {
		env = append(env, corev1.EnvVar{Name: contract.EnvHostname, Value: host})
	} else {
		env = append(env, corev1.EnvVar{Name: contract.EnvHostnamePrefix, Value: strings.TrimRight(host[:min(len(host), 58)], "-")})
	}
	s := r.proxySet(svc, EgressComponent, sp.replicas, env, sp.proxy)
	s.Ports = sp.svcPorts
	// Only the Service's namespace may use its proxies: they reach the
	// tailnet with that namespace's tags.
	s.Isolated, s.Allow = true, []proxyset.Allow{{Namespace: svc.Namespace, Ports: sp.svcPorts}}
	return s
}

// ProxyServiceFQDN is where the egress Service's externalName points.
func (r *EgressReconciler) ProxyServiceFQDN(s *proxyset.Set) string {
	return s.Name() + "." + r.Namespace + ".svc." + strings.TrimSuffix(r.ClusterDomain, ".")
}

// Reconcile brings one egress Service's proxy set and status in line.
func (r *EgressReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var svc corev1.Service
	if err := r.Client.Get(ctx, req.NamespacedName, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			// Gone without our finalizer (removed by its owner, or while
			// the manager was down): its ports on a pool go too.
			return reconcile.Result{}, r.withdraw(ctx, req.Namespace, req.Name)
		}
		return reconcile.Result{}, err
	}
	if !svc.DeletionTimestamp.IsZero() || !WantsEgress(&svc) {
		if err := r.withdraw(ctx, svc.Namespace, svc.Name); err != nil {
			return reconcile.Result{}, err
		}
		return r.finalize(ctx, &svc, EgressFinalizer, r.set(&svc, egressSpec{}), EgressReady, nil)
	}
	if pool := svc.Annotations[AnnotationProxyPool]; pool != "" {
		return r.reconcilePooled(ctx, &svc, pool)
	}
	sp, problems := r.parse(ctx, &svc)
	if len(problems) > 0 {
		// Off any pool, whatever else is wrong: the pool no longer
		// serves it.
		if err := r.withdraw(ctx, svc.Namespace, svc.Name); err != nil {
			return reconcile.Result{}, err
		}
		return r.invalid(ctx, &svc, EgressReady, ReasonInvalidEgress, problems)
	}
	s := r.set(&svc, sp)
	if err := r.apply(ctx, &svc, EgressFinalizer, s); err != nil {
		return reconcile.Result{}, err
	}
	if fqdn := r.ProxyServiceFQDN(s); svc.Spec.ExternalName != fqdn {
		patch := client.MergeFrom(svc.DeepCopy())
		svc.Spec.ExternalName = fqdn
		if err := r.Client.Patch(ctx, &svc, patch); err != nil {
			return reconcile.Result{}, err
		}
	}
	// Moved off a pool: its ports there go once the externalName no
	// longer names them.
	if err := r.withdraw(ctx, svc.Namespace, svc.Name); err != nil {
		return reconcile.Result{}, err
	}
	cond, err := r.readiness(ctx, &svc, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	return r.report(ctx, &svc, cond)
}

// readiness reads what the replicas reported: on the tailnet, and what
// they know of the target.
func (r *EgressReconciler) readiness(ctx context.Context, svc *corev1.Service, s *proxyset.Set) (metav1.Condition, error) {
	cond := metav1.Condition{Type: EgressReady, Status: metav1.ConditionFalse, ObservedGeneration: svc.Generation}
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
			cond.Message = fmt.Sprintf("%d of %d replicas on the tailnet; target %s at %s", len(devices), s.Replicas, targetOf(svc), strings.Join(st.Addrs, ", "))
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
