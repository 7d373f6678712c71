package services

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

type namespaces struct{ c client.Reader }

func (n namespaces) Namespace(ctx context.Context, name string) (injector.Namespace, error) {
	var ns corev1.Namespace
	if err := n.c.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
		return injector.Namespace{}, err
	}
	out := injector.Namespace{Name: name, Labels: ns.Labels, Annotations: ns.Annotations}
	for _, p := range injector.ProfileNames(ns.Annotations) {
		var sp v1alpha1.SidecarProfile
		if err := n.c.Get(ctx, client.ObjectKey{Name: p}, &sp); err == nil {
			if out.Profiles == nil {
				out.Profiles = map[string]*v1alpha1.SidecarProfile{}
			}
			out.Profiles[p] = &sp
		}
	}
	return out, nil
}

func newBase(t *testing.T, objs ...client.Object) (Base, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme, networkingv1.AddToScheme, policyv1.AddToScheme, v1alpha1.AddToScheme, gatewayv1.Install, authorizationv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	shop := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop",
		Labels:      map[string]string{injector.LabelInjection: "enabled"},
		Annotations: map[string]string{injector.AnnotationDefaultTags: "tag:shop", injector.AnnotationAllowedTags: "tag:shop-db"}}}
	plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}
	// client-go's own schema fails the fake client's server-side apply of
	// NetworkPolicies ("expected objects with types from the same
	// schema"); the deduced one merges them as the API server does here
	// (controllers/proxyset TestApplyKeepsWhatOthersSet applies one to the
	// real API server).
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(append(objs, shop, plain)...).
		WithTypeConverters(managedfields.NewDeducedTypeConverter()).
		WithStatusSubresource(&corev1.Service{}, &v1alpha1.ProxyPool{}, &networkingv1.Ingress{}, &gatewayv1.Gateway{}, &gatewayv1.HTTPRoute{}, &gatewayv1.GatewayClass{}).
		WithInterceptorFuncs(interceptor.Funcs{Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*authorizationv1.SelfSubjectAccessReview); ok {
				return nil // as the API server answers the manager: no broad Secret rights
			}
			return cl.Create(ctx, obj, opts...)
		}}).Build()
	cfg := injector.DefaultConfig()
	cred := credential.Config{Mode: credential.Copy, Secret: "tsinject-authkey", SecretKey: "authkey"}
	cfg.Credential = cred
	return Base{
		Client: c, Live: c, Namespace: "tsinject-system", ProxyImage: "tsinject-proxy:test", ControlURL: "https://control.example",
		Credential: cred.ForProxies,
		Logout:     func(context.Context, map[string][]byte) error { return nil },
		Namespaces: namespaces{c}, Injector: injector.New(cfg), Log: logr.Discard(),
	}, c
}

func newReconciler(t *testing.T, objs ...client.Object) (*EgressReconciler, client.Client) {
	b, c := newBase(t, objs...)
	return &EgressReconciler{Base: b, ClusterDomain: "cluster.local"}, c
}

func egressService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db", Annotations: map[string]string{
			AnnotationTailnetFQDN: "db.example.ts.net", AnnotationReplicas: "2",
		}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "placeholder",
			Ports: []corev1.ServicePort{
				{Name: "pg", Port: 5432},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(5353)},
			}},
	}
}

func reconcileOnce(t *testing.T, r reconcile.Reconciler) {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Namespace: "shop", Name: "db"}}); err != nil {
		t.Fatal(err)
	}
}

func condition(t *testing.T, c client.Client) *metav1.Condition {
	t.Helper()
	var svc corev1.Service
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "db"}, &svc); err != nil {
		t.Fatal(err)
	}
	return meta.FindStatusCondition(svc.Status.Conditions, EgressReady)
}

func envOf(sts *appsv1.StatefulSet) map[string]string {
	out := map[string]string{}
	for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
		out[e.Name] = e.Value
	}
	return out
}

