// Package connectors reconciles Connectors into proxy sets running
// `tsinject-proxy connector`, and reports their devices in status.
package connectors

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
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

// Finalizer lets the controller log devices out before a Connector goes.
const Finalizer = "tsinject.dev/connector"

// Condition reasons.
const (
	ReasonReady                 = "ConnectorReady"
	ReasonProxyNotReady         = "ProxyNotReady"
	ReasonAwaitingRouteApproval = "AwaitingRouteApproval"
	ReasonScaledToZero          = "ScaledToZero"
)

// ConditionPodRanges says whether an exit node knows the cluster's pod
// ranges to refuse them (the manager's --pod-cidrs): pod ranges are not
// discoverable from the API, and without them pods are reachable through
// the exit node.
const (
	ConditionPodRanges   = "PodRangesRefused"
	ReasonPodRangesKnown = "PodCIDRsConfigured"
	ReasonPodRangesUnset = "PodCIDRsNotConfigured"
)

// Reconciler reconciles Connectors.
type Reconciler struct {
	Client client.Client
	// Live reads from the API server what the cache does not hold (pods).
	Live       client.Reader
	Namespace  string // where proxies run
	ProxyImage string
	ControlURL string
	// Credential is what the proxies log in with, as it is now.
	Credential func() credential.Wiring
	// Logout logs a removed device out (proxyset.Logout).
	Logout proxyset.LogoutFunc
	// PodCIDRs are the cluster's pod ranges (the manager's --pod-cidrs):
	// exit nodes refuse them with the Service ranges, which are read from
	// the cluster. Pod ranges are not: per-node ranges of a large cluster
	// would fill the proxy's environment, and the admin knows the range.
	PodCIDRs []string
	// Events, if set, records the Ready condition's transitions on the
	// Connector (proxyset.RecordReady).
	Events events.EventRecorder
	Log    logr.Logger
}

// SetupWithManager watches Connectors and the objects of their proxy sets.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	owned, ours := proxyset.Owned("connector", r.Namespace)
	return ctrl.NewControllerManagedBy(mgr).
		Named("connector").
		For(&v1alpha1.Connector{}).
		Watches(&appsv1.StatefulSet{}, owned, ours).
		Watches(&corev1.Secret{}, owned, ours).
		Watches(&corev1.Node{}, r.exitNodes()).
		Watches(&discoveryv1.EndpointSlice{}, r.exitNodes()).
		Watches(&v1alpha1.SidecarProfile{}, proxyset.ProfileUsers(mgr.GetClient(),
			func() client.ObjectList { return &v1alpha1.ConnectorList{} },
			func(o client.Object) string { return o.(*v1alpha1.Connector).Spec.Profile })).
		Complete(r)
}

