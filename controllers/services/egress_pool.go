package services

// Pooled egress Services: annotated tsinject.dev/proxy-pool, an egress
// Service is served by a ProxyPool's replicas instead of its own. It is
// admitted when the pool exists, admits its namespace, and carries
// exactly the Service's own tags (those its namespace's policy gives it):
// the tailnet sees the pool's devices act for it, with no identity its
// namespace could not have had. It gets ports of its own on the pool's
// pods, recorded on a Service of the manager's namespace (its "pooled
// Service", which its externalName then names); package proxypools
// writes the replicas' list and NetworkPolicy from those.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/workqueue"
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
)

// AnnotationProxyPool names the ProxyPool that serves an egress Service.
const AnnotationProxyPool = proxypools.AnnotationProxyPool

// ReasonNotAdmitted: the pool the Service names will not serve it.
const ReasonNotAdmitted = "NotAdmittedToPool"

// watchPools reconciles a pool's Services when the pool changes (it may
// admit or refuse them now, or be gone), and a Service when what a
// replica reports of it changes: not every Service of the pool at each
// report (a replica's peer paths change often, and one tenant flapping
// its own target must not make the controller go through every other).
func (r *EgressReconciler) watchPools(b *builder.Builder) *builder.Builder {
	usersOf := func(ctx context.Context, pool string) []reconcile.Request {
		return r.servicesIn(ctx, "", func(svc *corev1.Service) bool {
			return WantsEgress(svc) && svc.Annotations[AnnotationProxyPool] == pool
		})
	}
	poolSecrets := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace && o.GetLabels()[proxyset.LabelComponent] == proxypools.Component
	})
	specChanged := predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{})
	return b.
		Watches(&v1alpha1.ProxyPool{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return usersOf(ctx, o.GetName())
		}), builder.WithPredicates(specChanged)).
		Watches(&corev1.Secret{}, reportedServices(), builder.WithPredicates(poolSecrets))
}

// reportedServices enqueues the Services whose state a pool replica's
// report adds, changes or drops.
func reportedServices() handler.EventHandler {
	states := func(o client.Object) map[string]contract.EgressTargetState {
		var m map[string]contract.EgressTargetState
		if sec, ok := o.(*corev1.Secret); ok {
			_ = json.Unmarshal(sec.Data[contract.DeviceEgressTargets], &m)
		}
		return m
	}
	enqueue := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], old, now map[string]contract.EgressTargetState) {
		for _, m := range []map[string]contract.EgressTargetState{old, now} {
			for key := range m {
				a, inOld := old[key]
				b, inNow := now[key]
				if inOld == inNow && a.Reason == b.Reason && a.Message == b.Message && slices.Equal(a.Addrs, b.Addrs) {
					continue
				}
				if ns, name, ok := strings.Cut(key, "/"); ok {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}})
				}
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, nil, states(e.Object))
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, states(e.ObjectOld), states(e.ObjectNew))
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, states(e.Object), nil)
		},
	}
}

// pooledName is the name of Service namespace/name's pooled Service: a
// hash of both long enough that no tenant can make another's name (96
// bits; proxy sets' 32 must only avoid accidents, as their owner labels
// are checked), in 63 characters.
func pooledName(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	short := name
	if len(short) > 20 {
		short = strings.TrimRight(short[:20], "-")
	}
	return "ts-pooled-" + short + "-" + hex.EncodeToString(sum[:12])
}

// ownedBy reports whether pooled is the pooled Service of namespace/name
// (its owner labels, which the manager alone writes).
func ownedBy(pooled *corev1.Service, namespace, name string) bool {
	l := pooled.Labels
	return l[proxyset.LabelOwnerNamespace] == namespace && l[proxyset.LabelOwner] == name
}

