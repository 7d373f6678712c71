package services

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tsinject/tsinject/internal/contract"
)

func ours() *gatewayv1.GatewayClass {
	return &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: GatewayClass}, Spec: gatewayv1.GatewayClassSpec{ControllerName: GatewayController}}
}

func shopGateway(mutate ...func(*gatewayv1.Gateway)) *gatewayv1.Gateway {
	host := gatewayv1.Hostname("shop-portal.example.ts.net")
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "portal", Generation: 1},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: GatewayClass, Listeners: []gatewayv1.Listener{
			{Name: "https", Protocol: gatewayv1.HTTPSProtocolType, Port: 443, Hostname: &host},
		}}}
	for _, m := range mutate {
		m(gw)
	}
	return gw
}

func shopRoute(name string, mutate ...func(*gatewayv1.HTTPRoute)) *gatewayv1.HTTPRoute {
	port, three, exact := gatewayv1.PortNumber(80), int32(3), gatewayv1.PathMatchExact
	api := gatewayv1.PortNumber(9000)
	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Generation: 2},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "portal"}}},
			Rules: []gatewayv1.HTTPRouteRule{
				{BackendRefs: []gatewayv1.HTTPBackendRef{
					{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: &port}, Weight: &three}},
					{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-canary", Port: &port}}},
				}},
				{Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &exact, Value: new("/grpc.health.v1.Health/Check")}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "api", Port: &api}}}}},
			},
		}}
	for _, m := range mutate {
		m(route)
	}
	return route
}

func newGatewayReconciler(t *testing.T, objs ...client.Object) (*GatewayReconciler, client.Client, *events.FakeRecorder) {
	h2c := AppProtocolH2C
	objs = append(objs, backendService("web", corev1.ServicePort{Name: "http", Port: 80}),
		backendService("web-canary", corev1.ServicePort{Name: "http", Port: 80}),
		backendService("api", corev1.ServicePort{Name: "grpc", Port: 9000, AppProtocol: &h2c}))
	b, c := newBase(t, objs...)
	rec := events.NewFakeRecorder(100)
	b.Events = rec
	return &GatewayReconciler{Base: b, ClusterDomain: "cluster.local"}, c, rec
}

func reconcileGateway(t *testing.T, r *GatewayReconciler, gw *gatewayv1.Gateway) {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(gw)}); err != nil {
		t.Fatal(err)
	}
}

// parentStatus is the route's status entry of controller (for the
// Gateway portal if it is ours, else for any).
func parentStatus(t *testing.T, c client.Client, namespace, name, controller string) *gatewayv1.RouteParentStatus {
	t.Helper()
	var route gatewayv1.HTTPRoute
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &route); err != nil {
		t.Fatal(err)
	}
	for i, p := range route.Status.Parents {
		if string(p.ControllerName) == controller && (p.ParentRef.Name == "portal" || controller != GatewayController) {
			return &route.Status.Parents[i]
		}
	}
	return nil
}

func condText(conds []metav1.Condition, t string) string {
	c := meta.FindStatusCondition(conds, t)
	if c == nil {
		return "none"
	}
	return string(c.Status) + " " + c.Reason + " " + c.Message
}

