package services

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxypools"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
)

// pool admits the namespaces enabled for tsinject, with tag:shop.
func pool() *v1alpha1.ProxyPool {
	return &v1alpha1.ProxyPool{ObjectMeta: metav1.ObjectMeta{Name: "shared"}, Spec: v1alpha1.ProxyPoolSpec{
		Tags:              []v1alpha1.Tag{"tag:shop"},
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{injector.LabelInjection: "enabled"}},
	}}
}

// pooledService is an egress Service of shop named name on pool shared.
func pooledService(name, target string) *corev1.Service {
	svc := egressService()
	svc.Name = name
	svc.Annotations = map[string]string{AnnotationTailnetFQDN: target, AnnotationProxyPool: "shared"}
	return svc
}

func reconcileService(t *testing.T, r reconcile.Reconciler, ns, name string) {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}}); err != nil {
		t.Fatal(err)
	}
}

func poolReconciler(r *EgressReconciler) *proxypools.Reconciler {
	return &proxypools.Reconciler{Client: r.Client, Live: r.Live, Namespace: r.Namespace, ProxyImage: r.ProxyImage,
		ControlURL: r.ControlURL, Credential: r.Credential, Logout: r.Logout, Log: r.Log}
}

func reconcilePool(t *testing.T, r *EgressReconciler) {
	t.Helper()
	if _, err := poolReconciler(r).Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: "shared"}}); err != nil {
		t.Fatal(err)
	}
}

func getService(t *testing.T, c client.Client, ns, name string) *corev1.Service {
	t.Helper()
	var svc corev1.Service
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &svc); err != nil {
		t.Fatal(err)
	}
	return &svc
}

func egressCondition(t *testing.T, c client.Client, ns, name string) metav1.Condition {
	t.Helper()
	for _, cond := range getService(t, c, ns, name).Status.Conditions {
		if cond.Type == EgressReady {
			return cond
		}
	}
	t.Fatalf("%s/%s has no %s condition", ns, name, EgressReady)
	return metav1.Condition{}
}

// Three egress Services on one pool: one proxy set of two replicas serves
// them all, each on ports of its own (kept across reconciles), listed for
// the replicas and open to the Services' namespace alone; no Service gets
// proxies of its own.
func TestPooledServicesShareOneSet(t *testing.T) {
	ctx := context.Background()
	r, c := newReconciler(t, pool(), pooledService("db", "db.example.ts.net"), pooledService("cache", "cache"), pooledService("dns", "resolver"))
	for _, n := range []string{"db", "cache", "dns"} {
		reconcileService(t, r, "shop", n)
	}
	reconcilePool(t, r)

	var sets appsv1.StatefulSetList
	if err := c.List(ctx, &sets, client.InNamespace("tsinject-system")); err != nil {
		t.Fatal(err)
	}
	if len(sets.Items) != 1 || sets.Items[0].Name != "ts-pool-shared" || *sets.Items[0].Spec.Replicas != 2 {
		var names []string
		for _, s := range sets.Items {
			names = append(names, s.Name)
		}
		t.Fatalf("StatefulSets %v, want ts-pool-shared alone with 2 replicas", names)
	}
	env := envOf(&sets.Items[0])
	if env[contract.EnvTags] != "tag:shop" || env[contract.EnvPoolSecret] != "ts-pool-shared-files" || env[contract.EnvTarget] != "" {
		t.Errorf("pool env %v", env)
	}
	for _, v := range sets.Items[0].Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "ts-pool-shared-files" {
			t.Errorf("the pool's list is mounted (%s): the replicas read it through the API", v.Name)
		}
	}

	ports := map[int32]string{}
	for _, n := range []string{"db", "cache", "dns"} {
		svc := getService(t, c, "shop", n)
		name, _, _ := strings.Cut(svc.Spec.ExternalName, ".")
		pooled := getService(t, c, "tsinject-system", name)
		if pooled.Labels[proxypools.LabelPool] != "shared" || pooled.Spec.Selector[proxyset.LabelOwner] != "shared" || len(pooled.Spec.Ports) != 2 {
			t.Fatalf("%s's pooled Service %s: labels %v, selector %v, ports %v", n, name, pooled.Labels, pooled.Spec.Selector, pooled.Spec.Ports)
		}
		for _, p := range pooled.Spec.Ports {
			pp := p.TargetPort.IntVal
			if other, ok := ports[pp]; ok || pp < contract.PoolPortMin || pp > contract.PoolPortMax {
				t.Errorf("%s got pool port %d (already %q's, or outside the range)", n, pp, other)
			}
			ports[pp] = n
		}
	}
	var files corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: "ts-pool-shared-files"}, &files); err != nil {
		t.Fatal(err)
	}
	list, err := contract.ParsePoolServices(files.Data[contract.PoolServicesKey])
	if err != nil || len(list) != 3 || list[0].Service != "shop/cache" || list[0].Target != "cache" {
		t.Fatalf("the replicas' list: %v, %v", list, err)
	}
	var np networkingv1.NetworkPolicy
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: "ts-pool-shared"}, &np); err != nil {
		t.Fatal(err)
	}
	if len(np.Spec.Ingress) != 2 || len(np.Spec.Ingress[0].Ports) != 6 ||
		np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels[corev1.LabelMetadataName] != "shop" {
		t.Errorf("pool NetworkPolicy %+v: want shop's 6 ports, and the health port", np.Spec.Ingress)
	}

	// Again: each keeps its ports.
	for _, n := range []string{"db", "cache", "dns"} {
		reconcileService(t, r, "shop", n)
	}
	for _, n := range []string{"db", "cache", "dns"} {
		name, _, _ := strings.Cut(getService(t, c, "shop", n).Spec.ExternalName, ".")
		for _, p := range getService(t, c, "tsinject-system", name).Spec.Ports {
			if ports[p.TargetPort.IntVal] != n {
				t.Errorf("%s's port moved to %d", n, p.TargetPort.IntVal)
			}
		}
	}
}