// ServiceCIDRs lists the cluster's Service ranges (ServiceCIDR objects,
// Kubernetes >= 1.33) through live, past any cache: exit nodes refuse
// them, and pods that leave through one keep them off it. A cluster
// without the API has none to report.
func ServiceCIDRs(ctx context.Context, live client.Reader) ([]string, error) {
	var list networkingv1.ServiceCIDRList
	if err := live.List(ctx, &list); err != nil {
		if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing ServiceCIDRs: %w", err)
	}
	var out []string
	for _, c := range list.Items {
		out = append(out, c.Spec.CIDRs...)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// clusterCIDRs are the ranges an exit node refuses besides its node's and
// its own addresses: the Service ranges and the configured pod ranges.
func (r *Reconciler) clusterCIDRs(ctx context.Context) ([]string, error) {
	cidrs, err := ServiceCIDRs(ctx, r.Live)
	if err != nil {
		return nil, err
	}
	cidrs = append(cidrs, r.PodCIDRs...)
	slices.Sort(cidrs)
	return slices.Compact(cidrs), nil
}

func (r *Reconciler) set(cn *v1alpha1.Connector, clusterCIDRs, clusterAddrs []string, proxy *v1alpha1.ProxyConfig) *proxyset.Set {
	replicas := int32(1)
	if cn.Spec.Replicas != nil {
		replicas = *cn.Spec.Replicas
	}
	env := []corev1.EnvVar{{Name: contract.EnvTags, Value: strings.Join(tags(cn.Spec.Tags, "tag:k8s"), ",")}}
	if r.ControlURL != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvControlURL, Value: r.ControlURL})
	}
	switch {
	case cn.Spec.Hostname != "":
		env = append(env, corev1.EnvVar{Name: contract.EnvHostname, Value: cn.Spec.Hostname})
	case cn.Spec.HostnamePrefix != "":
		env = append(env, corev1.EnvVar{Name: contract.EnvHostnamePrefix, Value: cn.Spec.HostnamePrefix})
	case replicas <= 1:
		env = append(env, corev1.EnvVar{Name: contract.EnvHostname, Value: cn.Name + "-connector"})
	default:
		env = append(env, corev1.EnvVar{Name: contract.EnvHostnamePrefix, Value: cn.Name + "-connector"})
	}
	if sr := cn.Spec.SubnetRouter; sr != nil {
		routes := make([]string, len(sr.AdvertiseRoutes))
		for i, rt := range sr.AdvertiseRoutes {
			routes[i] = string(rt)
		}
		env = append(env, corev1.EnvVar{Name: contract.EnvRoutes, Value: strings.Join(routes, ",")})
	}
	var files map[string]string
	if cn.Spec.ExitNode {
		// The exit node refuses the node's and its own addresses, the
		// cluster's Service and pod ranges (in its environment), and every
		// node's and the API server's addresses (in a file kept current).
		field := func(name, path string) corev1.EnvVar {
			return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
		}
		env = append(env, corev1.EnvVar{Name: contract.EnvExitNode, Value: "true"},
			field(contract.EnvHostIP, "status.hostIP"), field(contract.EnvPodIP, "status.podIP"),
			field(contract.EnvHostIPs, "status.hostIPs"), field(contract.EnvPodIPs, "status.podIPs"),
			corev1.EnvVar{Name: contract.EnvExitDenyFile, Value: contract.ExitDenyFile})
		if len(clusterCIDRs) > 0 {
			env = append(env, corev1.EnvVar{Name: contract.EnvExitDeny, Value: strings.Join(clusterCIDRs, ",")})
		}
		files = map[string]string{contract.ExitDenyKey: denyFile(clusterAddrs)}
	}
	cn.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("Connector"))
	return &proxyset.Set{
		Owner: cn, Component: "connector", Namespace: r.Namespace, Replicas: replicas,
		Image: r.ProxyImage, Args: []string{"connector"}, Env: env, Proxy: proxy,
		Credential: r.Credential(), Files: files, FilesDir: contract.ExitDenyDir,
	}
}

func tags(ts []v1alpha1.Tag, def string) []string {
	if len(ts) == 0 {
		return []string{def}
	}
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	return out
}

// Reconcile brings one Connector's proxy set and status in line.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var cn v1alpha1.Connector
	if err := r.Client.Get(ctx, req.NamespacedName, &cn); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	var cidrs, addrs []string
	if cn.Spec.ExitNode && cn.DeletionTimestamp.IsZero() {
		var err error
		if cidrs, err = r.clusterCIDRs(ctx); err != nil {
			return reconcile.Result{}, err
		}
		if addrs, err = r.clusterAddresses(ctx); err != nil {
			return reconcile.Result{}, err
		}
	}
	proxy, ok, err := proxyset.ResolveProxy(ctx, r.Client, r.Events, &cn, &cn.Status.Conditions, cn.Spec.Profile, cn.Spec.Proxy)
	if !ok {
		return reconcile.Result{}, err
	}
	s := r.set(&cn, cidrs, addrs, proxy)
	if !cn.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, &cn, s)
	}
	if added, err := proxyset.Finalize(ctx, r.Client, &cn, Finalizer, true); err != nil {
		return reconcile.Result{}, err
	} else if added {
		s = r.set(&cn, cidrs, addrs, proxy)
	}
	if err := proxyset.Apply(ctx, r.Client, s); err != nil {
		return reconcile.Result{}, err
	}
	if err := proxyset.Retire(ctx, r.Client, r.Live, s, r.Logout, r.Log); err != nil {
		return reconcile.Result{}, err
	}
	return r.updateStatus(ctx, &cn, s)
}

// finalize logs every device out, deletes the proxy set and lets the
// Connector go.
func (r *Reconciler) finalize(ctx context.Context, cn *v1alpha1.Connector, s *proxyset.Set) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(cn, Finalizer) {
		return reconcile.Result{}, nil
	}
	done, err := proxyset.Delete(ctx, r.Client, r.Live, s, r.Logout, r.Log)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !done {
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	_, err = proxyset.Finalize(ctx, r.Client, cn, Finalizer, false)
	return reconcile.Result{}, err
}

