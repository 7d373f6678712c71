package services

// Gateway API: a Gateway of class tsinject is a tailnet name serving
// HTTPS, like an Ingress of class tsinject (the same proxy, `tsinject-proxy
// web`); the HTTPRoutes attached to it give its routes. Unlike an
// Ingress, a Gateway and its routes have conditions: what a user must act
// on is there (and in Events on the Gateway).

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/internal/contract"
)

// GatewayClass is the GatewayClass tsinject serves (the chart creates
// it); GatewayController is the controllerName it must carry. Only the
// class of that name is served, so that the admission policy can tell
// tsinject's Gateways from others' by their spec alone.
const (
	GatewayClass      = "tsinject"
	GatewayController = "tsinject.dev/gateway-controller"
)

// GatewayComponent names the proxy sets of Gateways (they run the web
// proxy).
const GatewayComponent = "gateway"

// GatewayFinalizer lets the controller log the proxy out before the
// Gateway goes.
const GatewayFinalizer = "tsinject.dev/gateway"

// GatewayAPI is the Gateway API version the manager reads, and
// GatewayAPIKinds the kinds: without their CRDs it serves no Gateway.
var (
	GatewayAPI      = schema.GroupVersion{Group: gatewayv1.GroupName, Version: "v1"}
	GatewayAPIKinds = []string{"GatewayClass", "Gateway", "HTTPRoute"}
)

const kindHTTPRoute gatewayv1.Kind = "HTTPRoute"

// GatewayReconciler reconciles Gateways of class tsinject and the status
// of the HTTPRoutes attached to them.
type GatewayReconciler struct {
	Base
	// ClusterDomain completes the backends' names (see WebReconciler).
	ClusterDomain string
}

// WantsGateway reports whether gw is of tsinject's class.
func WantsGateway(gw *gatewayv1.Gateway) bool { return gw.Spec.GatewayClassName == GatewayClass }

func handlesGateway(gw *gatewayv1.Gateway) bool {
	return WantsGateway(gw) || controllerutil.ContainsFinalizer(gw, GatewayFinalizer)
}

// SetupWithManager watches Gateways of the class (or still carrying the
// finalizer), the HTTPRoutes naming them, their proxy sets, their class
// and what decides which routes may attach and with which tags
// (namespaces, SidecarProfiles).
func (r *GatewayReconciler) SetupWithManager(mgr ctrl.Manager) error {
	owned, ours := proxyset.Owned(GatewayComponent, r.Namespace)
	all := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		return r.gateways(ctx)
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named(GatewayComponent).
		For(&gatewayv1.Gateway{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			gw, ok := o.(*gatewayv1.Gateway)
			return ok && handlesGateway(gw)
		}))).
		Watches(&gatewayv1.HTTPRoute{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			route, ok := o.(*gatewayv1.HTTPRoute)
			if !ok {
				return nil
			}
			return routeParents(route)
		})).
		Watches(&appsv1.StatefulSet{}, owned, ours).
		Watches(&corev1.Secret{}, owned, ours).
		Watches(&gatewayv1.GatewayClass{}, all).
		Watches(&corev1.Namespace{}, all).
		Watches(&v1alpha1.SidecarProfile{}, all).
		Complete(r)
}

