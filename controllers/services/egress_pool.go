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
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
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
const AnnotationProxyPool = injector.AnnotationPrefix + "proxy-pool"

// ReasonNotAdmitted: the pool the Service names will not serve it.
const ReasonNotAdmitted = "NotAdmittedToPool"

// watchPools reconciles a pool's Services when the pool changes (it may
// admit or refuse them now, or be gone) and when its replicas report
// (what they serve, and how they see each target).
func (r *EgressReconciler) watchPools(b *builder.Builder) *builder.Builder {
	usersOf := func(ctx context.Context, pool string) []reconcile.Request {
		return r.servicesIn(ctx, "", func(svc *corev1.Service) bool {
			return WantsEgress(svc) && svc.Annotations[AnnotationProxyPool] == pool
		})
	}
	poolSecrets := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace && o.GetLabels()[proxyset.LabelComponent] == proxypools.Component
	})
	return b.
		Watches(&v1alpha1.ProxyPool{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return usersOf(ctx, o.GetName())
		})).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return usersOf(ctx, o.GetLabels()[proxyset.LabelOwner])
		}), builder.WithPredicates(poolSecrets))
}

// pooledName is the name of svc's pooled Service.
func pooledName(svc *corev1.Service) string {
	return (&proxyset.Set{Owner: svc, Component: proxypools.PooledComponent}).Name()
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
	if refusal != "" {
		// Withdrawn at once: the pool, or the policy, no longer lets this
		// namespace act with the pool's identity.
		if err := r.withdraw(ctx, svc); err != nil {
			return reconcile.Result{}, err
		}
		return r.report(ctx, svc, metav1.Condition{Type: EgressReady, Status: metav1.ConditionFalse, Reason: ReasonNotAdmitted,
			Message: strings.Join(append(problems, refusal), "; ")})
	}
	if len(problems) > 0 {
		// A bad edit: what was served stays until it is fixed.
		return r.invalid(ctx, svc, EgressReady, ReasonInvalidEgress, problems)
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
	pooled := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: pooledName(svc), Namespace: r.Namespace}}
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
	if sp.tags != nil && !slices.Equal(slices.Compact(want), slices.Compact(have)) {
		return fmt.Sprintf("annotation %s: ProxyPool %q's devices carry %s, and this Service's tags are %s (annotation %s, else the namespace's %s): use a pool with its tags, or none",
			AnnotationProxyPool, name, strings.Join(want, ","), strings.Join(have, ","), AnnotationTags, injector.AnnotationDefaultTags), nil
	}
	return "", nil
}

// allocate gives each of svc's ports a port of the pool's alone: the one
// it has (read past the cache, so two Services never get one), else the
// next free after the highest taken, so a port freed is not handed out
// again at once to a Service a replica still serving the old list would
// confuse with its last owner.
func (r *EgressReconciler) allocate(ctx context.Context, svc *corev1.Service, pool string, want []contract.PortMap) ([]uint16, string, error) {
	var list corev1.ServiceList
	if err := r.Live.List(ctx, &list, client.InNamespace(r.Namespace),
		client.MatchingLabels{proxyset.LabelComponent: proxypools.PooledComponent, proxypools.LabelPool: pool}); err != nil {
		return nil, "", err
	}
	mine := map[string]uint16{} // proto/port of svc → the pool's
	used := map[uint16]bool{}
	highest := uint16(contract.PoolPortMin - 1)
	others := 0
	for _, p := range list.Items {
		own := p.Name == pooledName(svc)
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
			highest = max(highest, pp)
		}
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
	next := highest
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

// withdraw takes svc off any pool: its pooled Service goes, and with it
// its ports on the pool's replicas.
func (r *EgressReconciler) withdraw(ctx context.Context, svc *corev1.Service) error {
	pooled := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: pooledName(svc), Namespace: r.Namespace}}
	return client.IgnoreNotFound(r.Client.Delete(ctx, pooled))
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
