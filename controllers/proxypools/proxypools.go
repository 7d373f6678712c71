// Package proxypools reconciles ProxyPools: one proxy set whose replicas
// (`tsinject-proxy egress` reading a list) serve every egress Service that
// chose the pool, from the same pods and tailnet devices. Package services
// admits each Service to its pool and gives it ports there: a Service of
// the manager's namespace per egress Service (PooledComponent), from
// which this controller writes the replicas' list and the NetworkPolicy
// that lets each namespace reach its own Services' ports alone.
package proxypools

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

const (
	// Component names the pools' proxy sets (ts-pool-<pool>).
	Component = "pool"
	// PooledComponent labels the Services, in the manager's namespace,
	// that put one egress Service on its pool's ports.
	PooledComponent = "pooled"
	// LabelPool, on a pooled Service, names its pool.
	LabelPool = "tsinject.dev/pool"
	// AnnotationTarget and AnnotationPorts, on a pooled Service, are its
	// egress Service's tailnet target and the pool's ports mapped to the
	// target's (contract.FormatPortMaps).
	AnnotationTarget = "tsinject.dev/pool-target"
	AnnotationPorts  = "tsinject.dev/pool-ports"
	// Finalizer lets the controller log devices out before a pool goes.
	Finalizer = "tsinject.dev/proxy-pool"
	// DefaultReplicas is spec.replicas' default.
	DefaultReplicas = 2
	// MaxServices bounds the Services of one pool: the replicas report
	// each Service's state in their state Secret (1 MiB at most).
	MaxServices = 1000
	// MaxPortsPerService bounds one pooled Service's ports: the pool's
	// 20,000 are every tenant's.
	MaxPortsPerService = 32
	// AnnotationProxyPool, on an egress Service, names its pool.
	AnnotationProxyPool = "tsinject.dev/proxy-pool"
)

// Condition reasons.
const (
	ReasonReady         = "PoolReady"
	ReasonProxyNotReady = "ProxyNotReady"
)

// SetOf is pool's proxy set, as far as its names, pods and devices go:
// what package services needs to send to it and read its replicas'
// reports.
func SetOf(pool *v1alpha1.ProxyPool, namespace string) *proxyset.Set {
	replicas := int32(DefaultReplicas)
	if pool.Spec.Replicas != nil {
		replicas = *pool.Spec.Replicas
	}
	owner := pool.DeepCopy()
	owner.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("ProxyPool"))
	return &proxyset.Set{Owner: owner, Component: Component, Namespace: namespace, Replicas: replicas}
}

// Reconciler reconciles ProxyPools.
type Reconciler struct {
	Client client.Client
	// Live reads from the API server what the cache does not hold (pods).
	Live       client.Reader
	Namespace  string // where proxies run
	ProxyImage string
	ControlURL string
	// Credential is what the proxies log in with, as it is now.
	Credential func() credential.Wiring
	Logout     proxyset.LogoutFunc
	Events     events.EventRecorder
	Log        logr.Logger
}

// SetupWithManager watches ProxyPools, the objects of their proxy sets,
// the pooled Services that say what they serve, and SidecarProfiles.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	owned, ours := proxyset.Owned(Component, r.Namespace)
	pooled := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace && o.GetLabels()[proxyset.LabelComponent] == PooledComponent
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("proxypool").
		For(&v1alpha1.ProxyPool{}).
		Watches(&appsv1.StatefulSet{}, owned, ours).
		Watches(&corev1.Secret{}, owned, ours).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.GetLabels()[LabelPool]}}}
		}), builder.WithPredicates(pooled)).
		Watches(&v1alpha1.SidecarProfile{}, proxyset.ProfileUsers(mgr.GetClient(),
			func() client.ObjectList { return &v1alpha1.ProxyPoolList{} },
			func(o client.Object) string { return o.(*v1alpha1.ProxyPool).Spec.Profile })).
		Complete(r)
}