// A pooled Service is ready once every replica serves it and one reaches
// its target; before that, status says how many serve it.
func TestPooledServiceReadiness(t *testing.T) {
	ctx := context.Background()
	r, c := newReconciler(t, pool(), pooledService("db", "db.example.ts.net"))
	reconcileService(t, r, "shop", "db")
	reconcilePool(t, r)
	reportPool := func(i int, services ...string) {
		t.Helper()
		var sec corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: fmt.Sprintf("ts-pool-shared-%d", i)}, &sec); err != nil {
			t.Fatal(err)
		}
		states := map[string]contract.EgressTargetState{}
		for _, s := range services {
			states[s] = contract.EgressTargetState{Reason: contract.EgressTargetReachable, Addrs: []string{"100.64.0.5"}}
		}
		b, _ := json.Marshal(states)
		sec.Data = map[string][]byte{contract.DeviceFQDN: []byte(fmt.Sprintf(`"shared-pool-%d.example.ts.net"`, i)), contract.DeviceEgressTargets: b}
		if err := c.Update(ctx, &sec); err != nil {
			t.Fatal(err)
		}
	}
	reportPool(0, "shop/db")
	reportPool(1, "shop/other")
	reconcileService(t, r, "shop", "db")
	if cond := egressCondition(t, c, "shop", "db"); cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, "1 serving") {
		t.Errorf("one replica of two serving: %+v", cond)
	}
	reportPool(1, "shop/other", "shop/db")
	reconcileService(t, r, "shop", "db")
	if cond := egressCondition(t, c, "shop", "db"); cond.Status != metav1.ConditionTrue || !strings.Contains(cond.Message, "100.64.0.5") {
		t.Errorf("both serving: %+v", cond)
	}
}