// reconcilePooled admits svc to pool, gives it ports there and reports.
func (r *EgressReconciler) reconcilePooled(ctx context.Context, svc *corev1.Service, poolName string) (reconcile.Result, error) {
	sp, problems := r.parse(ctx, svc)
	if _, ok := svc.Annotations[AnnotationReplicas]; ok {
		problems = append(problems, fmt.Sprintf("annotation %s: a pooled Service is served by its pool's replicas (remove it, or %s)", AnnotationReplicas, AnnotationProxyPool))
	}
	var pool v1alpha1.ProxyPool
	refusal, err := r.admits(ctx, svc, poolName, sp, &pool)
	if err != nil {
		return reconcile.Result{}, err
	}
	if refusal != "" || len(problems) > 0 {
		// Withdrawn at once, whatever is wrong: a pool acts for every
		// Service it serves with its own identity, so one it cannot check
		// in full (tags its namespace's policy no longer gives, a bad
		// edit) it does not serve. Proxies of a Service's own keep
		// serving through a bad edit; a pool's do not.
		if err := r.withdraw(ctx, svc.Namespace, svc.Name); err != nil {
			return reconcile.Result{}, err
		}
		reason := ReasonInvalidEgress
		if refusal != "" {
			reason, problems = ReasonNotAdmitted, append(problems, refusal)
		}
		return r.report(ctx, svc, metav1.Condition{Type: EgressReady, Status: metav1.ConditionFalse, Reason: reason,
			Message: strings.Join(problems, "; ")})
	}
	if err := r.patchFinalizers(ctx, svc, func() bool { return controllerutil.AddFinalizer(svc, EgressFinalizer) }); err != nil {
		return reconcile.Result{}, err
	}
	set := proxypools.SetOf(&pool, r.Namespace)
	ports, problem, err := r.allocate(ctx, svc, poolName, sp.ports)
	if err != nil {
		return reconcile.Result{}, err
	}
	if problem != "" {
		return r.report(ctx, svc, metav1.Condition{Type: EgressReady, Status: metav1.ConditionFalse, Reason: ReasonNotAdmitted, Message: problem})
	}
	name := pooledName(svc.Namespace, svc.Name)
	var existing corev1.Service
	err = r.Live.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: name}, &existing)
	switch {
	case err == nil && !ownedBy(&existing, svc.Namespace, svc.Name):
		return r.report(ctx, svc, metav1.Condition{Type: EgressReady, Status: metav1.ConditionFalse, Reason: ReasonNotAdmitted,
			Message: fmt.Sprintf("its pooled Service %s is another Service's: rename this Service", name)})
	case err != nil && !apierrors.IsNotFound(err):
		return reconcile.Result{}, err
	}
	pooled := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.Namespace}}
	err = proxyset.ApplyObject(ctx, r.Client, pooled, map[string]string{
		proxyset.LabelManagedBy: proxyset.ManagedBy, proxyset.LabelComponent: proxypools.PooledComponent,
		proxyset.LabelOwner: svc.Name, proxyset.LabelOwnerNamespace: svc.Namespace, proxypools.LabelPool: poolName,
	}, func() {
		var maps []contract.PortMap
		pooled.Annotations = map[string]string{proxypools.AnnotationTarget: sp.target}
		pooled.Spec.Type = corev1.ServiceTypeClusterIP
		pooled.Spec.Selector = set.Selector()
		for i, p := range sp.svcPorts {
			pp := ports[i]
			maps = append(maps, contract.PortMap{Proto: strings.ToLower(string(p.Protocol)), Port: pp, TargetPort: sp.ports[i].TargetPort})
			p.TargetPort = intstr.FromInt32(int32(pp))
			pooled.Spec.Ports = append(pooled.Spec.Ports, p)
		}
		pooled.Annotations[proxypools.AnnotationPorts] = contract.FormatPortMaps(maps)
	})
	if err != nil {
		return reconcile.Result{}, err
	}
	if fqdn := pooled.Name + "." + r.Namespace + ".svc." + strings.TrimSuffix(r.ClusterDomain, "."); svc.Spec.ExternalName != fqdn {
		patch := client.MergeFrom(svc.DeepCopy())
		svc.Spec.ExternalName = fqdn
		if err := r.Client.Patch(ctx, svc, patch); err != nil {
			return reconcile.Result{}, err
		}
	}
	// Moved from proxies of its own to the pool: they go once its
	// externalName no longer names them.
	if own := r.set(svc, sp); r.hasSet(ctx, own) {
		if _, err := proxyset.Delete(ctx, r.Client, r.Live, own, r.Logout, r.Log); err != nil {
			return reconcile.Result{}, err
		}
	}
	cond, err := r.pooledReadiness(ctx, svc, set, poolName)
	if err != nil {
		return reconcile.Result{}, err
	}
	return r.report(ctx, svc, cond)
}

