package services

// Attacks on Gateways by a tenant, each proved by a review before its fix.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
)

func billingNamespace() *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "billing",
		Labels:      map[string]string{injector.LabelInjection: "enabled"},
		Annotations: map[string]string{injector.AnnotationDefaultTags: "tag:billing"}}}
}

func billingService(name string) *corev1.Service {
	svc := backendService(name, corev1.ServicePort{Name: "http", Port: 80})
	svc.Namespace = "billing"
	return svc
}

func pathRule(path, backend string) gatewayv1.HTTPRouteRule {
	port, prefix := gatewayv1.PortNumber(80), gatewayv1.PathMatchPathPrefix
	return gatewayv1.HTTPRouteRule{
		Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &prefix, Value: new(path)}}},
		BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(backend), Port: &port}}}},
	}
}

func proxyRoutes(t *testing.T, c client.Client, r *GatewayReconciler, gw *gatewayv1.Gateway) []contract.WebRoute {
	t.Helper()
	var sts appsv1.StatefulSet
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "tsinject-system", Name: r.set(gw, gatewaySpec{}, nil).Name()}, &sts); err != nil {
		t.Fatal(err)
	}
	routes, err := contract.ParseWebRoutes(envOf(&sts)[contract.EnvWebRoutes])
	if err != nil {
		t.Fatal(err)
	}
	return routes
}

// A tenant's route on a listener open to every namespace is served only
// at that listener's hostname: not at every host (it named none), nor at
// the Gateway owner's own name on another listener (it named that too),
// where its /admin would win over the owner's / as the longer prefix.
func TestGatewayRouteStaysWithinItsListener(t *testing.T) {
	all := gatewayv1.NamespacesFromAll
	partners := gatewayv1.Hostname("partners.example.ts.net")
	gw := shopGateway(func(g *gatewayv1.Gateway) {
		g.Spec.Listeners = append(g.Spec.Listeners, gatewayv1.Listener{Name: "partners", Protocol: gatewayv1.HTTPSProtocolType, Port: 443,
			Hostname: &partners, AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}})
	})
	own := shopRoute("own", func(r *gatewayv1.HTTPRoute) {
		r.Spec.ParentRefs[0].SectionName = new(gatewayv1.SectionName("https"))
		r.Spec.Rules = r.Spec.Rules[:1]
	})
	attach := func(name string, hostnames ...gatewayv1.Hostname) *gatewayv1.HTTPRoute {
		return &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: name, Generation: 1},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
					Name: "portal", Namespace: new(gatewayv1.Namespace("shop")), SectionName: new(gatewayv1.SectionName("partners"))}}},
				Hostnames: hostnames,
				Rules:     []gatewayv1.HTTPRouteRule{pathRule("/admin", "phish")},
			}}
	}
	r, c, _ := newGatewayReconciler(t, ours(), gw, own, attach("no-hostnames"),
		attach("extra-hostname", "partners.example.ts.net", "shop-portal.example.ts.net"), billingNamespace(), billingService("phish"))
	reconcileGateway(t, r, gw)
	billing := 0
	for _, rt := range proxyRoutes(t, c, r, gw) {
		if !strings.Contains(rt.Backends[0].Addr, ".billing.") {
			if rt.Host != "shop-portal.example.ts.net" {
				t.Errorf("shop's route on listener https served at %q, want its hostname", rt.Host)
			}
			continue
		}
		billing++
		if rt.Host != "partners.example.ts.net" {
			t.Errorf("billing's route, attached only to listener partners, served at host %q: %+v", rt.Host, rt)
		}
	}
	if billing != 2 {
		t.Errorf("billing's routes: %d, want each of its two at partners.example.ts.net, once", billing)
	}
}

// policyOnRouteStatus refuses what tsinject-manager-gateways' last rule
// refuses (manifests TestManagerCannotEscalate tries the real one).
func policyOnRouteStatus(c client.Client) client.Client {
	return interceptor.NewClient(c.(client.WithWatch), interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, cl client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			if route, ok := obj.(*gatewayv1.HTTPRoute); ok && sub == "status" {
				for _, p := range route.Status.Parents {
					if p.ControllerName != GatewayController {
						continue
					}
					named := false
					for _, ref := range route.Spec.ParentRefs {
						if ref.Name == p.ParentRef.Name && ptrOr(ref.Namespace, "") == ptrOr(p.ParentRef.Namespace, "") {
							named = true
						}
					}
					if !named {
						return apierrors.NewForbidden(schema.GroupResource{Group: gatewayv1.GroupName, Resource: "httproutes"}, route.Name,
							fmt.Errorf("the manager writes an HTTPRoute's status only for the Gateways it names in spec.parentRefs (entry for %s)", p.ParentRef.Name))
					}
				}
			}
			return cl.Status().Patch(ctx, obj, patch, opts...)
		},
	})
}

