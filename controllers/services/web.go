package services

// HTTPS Ingresses: an Ingress of class tsinject puts its Services on the
// tailnet over HTTPS. It gets a proxy set running `tsinject-proxy web`
// (one tailnet name, its replicas standing by for one another), which
// terminates TLS with the tailnet's certificate for that name and routes
// by the Ingress's rules; status.loadBalancer carries the name and
// addresses. An Ingress has no conditions: what a user must act on is an
// Event on it.

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
)

// IngressClass is the class of the Ingresses tsinject serves, and
// IngressController the controller its IngressClass names.
const (
	IngressClass      = "tsinject"
	IngressController = "tsinject.dev/ingress-controller"
)

// WebComponent names the proxy sets of Ingresses.
const WebComponent = "web"

// WebFinalizer lets the controller log the proxy out before the Ingress
// goes.
const WebFinalizer = "tsinject.dev/web"

// AnnotationRequireCapability, on an Ingress, admits only tailnet callers
// granted that capability; others get 403.
const AnnotationRequireCapability = "tsinject.dev/require-capability"

// AppProtocolH2C is the appProtocol of a Service port speaking HTTP/2
// without TLS (gRPC): the proxy speaks it to that backend.
const AppProtocolH2C = "kubernetes.io/h2c"

// Reasons of the Events on an Ingress.
const (
	ReasonWebReady   = "OnTailnet"
	ReasonInvalidWeb = "InvalidIngress"
)

// WebReconciler reconciles Ingresses of class tsinject.
type WebReconciler struct {
	Base
	// ClusterDomain completes the backends' names: the proxy dials a
	// Service by its name, so a deleted one's address, handed to another
	// namespace's Service later, is never reached.
	ClusterDomain string
	// reported is the last Event's reason and message per Ingress: only
	// changes are recorded, as the controller re-checks every few seconds.
	reported sync.Map
}

// WantsWeb reports whether ing is of tsinject's class.
func WantsWeb(ing *networkingv1.Ingress) bool {
	return ing.Spec.IngressClassName != nil && *ing.Spec.IngressClassName == IngressClass
}

// SetupWithManager watches Ingresses of the class (or still carrying the
// finalizer), their proxy sets, and their namespaces' policy.
func (r *WebReconciler) SetupWithManager(mgr ctrl.Manager) error {
	owned, ours := proxyset.Owned(WebComponent, r.Namespace)
	handles := func(ing *networkingv1.Ingress) bool {
		return WantsWeb(ing) || controllerutil.ContainsFinalizer(ing, WebFinalizer)
	}
	inNamespace := func(ctx context.Context, ns string) []reconcile.Request {
		var list networkingv1.IngressList
		if err := r.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			r.Log.Error(err, "listing Ingresses", "namespace", ns)
			return nil
		}
		var out []reconcile.Request
		for i := range list.Items {
			if handles(&list.Items[i]) {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
			}
		}
		return out
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(WebComponent).
		For(&networkingv1.Ingress{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			ing, ok := o.(*networkingv1.Ingress)
			return ok && handles(ing)
		}))).
		Watches(&appsv1.StatefulSet{}, owned, ours).
		Watches(&corev1.Secret{}, owned, ours).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, ns client.Object) []reconcile.Request {
			return inNamespace(ctx, ns.GetName())
		})).
		Watches(&v1alpha1.SidecarProfile{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
			return inNamespace(ctx, "")
		})).
		Complete(r)
}

// webSpec is an Ingress's request, validated.
type webSpec struct {
	host       string
	replicas   int32
	tags       []string
	routes     []contract.WebRoute
	requireCap string
	proxy      *v1alpha1.ProxyConfig
	// tlsSecret names the tenant's kubernetes.io/tls Secret the proxy
	// serves instead of the tailnet's certificate; cert is its copy.
	tlsSecret string
	cert      map[string]string
}