// admits says why pool will not serve svc ("" when it will), reading the
// pool into pool.
func (r *EgressReconciler) admits(ctx context.Context, svc *corev1.Service, name string, sp egressSpec, pool *v1alpha1.ProxyPool) (string, error) {
	err := r.Client.Get(ctx, client.ObjectKey{Name: name}, pool)
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("annotation %s: ProxyPool %q does not exist (kubectl get proxypools lists them; a cluster admin creates them)", AnnotationProxyPool, name), nil
	case err != nil:
		return "", err
	case !pool.DeletionTimestamp.IsZero():
		return fmt.Sprintf("annotation %s: ProxyPool %q is being deleted", AnnotationProxyPool, name), nil
	case sp.ns == nil:
		return fmt.Sprintf("annotation %s: ProxyPool %q serves only namespaces enabled for tsinject", AnnotationProxyPool, name), nil
	}
	sel := pool.Spec.NamespaceSelector
	if sel == nil {
		return fmt.Sprintf("annotation %s: ProxyPool %q admits no namespace (its spec.namespaceSelector is unset; a cluster admin sets it)", AnnotationProxyPool, name), nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return fmt.Sprintf("annotation %s: ProxyPool %q has a bad spec.namespaceSelector: %v", AnnotationProxyPool, name, err), nil
	}
	if !s.Matches(labels.Set(sp.ns.Labels)) {
		return fmt.Sprintf("annotation %s: ProxyPool %q does not admit namespace %s (its spec.namespaceSelector: %s)", AnnotationProxyPool, name, svc.Namespace, s), nil
	}
	want := make([]string, len(pool.Spec.Tags))
	for i, t := range pool.Spec.Tags {
		want[i] = string(t)
	}
	have := slices.Clone(sp.tags)
	slices.Sort(want)
	slices.Sort(have)
	if sp.tags == nil {
		return fmt.Sprintf("annotation %s: ProxyPool %q serves only Services whose tags their namespace's policy gives", AnnotationProxyPool, name), nil
	}
	if !slices.Equal(slices.Compact(want), slices.Compact(have)) {
		return fmt.Sprintf("annotation %s: ProxyPool %q's devices carry %s, and this Service's tags are %s (annotation %s, else the namespace's %s): use a pool with its tags, or none",
			AnnotationProxyPool, name, strings.Join(want, ","), strings.Join(have, ","), AnnotationTags, injector.AnnotationDefaultTags), nil
	}
	return "", nil
}

// allocate gives each of svc's ports a port of the pool's alone: the one
// it has (read past the cache, so two Services never get one), else the
// next free one from where its name hashes to.
func (r *EgressReconciler) allocate(ctx context.Context, svc *corev1.Service, pool string, want []contract.PortMap) ([]uint16, string, error) {
	var list corev1.ServiceList
	if err := r.Live.List(ctx, &list, client.InNamespace(r.Namespace),
		client.MatchingLabels{proxyset.LabelComponent: proxypools.PooledComponent, proxypools.LabelPool: pool}); err != nil {
		return nil, "", err
	}
	mine := map[string]uint16{} // proto/port of svc → the pool's
	used := map[uint16]bool{}
	others := 0
	for _, p := range list.Items {
		own := p.Name == pooledName(svc.Namespace, svc.Name) && ownedBy(&p, svc.Namespace, svc.Name)
		if !own {
			others++
		}
		for _, sp := range p.Spec.Ports {
			pp := uint16(sp.TargetPort.IntVal)
			if own {
				mine[fmt.Sprint(sp.Protocol, sp.Port)] = pp
				continue
			}
			used[pp] = true
		}
	}
	if len(want) > proxypools.MaxPortsPerService {
		return nil, fmt.Sprintf("spec.ports: %d ports; a pooled Service may have at most %d (the pool's ports are shared by every tenant)", len(want), proxypools.MaxPortsPerService), nil
	}
	if others >= proxypools.MaxServices {
		return nil, fmt.Sprintf("ProxyPool %q serves %d Services, its most: use another pool", pool, proxypools.MaxServices), nil
	}
	out := make([]uint16, len(want))
	for i, m := range want {
		if pp, ok := mine[fmt.Sprint(strings.ToUpper(m.Proto), m.Port)]; ok && !used[pp] {
			out[i] = pp
			used[pp] = true
		}
	}
	// New ports start where the Service's name hashes to, not after the
	// highest taken: a port just freed (often the highest) is then not
	// handed straight to the next Service, which a replica still serving
	// the old list would confuse with its last owner.
	sum := sha256.Sum256([]byte(svc.Namespace + "/" + svc.Name))
	span := uint16(contract.PoolPortMax - contract.PoolPortMin + 1)
	next := uint16(contract.PoolPortMin) + (uint16(sum[0])<<8|uint16(sum[1]))%span - 1
	for i := range want {
		if out[i] != 0 {
			continue
		}
		for range contract.PoolPortMax - contract.PoolPortMin + 1 {
			next++
			if next > contract.PoolPortMax || next < contract.PoolPortMin {
				next = contract.PoolPortMin
			}
			if !used[next] {
				break
			}
		}
		if used[next] {
			return nil, fmt.Sprintf("ProxyPool %q has no free port left", pool), nil
		}
		out[i] = next
		used[next] = true
	}
	return out, "", nil
}