// A pool serves a Service only when it exists, admits the Service's
// namespace and carries exactly its tags; one it stops admitting is
// withdrawn at once (its ports on the pool go).
func TestPoolAdmission(t *testing.T) {
	ctx := context.Background()
	refused := func(t *testing.T, c client.Client, want string) {
		t.Helper()
		cond := egressCondition(t, c, "shop", "db")
		if cond.Status != metav1.ConditionFalse || cond.Reason != ReasonNotAdmitted || !strings.Contains(cond.Message, want) {
			t.Errorf("condition %+v, want %s saying %q", cond, ReasonNotAdmitted, want)
		}
		var list corev1.ServiceList
		if err := c.List(ctx, &list, client.InNamespace("tsinject-system"), client.MatchingLabels{proxyset.LabelComponent: proxypools.PooledComponent}); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 0 {
			t.Errorf("a refused Service has a pooled Service: %s", list.Items[0].Name)
		}
	}
	t.Run("no such pool", func(t *testing.T) {
		r, c := newReconciler(t, pooledService("db", "db"))
		reconcileService(t, r, "shop", "db")
		refused(t, c, `ProxyPool "shared" does not exist`)
	})
	t.Run("no namespace selector", func(t *testing.T) {
		p := pool()
		p.Spec.NamespaceSelector = nil
		r, c := newReconciler(t, p, pooledService("db", "db"))
		reconcileService(t, r, "shop", "db")
		refused(t, c, "admits no namespace")
	})
	t.Run("other tags", func(t *testing.T) {
		// tag:shop-db is the namespace's to give, but not the pool's.
		svc := pooledService("db", "db")
		svc.Annotations[AnnotationTags] = "tag:shop-db"
		r, c := newReconciler(t, pool(), svc)
		reconcileService(t, r, "shop", "db")
		refused(t, c, "devices carry tag:shop, and this Service's tags are tag:shop-db")
	})
	t.Run("namespace not enabled", func(t *testing.T) {
		p := pool()
		p.Spec.NamespaceSelector = &metav1.LabelSelector{}
		svc := pooledService("db", "db")
		svc.Namespace = "plain"
		r, c := newReconciler(t, p, svc)
		reconcileService(t, r, "plain", "db")
		cond := egressCondition(t, c, "plain", "db")
		if cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, "not enabled for tsinject") {
			t.Errorf("condition %+v", cond)
		}
	})
	t.Run("admitted, then not", func(t *testing.T) {
		r, c := newReconciler(t, pool(), pooledService("db", "db"))
		reconcileService(t, r, "shop", "db")
		name, _, _ := strings.Cut(getService(t, c, "shop", "db").Spec.ExternalName, ".")
		getService(t, c, "tsinject-system", name)
		var p v1alpha1.ProxyPool
		if err := c.Get(ctx, client.ObjectKey{Name: "shared"}, &p); err != nil {
			t.Fatal(err)
		}
		p.Spec.NamespaceSelector.MatchLabels = map[string]string{"team": "payments"}
		if err := c.Update(ctx, &p); err != nil {
			t.Fatal(err)
		}
		reconcileService(t, r, "shop", "db")
		refused(t, c, "does not admit namespace shop")
	})
}

// A Service moved from proxies of its own to a pool: its own set goes
// once it points at the pool; moved back, its pooled Service goes.
func TestServiceMovesToPoolAndBack(t *testing.T) {
	ctx := context.Background()
	r, c := newReconciler(t, pool(), egressService())
	reconcileService(t, r, "shop", "db")
	own := r.set(getService(t, c, "shop", "db"), egressSpec{})
	var sts appsv1.StatefulSet
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: own.Name()}, &sts); err != nil {
		t.Fatal(err)
	}

	svc := getService(t, c, "shop", "db")
	delete(svc.Annotations, AnnotationReplicas)
	svc.Annotations[AnnotationProxyPool] = "shared"
	if err := c.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	reconcileService(t, r, "shop", "db")
	svc = getService(t, c, "shop", "db")
	pooled := pooledName(svc.Namespace, svc.Name)
	if !strings.HasPrefix(svc.Spec.ExternalName, pooled+".") {
		t.Errorf("externalName %s, want the pooled Service %s", svc.Spec.ExternalName, pooled)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: own.Name()}, &sts); !apierrors.IsNotFound(err) {
		t.Errorf("its own proxies stay on the pool: %v", err)
	}

	delete(svc.Annotations, AnnotationProxyPool)
	if err := c.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	reconcileService(t, r, "shop", "db")
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: pooled}, &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Errorf("the pooled Service stays after the Service left the pool: %v", err)
	}
	if svc := getService(t, c, "shop", "db"); !strings.HasPrefix(svc.Spec.ExternalName, own.Name()+".") {
		t.Errorf("externalName %s, want its own proxies %s", svc.Spec.ExternalName, own.Name())
	}

	// Deleted, on the pool: its pooled Service goes with it.
	svc = getService(t, c, "shop", "db")
	svc.Annotations[AnnotationProxyPool] = "shared"
	if err := c.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	reconcileService(t, r, "shop", "db")
	if err := c.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	for range 3 { // the own set's pods are gone at once here
		reconcileService(t, r, "shop", "db")
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: pooled}, &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Errorf("the pooled Service outlived its Service: %v", err)
	}
}