// parse reads ing; backends are read from the API server (the cache holds
// only the Services tsinject serves).
// The namespace's policy no longer admitting the Ingress (its namespace
// not enabled, its tags not within the policy) is reported in revoked:
// unlike the tenant's bad edit, it takes a running proxy down.
func (r *WebReconciler) parse(ctx context.Context, ing *networkingv1.Ingress) (sp webSpec, problems []string, revoked bool) {
	ns, tags, problems := r.namespacePolicy(ctx, ing)
	sp.tags, sp.proxy = tags, profileProxy(ns)
	policyOK := len(problems) == 0
	revoked = ns == nil || (!policyOK && len(tags) == 0)
	var problem string
	if sp.replicas, problem = replicasOf(ing); problem != "" {
		problems = append(problems, problem)
	}
	sp.host = contract.RenderName(contract.PlaceholderNamespace+"-"+contract.PlaceholderName, ing.Name, ing.Namespace)
	field := "the default, <namespace>-<name>"
	for i, t := range ing.Spec.TLS {
		if t.SecretName != "" {
			if sp.tlsSecret != "" && sp.tlsSecret != t.SecretName {
				problems = append(problems, fmt.Sprintf("spec.tls[%d].secretName: %q: one Secret per Ingress (spec.tls names %q already); allowed: one certificate covering every host", i, t.SecretName, sp.tlsSecret))
			}
			sp.tlsSecret = t.SecretName
		}
		if i == 0 && len(t.Hosts) > 0 {
			sp.host, field = strings.ToLower(strings.Split(t.Hosts[0], ".")[0]), "spec.tls[0].hosts[0]"
		}
	}
	sp.host, sp.requireCap, problems = r.webIdentity(ns, policyOK, sp.host, field, ing.Annotations, problems)
	routes, routeProblems := r.routes(ctx, ing)
	sp.routes = routes
	problems = append(problems, routeProblems...)
	return sp, problems, revoked
}

// webIdentity settles an Ingress's or Gateway's tailnet name (the
// hostname annotation over host, the default named by field) within the
// namespace's policy, and its required capability, adding to problems.
func (b *Base) webIdentity(ns *injector.Namespace, policyOK bool, host, field string, annotations map[string]string, problems []string) (string, string, []string) {
	if v, ok := annotations[AnnotationHostname]; ok {
		host, field = v, "annotation "+AnnotationHostname
	}
	if !contract.IsDNSLabel(host) || strings.ToLower(host) != host {
		problems = append(problems, fmt.Sprintf("%s: %q is not allowed as the tailnet name (allowed: a DNS label, lowercase letters, digits and '-')", field, host))
	} else if ns != nil && policyOK {
		if err := b.Injector.HostnameAllowed(*ns, host); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", field, err))
		}
	}
	capability := annotations[AnnotationRequireCapability]
	if capability != "" && (strings.ContainsAny(capability, " \t\r\n,") || !strings.Contains(capability, "/")) {
		problems = append(problems, fmt.Sprintf("annotation %s: %q is not allowed (allowed: one capability name, such as example.com/cap/grafana)", AnnotationRequireCapability, capability))
	}
	return host, capability, problems
}