// withdraw takes Service namespace/name off any pool: its pooled Service
// goes, and with it its ports on the pool's replicas. Only its own: the
// owner labels are checked first.
func (r *EgressReconciler) withdraw(ctx context.Context, namespace, name string) error {
	var pooled corev1.Service
	err := r.Live.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: pooledName(namespace, name)}, &pooled)
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	if !ownedBy(&pooled, namespace, name) {
		return nil
	}
	return client.IgnoreNotFound(r.Client.Delete(ctx, &pooled, client.Preconditions{UID: &pooled.UID}))
}

// hasSet reports whether s's StatefulSet (or a state Secret) is there.
func (r *EgressReconciler) hasSet(ctx context.Context, s *proxyset.Set) bool {
	var sts appsv1.StatefulSet
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name()}, &sts); err == nil {
		return true
	}
	var sec corev1.Secret
	return r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.SecretName(0)}, &sec) == nil
}

// pooledReadiness reads what the pool's replicas report of svc: ready once
// every replica on the tailnet serves it and one reaches its target.
func (r *EgressReconciler) pooledReadiness(ctx context.Context, svc *corev1.Service, set *proxyset.Set, pool string) (metav1.Condition, error) {
	cond := metav1.Condition{Type: EgressReady, Status: metav1.ConditionFalse, ObservedGeneration: svc.Generation}
	devices, err := proxyset.Devices(ctx, r.Client, set)
	if err != nil {
		return cond, err
	}
	key := svc.Namespace + "/" + svc.Name
	var states []contract.EgressTargetState
	for _, d := range devices {
		var sec corev1.Secret
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: set.Namespace, Name: set.SecretName(int(d.Replica))}, &sec); err != nil {
			return cond, client.IgnoreNotFound(err)
		}
		var all map[string]contract.EgressTargetState
		if json.Unmarshal(sec.Data[contract.DeviceEgressTargets], &all) == nil {
			if st, ok := all[key]; ok {
				states = append(states, st)
			}
		}
	}
	if len(devices) < int(set.Replicas) || len(states) < len(devices) {
		cond.Reason = ReasonProxyNotReady
		cond.Message = fmt.Sprintf("ProxyPool %s: %d of %d replicas on the tailnet, %d serving this Service", pool, len(devices), set.Replicas, len(states))
		return cond, nil
	}
	for _, st := range states {
		if st.Reason == contract.EgressTargetReachable {
			cond.Status, cond.Reason = metav1.ConditionTrue, st.Reason
			cond.Message = fmt.Sprintf("ProxyPool %s: %d replicas serving; target %s at %s", pool, len(states), targetOf(svc), strings.Join(st.Addrs, ", "))
			return cond, nil
		}
	}
	cond.Reason, cond.Message = states[0].Reason, fmt.Sprintf("ProxyPool %s: target %s: %s", pool, targetOf(svc), states[0].Message)
	return cond, nil
}