// report writes what replica i would report into its state Secret.
func report(t *testing.T, c client.Client, setName string, i int, st contract.EgressTargetState) {
	t.Helper()
	ctx := context.Background()
	var sec corev1.Secret
	key := client.ObjectKey{Namespace: "tsinject-system", Name: setName + "-" + string(rune('0'+i))}
	if err := c.Get(ctx, key, &sec); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	sec.Data = map[string][]byte{contract.DeviceFQDN: []byte(`"shop-db-egress-` + string(rune('0'+i)) + `.example.ts.net"`), contract.DeviceEgressTarget: b}
	if err := c.Update(ctx, &sec); err != nil {
		t.Fatal(err)
	}
}

// An egress Service, step by step: the proxy set and its Service appear,
// the externalName points at them, and status follows what the replicas
// report; removing the annotation takes it all away.
func TestEgressServiceLifecycle(t *testing.T) {
	ctx := context.Background()
	r, c := newReconciler(t, egressService())
	var loggedOut []string
	r.Logout = func(_ context.Context, state map[string][]byte) error {
		loggedOut = append(loggedOut, string(state[contract.DeviceFQDN]))
		return nil
	}
	reconcileOnce(t, r)

	var svc corev1.Service
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "db"}, &svc); err != nil {
		t.Fatal(err)
	}
	s := r.set(&svc, egressSpec{})
	name := s.Name()
	if want := name + ".tsinject-system.svc.cluster.local"; svc.Spec.ExternalName != want {
		t.Errorf("externalName %q, want %q", svc.Spec.ExternalName, want)
	}
	if !strings.Contains(strings.Join(svc.Finalizers, ","), EgressFinalizer) {
		t.Errorf("finalizers %v lack %s", svc.Finalizers, EgressFinalizer)
	}
	var sts appsv1.StatefulSet
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: name}, &sts); err != nil {
		t.Fatal(err)
	}
	env := envOf(&sts)
	for k, want := range map[string]string{
		contract.EnvTarget: "db.example.ts.net", contract.EnvPorts: "5432/tcp,53:5353/udp",
		contract.EnvTags: "tag:shop", contract.EnvHostnamePrefix: "shop-db-egress",
	} {
		if env[k] != want {
			t.Errorf("proxy env %s = %q, want %q", k, env[k], want)
		}
	}
	if *sts.Spec.Replicas != 2 || sts.Spec.Template.Spec.Containers[0].Args[0] != "egress" {
		t.Errorf("StatefulSet: %d replicas, args %v", *sts.Spec.Replicas, sts.Spec.Template.Spec.Containers[0].Args)
	}
	if sc := sts.Spec.Template.Spec.SecurityContext; len(sc.Sysctls) != 1 || sc.Sysctls[0].Name != "net.ipv4.ip_unprivileged_port_start" {
		t.Errorf("port 53 needs the unprivileged-port sysctl; got %v", sc.Sysctls)
	}
	if len(sts.OwnerReferences) != 0 || sts.Labels[proxyset.LabelOwnerNamespace] != "shop" {
		t.Errorf("a Service in another namespace cannot own the set: owners %v, labels %v", sts.OwnerReferences, sts.Labels)
	}
	var proxySvc corev1.Service
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: name}, &proxySvc); err != nil {
		t.Fatal(err)
	}
	if len(proxySvc.Spec.Ports) != 2 || proxySvc.Spec.Ports[1].Protocol != corev1.ProtocolUDP || proxySvc.Spec.Ports[1].TargetPort.IntVal != 53 ||
		proxySvc.Spec.Selector[proxyset.LabelOwnerNamespace] != "shop" {
		t.Errorf("proxy Service %+v", proxySvc.Spec)
	}
	// Only the Service's namespace may reach its proxies' ports (they act
	// with its tailnet identity); their health port stays open.
	var np networkingv1.NetworkPolicy
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: name}, &np); err != nil {
		t.Fatalf("no NetworkPolicy for the proxies: %v", err)
	}
	if in := np.Spec.Ingress; len(in) != 2 || len(in[0].From) != 1 || in[0].From[0].NamespaceSelector == nil ||
		in[0].From[0].NamespaceSelector.MatchLabels[corev1.LabelMetadataName] != "shop" || len(in[0].Ports) != 2 ||
		len(in[1].From) != 0 || in[1].Ports[0].Port.IntVal != contract.HealthPort ||
		np.Spec.PodSelector.MatchLabels[proxyset.LabelOwnerNamespace] != "shop" {
		t.Errorf("NetworkPolicy %+v: want the proxy ports open to namespace shop only, the health port to all", np.Spec)
	}
	if cond := condition(t, c); cond == nil || cond.Reason != ReasonProxyNotReady {
		t.Fatalf("before the replicas report: %+v", cond)
	}

	// One replica reaches the target: the Service is ready.
	report(t, c, name, 0, contract.EgressTargetState{Reason: contract.EgressTargetReachable, Addrs: []string{"100.64.0.5"}})
	report(t, c, name, 1, contract.EgressTargetState{Reason: contract.EgressTargetDialFails, Message: "timeout"})
	reconcileOnce(t, r)
	if cond := condition(t, c); cond == nil || cond.Status != metav1.ConditionTrue || !strings.Contains(cond.Message, "100.64.0.5") {
		t.Fatalf("one replica reaches the target: %+v", cond)
	}
	// None does: the condition says why.
	for i := range 2 {
		report(t, c, name, i, contract.EgressTargetState{Reason: contract.EgressTargetUnknown, Message: "no peer is named db.example.ts.net"})
	}
	reconcileOnce(t, r)
	if cond := condition(t, c); cond == nil || cond.Reason != contract.EgressTargetUnknown || !strings.Contains(cond.Message, "no peer is named") {
		t.Fatalf("target unknown: %+v", cond)
	}

	// The annotation goes: so do the proxies, and the finalizer.
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "db"}, &svc); err != nil {
		t.Fatal(err)
	}
	delete(svc.Annotations, AnnotationTailnetFQDN)
	if err := c.Update(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	reconcileOnce(t, r)
	for _, obj := range []client.Object{&appsv1.StatefulSet{}, &corev1.Service{}, &corev1.Secret{}, &corev1.ServiceAccount{}, &rbacv1.Role{}} {
		n := name
		if _, ok := obj.(*corev1.Secret); ok {
			n = name + "-0"
		}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: n}, obj); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s still there after the annotation went (err %v)", obj, n, err)
		}
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "db"}, &svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Finalizers) != 0 || meta.FindStatusCondition(svc.Status.Conditions, EgressReady) != nil {
		t.Errorf("after removal: finalizers %v, conditions %v", svc.Finalizers, svc.Status.Conditions)
	}
	// Each replica's device is logged out from its stored state before
	// the state goes.
	if strings.Join(loggedOut, " ") != `"shop-db-egress-0.example.ts.net" "shop-db-egress-1.example.ts.net"` {
		t.Errorf("logged out %v, want both replicas' devices", loggedOut)
	}
}