// routes are ing's default backend and rules as the proxy's routes.
func (r *WebReconciler) routes(ctx context.Context, ing *networkingv1.Ingress) ([]contract.WebRoute, []string) {
	// Counted before any Service is read: one Ingress must not hold the
	// controller up for every other.
	n := 0
	if ing.Spec.DefaultBackend != nil {
		n++
	}
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP != nil {
			n += len(rule.HTTP.Paths)
		}
	}
	if n > contract.MaxWebRoutes {
		return nil, []string{fmt.Sprintf("spec.rules: %d paths and backends; allowed: at most %d", n, contract.MaxWebRoutes)}
	}
	var routes []contract.WebRoute
	var problems []string
	svcs := newServiceBackends(r.Live, r.ClusterDomain)
	add := func(field, host, path string, exact bool, b *networkingv1.IngressBackend) {
		backend, problem := ingressBackend(ctx, svcs, ing.Namespace, field, b)
		if problem != "" {
			problems = append(problems, problem)
			return
		}
		routes = append(routes, contract.WebRoute{Host: host, Path: path, Exact: exact, Backends: []contract.WebBackend{backend}})
	}
	if b := ing.Spec.DefaultBackend; b != nil {
		add("spec.defaultBackend", "", "/", false, b)
	}
	for i, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		host := strings.ToLower(rule.Host)
		if host != "" {
			if err := contract.ValidateHost(strings.TrimPrefix(host, "*.")); err != nil {
				problems = append(problems, fmt.Sprintf("spec.rules[%d].host: %v", i, err))
				continue
			}
		}
		for j, p := range rule.HTTP.Paths {
			field := fmt.Sprintf("spec.rules[%d].http.paths[%d]", i, j)
			path := p.Path
			if path == "" {
				path = "/"
			}
			if !strings.HasPrefix(path, "/") {
				problems = append(problems, fmt.Sprintf("%s.path: %q must start with /", field, p.Path))
				continue
			}
			exact := p.PathType != nil && *p.PathType == networkingv1.PathTypeExact
			add(field+".backend", host, path, exact, &p.Backend)
		}
	}
	if len(routes) == 0 && len(problems) == 0 {
		problems = append(problems, "spec: no backend; give spec.defaultBackend or spec.rules[].http.paths")
	}
	return routes, problems
}

// ingressBackend resolves b to its Service's cluster name and port.
func ingressBackend(ctx context.Context, svcs *serviceBackends, namespace, field string, b *networkingv1.IngressBackend) (contract.WebBackend, string) {
	if b.Service == nil {
		return contract.WebBackend{}, field + ": only Service backends are allowed (not resource)"
	}
	return svcs.resolve(ctx, namespace, field+".service", b.Service.Name, b.Service.Port.Name, b.Service.Port.Number)
}

// serviceBackends resolves backends to Services, reading each once (from
// the API server: the cache holds only the Services tsinject serves).
type serviceBackends struct {
	live client.Reader
	// clusterDomain completes the backends' names.
	clusterDomain string
	read          map[client.ObjectKey]*corev1.Service
}

func newServiceBackends(live client.Reader, clusterDomain string) *serviceBackends {
	return &serviceBackends{live: live, clusterDomain: clusterDomain, read: map[client.ObjectKey]*corev1.Service{}}
}

// resolve is the backend at Service namespace/name's port (by portName,
// else by number); field names the reference in a problem.
func (s *serviceBackends) resolve(ctx context.Context, namespace, field, name, portName string, portNumber int32) (contract.WebBackend, string) {
	key := client.ObjectKey{Namespace: namespace, Name: name}
	svc, ok := s.read[key]
	if !ok {
		svc = &corev1.Service{}
		if err := s.live.Get(ctx, key, svc); err != nil {
			if !apierrors.IsNotFound(err) {
				return contract.WebBackend{}, fmt.Sprintf("%s.name: reading Service %s/%s: %v", field, namespace, name, err)
			}
			svc = nil
		}
		s.read[key] = svc
	}
	if svc == nil {
		return contract.WebBackend{}, fmt.Sprintf("%s.name: Service %s/%s does not exist", field, namespace, name)
	}
	if clusterIP(svc) == "" {
		return contract.WebBackend{}, fmt.Sprintf("%s.name: Service %s has no cluster address (headless); a backend needs one", field, name)
	}
	for _, p := range svc.Spec.Ports {
		if (portName != "" && p.Name == portName) || (portName == "" && p.Port == portNumber) {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				return contract.WebBackend{}, fmt.Sprintf("%s.port: port %d of Service %s is %s; allowed: TCP", field, p.Port, name, p.Protocol)
			}
			h2c := p.AppProtocol != nil && *p.AppProtocol == AppProtocolH2C
			host := svc.Name + "." + namespace + ".svc." + strings.TrimSuffix(s.clusterDomain, ".")
			return contract.WebBackend{Addr: fmt.Sprintf("%s:%d", host, p.Port), H2C: h2c, Weight: 1}, ""
		}
	}
	port := intstr.FromInt32(portNumber)
	if portName != "" {
		port = intstr.FromString(portName)
	}
	return contract.WebBackend{}, fmt.Sprintf("%s.port: Service %s has no port %s", field, name, port.String())
}