// gateways are the Gateways the controller handles, as requests.
func (r *GatewayReconciler) gateways(ctx context.Context) []reconcile.Request {
	var list gatewayv1.GatewayList
	if err := r.Client.List(ctx, &list); err != nil {
		r.Log.Error(err, "listing Gateways")
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if handlesGateway(&list.Items[i]) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return out
}

// routeParents are the Gateways route names, and those whose status it
// still carries from this controller (it may have left them).
func routeParents(route *gatewayv1.HTTPRoute) []reconcile.Request {
	var out []reconcile.Request
	add := func(ref gatewayv1.ParentReference) {
		if !isGatewayRef(ref) {
			return
		}
		key := client.ObjectKey{Namespace: string(ptrOr(ref.Namespace, gatewayv1.Namespace(route.Namespace))), Name: string(ref.Name)}
		if !slices.ContainsFunc(out, func(r reconcile.Request) bool { return r.NamespacedName == key }) {
			out = append(out, reconcile.Request{NamespacedName: key})
		}
	}
	for _, ref := range route.Spec.ParentRefs {
		add(ref)
	}
	for _, p := range route.Status.Parents {
		if p.ControllerName == GatewayController {
			add(p.ParentRef)
		}
	}
	return out
}

func isGatewayRef(ref gatewayv1.ParentReference) bool {
	return ptrOr(ref.Group, gatewayv1.GroupName) == gatewayv1.GroupName && ptrOr(ref.Kind, "Gateway") == "Gateway"
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// listener is one of a Gateway's listeners, checked.
type listener struct {
	spec gatewayv1.Listener
	// problem is why it is not accepted ("" if it is), reason the
	// condition's reason.
	problem, reason string
	attached        int32
}

// gatewaySpec is a Gateway's request, validated.
type gatewaySpec struct {
	host       string
	replicas   int32
	tags       []string
	requireCap string
	proxy      *v1alpha1.ProxyConfig
	listeners  []*listener
	// tlsSecret is the Secret the listeners name (one per Gateway), cert
	// its copy, as for an Ingress.
	tlsSecret, tlsField string
	cert                map[string]string
}

// parse reads gw. As for an Ingress, the namespace's policy no longer
// admitting it is reported in revoked.
func (r *GatewayReconciler) parse(ctx context.Context, gw *gatewayv1.Gateway) (sp gatewaySpec, problems []string, revoked bool) {
	ns, tags, problems := r.namespacePolicy(ctx, gw)
	sp.tags, sp.proxy = tags, profileProxy(ns)
	policyOK := len(problems) == 0
	revoked = ns == nil || (!policyOK && len(tags) == 0)
	var problem string
	if sp.replicas, problem = replicasOf(gw); problem != "" {
		problems = append(problems, problem)
	}
	sp.host = contract.RenderName(contract.PlaceholderNamespace+"-"+contract.PlaceholderName, gw.Name, gw.Namespace)
	field := "the default, <namespace>-<name>"
	if len(gw.Spec.Addresses) > 0 {
		problems = append(problems, "spec.addresses: not allowed; the Gateway's addresses are its tailnet node's (name it with annotation "+AnnotationHostname+")")
	}
	if gw.Spec.Infrastructure != nil {
		problems = append(problems, "spec.infrastructure: not supported; shape the proxies with the namespace's SidecarProfile")
	}
	if gw.Spec.TLS != nil {
		problems = append(problems, "spec.tls: not supported (no backend TLS or client certificates yet)")
	}
	if gw.Spec.AllowedListeners != nil && ptrOr(gw.Spec.AllowedListeners.Namespaces, gatewayv1.ListenerNamespaces{}).From != nil &&
		*gw.Spec.AllowedListeners.Namespaces.From != gatewayv1.NamespacesFromNone {
		problems = append(problems, "spec.allowedListeners: not supported (no ListenerSets); leave it out")
	}
	accepted := 0
	for i := range gw.Spec.Listeners {
		l := checkListener(gw.Spec.Listeners[i], i)
		sp.listeners = append(sp.listeners, l)
		if l.problem != "" {
			continue
		}
		accepted++
		if tls := l.spec.TLS; tls != nil && len(tls.CertificateRefs) == 1 {
			name := string(tls.CertificateRefs[0].Name)
			if sp.tlsSecret != "" && sp.tlsSecret != name {
				problems = append(problems, fmt.Sprintf("spec.listeners[%d].tls.certificateRefs[0]: %q: one Secret per Gateway (another listener names %q); allowed: one certificate covering every listener's hostname", i, name, sp.tlsSecret))
			}
			sp.tlsSecret, sp.tlsField = name, fmt.Sprintf("spec.listeners[%d].tls.certificateRefs[0]", i)
		}
		if h := l.spec.Hostname; h != nil && field == "the default, <namespace>-<name>" && !strings.HasPrefix(string(*h), "*.") {
			sp.host, field = strings.ToLower(strings.Split(string(*h), ".")[0]), fmt.Sprintf("spec.listeners[%d].hostname", i)
		}
	}
	if accepted == 0 {
		problems = append(problems, "spec.listeners: none accepted; allowed: protocol HTTPS on port 443 (TLS mode Terminate, no certificateRefs: the certificate is the tailnet's for the Gateway's name); port 80 always redirects to HTTPS")
	}
	sp.host, sp.requireCap, problems = r.webIdentity(ns, policyOK, sp.host, field, gw.Annotations, problems)
	return sp, problems, revoked
}

// checkListener accepts the listeners the web proxy serves: HTTPS on 443,
// terminated with the tailnet's certificate, for HTTPRoutes.
func checkListener(l gatewayv1.Listener, i int) *listener {
	out := &listener{spec: l}
	field := fmt.Sprintf("spec.listeners[%d]", i)
	switch {
	case l.Protocol != gatewayv1.HTTPSProtocolType:
		out.problem, out.reason = fmt.Sprintf("%s.protocol: %q is not supported (allowed: HTTPS; port 80 redirects to HTTPS by itself)", field, l.Protocol), string(gatewayv1.ListenerReasonUnsupportedProtocol)
	case l.Port != 443:
		out.problem, out.reason = fmt.Sprintf("%s.port: %d is not allowed (allowed: 443)", field, l.Port), string(gatewayv1.ListenerReasonPortUnavailable)
	case l.TLS != nil && ptrOr(l.TLS.Mode, gatewayv1.TLSModeTerminate) != gatewayv1.TLSModeTerminate:
		out.problem, out.reason = fmt.Sprintf("%s.tls.mode: %q is not supported (allowed: Terminate)", field, *l.TLS.Mode), string(gatewayv1.ListenerReasonUnsupportedValue)
	case l.TLS != nil && len(l.TLS.CertificateRefs) > 1:
		out.problem, out.reason = fmt.Sprintf("%s.tls.certificateRefs: %d; allowed: one Secret (or none: the tailnet's certificate for the Gateway's name)", field, len(l.TLS.CertificateRefs)), string(gatewayv1.ListenerReasonInvalidCertificateRef)
	case l.TLS != nil && len(l.TLS.CertificateRefs) == 1 && (ptrOr(l.TLS.CertificateRefs[0].Group, "") != "" || ptrOr(l.TLS.CertificateRefs[0].Kind, "Secret") != "Secret"):
		out.problem, out.reason = fmt.Sprintf("%s.tls.certificateRefs[0]: %s/%s is not allowed (allowed: a Secret)", field, ptrOr(l.TLS.CertificateRefs[0].Group, ""), ptrOr(l.TLS.CertificateRefs[0].Kind, "Secret")), string(gatewayv1.ListenerReasonInvalidCertificateRef)
	case l.TLS != nil && len(l.TLS.CertificateRefs) == 1 && len(validation.IsDNS1123Subdomain(string(l.TLS.CertificateRefs[0].Name))) > 0:
		out.problem, out.reason = fmt.Sprintf("%s.tls.certificateRefs[0].name: %q is not a Secret's name (allowed: a DNS subdomain)", field, l.TLS.CertificateRefs[0].Name), string(gatewayv1.ListenerReasonInvalidCertificateRef)
	case l.TLS != nil && len(l.TLS.CertificateRefs) == 1 && l.TLS.CertificateRefs[0].Namespace != nil:
		out.problem, out.reason = fmt.Sprintf("%s.tls.certificateRefs[0].namespace: a Secret of another namespace is not allowed (no ReferenceGrants yet)", field), string(gatewayv1.ListenerReasonRefNotPermitted)
	case l.TLS != nil && len(l.TLS.Options) > 0:
		out.problem, out.reason = fmt.Sprintf("%s.tls.options: not supported", field), string(gatewayv1.ListenerReasonUnsupportedValue)
	}
	if out.problem == "" && l.AllowedRoutes != nil {
		for _, k := range l.AllowedRoutes.Kinds {
			if ptrOr(k.Group, gatewayv1.GroupName) != gatewayv1.GroupName || k.Kind != kindHTTPRoute {
				out.problem, out.reason = fmt.Sprintf("%s.allowedRoutes.kinds: %s/%s is not supported (allowed: HTTPRoute)", field, ptrOr(k.Group, gatewayv1.GroupName), k.Kind), string(gatewayv1.ListenerReasonInvalidRouteKinds)
			}
		}
	}
	return out
}

// admits reports whether l takes routes from namespace ns of a Gateway in
// gwNamespace.
func (l *listener) admits(ns *corev1.Namespace, gwNamespace string) bool {
	from, sel := gatewayv1.NamespacesFromSame, (*metav1.LabelSelector)(nil)
	if l.spec.AllowedRoutes != nil && l.spec.AllowedRoutes.Namespaces != nil {
		from, sel = ptrOr(l.spec.AllowedRoutes.Namespaces.From, from), l.spec.AllowedRoutes.Namespaces.Selector
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSame:
		return ns.Name == gwNamespace
	case gatewayv1.NamespacesFromSelector:
		s, err := metav1.LabelSelectorAsSelector(sel)
		return err == nil && sel != nil && s.Matches(labels.Set(ns.Labels))
	}
	return false
}

// hostnameMatches reports whether a route's hostnames meet the listener's
// (Gateway API: none on either side matches all; "*.x" one or more labels).
func hostnameMatches(listenerHost *gatewayv1.Hostname, routeHosts []gatewayv1.Hostname) bool {
	if listenerHost == nil || len(routeHosts) == 0 {
		return true
	}
	lh := strings.ToLower(string(*listenerHost))
	covers := func(wild, name string) bool {
		return strings.HasPrefix(wild, "*.") && strings.HasSuffix(name, wild[1:]) && len(name) > len(wild)-1
	}
	for _, h := range routeHosts {
		rh := strings.ToLower(string(h))
		if rh == lh || covers(lh, strings.TrimPrefix(rh, "*")) || covers(rh, lh) || covers(lh, rh) {
			return true
		}
	}
	return false
}

// attachment is one HTTPRoute's standing on the Gateway.
type attachment struct {
	route *gatewayv1.HTTPRoute
	// refs are its parentRefs naming this Gateway.
	refs []gatewayv1.ParentReference
	// accepted is why it is not accepted ("" if it is, with reason).
	accepted, acceptedReason string
	// resolved is why its backends do not resolve ("" if they do).
	resolved, resolvedReason string
	routes                   []contract.WebRoute
}

// attach finds the HTTPRoutes naming gw, decides which of its listeners
// each attaches to and translates the accepted ones to the proxy's routes.
func (r *GatewayReconciler) attach(ctx context.Context, gw *gatewayv1.Gateway, listeners []*listener) ([]*attachment, error) {
	var list gatewayv1.HTTPRouteList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil, err
	}
	var out []*attachment
	for i := range list.Items {
		route := &list.Items[i]
		a := &attachment{route: route}
		for _, ref := range route.Spec.ParentRefs {
			if isGatewayRef(ref) && string(ref.Name) == gw.Name && string(ptrOr(ref.Namespace, gatewayv1.Namespace(route.Namespace))) == gw.Namespace {
				a.refs = append(a.refs, ref)
			}
		}
		if len(a.refs) > 0 || slices.ContainsFunc(route.Status.Parents, func(p gatewayv1.RouteParentStatus) bool { return r.ourParent(p, route, gw) }) {
			out = append(out, a)
		}
	}
	// Gateway API: of conflicting routes, the oldest wins.
	slices.SortFunc(out, func(a, b *attachment) int {
		return cmp.Or(a.route.CreationTimestamp.Compare(b.route.CreationTimestamp.Time),
			cmp.Compare(a.route.Namespace, b.route.Namespace), cmp.Compare(a.route.Name, b.route.Name))
	})
	svcs := newServiceBackends(r.Live, r.ClusterDomain)
	total := 0
	for _, a := range out {
		if len(a.refs) == 0 {
			continue
		}
		var ns corev1.Namespace
		if err := r.Client.Get(ctx, client.ObjectKey{Name: a.route.Namespace}, &ns); err != nil {
			return nil, err
		}
		var on []*listener
		for _, ref := range a.refs {
			for _, l := range listeners {
				if l.problem != "" || (ref.SectionName != nil && *ref.SectionName != l.spec.Name) || (ref.Port != nil && *ref.Port != l.spec.Port) {
					continue
				}
				if !l.admits(&ns, gw.Namespace) {
					a.accepted, a.acceptedReason = fmt.Sprintf("listener %s does not allow routes from namespace %s (its allowedRoutes.namespaces)", l.spec.Name, ns.Name), string(gatewayv1.RouteReasonNotAllowedByListeners)
					continue
				}
				if !hostnameMatches(l.spec.Hostname, a.route.Spec.Hostnames) {
					a.accepted, a.acceptedReason = fmt.Sprintf("spec.hostnames: none within listener %s's hostname %s", l.spec.Name, *l.spec.Hostname), string(gatewayv1.RouteReasonNoMatchingListenerHostname)
					continue
				}
				if !slices.Contains(on, l) {
					on = append(on, l)
				}
			}
		}
		if len(on) == 0 {
			if a.accepted == "" {
				a.accepted, a.acceptedReason = "spec.parentRefs: no accepted listener of the Gateway matches its sectionName and port (allowed: an HTTPS listener on 443)", string(gatewayv1.RouteReasonNoMatchingParent)
			}
			continue
		}
		a.accepted, a.acceptedReason = "", ""
		// Charged before any Service is read, resolved or not: routes
		// naming missing Services must not cost a read each, every few
		// seconds, without bound.
		size := routeSize(a.route)
		room := contract.MaxWebRoutes - total
		total += size
		if size > room {
			a.accepted, a.acceptedReason = fmt.Sprintf("spec.rules: %d matches (times hostnames) beyond what the Gateway has left (%d); allowed: %d routes on one Gateway, its older routes first", size, max(room, 0), contract.MaxWebRoutes), string(gatewayv1.RouteReasonUnsupportedValue)
			continue
		}
		routes, problem, reason := translateRoute(ctx, a.route, svcs)
		switch {
		case reason == string(gatewayv1.RouteReasonUnsupportedValue):
			a.accepted, a.acceptedReason = problem, reason
			continue
		case problem != "":
			a.resolved, a.resolvedReason = problem, reason
			continue
		}
		for _, l := range on {
			l.attached++
		}
		a.routes = withinListeners(routes, on)
	}
	return out, nil
}

// routeSize is how many of the proxy's routes route becomes at most.
func routeSize(route *gatewayv1.HTTPRoute) int {
	n := 0
	for _, rule := range route.Spec.Rules {
		n += max(len(rule.Matches), 1)
	}
	return n * max(len(route.Spec.Hostnames), 1)
}

// withinListeners narrows routes to the hosts of the listeners they
// attached to: a route is served only at hostnames its listener admits
// (a route without hostnames at the listener's), never at every host the
// proxy answers because it named none.
func withinListeners(routes []contract.WebRoute, on []*listener) []contract.WebRoute {
	var out []contract.WebRoute
	seen := map[string]bool{}
	for _, rt := range routes {
		for _, l := range on {
			host, ok := rt.Host, true
			if l.spec.Hostname != nil {
				host, ok = intersectHost(strings.ToLower(string(*l.spec.Hostname)), rt.Host)
			}
			key := host + "\x00" + rt.Path + "\x00" + fmt.Sprint(rt.Exact)
			if !ok || seen[key] {
				continue
			}
			seen[key] = true
			narrowed := rt
			narrowed.Host = host
			out = append(out, narrowed)
		}
	}
	return out
}

// intersectHost is the narrower of a listener's hostname and a route's
// (""; any), if they meet.
func intersectHost(listenerHost, routeHost string) (string, bool) {
	covers := func(wild, name string) bool {
		return strings.HasPrefix(wild, "*.") && strings.HasSuffix(name, wild[1:]) && len(name) > len(wild)-1
	}
	switch {
	case routeHost == "" || routeHost == listenerHost:
		return listenerHost, true
	case covers(listenerHost, strings.TrimPrefix(routeHost, "*")):
		return routeHost, true
	case covers(routeHost, strings.TrimPrefix(listenerHost, "*")):
		return listenerHost, true
	}
	return "", false
}

// ourParent reports whether p is this controller's status for gw on route.
func (r *GatewayReconciler) ourParent(p gatewayv1.RouteParentStatus, route *gatewayv1.HTTPRoute, gw *gatewayv1.Gateway) bool {
	return p.ControllerName == GatewayController && isGatewayRef(p.ParentRef) && string(p.ParentRef.Name) == gw.Name &&
		string(ptrOr(p.ParentRef.Namespace, gatewayv1.Namespace(route.Namespace))) == gw.Namespace
}

// translateRoute is route as the proxy's routes: refused whole (reason
// UnsupportedValue) for what the proxy cannot do as written, and with
// reason ResolvedRefs' for backends it cannot reach.
func translateRoute(ctx context.Context, route *gatewayv1.HTTPRoute, svcs *serviceBackends) ([]contract.WebRoute, string, string) {
	unsupported := string(gatewayv1.RouteReasonUnsupportedValue)
	hosts := []string{""}
	if len(route.Spec.Hostnames) > 0 {
		hosts = hosts[:0]
		for i, h := range route.Spec.Hostnames {
			host := strings.ToLower(string(h))
			if err := contract.ValidateHost(strings.TrimPrefix(host, "*.")); err != nil {
				return nil, fmt.Sprintf("spec.hostnames[%d]: %v", i, err), unsupported
			}
			hosts = append(hosts, host)
		}
	}
	var out []contract.WebRoute
	for i, rule := range route.Spec.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		switch {
		case len(rule.Filters) > 0:
			return nil, field + ".filters: not supported yet (no redirects, rewrites or header changes)", unsupported
		case rule.Timeouts != nil:
			return nil, field + ".timeouts: not supported", unsupported
		case rule.Retry != nil:
			return nil, field + ".retry: not supported", unsupported
		case rule.SessionPersistence != nil:
			return nil, field + ".sessionPersistence: not supported", unsupported
		}
		var backends []contract.WebBackend
		var total int64
		for j, ref := range rule.BackendRefs {
			bf := fmt.Sprintf("%s.backendRefs[%d]", field, j)
			switch {
			case len(ref.Filters) > 0:
				return nil, bf + ".filters: not supported", unsupported
			case ptrOr(ref.Group, "") != "" || ptrOr(ref.Kind, "Service") != "Service":
				return nil, fmt.Sprintf("%s: %s/%s is not allowed (allowed: a Service)", bf, ptrOr(ref.Group, ""), ptrOr(ref.Kind, "Service")), string(gatewayv1.RouteReasonInvalidKind)
			case ref.Namespace != nil && string(*ref.Namespace) != route.Namespace:
				return nil, fmt.Sprintf("%s.namespace: %s: a backend in another namespace is not allowed (no ReferenceGrants yet)", bf, *ref.Namespace), string(gatewayv1.RouteReasonRefNotPermitted)
			case ref.Port == nil:
				return nil, bf + ".port: required for a Service", string(gatewayv1.RouteReasonUnsupportedValue)
			}
			b, problem := svcs.resolve(ctx, route.Namespace, bf, string(ref.Name), "", int32(*ref.Port))
			if problem != "" {
				return nil, problem, string(gatewayv1.RouteReasonBackendNotFound)
			}
			b.Weight = ptrOr(ref.Weight, 1)
			total += int64(b.Weight)
			backends = append(backends, b)
		}
		if total == 0 {
			return nil, field + ".backendRefs: none with a weight above 0; allowed: at least one Service backend", unsupported
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.HTTPRouteMatch{{}}
		}
		for k, m := range matches {
			mf := fmt.Sprintf("%s.matches[%d]", field, k)
			switch {
			case len(m.Headers) > 0:
				return nil, mf + ".headers: not supported yet (allowed: path)", unsupported
			case len(m.QueryParams) > 0:
				return nil, mf + ".queryParams: not supported yet (allowed: path)", unsupported
			case m.Method != nil:
				return nil, mf + ".method: not supported yet (allowed: path)", unsupported
			}
			path, exact := "/", false
			if m.Path != nil {
				switch ptrOr(m.Path.Type, gatewayv1.PathMatchPathPrefix) {
				case gatewayv1.PathMatchExact:
					exact = true
				case gatewayv1.PathMatchPathPrefix:
				default:
					return nil, fmt.Sprintf("%s.path.type: %s is not supported (allowed: Exact, PathPrefix)", mf, *m.Path.Type), unsupported
				}
				path = ptrOr(m.Path.Value, "/")
			}
			if !strings.HasPrefix(path, "/") {
				return nil, fmt.Sprintf("%s.path.value: %q must start with /", mf, path), unsupported
			}
			for _, h := range hosts {
				out = append(out, contract.WebRoute{Host: h, Path: path, Exact: exact, Backends: backends})
			}
		}
	}
	return out, "", ""
}