// Each bad request is refused with the field and what is allowed, and
// nothing is created.
func TestEgressServiceInvalid(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*corev1.Service)
		want   string
	}{
		{"not ExternalName", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP }, "spec.type"},
		{"both targets", func(s *corev1.Service) { s.Annotations[AnnotationTailnetIP] = "100.64.0.5" }, "not both"},
		{"an IP as FQDN", func(s *corev1.Service) { s.Annotations[AnnotationTailnetFQDN] = "100.64.0.5" }, AnnotationTailnetIP},
		{"bad IP", func(s *corev1.Service) {
			delete(s.Annotations, AnnotationTailnetFQDN)
			s.Annotations[AnnotationTailnetIP] = "db"
		}, "is not an IP address"},
		{"no ports", func(s *corev1.Service) { s.Spec.Ports = nil }, "spec.ports: empty"},
		{"SCTP", func(s *corev1.Service) { s.Spec.Ports[0].Protocol = corev1.ProtocolSCTP }, "spec.ports[0].protocol"},
		{"named target port", func(s *corev1.Service) { s.Spec.Ports[0].TargetPort = intstr.FromString("pg") }, "spec.ports[0].targetPort"},
		{"health port", func(s *corev1.Service) { s.Spec.Ports[0].Port = contract.HealthPort }, "health and metrics port"},
		{"zero replicas", func(s *corev1.Service) { s.Annotations[AnnotationReplicas] = "0" }, "1 to 16"},
		{"tag beyond the policy", func(s *corev1.Service) { s.Annotations[AnnotationTags] = "tag:admin" }, "tag:admin is not allowed in namespace shop"},
		{"namespace not enabled", func(s *corev1.Service) { s.Namespace = "plain" }, "not enabled for tsinject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := egressService()
			tt.modify(svc)
			r, c := newReconciler(t, svc)
			if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(svc)}); err != nil {
				t.Fatal(err)
			}
			var got corev1.Service
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(svc), &got); err != nil {
				t.Fatal(err)
			}
			cond := meta.FindStatusCondition(got.Status.Conditions, EgressReady)
			if cond == nil || cond.Reason != ReasonInvalidEgress || !strings.Contains(cond.Message, tt.want) {
				t.Fatalf("condition %+v, want %s mentioning %q", cond, ReasonInvalidEgress, tt.want)
			}
			var list appsv1.StatefulSetList
			if err := c.List(context.Background(), &list); err != nil {
				t.Fatal(err)
			}
			if len(list.Items) != 0 || got.Spec.ExternalName != svc.Spec.ExternalName {
				t.Errorf("an invalid Service got %d StatefulSets, externalName %q", len(list.Items), got.Spec.ExternalName)
			}
		})
	}
}