// set is the Ingress's proxies: replicas sharing one name.
func (r *WebReconciler) set(ing *networkingv1.Ingress, sp webSpec) *proxyset.Set {
	routes, _ := json.Marshal(sp.routes)
	env := []corev1.EnvVar{
		{Name: contract.EnvTags, Value: strings.Join(sp.tags, ",")},
		{Name: contract.EnvHostname, Value: sp.host},
		{Name: contract.EnvWebRoutes, Value: string(routes)},
		{Name: contract.EnvWebTLS, Value: contract.WebTLSTailnet},
		{Name: contract.EnvOneName, Value: "true"},
	}
	if sp.requireCap != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvWebRequireCapability, Value: sp.requireCap})
	}
	owner := ing.DeepCopy()
	owner.SetGroupVersionKind(networkingv1.SchemeGroupVersion.WithKind("Ingress"))
	s := r.ownedSet(owner, WebComponent, max(sp.replicas, 1), withCert(env, sp.cert), sp.proxy)
	s.OneName = true
	if sp.cert != nil {
		s.Files, s.FilesDir = sp.cert, contract.WebCertDir
	}
	return s
}

// applyWeb applies a web proxy set, and deletes the copy of a Secret's
// certificate when the set serves none (the Secret left the Ingress or
// Gateway, or its grant was withdrawn).
func (b *Base) applyWeb(ctx context.Context, obj client.Object, finalizer string, s *proxyset.Set) error {
	if err := b.apply(ctx, obj, finalizer, s); err != nil {
		return err
	}
	if len(s.Files) > 0 {
		return nil
	}
	files := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.FilesName()}}
	return client.IgnoreNotFound(b.Client.Delete(ctx, files))
}

// withCert has the proxy serve the files in WebCertDir instead of the
// tailnet's certificate when a Secret's certificate is given.
func withCert(env []corev1.EnvVar, cert map[string]string) []corev1.EnvVar {
	if cert == nil {
		return env
	}
	for i := range env {
		if env[i].Name == contract.EnvWebTLS {
			env[i].Value = contract.WebTLSFiles
		}
	}
	return append(env, corev1.EnvVar{Name: contract.EnvWebCertDir, Value: contract.WebCertDir})
}