// A tenant deletes its own Gateway without letting tsinject finish and
// drops it from a route that also names another namespace's Gateway: the
// entry left behind goes with the next write, and does not stall that
// Gateway's reconciles (the admission policy refuses to keep it).
func TestGatewayStaleEntryStallsNoOne(t *testing.T) {
	ctx := context.Background()
	all := gatewayv1.NamespacesFromAll
	portal := shopGateway(func(g *gatewayv1.Gateway) {
		g.Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}
	})
	mine := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "mine", Generation: 1},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: GatewayClass, Listeners: []gatewayv1.Listener{{Name: "https", Protocol: gatewayv1.HTTPSProtocolType, Port: 443}}}}
	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "r", Generation: 1},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "portal", Namespace: new(gatewayv1.Namespace("shop"))}, {Name: "mine"}}},
			Rules:           []gatewayv1.HTTPRouteRule{pathRule("/billing", "web")},
		}}
	r, c, _ := newGatewayReconciler(t, ours(), portal, mine, route, billingNamespace(), billingService("web"))
	r.Client = policyOnRouteStatus(c)
	reconcileGateway(t, r, mine)
	reconcileGateway(t, r, portal)
	if p := parentStatus(t, c, "billing", "r", GatewayController); p == nil {
		t.Fatal("no entry for portal")
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(mine), mine); err != nil {
		t.Fatal(err)
	}
	mine.Finalizers = nil
	if err := c.Update(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(route), route); err != nil {
		t.Fatal(err)
	}
	route.Spec.ParentRefs = route.Spec.ParentRefs[:1]
	route.Generation++ // as the API server does for a spec change
	if err := c.Update(ctx, route); err != nil {
		t.Fatal(err)
	}
	reconcileGateway(t, r, mine)
	later := shopRoute("later", func(x *gatewayv1.HTTPRoute) { x.CreationTimestamp = metav1.NewTime(time.Now().Add(time.Hour)) })
	if err := c.Create(ctx, later); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(portal)}); err != nil {
			t.Errorf("reconcile %d of shop's Gateway portal: %v", i, err)
		}
	}
	if p := parentStatus(t, c, "shop", "later", GatewayController); p == nil {
		t.Error("shop's route attached later has no status entry")
	}
}

// countingGets counts what the controller reads from the API server.
type countingGets struct {
	client.Reader
	gets int
}

func (c *countingGets) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.gets++
	return c.Reader.Get(ctx, key, obj, opts...)
}

// 300 routes naming missing Services cost no more Service reads than the
// Gateway's 256 routes: each is charged before its Services are read.
func TestGatewayRoutesBounded(t *testing.T) {
	gw := shopGateway()
	objs := []client.Object{ours(), gw}
	for i := range 300 {
		objs = append(objs, shopRoute(fmt.Sprintf("r%d", i), func(r *gatewayv1.HTTPRoute) {
			r.Spec.Rules = []gatewayv1.HTTPRouteRule{pathRule(fmt.Sprintf("/p%d", i), fmt.Sprintf("missing-%d", i))}
		}))
	}
	r, _, _ := newGatewayReconciler(t, objs...)
	live := &countingGets{Reader: r.Live}
	r.Live = live
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(gw)}); err != nil {
		t.Fatal(err)
	}
	if live.gets > contract.MaxWebRoutes {
		t.Errorf("%d Services read in one reconcile of one Gateway, want at most %d", live.gets, contract.MaxWebRoutes)
	}
}

// Set names carry a 32-bit hash of the owner: billing/customer-portal-
// gate-acc31zna (found by brute force) hashes like shop/customer-portal-
// gateway. billing's Gateway must neither rewrite shop's proxy set (its
// name, tags, state) nor delete it.
func TestGatewaySetNameTaken(t *testing.T) {
	ctx := context.Background()
	shopGW := shopGateway(func(g *gatewayv1.Gateway) { g.Name = "customer-portal-gateway" })
	evil := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "customer-portal-gate-acc31zna"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: GatewayClass, Listeners: []gatewayv1.Listener{{Name: "https", Protocol: gatewayv1.HTTPSProtocolType, Port: 443}}}}
	r, c, _ := newGatewayReconciler(t, ours(), shopGW, evil, billingNamespace())
	s := r.set(shopGW, gatewaySpec{}, nil)
	if other := r.set(evil, gatewaySpec{}, nil).Name(); other != s.Name() {
		t.Fatalf("no collision: %s, %s", s.Name(), other)
	}
	reconcileGateway(t, r, shopGW)
	reconcileGateway(t, r, evil)
	var sts appsv1.StatefulSet
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &sts); err != nil {
		t.Fatal(err)
	}
	if env := envOf(&sts); env[contract.EnvHostname] != "shop-portal" || sts.Labels[proxyset.LabelOwnerNamespace] != "shop" {
		t.Errorf("shop's proxy set after billing's Gateway: hostname %q, tags %q, owner %s/%s",
			env[contract.EnvHostname], env[contract.EnvTags], sts.Labels[proxyset.LabelOwnerNamespace], sts.Labels[proxyset.LabelOwner])
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(evil), evil); err != nil {
		t.Fatal(err)
	}
	if got := condText(evil.Status.Conditions, "Accepted"); !strings.Contains(got, "is taken by gateway shop/customer-portal-gateway") {
		t.Errorf("billing's Gateway: Accepted %q, want it to say the name is taken", got)
	}
	if err := c.Delete(ctx, evil); err != nil {
		t.Fatal(err)
	}
	reconcileGateway(t, r, evil)
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &appsv1.StatefulSet{}); err != nil {
		t.Errorf("shop's proxy set after billing deleted its Gateway: %v", err)
	}
}