// Proxy sets of Services in different namespaces never share a name, even
// when namespace and name join to the same string.
func TestProxySetNamesDoNotCollide(t *testing.T) {
	r := &EgressReconciler{Base: Base{Namespace: "tsinject-system", Credential: (&credential.Config{Mode: credential.Copy, Secret: "tsinject-authkey", SecretKey: "authkey"}).ForProxies}}
	name := func(ns, n string) string {
		return r.set(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n}}, egressSpec{}).Name()
	}
	if a, b := name("a-b", "c"), name("a", "b-c"); a == b {
		t.Errorf("a-b/c and a/b-c share proxy set %s", a)
	}
	long := strings.Repeat("x", 63)
	if n := name(long, long); len(n) > 48 {
		t.Errorf("proxy set name %q is %d characters; a StatefulSet's pods need <= 48", n, len(n))
	}
}

// The proxies of a namespace's Services are scheduled as its SidecarProfile
// says (over the cluster default's); a profile the namespace names but
// that does not exist holds them back, and the condition says so.
func TestServiceProxiesFollowTheNamespacesProfile(t *testing.T) {
	teams := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "teams",
		Labels:      map[string]string{injector.LabelInjection: "enabled"},
		Annotations: map[string]string{injector.AnnotationDefaultTags: "tag:teams", injector.AnnotationProfile: "edge"}}}
	def := &v1alpha1.SidecarProfile{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.DefaultProfile},
		Spec: v1alpha1.SidecarProfileSpec{Proxy: &v1alpha1.ProxyConfig{PriorityClassName: "tailnet", NodeSelector: map[string]string{"pool": "any"}}}}
	edge := &v1alpha1.SidecarProfile{ObjectMeta: metav1.ObjectMeta{Name: "edge"},
		Spec: v1alpha1.SidecarProfileSpec{Proxy: &v1alpha1.ProxyConfig{NodeSelector: map[string]string{"pool": "edge"}}}}
	svc := egressService()
	svc.Namespace = "teams"
	key := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(svc)}

	r, c := newReconciler(t, svc, teams, def)
	if _, err := r.Reconcile(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	var got corev1.Service
	if err := c.Get(context.Background(), key.NamespacedName, &got); err != nil {
		t.Fatal(err)
	}
	if cond := meta.FindStatusCondition(got.Status.Conditions, EgressReady); cond == nil || !strings.Contains(cond.Message, `SidecarProfile "edge", which does not exist`) {
		t.Fatalf("condition %+v: want the missing profile named", cond)
	}

	if err := c.Create(context.Background(), edge); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	var list appsv1.StatefulSetList
	if err := c.List(context.Background(), &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("StatefulSets: %d, %v", len(list.Items), err)
	}
	spec := list.Items[0].Spec.Template.Spec
	if spec.PriorityClassName != "tailnet" || spec.NodeSelector["pool"] != "edge" {
		t.Errorf("proxy pod: priority %q, nodeSelector %v: want the default's priority and the namespace profile's pool", spec.PriorityClassName, spec.NodeSelector)
	}
}