// set is the Gateway's proxies: replicas sharing one name, running the
// web proxy.
func (r *GatewayReconciler) set(gw *gatewayv1.Gateway, sp gatewaySpec, routes []contract.WebRoute) *proxyset.Set {
	if routes == nil {
		routes = []contract.WebRoute{}
	}
	js, _ := json.Marshal(routes)
	env := []corev1.EnvVar{
		{Name: contract.EnvTags, Value: strings.Join(sp.tags, ",")},
		{Name: contract.EnvHostname, Value: sp.host},
		{Name: contract.EnvWebRoutes, Value: string(js)},
		{Name: contract.EnvWebTLS, Value: contract.WebTLSTailnet},
		{Name: contract.EnvOneName, Value: "true"},
	}
	if sp.requireCap != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvWebRequireCapability, Value: sp.requireCap})
	}
	owner := gw.DeepCopy()
	owner.SetGroupVersionKind(GatewayAPI.WithKind("Gateway"))
	s := r.ownedSet(owner, GatewayComponent, max(sp.replicas, 1), withCert(env, sp.cert), sp.proxy)
	s.Args = []string{WebComponent}
	s.OneName = true
	if sp.cert != nil {
		s.Files, s.FilesDir = sp.cert, contract.WebCertDir
	}
	return s
}

