package services

// Ingress Services: a Service of type LoadBalancer with
// loadBalancerClass tsinject.dev/tailnet gets a proxy running
// `tsinject-proxy ingress`, a tailnet device of its own that forwards the
// Service's ports to its ClusterIP; status.loadBalancer.ingress carries
// the device's MagicDNS name and addresses, where kubectl, GitOps tools
// and external-dns look for a load balancer's.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
)

// LoadBalancerClass selects the Services tsinject puts on the tailnet.
const LoadBalancerClass = "tsinject.dev/tailnet"

// AnnotationHostname names the ingress device (default
// <namespace>-<name>), within the namespace's allowed hostnames.
const AnnotationHostname = injector.AnnotationHostname

// IngressFinalizer lets the controller log the proxy out before the
// Service goes.
const IngressFinalizer = "tsinject.dev/ingress"

// IngressComponent names the proxy sets of ingress Services.
const IngressComponent = "ingress"

// IngressReady is the condition on an ingress Service's status.
const IngressReady = "TailnetIngressReady"

// Reasons of IngressReady besides ReasonProxyNotReady.
const (
	ReasonIngressReady   = "OnTailnet"
	ReasonInvalidIngress = "InvalidIngressService"
)

// IngressReconciler reconciles ingress Services.
type IngressReconciler struct {
	Base
}

// WantsIngress reports whether svc asks to be on the tailnet.
func WantsIngress(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == LoadBalancerClass
}

// SetupWithManager watches ingress Services and their proxy sets.
func (r *IngressReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.setup(mgr, IngressComponent, IngressFinalizer, WantsIngress, r)
}

// ingressSpec is an ingress Service's request, validated.
type ingressSpec struct {
	host     string
	replicas int32
	target   string
	ports    []contract.PortMap
	tags     []string
	proxy    *v1alpha1.ProxyConfig // from the namespace's SidecarProfiles
}

func (r *IngressReconciler) parse(ctx context.Context, svc *corev1.Service) (ingressSpec, []string) {
	var sp ingressSpec
	var problems []string
	sp.ports, _, problems = servicePorts(svc, false)
	sp.target = clusterIP(svc)
	if sp.target == "" {
		problems = append(problems, fmt.Sprintf("spec.clusterIP: %q; an ingress Service needs a cluster address to forward to (not headless)", svc.Spec.ClusterIP))
	}
	ns, tags, policyProblems := r.namespacePolicy(ctx, svc)
	sp.tags, sp.proxy = tags, profileProxy(ns)
	problems = append(problems, policyProblems...)
	var problem string
	if sp.replicas, problem = replicasOf(svc); problem != "" {
		problems = append(problems, problem)
	}
	sp.host = contract.RenderName(contract.PlaceholderNamespace+"-"+contract.PlaceholderName, svc.Name, svc.Namespace)
	if v, ok := svc.Annotations[AnnotationHostname]; ok {
		if !contract.IsDNSLabel(v) || strings.ToLower(v) != v {
			problems = append(problems, fmt.Sprintf("annotation %s: %q is not allowed (allowed: a DNS label, lowercase letters, digits and '-')", AnnotationHostname, v))
		}
		sp.host = v
	}
	if ns != nil && len(policyProblems) == 0 {
		if err := r.Injector.HostnameAllowed(*ns, sp.host); err != nil {
			problems = append(problems, fmt.Sprintf("annotation %s (default <namespace>-<name>): %v", AnnotationHostname, err))
		}
	}
	return sp, problems
}

// clusterIP is the address the proxy forwards to: the Service's IPv4
// ClusterIP if it has one, else its first.
func clusterIP(svc *corev1.Service) string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var first string
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue // "None": headless
		}
		if a.Is4() {
			return ip
		}
		if first == "" {
			first = ip
		}
	}
	return first
}

// set is the Service's proxies: replicas sharing one name, so the name
// outlives any one of them (package failover).
func (r *IngressReconciler) set(svc *corev1.Service, sp ingressSpec) *proxyset.Set {
	replicas := max(sp.replicas, 1)
	s := r.proxySet(svc, IngressComponent, replicas, []corev1.EnvVar{
		{Name: contract.EnvTags, Value: strings.Join(sp.tags, ",")},
		{Name: contract.EnvHostname, Value: sp.host},
		{Name: contract.EnvTarget, Value: sp.target},
		{Name: contract.EnvPorts, Value: contract.FormatPortMaps(sp.ports)},
		{Name: contract.EnvOneName, Value: "true"},
	}, sp.proxy)
	s.OneName = true
	return s
}

// Reconcile brings one ingress Service's proxy and status in line.
func (r *IngressReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var svc corev1.Service
	if err := r.Client.Get(ctx, req.NamespacedName, &svc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !svc.DeletionTimestamp.IsZero() || !WantsIngress(&svc) {
		return r.finalize(ctx, &svc, IngressFinalizer, r.set(&svc, ingressSpec{}), IngressReady, func(st *corev1.ServiceStatus) bool {
			had := len(st.LoadBalancer.Ingress) > 0
			st.LoadBalancer.Ingress = nil
			return had
		})
	}
	sp, problems := r.parse(ctx, &svc)
	if len(problems) > 0 {
		return r.invalid(ctx, &svc, IngressReady, ReasonInvalidIngress, problems)
	}
	s := r.set(&svc, sp)
	if err := r.apply(ctx, &svc, IngressFinalizer, s); err != nil {
		return reconcile.Result{}, err
	}
	devices, err := proxyset.Devices(ctx, r.Client, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	cond := metav1.Condition{Type: IngressReady, Status: metav1.ConditionFalse, Reason: ReasonProxyNotReady, Message: "the proxy is not on the tailnet yet"}
	var ingress []corev1.LoadBalancerIngress
	if len(devices) > 0 {
		d := devices[0]
		// Proxy mode: kube-proxy must not take the tailnet addresses for
		// local ones and short-circuit them to the Service in the cluster.
		mode := corev1.LoadBalancerIPModeProxy
		ingress = append(ingress, corev1.LoadBalancerIngress{Hostname: d.Hostname})
		for _, ip := range d.TailnetIPs {
			ingress = append(ingress, corev1.LoadBalancerIngress{IP: ip, IPMode: &mode})
		}
		cond.Status, cond.Reason = metav1.ConditionTrue, ReasonIngressReady
		cond.Message = fmt.Sprintf("on the tailnet as %s (%s), ports %s, forwarding to %s", d.Hostname, strings.Join(d.TailnetIPs, ", "), contract.FormatPortMaps(sp.ports), sp.target)
	}
	if !slices.EqualFunc(svc.Status.LoadBalancer.Ingress, ingress, func(a, b corev1.LoadBalancerIngress) bool {
		return a.IP == b.IP && a.Hostname == b.Hostname
	}) {
		orig := svc.DeepCopy()
		svc.Status.LoadBalancer.Ingress = ingress
		if err := r.patchStatus(ctx, &svc, orig); err != nil {
			return reconcile.Result{}, err
		}
	}
	return r.report(ctx, &svc, cond)
}