// Served is what a pool's replicas serve, read from its pooled Services:
// the list they follow and the namespaces that may reach each port.
func Served(services []corev1.Service) ([]contract.PoolService, []proxyset.Allow) {
	var list []contract.PoolService
	for _, svc := range services {
		l := svc.Labels
		ps := contract.PoolService{
			Service: l[proxyset.LabelOwnerNamespace] + "/" + l[proxyset.LabelOwner],
			Target:  svc.Annotations[AnnotationTarget], Ports: svc.Annotations[AnnotationPorts],
		}
		// One at a time: a Service the replicas could not use is left
		// out, not the whole list with it.
		if _, err := contract.ParsePoolServices(mustJSON([]contract.PoolService{ps})); err == nil {
			list = append(list, ps)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Service < list[j].Service })
	// A port given twice (never, as package services allocates it from
	// the API server) stays the first Service's: the replicas would
	// refuse the whole list, and the second namespace must not reach it.
	taken := map[contract.PortMap]bool{}
	kept := list[:0]
	for _, ps := range list {
		maps, _ := contract.ParsePortMaps(ps.Ports)
		clash := false
		for _, m := range maps {
			clash = clash || taken[contract.PortMap{Proto: m.Proto, Port: m.Port}]
		}
		if clash {
			continue
		}
		for _, m := range maps {
			taken[contract.PortMap{Proto: m.Proto, Port: m.Port}] = true
		}
		kept = append(kept, ps)
	}
	list = kept
	ports := map[string][]corev1.ServicePort{}
	for _, ps := range list {
		ns, _, _ := strings.Cut(ps.Service, "/")
		maps, _ := contract.ParsePortMaps(ps.Ports)
		for _, m := range maps {
			ports[ns] = append(ports[ns], corev1.ServicePort{Protocol: corev1.Protocol(strings.ToUpper(m.Proto)), Port: int32(m.Port)})
		}
	}
	var allow []proxyset.Allow
	for ns, p := range ports {
		sort.Slice(p, func(i, j int) bool {
			return p[i].Port < p[j].Port || p[i].Port == p[j].Port && p[i].Protocol < p[j].Protocol
		})
		allow = append(allow, proxyset.Allow{Namespace: ns, Ports: p})
	}
	sort.Slice(allow, func(i, j int) bool { return allow[i].Namespace < allow[j].Namespace })
	return list, allow
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs
	}
	return b
}

// set is pool's proxy set, serving list.
func (r *Reconciler) set(pool *v1alpha1.ProxyPool, proxy *v1alpha1.ProxyConfig, list []contract.PoolService, allow []proxyset.Allow) *proxyset.Set {
	s := SetOf(pool, r.Namespace)
	prefix := pool.Spec.HostnamePrefix
	if prefix == "" {
		prefix = pool.Name + "-pool"
	}
	tags := make([]string, len(pool.Spec.Tags))
	for i, t := range pool.Spec.Tags {
		tags[i] = string(t)
	}
	s.Env = []corev1.EnvVar{
		{Name: contract.EnvTags, Value: strings.Join(tags, ",")},
		{Name: contract.EnvHostnamePrefix, Value: prefix},
		{Name: contract.EnvPoolSecret, Value: s.FilesName()},
	}
	if r.ControlURL != "" {
		s.Env = append(s.Env, corev1.EnvVar{Name: contract.EnvControlURL, Value: r.ControlURL})
	}
	if list == nil {
		list = []contract.PoolService{}
	}
	s.Image, s.Args, s.Proxy, s.Credential = r.ProxyImage, []string{"egress"}, proxy, r.Credential()
	s.Files, s.FilesByAPI = map[string]string{contract.PoolServicesKey: string(mustJSON(list))}, true
	// Closed to every pod but on the ports of its own namespace's
	// Services: a pool acts on the tailnet with its tags for them all.
	s.Isolated, s.Allow = true, allow
	return s
}

// Reconcile brings one pool's proxy set and status in line.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pool v1alpha1.ProxyPool
	if err := r.Client.Get(ctx, req.NamespacedName, &pool); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	pooled, err := r.pooled(ctx, pool.Name)
	if err != nil {
		return reconcile.Result{}, err
	}
	list, allow := Served(pooled)
	proxy, ok, err := proxyset.ResolveProxy(ctx, r.Client, r.Events, &pool, &pool.Status.Conditions, pool.Spec.Profile, pool.Spec.Proxy)
	if !ok {
		if err != nil {
			return reconcile.Result{}, err
		}
		// The pods stay as they are until the profile is back, but what
		// they serve and who may reach it follow the Services still.
		return reconcile.Result{RequeueAfter: 5 * time.Second}, proxyset.ApplyAccess(ctx, r.Client, r.set(&pool, nil, list, allow))
	}
	s := r.set(&pool, proxy, list, allow)
	if !pool.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, &pool, s)
	}
	if added, err := proxyset.Finalize(ctx, r.Client, &pool, Finalizer, true); err != nil {
		return reconcile.Result{}, err
	} else if added {
		s = r.set(&pool, proxy, list, allow)
	}
	if err := proxyset.Apply(ctx, r.Client, s); err != nil {
		return reconcile.Result{}, err
	}
	if err := proxyset.Retire(ctx, r.Client, r.Live, s, r.Logout, r.Log); err != nil {
		return reconcile.Result{}, err
	}
	return r.updateStatus(ctx, &pool, s, len(list))
}