// classOurs reports whether the GatewayClass tsinject is this
// controller's: if another controller's class took the name, its
// Gateways are not tsinject's.
func (r *GatewayReconciler) classOurs(ctx context.Context) (bool, error) {
	var gc gatewayv1.GatewayClass
	if err := r.Client.Get(ctx, client.ObjectKey{Name: GatewayClass}, &gc); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return gc.Spec.ControllerName == GatewayController, nil
}

// Reconcile brings one Gateway's proxy, its status and its routes' status
// in line.
func (r *GatewayReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var gw gatewayv1.Gateway
	if err := r.Client.Get(ctx, req.NamespacedName, &gw); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	ours, err := r.classOurs(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !gw.DeletionTimestamp.IsZero() || !WantsGateway(&gw) || !ours {
		return r.finalizeGateway(ctx, &gw)
	}
	sp, problems, revoked := r.parse(ctx, &gw)
	var withheld string // as for an Ingress
	if sp.tlsSecret != "" && len(problems) == 0 {
		var problem string
		var withdrawn bool
		if sp.cert, problem, withdrawn = r.tlsSecret(ctx, gw.Namespace, sp.tlsSecret, sp.tlsField); withdrawn {
			withheld = problem
		} else if problem != "" {
			problems = append(problems, problem)
		}
	}
	attached, err := r.attach(ctx, &gw, sp.listeners)
	if err != nil {
		return reconcile.Result{}, err
	}
	if len(problems) > 0 {
		// As for an Ingress: a running proxy keeps serving through the
		// tenant's bad edit, and goes when the policy no longer admits it.
		if revoked {
			if res, err := r.finalizeGateway(ctx, &gw); err != nil || res.RequeueAfter > 0 {
				return res, err
			}
		}
		msg := strings.Join(problems, "; ")
		if err := r.gatewayStatus(ctx, &gw, sp, nil, metav1.ConditionFalse, string(gatewayv1.GatewayReasonInvalid), msg); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{RequeueAfter: 10 * time.Second}, nil
	}
	var routes []contract.WebRoute
	for _, a := range attached {
		routes = append(routes, a.routes...)
	}
	s := r.set(&gw, sp, routes)
	if err := r.applyWeb(ctx, &gw, GatewayFinalizer, s); err != nil {
		var taken *proxyset.NameTakenError
		if errors.As(err, &taken) {
			return reconcile.Result{RequeueAfter: time.Minute}, r.gatewayStatus(ctx, &gw, sp, nil, metav1.ConditionFalse, string(gatewayv1.GatewayReasonInvalid), err.Error())
		}
		return reconcile.Result{}, err
	}
	devices, err := proxyset.Devices(ctx, r.Client, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := r.routeStatus(ctx, &gw, attached); err != nil {
		return reconcile.Result{}, err
	}
	res := reconcile.Result{RequeueAfter: time.Minute}
	if slices.ContainsFunc(attached, func(a *attachment) bool { return a.resolved != "" }) {
		res.RequeueAfter = 10 * time.Second // a backend Service may appear
	}
	if withheld != "" {
		return reconcile.Result{RequeueAfter: 10 * time.Second}, r.gatewayStatus(ctx, &gw, sp, nil, metav1.ConditionFalse, string(gatewayv1.GatewayReasonInvalid), withheld+"; serving the tailnet's certificate meanwhile")
	}
	if len(devices) == 0 {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, r.gatewayStatus(ctx, &gw, sp, nil, metav1.ConditionTrue, string(gatewayv1.GatewayReasonPending), notServing(ctx, r.Client, s))
	}
	return res, r.gatewayStatus(ctx, &gw, sp, &devices[0], metav1.ConditionTrue, string(gatewayv1.GatewayReasonProgrammed),
		fmt.Sprintf("serving https://%s (%s), %d routes", devices[0].Hostname, strings.Join(devices[0].TailnetIPs, ", "), len(routes)))
}

// gatewayStatus writes gw's conditions, addresses (device's) and
// listeners; accepted says whether the Gateway itself is accepted, with
// reason and msg for it, or for Programmed when it is.
func (r *GatewayReconciler) gatewayStatus(ctx context.Context, gw *gatewayv1.Gateway, sp gatewaySpec, device *v1alpha1.Device, accepted metav1.ConditionStatus, reason, msg string) error {
	orig := gw.DeepCopy()
	st := &gw.Status
	cond := func(conds *[]metav1.Condition, t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gw.Generation})
	}
	programmed := metav1.ConditionFalse
	if device != nil {
		programmed = metav1.ConditionTrue
	}
	if accepted == metav1.ConditionTrue {
		cond(&st.Conditions, string(gatewayv1.GatewayConditionAccepted), metav1.ConditionTrue, string(gatewayv1.GatewayReasonAccepted), "")
		cond(&st.Conditions, string(gatewayv1.GatewayConditionProgrammed), programmed, reason, msg)
	} else {
		cond(&st.Conditions, string(gatewayv1.GatewayConditionAccepted), metav1.ConditionFalse, reason, msg)
		cond(&st.Conditions, string(gatewayv1.GatewayConditionProgrammed), metav1.ConditionFalse, reason, "not accepted")
	}
	st.Addresses = nil
	if device != nil {
		hostname, ip := gatewayv1.HostnameAddressType, gatewayv1.IPAddressType
		st.Addresses = append(st.Addresses, gatewayv1.GatewayStatusAddress{Type: &hostname, Value: device.Hostname})
		for _, a := range device.TailnetIPs {
			st.Addresses = append(st.Addresses, gatewayv1.GatewayStatusAddress{Type: &ip, Value: a})
		}
	}
	var listeners []gatewayv1.ListenerStatus
	for _, l := range sp.listeners {
		ls := gatewayv1.ListenerStatus{Name: l.spec.Name, AttachedRoutes: l.attached}
		if i := slices.IndexFunc(st.Listeners, func(o gatewayv1.ListenerStatus) bool { return o.Name == l.spec.Name }); i >= 0 {
			ls.Conditions = st.Listeners[i].Conditions
		}
		if l.problem == "" {
			group := gatewayv1.Group(gatewayv1.GroupName)
			ls.SupportedKinds = []gatewayv1.RouteGroupKind{{Group: &group, Kind: kindHTTPRoute}}
			cond(&ls.Conditions, string(gatewayv1.ListenerConditionAccepted), metav1.ConditionTrue, string(gatewayv1.ListenerReasonAccepted), "")
			cond(&ls.Conditions, string(gatewayv1.ListenerConditionResolvedRefs), metav1.ConditionTrue, string(gatewayv1.ListenerReasonResolvedRefs), "")
			cond(&ls.Conditions, string(gatewayv1.ListenerConditionProgrammed), programmed, reason, msg)
		} else {
			ls.SupportedKinds = []gatewayv1.RouteGroupKind{}
			status := metav1.ConditionFalse
			t := gatewayv1.ListenerConditionAccepted
			if l.reason == string(gatewayv1.ListenerReasonInvalidCertificateRef) || l.reason == string(gatewayv1.ListenerReasonInvalidRouteKinds) ||
				l.reason == string(gatewayv1.ListenerReasonRefNotPermitted) {
				t = gatewayv1.ListenerConditionResolvedRefs
			}
			cond(&ls.Conditions, string(t), status, l.reason, l.problem)
			cond(&ls.Conditions, string(gatewayv1.ListenerConditionProgrammed), metav1.ConditionFalse, string(gatewayv1.ListenerReasonInvalid), l.problem)
		}
		cond(&ls.Conditions, string(gatewayv1.ListenerConditionConflicted), metav1.ConditionFalse, string(gatewayv1.ListenerReasonNoConflicts), "")
		listeners = append(listeners, ls)
	}
	st.Listeners = listeners
	old := meta.FindStatusCondition(orig.Status.Conditions, string(gatewayv1.GatewayConditionProgrammed))
	now := meta.FindStatusCondition(st.Conditions, string(gatewayv1.GatewayConditionProgrammed))
	if accepted != metav1.ConditionTrue {
		now = meta.FindStatusCondition(st.Conditions, string(gatewayv1.GatewayConditionAccepted))
		old = meta.FindStatusCondition(orig.Status.Conditions, string(gatewayv1.GatewayConditionAccepted))
	}
	if r.Events != nil && (old == nil || old.Reason != now.Reason || old.Message != now.Message) {
		kind := corev1.EventTypeNormal
		if now.Status != metav1.ConditionTrue {
			kind = corev1.EventTypeWarning
		}
		r.Events.Eventf(gw, nil, kind, now.Reason, "Reconcile", "%s", cmp.Or(now.Message, now.Reason))
	}
	if equalGatewayStatus(&orig.Status, st) {
		return nil
	}
	return r.Client.Status().Patch(ctx, gw, client.MergeFrom(orig))
}