// A Gateway of class tsinject with an HTTPRoute, step by step: a web
// proxy set named by its listener's hostname, routing by the route's
// rules with its weights; the route's status entry says it is accepted,
// beside another controller's entry, which stays; the Gateway's status
// carries the tailnet name and addresses once the proxy reports; leaving
// the class takes it all away.
func TestGatewayLifecycle(t *testing.T) {
	ctx := context.Background()
	other := shopRoute("shared", func(r *gatewayv1.HTTPRoute) {
		r.Spec.ParentRefs = append(r.Spec.ParentRefs, gatewayv1.ParentReference{Name: "elsewhere"})
		r.Status.Parents = []gatewayv1.RouteParentStatus{{ParentRef: gatewayv1.ParentReference{Name: "elsewhere"}, ControllerName: "example.com/other",
			Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now()}}}}
	})
	gw := shopGateway()
	r, c, rec := newGatewayReconciler(t, ours(), gw, other)
	reconcileGateway(t, r, gw)

	s := r.set(gw, gatewaySpec{}, nil)
	var sts appsv1.StatefulSet
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &sts); err != nil {
		t.Fatalf("no proxy set (events: %s): %v", lastEvent(rec), err)
	}
	if !strings.HasPrefix(s.Name(), "ts-gateway-portal-") || sts.Spec.Template.Spec.Containers[0].Args[0] != "web" {
		t.Errorf("set %s runs %v, want the web proxy", s.Name(), sts.Spec.Template.Spec.Containers[0].Args)
	}
	env := envOf(&sts)
	if env[contract.EnvHostname] != "shop-portal" || env[contract.EnvOneName] != "true" {
		t.Errorf("proxy env %v", env)
	}
	routes, err := contract.ParseWebRoutes(env[contract.EnvWebRoutes])
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 || routes[0].Path != "/" || routes[0].Exact || len(routes[0].Backends) != 2 ||
		routes[0].Backends[0].Addr != "web.shop.svc.cluster.local:80" || routes[0].Backends[0].Weight != 3 || routes[0].Backends[1].Weight != 1 ||
		!routes[1].Exact || routes[1].Path != "/grpc.health.v1.Health/Check" || !routes[1].Backends[0].H2C {
		t.Errorf("routes %+v", routes)
	}
	p := parentStatus(t, c, "shop", "shared", GatewayController)
	if p == nil || condText(p.Conditions, "Accepted") != "True Accepted " || condText(p.Conditions, "ResolvedRefs") != "True ResolvedRefs " {
		t.Fatalf("route status entry %+v", p)
	}
	if p.Conditions[0].ObservedGeneration != 2 {
		t.Errorf("observedGeneration %d, want the route's 2", p.Conditions[0].ObservedGeneration)
	}
	if parentStatus(t, c, "shop", "shared", "example.com/other") == nil {
		t.Error("the other controller's status entry was taken away")
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
		t.Fatal(err)
	}
	if got := condText(gw.Status.Conditions, "Programmed"); !strings.HasPrefix(got, "False Pending") {
		t.Errorf("Programmed %q before the proxy reports", got)
	}
	if len(gw.Status.Listeners) != 1 || gw.Status.Listeners[0].AttachedRoutes != 1 || condText(gw.Status.Listeners[0].Conditions, "Accepted") != "True Accepted " {
		t.Errorf("listeners %+v", gw.Status.Listeners)
	}

	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.SecretName(0)}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{contract.DeviceFQDN: []byte(`"shop-portal.example.ts.net"`), contract.DeviceIPs: []byte(`["100.64.0.9"]`)}
	if err := c.Update(ctx, &sec); err != nil {
		t.Fatal(err)
	}
	reconcileGateway(t, r, gw)
	if err := c.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
		t.Fatal(err)
	}
	if a := gw.Status.Addresses; len(a) != 2 || a[0].Value != "shop-portal.example.ts.net" || *a[0].Type != gatewayv1.HostnameAddressType || a[1].Value != "100.64.0.9" {
		t.Errorf("addresses %+v", a)
	}
	if got := condText(gw.Status.Conditions, "Programmed"); !strings.HasPrefix(got, "True Programmed serving https://shop-portal.example.ts.net") {
		t.Errorf("Programmed %q", got)
	}
	if e := lastEvent(rec); !strings.Contains(e, "Normal Programmed serving https://") {
		t.Errorf("event %q", e)
	}

	// The route leaves the Gateway: its entry goes, the other stays.
	var route gatewayv1.HTTPRoute
	if err := c.Get(ctx, client.ObjectKeyFromObject(other), &route); err != nil {
		t.Fatal(err)
	}
	route.Spec.ParentRefs = route.Spec.ParentRefs[1:]
	if err := c.Update(ctx, &route); err != nil {
		t.Fatal(err)
	}
	reconcileGateway(t, r, gw)
	if p := parentStatus(t, c, "shop", "shared", GatewayController); p != nil {
		t.Errorf("entry of a route that left: %+v", p)
	}
	if parentStatus(t, c, "shop", "shared", "example.com/other") == nil {
		t.Error("the other controller's status entry was taken away")
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &sts); err != nil {
		t.Fatal(err)
	}
	if env := envOf(&sts); env[contract.EnvWebRoutes] != "[]" {
		t.Errorf("routes with none attached: %s, want [] (404 for every request)", env[contract.EnvWebRoutes])
	}

	if err := c.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
		t.Fatal(err)
	}
	gw.Spec.GatewayClassName = "other"
	if err := c.Update(ctx, gw); err != nil {
		t.Fatal(err)
	}
	reconcileGateway(t, r, gw)
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("StatefulSet still there (err %v)", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(gw), gw); err != nil {
		t.Fatal(err)
	}
	if len(gw.Finalizers) != 0 || len(gw.Status.Addresses) != 0 || len(gw.Status.Conditions) != 0 {
		t.Errorf("after leaving the class: finalizers %v, status %+v", gw.Finalizers, gw.Status)
	}
}