// pooled lists pool's pooled Services, deleting those whose egress
// Service is gone or names another pool (or none): package services
// withdraws them itself, but not if it never saw the change (its Service
// deleted while the manager was down).
func (r *Reconciler) pooled(ctx context.Context, pool string) ([]corev1.Service, error) {
	var list corev1.ServiceList
	if err := r.Client.List(ctx, &list, client.InNamespace(r.Namespace),
		client.MatchingLabels{proxyset.LabelComponent: PooledComponent, LabelPool: pool}); err != nil {
		return nil, err
	}
	var out []corev1.Service
	for _, p := range list.Items {
		var svc corev1.Service
		key := client.ObjectKey{Namespace: p.Labels[proxyset.LabelOwnerNamespace], Name: p.Labels[proxyset.LabelOwner]}
		err := r.Client.Get(ctx, key, &svc)
		switch {
		case err == nil && svc.DeletionTimestamp.IsZero() && svc.Annotations[AnnotationProxyPool] == pool:
			out = append(out, p)
			continue
		case err != nil && !apierrors.IsNotFound(err):
			return nil, err
		}
		r.Log.Info("removing a pooled Service whose Service left the pool", "pooled", p.Name, "service", key)
		if err := client.IgnoreNotFound(r.Client.Delete(ctx, &p, client.Preconditions{UID: &p.UID})); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// finalize logs every device out, deletes the proxy set and lets the pool
// go. Its Services find it gone (package services reports them).
func (r *Reconciler) finalize(ctx context.Context, pool *v1alpha1.ProxyPool, s *proxyset.Set) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(pool, Finalizer) {
		return reconcile.Result{}, nil
	}
	done, err := proxyset.Delete(ctx, r.Client, r.Live, s, r.Logout, r.Log)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !done {
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	// Not found: a reconcile from a cache behind our last write.
	_, err = proxyset.Finalize(ctx, r.Client, pool, Finalizer, false)
	return reconcile.Result{}, client.IgnoreNotFound(err)
}

// updateStatus reports devices, the Services served and the Ready
// condition.
func (r *Reconciler) updateStatus(ctx context.Context, pool *v1alpha1.ProxyPool, s *proxyset.Set, services int) (reconcile.Result, error) {
	devices, err := proxyset.Devices(ctx, r.Client, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	cond := metav1.Condition{Type: "Ready", ObservedGeneration: pool.Generation, Status: metav1.ConditionFalse, Reason: ReasonProxyNotReady,
		Message: fmt.Sprintf("%d of %d replicas are on the tailnet", len(devices), s.Replicas)}
	if len(devices) >= int(s.Replicas) {
		cond.Status, cond.Reason = metav1.ConditionTrue, ReasonReady
		cond.Message = fmt.Sprintf("%d replicas on the tailnet, serving %d Services", len(devices), services)
	}
	orig := pool.DeepCopy()
	before := &orig.Status
	proxyset.RecordReady(r.Events, pool, before.Conditions, cond)
	pool.Status.Devices = devices
	pool.Status.Services = int32(services)
	pool.Status.ObservedGeneration = pool.Generation
	meta.SetStatusCondition(&pool.Status.Conditions, cond)
	if !statusEqual(before, &pool.Status) {
		// A patch: every Service's change reconciles the pool, and an
		// update from a cache a write behind would conflict.
		if err := r.Client.Status().Patch(ctx, pool, client.MergeFrom(orig)); err != nil {
			return reconcile.Result{}, err
		}
	}
	if cond.Status != metav1.ConditionTrue {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	return reconcile.Result{RequeueAfter: time.Minute}, nil
}

// statusEqual compares statuses but the conditions' transition times.
func statusEqual(a, b *v1alpha1.ProxyPoolStatus) bool {
	strip := func(s *v1alpha1.ProxyPoolStatus) *v1alpha1.ProxyPoolStatus {
		s = s.DeepCopy()
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
		}
		slices.SortFunc(s.Conditions, func(x, y metav1.Condition) int { return strings.Compare(x.Type, y.Type) })
		return s
	}
	return equality.Semantic.DeepEqual(strip(a), strip(b))
}