func pooledServices(t *testing.T, c client.Client) []corev1.Service {
	t.Helper()
	var list corev1.ServiceList
	if err := c.List(context.Background(), &list, client.InNamespace("tsinject-system"), client.MatchingLabels{proxyset.LabelComponent: proxypools.PooledComponent}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// What a tenant could do to keep a pool serving its Service when it
// should not, or to take another's place there: each time the Service is
// withdrawn (its pooled Service deleted), or refused.
func TestPoolWithdrawsWhatItCannotCheck(t *testing.T) {
	ctx := context.Background()
	admitted := func(t *testing.T, objs ...client.Object) (*EgressReconciler, client.Client) {
		t.Helper()
		r, c := newReconciler(t, append([]client.Object{pool(), pooledService("db", "db")}, objs...)...)
		reconcileService(t, r, "shop", "db")
		if len(pooledServices(t, c)) != 1 {
			t.Fatal("not admitted to begin with")
		}
		return r, c
	}
	edit := func(t *testing.T, c client.Client, change func(*corev1.Service)) {
		t.Helper()
		svc := getService(t, c, "shop", "db")
		change(svc)
		if err := c.Update(ctx, svc); err != nil {
			t.Fatal(err)
		}
	}
	withdrawn := func(t *testing.T, c client.Client) {
		t.Helper()
		if left := pooledServices(t, c); len(left) != 0 {
			t.Errorf("still on the pool: %s", left[0].Name)
		}
	}
	t.Run("a bad edit", func(t *testing.T) {
		r, c := admitted(t)
		edit(t, c, func(s *corev1.Service) { s.Spec.Ports[0].Port = contract.HealthPort })
		reconcileService(t, r, "shop", "db")
		withdrawn(t, c)
	})
	t.Run("tags the namespace no longer gives", func(t *testing.T) {
		r, c := admitted(t)
		edit(t, c, func(s *corev1.Service) { s.Annotations[AnnotationTags] = "tag:bogus" })
		reconcileService(t, r, "shop", "db")
		withdrawn(t, c)
	})
	t.Run("off the pool, with a bad edit", func(t *testing.T) {
		r, c := admitted(t)
		edit(t, c, func(s *corev1.Service) {
			delete(s.Annotations, AnnotationProxyPool)
			s.Annotations[AnnotationReplicas] = "x"
		})
		reconcileService(t, r, "shop", "db")
		withdrawn(t, c)
	})
	t.Run("deleted without its finalizer", func(t *testing.T) {
		r, c := admitted(t)
		edit(t, c, func(s *corev1.Service) { s.Finalizers = nil })
		if err := c.Delete(ctx, getService(t, c, "shop", "db")); err != nil {
			t.Fatal(err)
		}
		reconcileService(t, r, "shop", "db")
		withdrawn(t, c)
	})
	t.Run("deleted while the manager was down", func(t *testing.T) {
		r, c := admitted(t)
		edit(t, c, func(s *corev1.Service) { s.Finalizers = nil })
		if err := c.Delete(ctx, getService(t, c, "shop", "db")); err != nil {
			t.Fatal(err)
		}
		reconcilePool(t, r) // the pool's sweep, without the Service's reconcile
		withdrawn(t, c)
	})
	t.Run("too many ports", func(t *testing.T) {
		svc := pooledService("db", "db")
		svc.Spec.Ports = nil
		for i := range proxypools.MaxPortsPerService + 1 {
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", i), Port: int32(1000 + i)})
		}
		r, c := newReconciler(t, pool(), svc)
		reconcileService(t, r, "shop", "db")
		withdrawn(t, c)
		if cond := egressCondition(t, c, "shop", "db"); !strings.Contains(cond.Message, "at most 32") {
			t.Errorf("condition %+v", cond)
		}
	})
	t.Run("another Service's pooled name", func(t *testing.T) {
		// Whoever holds the name (here planted), a Service neither
		// deletes nor takes it.
		planted := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: pooledName("shop", "db"),
			Labels: map[string]string{proxyset.LabelComponent: proxypools.PooledComponent, proxypools.LabelPool: "shared",
				proxyset.LabelOwner: "victim", proxyset.LabelOwnerNamespace: "blog"}}}
		r, c := newReconciler(t, pool(), pooledService("db", "db"), planted)
		reconcileService(t, r, "shop", "db")
		got := getService(t, c, "tsinject-system", planted.Name)
		if got.Labels[proxyset.LabelOwnerNamespace] != "blog" {
			t.Errorf("the other Service's pooled Service was taken: %v", got.Labels)
		}
		if cond := egressCondition(t, c, "shop", "db"); cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, "another Service's") {
			t.Errorf("condition %+v", cond)
		}
		edit(t, c, func(s *corev1.Service) { delete(s.Annotations, AnnotationProxyPool) })
		reconcileService(t, r, "shop", "db")
		getService(t, c, "tsinject-system", planted.Name)
	})
}