// What the Gateway cannot serve as asked is in its conditions (and an
// Event), naming the field and what is allowed; no proxy.
func TestGatewayInvalid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*gatewayv1.Gateway)
		want   string
	}{
		{"HTTP only", func(g *gatewayv1.Gateway) {
			g.Spec.Listeners[0].Protocol, g.Spec.Listeners[0].Port = gatewayv1.HTTPProtocolType, 80
		},
			"spec.listeners: none accepted; allowed: protocol HTTPS on port 443"},
		{"addresses", func(g *gatewayv1.Gateway) { g.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "198.19.0.9"}} }, "spec.addresses: not allowed"},
		{"name outside the namespace's", func(g *gatewayv1.Gateway) { g.Annotations = map[string]string{AnnotationHostname: "billing"} }, "annotation tsinject.dev/hostname:"},
		{"tags outside the policy", func(g *gatewayv1.Gateway) { g.Annotations = map[string]string{AnnotationTags: "tag:admin"} }, "tags of the proxies"},
		{"namespace not enabled", func(g *gatewayv1.Gateway) { g.Namespace = "plain" }, "namespace plain is not enabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := shopGateway(tc.mutate)
			r, c, rec := newGatewayReconciler(t, ours(), gw)
			reconcileGateway(t, r, gw)
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(gw), gw); err != nil {
				t.Fatal(err)
			}
			if got := condText(gw.Status.Conditions, "Accepted"); !strings.HasPrefix(got, "False Invalid") || !strings.Contains(got, tc.want) {
				t.Errorf("Accepted %q, want it False containing %q", got, tc.want)
			}
			if e := lastEvent(rec); !strings.Contains(e, "Warning Invalid") {
				t.Errorf("event %q", e)
			}
			var list appsv1.StatefulSetList
			if err := c.List(context.Background(), &list); err != nil || len(list.Items) != 0 {
				t.Errorf("proxy sets %d (%v), want none", len(list.Items), err)
			}
		})
	}
}