// tlsSecret reads the tenant's kubernetes.io/tls Secret name in namespace
// for the proxy. The manager may read no tenant Secret by itself: the
// tenant grants it this one (a Role with get on it, by name, bound to the
// manager's ServiceAccount), and the problem says how.
func (b *Base) tlsSecret(ctx context.Context, namespace, name, field string) (cert map[string]string, problem string, withdrawn bool) {
	if b.ReadsEverySecret {
		return nil, fmt.Sprintf("%s: certificates from Secrets are not served in auth-key copy mode, where tsinject may read every Secret and so cannot tell one the tenant granted; leave it out to serve the tailnet's certificate", field), true
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, fmt.Sprintf("%s: %q is not a Secret's name: %s", field, name, strings.Join(errs, "; ")), true
	}
	// Reading it proves a grant only if the manager could not read any
	// other Secret there (rights left over from auth-key copy mode, a
	// broad role bound by someone): ask the API server.
	probe := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: "get", Resource: "secrets", Name: "tsinject-probe-no-such-secret"}}}
	if err := b.Client.Create(ctx, probe); err != nil {
		return nil, fmt.Sprintf("%s: asking whether tsinject may read other Secrets in %s: %v", field, namespace, err), false
	}
	if probe.Status.Allowed {
		return nil, fmt.Sprintf("%s: tsinject may read every Secret in namespace %s (its RBAC grants more than the Secrets tenants name), so reading %s proves no grant; a cluster admin removes that right (auth-key copy mode's ClusterRoleBinding, say); serving no Secret's certificate until then", field, namespace, name), true
	}
	var sec corev1.Secret
	err := b.Live.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &sec)
	manager := b.ManagerAccount
	switch {
	case apierrors.IsForbidden(err):
		role := "tsinject-read-" + name
		return nil, fmt.Sprintf("%s: tsinject may not read Secret %s/%s: grant it that one Secret (kubectl -n %s create role %s --verb=get --resource=secrets --resource-name=%s && kubectl -n %s create rolebinding %s --role=%s --serviceaccount=%s)",
			field, namespace, name, namespace, role, name, namespace, role, role, manager), true
	case apierrors.IsNotFound(err):
		return nil, fmt.Sprintf("%s: Secret %s/%s does not exist", field, namespace, name), true
	case err != nil:
		return nil, fmt.Sprintf("%s: reading Secret %s/%s: %v", field, namespace, name, err), false
	case sec.Type != corev1.SecretTypeTLS:
		return nil, fmt.Sprintf("%s: Secret %s is of type %q; allowed: %s", field, name, sec.Type, corev1.SecretTypeTLS), false
	}
	crt, key := sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if err := boundedKeyPair(crt, key); err != nil {
		return nil, fmt.Sprintf("%s: Secret %s: %v", field, name, err), false
	}
	if _, err := tls.X509KeyPair(crt, key); err != nil {
		return nil, fmt.Sprintf("%s: Secret %s: %s and %s are not a certificate and its key: %v", field, name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey, err), false
	}
	return map[string]string{corev1.TLSCertKey: string(crt), corev1.TLSPrivateKeyKey: string(key)}, "", false
}

// Bounds on a tenant's certificate and key, checked before the key is
// parsed: checking an RSA key costs time cubic in its primes' size, which
// the tenant chooses.
const (
	maxCertBytes = 64 << 10
	maxKeyBytes  = 16 << 10
	maxRSABits   = 8192
)

// boundedKeyPair refuses a certificate or key larger than the bounds, or
// an RSA key with a number beyond maxRSABits, reading only its ASN.1.
func boundedKeyPair(crt, key []byte) error {
	if len(crt) > maxCertBytes || len(key) > maxKeyBytes {
		return fmt.Errorf("%s and %s are %d and %d bytes; allowed: at most %d and %d", corev1.TLSCertKey, corev1.TLSPrivateKeyKey, len(crt), len(key), maxCertBytes, maxKeyBytes)
	}
	block, _ := pem.Decode(key)
	if block == nil {
		return fmt.Errorf("%s: no PEM block", corev1.TLSPrivateKeyKey)
	}
	der := block.Bytes
	if block.Type == "PRIVATE KEY" { // PKCS #8: RSA inside, or another kind
		var p8 struct {
			Version    int
			Algo       pkix.AlgorithmIdentifier
			PrivateKey []byte
		}
		if _, err := asn1.Unmarshal(der, &p8); err != nil || !p8.Algo.Algorithm.Equal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}) {
			return nil // not RSA, or left to the full parse to refuse
		}
		der = p8.PrivateKey
	} else if block.Type != "RSA PRIVATE KEY" {
		return nil
	}
	var rsaKey struct {
		Version          int
		N, E, D, P, Q    *big.Int
		Dp               *big.Int        `asn1:"optional"`
		Dq               *big.Int        `asn1:"optional"`
		Qinv             *big.Int        `asn1:"optional"`
		AdditionalPrimes []asn1.RawValue `asn1:"optional,omitempty"`
	}
	if _, err := asn1.Unmarshal(der, &rsaKey); err != nil {
		return fmt.Errorf("%s: not an RSA key: %v", corev1.TLSPrivateKeyKey, err)
	}
	if len(rsaKey.AdditionalPrimes) > 0 {
		return fmt.Errorf("%s: an RSA key of more than two primes is not allowed", corev1.TLSPrivateKeyKey)
	}
	for i, n := range []*big.Int{rsaKey.N, rsaKey.E, rsaKey.D, rsaKey.P, rsaKey.Q, rsaKey.Dp, rsaKey.Dq, rsaKey.Qinv} {
		if (n == nil && i < 5) || (n != nil && (n.Sign() < 0 || n.BitLen() > maxRSABits)) {
			return fmt.Errorf("%s: an RSA key beyond %d bits is not allowed", corev1.TLSPrivateKeyKey, maxRSABits)
		}
	}
	// An RSA key's two primes are each about half its modulus; the check's
	// cost grows with the cube of a prime's size.
	if rsaKey.P.BitLen() > maxRSABits/2 || rsaKey.Q.BitLen() > maxRSABits/2 {
		return fmt.Errorf("%s: an RSA key with a prime beyond %d bits is not allowed", corev1.TLSPrivateKeyKey, maxRSABits/2)
	}
	return nil
}