// updateStatus reports devices and the Ready condition.
func (r *Reconciler) updateStatus(ctx context.Context, cn *v1alpha1.Connector, s *proxyset.Set) (reconcile.Result, error) {
	devices, err := proxyset.Devices(ctx, r.Client, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	want := wantedRoutes(cn)
	cond := metav1.Condition{Type: "Ready", ObservedGeneration: cn.Generation}
	switch {
	case s.Replicas == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonScaledToZero, "spec.replicas is 0"
	case len(devices) < int(s.Replicas):
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonProxyNotReady
		cond.Message = fmt.Sprintf("%d of %d replicas are on the tailnet", len(devices), s.Replicas)
	default:
		var missing []string
		served := false
		for _, d := range devices {
			var lacks []string
			for _, w := range want {
				if !slices.Contains(d.ApprovedRoutes, w) {
					lacks = append(lacks, w)
				}
			}
			if len(lacks) == 0 {
				served = true
			} else {
				missing = append(missing, fmt.Sprintf("%s: %s", d.Hostname, strings.Join(lacks, ", ")))
			}
		}
		if served {
			cond.Status, cond.Reason = metav1.ConditionTrue, ReasonReady
			cond.Message = fmt.Sprintf("%d replicas on the tailnet; routes approved", len(devices))
		} else {
			sort.Strings(missing)
			cond.Status, cond.Reason = metav1.ConditionFalse, ReasonAwaitingRouteApproval
			cond.Message = "routes not approved yet (approve them in the admin console, or add autoApprovers: see `tsinject policy`): " + strings.Join(missing, "; ")
		}
	}
	before := cn.Status.DeepCopy()
	proxyset.RecordReady(r.Events, cn, before.Conditions, cond)
	cn.Status.Devices = devices
	cn.Status.ObservedGeneration = cn.Generation
	meta.SetStatusCondition(&cn.Status.Conditions, cond)
	if cn.Spec.ExitNode {
		meta.SetStatusCondition(&cn.Status.Conditions, r.podRanges(cn.Generation))
	} else {
		meta.RemoveStatusCondition(&cn.Status.Conditions, ConditionPodRanges)
	}
	if !statusEqual(before, &cn.Status) {
		if err := r.Client.Status().Update(ctx, cn); err != nil {
			return reconcile.Result{}, err
		}
	}
	// Approval happens on the control server, which does not notify us.
	if cond.Status != metav1.ConditionTrue && s.Replicas > 0 {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	return reconcile.Result{RequeueAfter: time.Minute}, nil
}

// podRanges is an exit node's ConditionPodRanges.
func (r *Reconciler) podRanges(generation int64) metav1.Condition {
	if len(r.PodCIDRs) == 0 {
		return metav1.Condition{Type: ConditionPodRanges, Status: metav1.ConditionFalse, Reason: ReasonPodRangesUnset, ObservedGeneration: generation,
			Message: "the manager has no --pod-cidrs (Helm podCIDRs), and pod ranges cannot be read from the cluster: pods are reachable through this exit node unless a NetworkPolicy refuses its traffic; set them (docs/connector.md)"}
	}
	return metav1.Condition{Type: ConditionPodRanges, Status: metav1.ConditionTrue, Reason: ReasonPodRangesKnown, ObservedGeneration: generation,
		Message: "refuses the pod ranges " + strings.Join(r.PodCIDRs, ", ")}
}

// wantedRoutes are the routes the control server must approve.
func wantedRoutes(cn *v1alpha1.Connector) []string {
	var out []string
	if sr := cn.Spec.SubnetRouter; sr != nil {
		for _, rt := range sr.AdvertiseRoutes {
			out = append(out, string(rt))
		}
	}
	if cn.Spec.ExitNode {
		out = append(out, "0.0.0.0/0", "::/0")
	}
	return out
}

func statusEqual(a, b *v1alpha1.ConnectorStatus) bool {
	if a.ObservedGeneration != b.ObservedGeneration || len(a.Devices) != len(b.Devices) || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.Devices {
		x, y := a.Devices[i], b.Devices[i]
		if x.Hostname != y.Hostname || !slices.Equal(x.TailnetIPs, y.TailnetIPs) || !slices.Equal(x.ApprovedRoutes, y.ApprovedRoutes) || !slices.Equal(x.AdvertisedRoutes, y.AdvertisedRoutes) ||
			!maps.Equal(x.PeerPaths, y.PeerPaths) {
			return false
		}
	}
	for i := range a.Conditions {
		x, y := a.Conditions[i], b.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}