// equalGatewayStatus compares what gatewayStatus writes, ignoring
// conditions' transition times (SetStatusCondition keeps them when
// nothing changed).
func equalGatewayStatus(a, b *gatewayv1.GatewayStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// routeStatus writes this controller's entry for gw in each attached
// route's status.parents (and removes it from routes that left gw),
// leaving other controllers' entries as they are.
func (r *GatewayReconciler) routeStatus(ctx context.Context, gw *gatewayv1.Gateway, attached []*attachment) error {
	for _, a := range attached {
		route := a.route
		orig := route.DeepCopy()
		named := func(refs []gatewayv1.ParentReference, p gatewayv1.RouteParentStatus) bool {
			return slices.ContainsFunc(refs, func(ref gatewayv1.ParentReference) bool { return equalRef(ref, p.ParentRef) })
		}
		// Ours for gw where the route left it, and ours for any Gateway the
		// route no longer names (a Gateway deleted without its finalizer
		// leaves one behind, which the admission policy would refuse to
		// keep, stalling every Gateway the route still names).
		parents := slices.DeleteFunc(slices.Clone(route.Status.Parents), func(p gatewayv1.RouteParentStatus) bool {
			return (r.ourParent(p, route, gw) && !named(a.refs, p)) ||
				(p.ControllerName == GatewayController && !named(route.Spec.ParentRefs, p))
		})
		for _, ref := range a.refs {
			i := slices.IndexFunc(parents, func(p gatewayv1.RouteParentStatus) bool {
				return p.ControllerName == GatewayController && equalRef(ref, p.ParentRef)
			})
			if i < 0 {
				parents = append(parents, gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: GatewayController})
				i = len(parents) - 1
			}
			p := &parents[i]
			p.Conditions = slices.Clone(p.Conditions)
			set := func(t string, ok bool, reason, okReason, msg string) {
				c := metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: okReason, ObservedGeneration: route.Generation}
				if !ok {
					c.Status, c.Reason, c.Message = metav1.ConditionFalse, reason, msg
				}
				meta.SetStatusCondition(&p.Conditions, c)
			}
			set(string(gatewayv1.RouteConditionAccepted), a.accepted == "", a.acceptedReason, string(gatewayv1.RouteReasonAccepted), a.accepted)
			set(string(gatewayv1.RouteConditionResolvedRefs), a.resolved == "", a.resolvedReason, string(gatewayv1.RouteReasonResolvedRefs), a.resolved)
		}
		route.Status.Parents = parents
		ja, _ := json.Marshal(orig.Status)
		jb, _ := json.Marshal(route.Status)
		if string(ja) == string(jb) {
			continue
		}
		// Other controllers write their own entries in the same list: the
		// patch fails rather than overwrite one written since our read.
		if err := r.Client.Status().Patch(ctx, route, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

func equalRef(a, b gatewayv1.ParentReference) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// finalizeGateway logs the proxy out, deletes its set, takes this
// controller's entries out of the routes' status and lets the Gateway go
// (or stay, outside the class, its status cleared).
func (r *GatewayReconciler) finalizeGateway(ctx context.Context, gw *gatewayv1.Gateway) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(gw, GatewayFinalizer) {
		return reconcile.Result{}, nil
	}
	done, err := proxyset.Delete(ctx, r.Client, r.Live, r.set(gw, gatewaySpec{}, nil), r.Logout, r.Log)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !done {
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	attached, err := r.attach(ctx, gw, nil)
	if err != nil {
		return reconcile.Result{}, err
	}
	for _, a := range attached {
		a.refs = nil // every entry of ours for gw goes
	}
	if err := r.routeStatus(ctx, gw, attached); err != nil {
		return reconcile.Result{}, err
	}
	if gw.DeletionTimestamp.IsZero() && (len(gw.Status.Addresses) > 0 || len(gw.Status.Listeners) > 0 || len(gw.Status.Conditions) > 0) && !WantsGateway(gw) {
		orig := gw.DeepCopy()
		gw.Status = gatewayv1.GatewayStatus{}
		if err := r.Client.Status().Patch(ctx, gw, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
	}
	if err := r.patchFinalizers(ctx, gw, func() bool { return controllerutil.RemoveFinalizer(gw, GatewayFinalizer) }); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}

// GatewayClassReconciler accepts the GatewayClass tsinject when it names
// this controller.
type GatewayClassReconciler struct {
	Client client.Client
}

// SetupWithManager watches the GatewayClasses.
func (r *GatewayClassReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("gatewayclass").
		For(&gatewayv1.GatewayClass{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetName() == GatewayClass
		}))).
		Complete(r)
}

// Reconcile sets the class's Accepted condition.
func (r *GatewayClassReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var gc gatewayv1.GatewayClass
	if err := r.Client.Get(ctx, req.NamespacedName, &gc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if gc.Name != GatewayClass || gc.Spec.ControllerName != GatewayController {
		return reconcile.Result{}, nil
	}
	c := metav1.Condition{Type: string(gatewayv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionTrue,
		Reason: string(gatewayv1.GatewayClassReasonAccepted), ObservedGeneration: gc.Generation}
	if gc.Spec.ParametersRef != nil {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, string(gatewayv1.GatewayClassReasonInvalidParameters), "spec.parametersRef: not supported; shape the proxies with SidecarProfiles"
	}
	orig := gc.DeepCopy()
	if !meta.SetStatusCondition(&gc.Status.Conditions, c) {
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, r.Client.Status().Patch(ctx, &gc, client.MergeFrom(orig))
}