// Each listener the proxy cannot serve says so in its own conditions; the
// Gateway still serves the one it can.
func TestGatewayListeners(t *testing.T) {
	gw := shopGateway(func(g *gatewayv1.Gateway) {
		g.Spec.Listeners = append(g.Spec.Listeners,
			gatewayv1.Listener{Name: "plain", Protocol: gatewayv1.HTTPProtocolType, Port: 80},
			gatewayv1.Listener{Name: "own-cert", Protocol: gatewayv1.HTTPSProtocolType, Port: 443,
				TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "portal-tls", Namespace: new(gatewayv1.Namespace("billing"))}}}},
			gatewayv1.Listener{Name: "alt", Protocol: gatewayv1.HTTPSProtocolType, Port: 8443})
	})
	r, c, _ := newGatewayReconciler(t, ours(), gw, shopRoute("app"))
	reconcileGateway(t, r, gw)
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(gw), gw); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"https":    "Accepted=True Accepted ",
		"plain":    `Accepted=False UnsupportedProtocol spec.listeners[1].protocol: "HTTP" is not supported`,
		"own-cert": "ResolvedRefs=False RefNotPermitted spec.listeners[2].tls.certificateRefs[0].namespace: a Secret of another namespace is not allowed",
		"alt":      "Accepted=False PortUnavailable spec.listeners[3].port: 8443 is not allowed (allowed: 443)",
	}
	for _, l := range gw.Status.Listeners {
		w := want[string(l.Name)]
		typ, rest, _ := strings.Cut(w, "=")
		if got := condText(l.Conditions, typ); !strings.HasPrefix(got, rest) {
			t.Errorf("listener %s: %s %q, want %q", l.Name, typ, got, rest)
		}
		if attached := map[string]int32{"https": 1}[string(l.Name)]; l.AttachedRoutes != attached {
			t.Errorf("listener %s: %d routes attached, want %d", l.Name, l.AttachedRoutes, attached)
		}
	}
	if got := condText(gw.Status.Conditions, "Accepted"); got != "True Accepted " {
		t.Errorf("Accepted %q", got)
	}
}

// A route the proxy cannot serve as written is refused whole, in its
// status entry naming the field; the Gateway serves the others.
func TestGatewayRouteRefusals(t *testing.T) {
	other := gatewayv1.Namespace("billing")
	for _, tc := range []struct {
		name   string
		route  *gatewayv1.HTTPRoute
		want   string // condition=status reason message
		others []client.Object
	}{
		{"filter", shopRoute("r", func(r *gatewayv1.HTTPRoute) {
			r.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestRedirect}}
		}), "Accepted=False UnsupportedValue spec.rules[0].filters: not supported yet", nil},
		{"header match", shopRoute("r", func(r *gatewayv1.HTTPRoute) {
			r.Spec.Rules[1].Matches[0].Headers = []gatewayv1.HTTPHeaderMatch{{Name: "x", Value: "y"}}
		}), "Accepted=False UnsupportedValue spec.rules[1].matches[0].headers: not supported yet", nil},
		{"regular expression", shopRoute("r", func(r *gatewayv1.HTTPRoute) {
			re := gatewayv1.PathMatchRegularExpression
			r.Spec.Rules[1].Matches[0].Path.Type = &re
		}), "Accepted=False UnsupportedValue spec.rules[1].matches[0].path.type: RegularExpression is not supported (allowed: Exact, PathPrefix)", nil},
		{"missing Service", shopRoute("r", func(r *gatewayv1.HTTPRoute) {
			r.Spec.Rules[0].BackendRefs[1].Name = "nope"
		}), "ResolvedRefs=False BackendNotFound spec.rules[0].backendRefs[1].name: Service shop/nope does not exist", nil},
		{"backend in another namespace", shopRoute("r", func(r *gatewayv1.HTTPRoute) {
			r.Spec.Rules[0].BackendRefs[1].Namespace = &other
		}), "ResolvedRefs=False RefNotPermitted spec.rules[0].backendRefs[1].namespace: billing: a backend in another namespace is not allowed", nil},
		{"not a Service", shopRoute("r", func(r *gatewayv1.HTTPRoute) {
			g, k := gatewayv1.Group("example.com"), gatewayv1.Kind("Bucket")
			r.Spec.Rules[0].BackendRefs[1].Group, r.Spec.Rules[0].BackendRefs[1].Kind = &g, &k
		}), "ResolvedRefs=False InvalidKind spec.rules[0].backendRefs[1]: example.com/Bucket is not allowed (allowed: a Service)", nil},
		{"from a namespace the listener does not allow", shopRoute("r", func(r *gatewayv1.HTTPRoute) {
			r.Namespace = "billing"
			r.Spec.ParentRefs[0].Namespace = new(gatewayv1.Namespace("shop"))
		}), "Accepted=False NotAllowedByListeners listener https does not allow routes from namespace billing",
			[]client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "billing"}}}},
		{"hostname outside the listener's", shopRoute("r", func(r *gatewayv1.HTTPRoute) {
			r.Spec.Hostnames = []gatewayv1.Hostname{"billing.example.ts.net"}
		}), "Accepted=False NoMatchingListenerHostname spec.hostnames: none within listener https's hostname", nil},
		{"no such listener", shopRoute("r", func(r *gatewayv1.HTTPRoute) {
			r.Spec.ParentRefs[0].SectionName = new(gatewayv1.SectionName("http"))
		}), "Accepted=False NoMatchingParent spec.parentRefs: no accepted listener", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := shopGateway()
			good := shopRoute("good", func(r *gatewayv1.HTTPRoute) { r.CreationTimestamp = metav1.NewTime(time.Now().Add(time.Hour)) })
			r, c, _ := newGatewayReconciler(t, append(tc.others, ours(), gw, tc.route, good)...)
			reconcileGateway(t, r, gw)
			p := parentStatus(t, c, tc.route.Namespace, "r", GatewayController)
			typ, want, _ := strings.Cut(tc.want, "=")
			if p == nil {
				t.Fatal("no status entry")
			}
			if got := condText(p.Conditions, typ); !strings.HasPrefix(got, want) {
				t.Errorf("%s %q, want %q", typ, got, want)
			}
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(gw), gw); err != nil {
				t.Fatal(err)
			}
			if n := gw.Status.Listeners[0].AttachedRoutes; n != 1 {
				t.Errorf("%d routes attached, want only the good one", n)
			}
		})
	}
}