// Reconcile brings one Ingress's proxy and status in line.
func (r *WebReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ing networkingv1.Ingress
	if err := r.Client.Get(ctx, req.NamespacedName, &ing); err != nil {
		if apierrors.IsNotFound(err) {
			r.reported.Delete(req.String())
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !ing.DeletionTimestamp.IsZero() || !WantsWeb(&ing) {
		return r.finalizeWeb(ctx, &ing)
	}
	sp, problems, revoked := r.parse(ctx, &ing)
	// A Secret not granted (or no longer), or gone: the proxy serves the
	// tailnet's certificate meanwhile, and a copy it held goes with it.
	var withheld string
	if sp.tlsSecret != "" && len(problems) == 0 {
		var problem string
		var withdrawn bool
		if sp.cert, problem, withdrawn = r.tlsSecret(ctx, ing.Namespace, sp.tlsSecret, "spec.tls[].secretName"); withdrawn {
			withheld = problem
		} else if problem != "" {
			problems = append(problems, problem)
		}
	}
	if len(problems) > 0 {
		// Nothing is torn down for the tenant's bad edit (or a backend
		// Service not created yet): a running proxy keeps serving until
		// it is fixed. A namespace whose policy no longer admits it gets
		// its proxy taken down.
		if revoked {
			if res, err := r.finalizeWeb(ctx, &ing); err != nil || res.RequeueAfter > 0 {
				return res, err
			}
		}
		r.event(&ing, corev1.EventTypeWarning, ReasonInvalidWeb, strings.Join(problems, "; "))
		return reconcile.Result{RequeueAfter: 10 * time.Second}, nil
	}
	s := r.set(&ing, sp)
	if err := r.applyWeb(ctx, &ing, WebFinalizer, s); err != nil {
		var taken *proxyset.NameTakenError
		if errors.As(err, &taken) {
			r.event(&ing, corev1.EventTypeWarning, ReasonInvalidWeb, err.Error())
			return reconcile.Result{RequeueAfter: time.Minute}, nil
		}
		return reconcile.Result{}, err
	}
	if withheld != "" {
		r.event(&ing, corev1.EventTypeWarning, ReasonInvalidWeb, withheld+"; serving the tailnet's certificate meanwhile")
		return reconcile.Result{RequeueAfter: 10 * time.Second}, nil
	}
	devices, err := proxyset.Devices(ctx, r.Client, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	var lb []networkingv1.IngressLoadBalancerIngress
	if len(devices) > 0 {
		d := devices[0]
		lb = append(lb, networkingv1.IngressLoadBalancerIngress{Hostname: d.Hostname,
			Ports: []networkingv1.IngressPortStatus{{Port: 443, Protocol: corev1.ProtocolTCP}}})
		for _, ip := range d.TailnetIPs {
			lb = append(lb, networkingv1.IngressLoadBalancerIngress{IP: ip})
		}
	}
	if !slices.EqualFunc(ing.Status.LoadBalancer.Ingress, lb, func(a, b networkingv1.IngressLoadBalancerIngress) bool {
		return a.IP == b.IP && a.Hostname == b.Hostname
	}) {
		orig := ing.DeepCopy()
		ing.Status.LoadBalancer.Ingress = lb
		if err := r.Client.Status().Patch(ctx, &ing, client.MergeFrom(orig)); err != nil {
			return reconcile.Result{}, err
		}
	}
	if len(lb) == 0 {
		r.event(&ing, corev1.EventTypeWarning, ReasonProxyNotReady, notServing(ctx, r.Client, s))
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	r.event(&ing, corev1.EventTypeNormal, ReasonWebReady, fmt.Sprintf("serving https://%s (%s), %d routes", lb[0].Hostname, strings.Join(devices[0].TailnetIPs, ", "), len(sp.routes)))
	return reconcile.Result{RequeueAfter: time.Minute}, nil
}

// notServing says why a web proxy set serves no name yet: the
// certificate it could not get (ACME refused, rate limited, HTTPS not
// enabled on the tailnet), as its replica reports it, or that it is not
// on the tailnet yet.
func notServing(ctx context.Context, c client.Reader, s *proxyset.Set) string {
	var sec corev1.Secret
	var st contract.CertificateState
	if err := c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.SecretName(0)}, &sec); err == nil &&
		json.Unmarshal(sec.Data[contract.DeviceCertificate], &st) == nil && st.Error != "" {
		const most = 300 // the proxy's words, bounded
		if len(st.Error) > most {
			st.Error = st.Error[:most] + "…"
		}
		return "the proxy has no certificate yet: " + st.Error + " (the tailnet must issue HTTPS certificates: enable HTTPS in its DNS settings; its logs say more)"
	}
	return "the proxy is not on the tailnet yet"
}

// event records an Event on ing when its reason or message changed.
func (r *WebReconciler) event(ing *networkingv1.Ingress, kind, reason, msg string) {
	key := client.ObjectKeyFromObject(ing).String()
	if last, ok := r.reported.Load(key); ok && last == reason+"\x00"+msg {
		return
	}
	r.reported.Store(key, reason+"\x00"+msg)
	r.Log.Info("ingress", "ingress", key, "reason", reason, "message", msg)
	if r.Events != nil {
		r.Events.Eventf(ing, nil, kind, reason, "Reconcile", "%s", msg)
	}
}

// finalizeWeb logs the proxy out, deletes its set and lets the Ingress go
// (or stay, outside the class, its status cleared).
func (r *WebReconciler) finalizeWeb(ctx context.Context, ing *networkingv1.Ingress) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(ing, WebFinalizer) {
		return reconcile.Result{}, nil
	}
	s := r.set(ing, webSpec{})
	// What the proxy published, read before its state goes: the status is
	// cleared only if it still says that (after a move to another class,
	// that class's controller may have written its own).
	devices, err := proxyset.Devices(ctx, r.Client, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	ours := func(lb networkingv1.IngressLoadBalancerIngress) bool {
		for _, d := range devices {
			if (lb.Hostname != "" && lb.Hostname == d.Hostname) || (lb.IP != "" && slices.Contains(d.TailnetIPs, lb.IP)) {
				return true
			}
		}
		return false
	}
	done, err := proxyset.Delete(ctx, r.Client, r.Live, s, r.Logout, r.Log)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !done {
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
	}
	if lb := ing.Status.LoadBalancer.Ingress; ing.DeletionTimestamp.IsZero() && len(lb) > 0 && slices.ContainsFunc(lb, ours) {
		orig := ing.DeepCopy()
		ing.Status.LoadBalancer.Ingress = nil
		if err := r.Client.Status().Patch(ctx, ing, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
	}
	if err := r.patchFinalizers(ctx, ing, func() bool { return controllerutil.RemoveFinalizer(ing, WebFinalizer) }); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	r.reported.Delete(client.ObjectKeyFromObject(ing).String())
	return reconcile.Result{}, nil
}