// A listener allowing routes from every namespace takes another
// namespace's route, whose backends are in its own namespace.
func TestGatewayRouteFromAnotherNamespace(t *testing.T) {
	all := gatewayv1.NamespacesFromAll
	gw := shopGateway(func(g *gatewayv1.Gateway) {
		g.Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}
	})
	route := shopRoute("r", func(r *gatewayv1.HTTPRoute) {
		r.Namespace = "billing"
		r.Spec.ParentRefs[0].Namespace = new(gatewayv1.Namespace("shop"))
		r.Spec.Rules = r.Spec.Rules[:1]
		r.Spec.Rules[0].BackendRefs = r.Spec.Rules[0].BackendRefs[:1]
	})
	billingWeb := backendService("web", corev1.ServicePort{Name: "http", Port: 80})
	billingWeb.Namespace = "billing"
	r, c, _ := newGatewayReconciler(t, ours(), gw, route, billingWeb, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "billing"}})
	reconcileGateway(t, r, gw)
	if p := parentStatus(t, c, "billing", "r", GatewayController); p == nil || condText(p.Conditions, "Accepted") != "True Accepted " {
		t.Fatalf("entry %+v", p)
	}
	var sts appsv1.StatefulSet
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "tsinject-system", Name: r.set(gw, gatewaySpec{}, nil).Name()}, &sts); err != nil {
		t.Fatal(err)
	}
	if routes := envOf(&sts)[contract.EnvWebRoutes]; !strings.Contains(routes, "web.billing.svc.cluster.local:80") {
		t.Errorf("routes %s, want the billing namespace's Service", routes)
	}
}

// A class named tsinject that another controller owns is not ours: its
// Gateways get no proxy and no status from tsinject; the class gets
// Accepted only when it names tsinject's controller.
func TestGatewayClassNotOurs(t *testing.T) {
	theirs := ours()
	theirs.Spec.ControllerName = "example.com/gateway"
	gw := shopGateway()
	r, c, _ := newGatewayReconciler(t, theirs, gw)
	reconcileGateway(t, r, gw)
	var list appsv1.StatefulSetList
	if err := c.List(context.Background(), &list); err != nil || len(list.Items) != 0 {
		t.Errorf("proxy sets %d (%v), want none", len(list.Items), err)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(gw), gw); err != nil || len(gw.Status.Conditions) != 0 || len(gw.Finalizers) != 0 {
		t.Errorf("Gateway of another's class touched: %+v %v (%v)", gw.Status, gw.Finalizers, err)
	}
	cr := &GatewayClassReconciler{Client: c}
	if _, err := cr.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: GatewayClass}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), client.ObjectKey{Name: GatewayClass}, theirs); err != nil || len(theirs.Status.Conditions) != 0 {
		t.Errorf("another's class: %+v (%v)", theirs.Status, err)
	}
	theirs.Spec.ControllerName = GatewayController
	if err := c.Update(context.Background(), theirs); err != nil {
		t.Fatal(err)
	}
	if _, err := cr.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: GatewayClass}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), client.ObjectKey{Name: GatewayClass}, theirs); err != nil || condText(theirs.Status.Conditions, "Accepted") != "True Accepted " {
		t.Errorf("our class: %+v (%v)", theirs.Status, err)
	}
}

// A listener naming the tenant's kubernetes.io/tls Secret: the proxy
// serves a copy of it, once the tenant granted the manager that Secret.
func TestGatewaySecretCertificate(t *testing.T) {
	crt, key := tlsPair(t)
	gw := shopGateway(func(g *gatewayv1.Gateway) {
		g.Spec.Listeners[0].TLS = &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "portal-tls"}}}
	})
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "portal-tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}
	r, c, _ := newGatewayReconciler(t, ours(), gw, sec)
	reconcileGateway(t, r, gw)
	var sts appsv1.StatefulSet
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "tsinject-system", Name: r.set(gw, gatewaySpec{}, nil).Name()}, &sts); err != nil {
		t.Fatal(err)
	}
	if env := envOf(&sts); env[contract.EnvWebTLS] != contract.WebTLSFiles || env[contract.EnvWebCertDir] != contract.WebCertDir {
		t.Errorf("proxy env %v, want the Secret's copy in %s", env, contract.WebCertDir)
	}
	var files corev1.Secret
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "tsinject-system", Name: sts.Name + "-files"}, &files); err != nil || string(files.Data[corev1.TLSCertKey]) != string(crt) {
		t.Errorf("files %v (%v)", files.Data, err)
	}
	// Another Secret on another listener: one per Gateway.
	other := shopGateway(func(g *gatewayv1.Gateway) {
		g.Name = "two"
		g.Spec.Listeners[0].TLS = &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "portal-tls"}}}
		g.Spec.Listeners = append(g.Spec.Listeners, gatewayv1.Listener{Name: "b", Protocol: gatewayv1.HTTPSProtocolType, Port: 443,
			TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "b-tls"}}}})
	})
	if err := c.Create(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	reconcileGateway(t, r, other)
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(other), other); err != nil {
		t.Fatal(err)
	}
	if got := condText(other.Status.Conditions, "Accepted"); !strings.Contains(got, `spec.listeners[1].tls.certificateRefs[0]: "b-tls": one Secret per Gateway`) {
		t.Errorf("Accepted %q", got)
	}
}

// A listener's certificateRefs name is checked before anything is read or
// written with it: it would otherwise reach the grant command an admin is
// told to run.
func TestGatewayCertificateRefName(t *testing.T) {
	evil := "x --resource-name=y && kubectl create clusterrolebinding pwn --clusterrole=cluster-admin --user=mallory #"
	gw := shopGateway(func(g *gatewayv1.Gateway) {
		g.Spec.Listeners[0].TLS = &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: gatewayv1.ObjectName(evil)}}}
	})
	r, c, _ := newGatewayReconciler(t, ours(), gw, shopRoute("app"))
	r.ManagerAccount = "tsinject-system:tsinject-manager"
	r.Live = forbidSecrets(c)
	reconcileGateway(t, r, gw)
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(gw), gw); err != nil {
		t.Fatal(err)
	}
	if got := condText(gw.Status.Conditions, "Accepted"); strings.Contains(got, "kubectl") || !strings.Contains(got, "spec.listeners: none accepted") {
		t.Errorf("Accepted %q", got)
	}
	if got := condText(gw.Status.Listeners[0].Conditions, "ResolvedRefs"); !strings.Contains(got, "is not a Secret's name") {
		t.Errorf("listener ResolvedRefs %q", got)
	}
}
