package services

import (
	"context"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/internal/contract"
)

func backendService(name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: "198.19.16.20", ClusterIPs: []string{"fd00:16::20", "198.19.16.20"}, Ports: ports}}
}

func webIngress(mutate ...func(*networkingv1.Ingress)) *networkingv1.Ingress {
	class, prefix, exact := IngressClass, networkingv1.PathTypePrefix, networkingv1.PathTypeExact
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "grafana"},
		Spec: networkingv1.IngressSpec{IngressClassName: &class,
			TLS: []networkingv1.IngressTLS{{Hosts: []string{"shop-grafana"}}},
			Rules: []networkingv1.IngressRule{{IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{
				{Path: "/", PathType: &prefix, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Name: "http"}}}},
				{Path: "/grpc.health.v1.Health", PathType: &prefix, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "api", Port: networkingv1.ServiceBackendPort{Number: 9000}}}},
				{Path: "/healthz", PathType: &exact, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}},
			}}}}},
		}}
	for _, m := range mutate {
		m(ing)
	}
	return ing
}

func newWebReconciler(t *testing.T, objs ...client.Object) (*WebReconciler, client.Client, *events.FakeRecorder) {
	h2c := AppProtocolH2C
	objs = append(objs, backendService("web", corev1.ServicePort{Name: "http", Port: 80}),
		backendService("api", corev1.ServicePort{Name: "grpc", Port: 9000, AppProtocol: &h2c}))
	b, c := newBase(t, objs...)
	rec := events.NewFakeRecorder(100)
	b.Events = rec
	return &WebReconciler{Base: b, ClusterDomain: "cluster.local"}, c, rec
}

func reconcileWeb(t *testing.T, r *WebReconciler) {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Namespace: "shop", Name: "grafana"}}); err != nil {
		t.Fatal(err)
	}
}

func lastEvent(rec *events.FakeRecorder) string {
	var last string
	for {
		select {
		case e := <-rec.Events:
			last = e
		default:
			return last
		}
	}
}

// An Ingress of class tsinject, step by step: a web proxy set named by
// its TLS host, routing its paths to its Services' cluster addresses
// (HTTP/2 without TLS to an h2c port); the proxy's name and addresses in
// status.loadBalancer and an Event once it reports; leaving the class
// takes it all away.
func TestWebIngressLifecycle(t *testing.T) {
	ctx := context.Background()
	r, c, rec := newWebReconciler(t, webIngress())
	reconcileWeb(t, r)
	var ing networkingv1.Ingress
	key := client.ObjectKey{Namespace: "shop", Name: "grafana"}
	if err := c.Get(ctx, key, &ing); err != nil {
		t.Fatal(err)
	}
	s := r.set(&ing, webSpec{})
	var sts appsv1.StatefulSet
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &sts); err != nil {
		t.Fatalf("no proxy set (events: %s): %v", lastEvent(rec), err)
	}
	if !strings.HasPrefix(s.Name(), "ts-web-grafana-") || sts.Spec.Template.Spec.Containers[0].Args[0] != "web" {
		t.Errorf("set %s runs %v", s.Name(), sts.Spec.Template.Spec.Containers[0].Args)
	}
	env := envOf(&sts)
	for k, want := range map[string]string{contract.EnvHostname: "shop-grafana", contract.EnvTags: "tag:shop", contract.EnvWebTLS: contract.WebTLSTailnet, contract.EnvOneName: "true"} {
		if env[k] != want {
			t.Errorf("proxy env %s = %q, want %q", k, env[k], want)
		}
	}
	routes, err := contract.ParseWebRoutes(env[contract.EnvWebRoutes])
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rt := range routes {
		b := rt.Backends[0]
		got = append(got, rt.Path+map[bool]string{true: "=", false: "*"}[rt.Exact]+" "+b.Addr+map[bool]string{true: " h2c", false: ""}[b.H2C])
	}
	// By name, not address: a deleted Service's address, handed to another
	// namespace's later, is never dialled.
	if want := "/* web.shop.svc.cluster.local:80|/grpc.health.v1.Health* api.shop.svc.cluster.local:9000 h2c|/healthz= web.shop.svc.cluster.local:80"; strings.Join(got, "|") != want {
		t.Errorf("routes %q, want %q", strings.Join(got, "|"), want)
	}
	if !strings.Contains(lastEvent(rec), "ProxyNotReady") {
		t.Error("no Event saying the proxy is not on the tailnet yet")
	}

	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.SecretName(0)}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{contract.DeviceFQDN: []byte(`"shop-grafana.example.ts.net"`), contract.DeviceIPs: []byte(`["100.64.0.9"]`)}
	if err := c.Update(ctx, &sec); err != nil {
		t.Fatal(err)
	}
	reconcileWeb(t, r)
	if err := c.Get(ctx, key, &ing); err != nil {
		t.Fatal(err)
	}
	lb := ing.Status.LoadBalancer.Ingress
	if len(lb) != 2 || lb[0].Hostname != "shop-grafana.example.ts.net" || lb[0].Ports[0].Port != 443 || lb[1].IP != "100.64.0.9" {
		t.Errorf("status.loadBalancer.ingress %+v", lb)
	}
	if e := lastEvent(rec); !strings.Contains(e, "Normal OnTailnet serving https://shop-grafana.example.ts.net") {
		t.Errorf("event %q", e)
	}

	ing.Spec.IngressClassName = nil
	if err := c.Update(ctx, &ing); err != nil {
		t.Fatal(err)
	}
	reconcileWeb(t, r)
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("StatefulSet still there (err %v)", err)
	}
	if err := c.Get(ctx, key, &ing); err != nil {
		t.Fatal(err)
	}
	if len(ing.Finalizers) != 0 || len(ing.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("after leaving the class: finalizers %v, status %+v", ing.Finalizers, ing.Status.LoadBalancer)
	}
}

// What the controller cannot serve as asked gets an Event naming the
// field and what is allowed, and no proxy.
func TestWebIngressInvalid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*networkingv1.Ingress)
		want   string
	}{
		{"backend Service missing", func(i *networkingv1.Ingress) {
			i.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name = "nope"
		}, "spec.rules[0].http.paths[0].backend.service.name: Service shop/nope does not exist"},
		{"port missing", func(i *networkingv1.Ingress) {
			i.Spec.Rules[0].HTTP.Paths[2].Backend.Service.Port.Number = 81
		}, "spec.rules[0].http.paths[2].backend.service.port: Service web has no port 81"},
		{"resource backend", func(i *networkingv1.Ingress) {
			i.Spec.Rules[0].HTTP.Paths[0].Backend = networkingv1.IngressBackend{Resource: &corev1.TypedLocalObjectReference{Kind: "Bucket", Name: "b"}}
		}, "only Service backends are allowed"},
		{"two TLS Secrets", func(i *networkingv1.Ingress) {
			i.Spec.TLS = []networkingv1.IngressTLS{{SecretName: "a"}, {SecretName: "b"}}
		}, `spec.tls[1].secretName: "b": one Secret per Ingress`},
		{"name outside the namespace's", func(i *networkingv1.Ingress) { i.Spec.TLS[0].Hosts = []string{"billing"} }, "spec.tls[0].hosts[0]:"},
		{"bad name annotation", func(i *networkingv1.Ingress) {
			i.Annotations = map[string]string{AnnotationHostname: "Bad_Name"}
		}, `annotation tsinject.dev/hostname: "Bad_Name" is not allowed as the tailnet name`},
		{"tags outside the policy", func(i *networkingv1.Ingress) {
			i.Annotations = map[string]string{AnnotationTags: "tag:admin"}
		}, "tags of the proxies"},
		{"bad capability", func(i *networkingv1.Ingress) {
			i.Annotations = map[string]string{AnnotationRequireCapability: "a, b"}
		}, "annotation tsinject.dev/require-capability"},
		{"namespace not enabled", func(i *networkingv1.Ingress) { i.Namespace = "plain" }, "namespace plain is not enabled"},
		{"nothing to serve", func(i *networkingv1.Ingress) { i.Spec.Rules = nil }, "spec: no backend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ing := webIngress(tc.mutate)
			r, c, rec := newWebReconciler(t, ing)
			if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(ing)}); err != nil {
				t.Fatal(err)
			}
			if e := lastEvent(rec); !strings.Contains(e, "Warning InvalidIngress") || !strings.Contains(e, tc.want) {
				t.Errorf("event %q, want one containing %q", e, tc.want)
			}
			var list appsv1.StatefulSetList
			if err := c.List(context.Background(), &list); err != nil || len(list.Items) != 0 {
				t.Errorf("proxy sets %d (%v), want none", len(list.Items), err)
			}
		})
	}
}

// countingReader counts the reads of Services.
type countingReader struct {
	client.Reader
	gets int
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.gets++
	return c.Reader.Get(ctx, key, obj, opts...)
}

// One Ingress cannot hold the controller up: too many paths are refused
// before any Service is read, and each Service is read once.
func TestWebIngressBounded(t *testing.T) {
	many := webIngress(func(i *networkingv1.Ingress) {
		paths := i.Spec.Rules[0].HTTP.Paths
		for len(paths) <= contract.MaxWebRoutes {
			paths = append(paths, paths[0])
		}
		i.Spec.Rules[0].HTTP.Paths = paths
	})
	r, _, rec := newWebReconciler(t, many)
	live := &countingReader{Reader: r.Live}
	r.Live = live
	reconcileWeb(t, r)
	if e := lastEvent(rec); live.gets != 0 || !strings.Contains(e, "spec.rules: 257 paths and backends; allowed: at most 256") {
		t.Errorf("%d Services read; event %q", live.gets, e)
	}

	r, _, _ = newWebReconciler(t, webIngress())
	live = &countingReader{Reader: r.Live}
	r.Live = live
	reconcileWeb(t, r)
	if live.gets != 2 {
		t.Errorf("%d Service reads for 3 paths to 2 Services, want 2", live.gets)
	}
}

// A namespace no longer enabled takes its Ingresses' proxies down (a
// tenant's bad edit leaves them serving); an Ingress moved to another
// class keeps the status that class's controller wrote.
func TestWebIngressTakenDown(t *testing.T) {
	ctx := context.Background()
	r, c, rec := newWebReconciler(t, webIngress())
	reconcileWeb(t, r)
	key := client.ObjectKey{Namespace: "shop", Name: "grafana"}
	var ing networkingv1.Ingress
	if err := c.Get(ctx, key, &ing); err != nil {
		t.Fatal(err)
	}
	s := r.set(&ing, webSpec{})
	// A bad edit: the proxy stays.
	ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name = "nope"
	if err := c.Update(ctx, &ing); err != nil {
		t.Fatal(err)
	}
	reconcileWeb(t, r)
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &appsv1.StatefulSet{}); err != nil {
		t.Fatalf("a bad edit took the proxy down: %v", err)
	}
	// The namespace's label removed: the proxy goes, the Event says why.
	var ns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: "shop"}, &ns); err != nil {
		t.Fatal(err)
	}
	ns.Labels = nil
	if err := c.Update(ctx, &ns); err != nil {
		t.Fatal(err)
	}
	reconcileWeb(t, r)
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("the namespace's policy revoked, the proxy is still there (%v)", err)
	}
	if e := lastEvent(rec); !strings.Contains(e, "namespace shop is not enabled") {
		t.Errorf("event %q", e)
	}

	// Moved to another class whose controller already wrote its status.
	r, c, _ = newWebReconciler(t, webIngress())
	reconcileWeb(t, r)
	if err := c.Get(ctx, key, &ing); err != nil {
		t.Fatal(err)
	}
	nginx := "nginx"
	ing.Spec.IngressClassName = &nginx
	if err := c.Update(ctx, &ing); err != nil {
		t.Fatal(err)
	}
	ing.Status.LoadBalancer.Ingress = []networkingv1.IngressLoadBalancerIngress{{IP: "198.19.16.99"}}
	if err := c.Status().Update(ctx, &ing); err != nil {
		t.Fatal(err)
	}
	reconcileWeb(t, r)
	if err := c.Get(ctx, key, &ing); err != nil {
		t.Fatal(err)
	}
	if len(ing.Finalizers) != 0 || len(ing.Status.LoadBalancer.Ingress) != 1 || ing.Status.LoadBalancer.Ingress[0].IP != "198.19.16.99" {
		t.Errorf("after the move: finalizers %v, status %+v (want the other controller's kept)", ing.Finalizers, ing.Status.LoadBalancer)
	}
}

// tlsPair is a certificate for grafana.shop.example and its key, PEM.
func tlsPair(t *testing.T) (crt, key []byte) {
	t.Helper()
	ca, err := certs.NewCA(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := certs.Issue(ca, []string{"grafana.shop.example"}, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return kp.CertPEM, kp.KeyPEM
}

// An Ingress naming a kubernetes.io/tls Secret: the manager reads it only
// where the tenant granted it that Secret (the Event says how), checks it
// is a certificate and its key, and has the proxy serve a copy of it in
// place of the tailnet's certificate.
func TestWebIngressSecretCertificate(t *testing.T) {
	ctx := context.Background()
	crt, key := tlsPair(t)
	withSecret := func(i *networkingv1.Ingress) { i.Spec.TLS[0].SecretName = "grafana-tls" }
	secret := func(typ corev1.SecretType, crt, key []byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "grafana-tls"}, Type: typ,
			Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}
	}
	for _, tc := range []struct {
		name      string
		secret    *corev1.Secret
		forbidden bool
		copyMode  bool
		want      string // in the last Event; "" for served
		tailnet   bool   // the proxy serves the tailnet's certificate meanwhile (else: no proxy)
	}{
		{"granted", secret(corev1.SecretTypeTLS, crt, key), false, false, "", false},
		{"not granted", secret(corev1.SecretTypeTLS, crt, key), true, false,
			"tsinject may not read Secret shop/grafana-tls: grant it that one Secret (kubectl -n shop create role tsinject-read-grafana-tls --verb=get --resource=secrets --resource-name=grafana-tls && kubectl -n shop create rolebinding tsinject-read-grafana-tls --role=tsinject-read-grafana-tls --serviceaccount=tsinject-system:tsinject-manager)", true},
		{"missing", nil, false, false, "spec.tls[].secretName: Secret shop/grafana-tls does not exist", true},
		{"auth-key copy mode", secret(corev1.SecretTypeTLS, crt, key), false, true, "not served in auth-key copy mode", true},
		{"may read every Secret", secret(corev1.SecretTypeTLS, crt, key), false, false, "tsinject may read every Secret in namespace shop", true},
		{"not TLS", secret(corev1.SecretTypeOpaque, crt, key), false, false, `Secret grafana-tls is of type "Opaque"; allowed: kubernetes.io/tls`, false},
		{"key of another certificate", secret(corev1.SecretTypeTLS, crt, func() []byte { _, k := tlsPair(t); return k }()), false, false, "are not a certificate and its key", false},
		{"a key too costly to check", secret(corev1.SecretTypeTLS, crt, craftedRSAKey(6000)), false, false, "an RSA key with a prime beyond 4096 bits is not allowed", false},
		{"a key too large", secret(corev1.SecretTypeTLS, crt, craftedRSAKey(8192+16)), false, false, "an RSA key beyond 8192 bits is not allowed", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := []client.Object{webIngress(withSecret)}
			if tc.secret != nil {
				objs = append(objs, tc.secret)
			}
			r, c, rec := newWebReconciler(t, objs...)
			r.ManagerAccount = "tsinject-system:tsinject-manager"
			r.ReadsEverySecret = tc.copyMode
			if tc.forbidden {
				r.Live = forbidSecrets(c)
			}
			if tc.name == "may read every Secret" {
				r.Client = interceptor.NewClient(c.(client.WithWatch), interceptor.Funcs{Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					if ssar, ok := obj.(*authorizationv1.SelfSubjectAccessReview); ok {
						ssar.Status.Allowed = true
						return nil
					}
					return cl.Create(ctx, obj, opts...)
				}})
			}
			start := time.Now()
			reconcileWeb(t, r)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("one reconcile took %s", took)
			}
			var list appsv1.StatefulSetList
			if err := c.List(ctx, &list); err != nil {
				t.Fatal(err)
			}
			if tc.want != "" {
				if e := lastEvent(rec); !strings.Contains(e, "Warning InvalidIngress") || !strings.Contains(e, tc.want) {
					t.Errorf("event %q, want one containing %q", e, tc.want)
				}
				switch {
				case !tc.tailnet && len(list.Items) != 0:
					t.Errorf("%d proxy sets, want none", len(list.Items))
				case tc.tailnet && (len(list.Items) != 1 || envOf(&list.Items[0])[contract.EnvWebTLS] != contract.WebTLSTailnet):
					t.Errorf("proxy sets %d, want one serving the tailnet's certificate meanwhile", len(list.Items))
				}
				var files corev1.SecretList
				if err := c.List(ctx, &files, client.InNamespace("tsinject-system")); err != nil {
					t.Fatal(err)
				}
				for _, f := range files.Items {
					if len(f.Data[corev1.TLSPrivateKeyKey]) > 0 {
						t.Errorf("%s holds a copy of the key", f.Name)
					}
				}
				return
			}
			if len(list.Items) != 1 {
				t.Fatalf("%d proxy sets (event %s)", len(list.Items), lastEvent(rec))
			}
			env := envOf(&list.Items[0])
			if env[contract.EnvWebTLS] != contract.WebTLSFiles || env[contract.EnvWebCertDir] != contract.WebCertDir {
				t.Errorf("proxy env %v, want the files in %s", env, contract.WebCertDir)
			}
			var files corev1.Secret
			if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: list.Items[0].Name + "-files"}, &files); err != nil {
				t.Fatal(err)
			}
			if string(files.Data[corev1.TLSCertKey]) != string(crt) || string(files.Data[corev1.TLSPrivateKeyKey]) != string(key) {
				t.Errorf("the set's files hold %v, want the Secret's certificate and key", files.Data)
			}
		})
	}
}

// Why the proxy has no certificate, as it reports it, is on the Ingress.
func TestWebIngressCertificateRefused(t *testing.T) {
	r, c, rec := newWebReconciler(t, webIngress())
	reconcileWeb(t, r)
	var ing networkingv1.Ingress
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "grafana"}, &ing); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "tsinject-system", Name: r.set(&ing, webSpec{}).SecretName(0)}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{contract.DeviceCertificate: []byte(`{"error":"acme: 429 urn:ietf:params:acme:error:rateLimited"}`)}
	if err := c.Update(context.Background(), &sec); err != nil {
		t.Fatal(err)
	}
	reconcileWeb(t, r)
	if e := lastEvent(rec); !strings.Contains(e, "Warning ProxyNotReady the proxy has no certificate yet: acme: 429 urn:ietf:params:acme:error:rateLimited") {
		t.Errorf("event %q", e)
	}
}

// forbidSecrets is c without the right to read tenants' Secrets.
func forbidSecrets(c client.Client) client.Client {
	return interceptor.NewClient(c.(client.WithWatch), interceptor.Funcs{Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if _, ok := obj.(*corev1.Secret); ok && key.Namespace == "shop" {
			return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, key.Name, errors.New("no RBAC"))
		}
		return cl.Get(ctx, key, obj, opts...)
	}})
}

// craftedRSAKey is a PKCS #1 key whose prime P has pBits bits and no CRT
// values: checking it costs time cubic in pBits.
func craftedRSAKey(pBits int) []byte {
	p := new(big.Int).Lsh(big.NewInt(1), uint(pBits-1))
	p.Or(p, big.NewInt(0x1234567))
	n := new(big.Int).Mul(p, big.NewInt(3))
	der, err := asn1.Marshal(struct {
		Version int
		N       *big.Int
		E       int
		D, P, Q *big.Int
	}{0, n, 65537, big.NewInt(1), p, big.NewInt(3)})
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der})
}

// The tenant withdraws its grant, or the Ingress stops naming the
// Secret: the copy of its key goes, and the proxy serves the tailnet's
// certificate.
func TestWebIngressSecretCopyGoes(t *testing.T) {
	ctx := context.Background()
	crt, key := tlsPair(t)
	for _, how := range []string{"grant withdrawn", "secretName removed"} {
		t.Run(how, func(t *testing.T) {
			ing := webIngress(func(i *networkingv1.Ingress) { i.Spec.TLS[0].SecretName = "grafana-tls" })
			sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "grafana-tls"}, Type: corev1.SecretTypeTLS,
				Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}
			r, c, _ := newWebReconciler(t, ing, sec)
			reconcileWeb(t, r)
			s := r.set(ing, webSpec{})
			var files corev1.Secret
			if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.FilesName()}, &files); err != nil {
				t.Fatalf("no copy to begin with: %v", err)
			}
			if how == "grant withdrawn" {
				r.Live = forbidSecrets(c)
			} else {
				if err := c.Get(ctx, client.ObjectKeyFromObject(ing), ing); err != nil {
					t.Fatal(err)
				}
				ing.Spec.TLS[0].SecretName = ""
				if err := c.Update(ctx, ing); err != nil {
					t.Fatal(err)
				}
			}
			reconcileWeb(t, r)
			if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.FilesName()}, &files); !apierrors.IsNotFound(err) {
				t.Errorf("the copy of the tenant's key stays (%v)", err)
			}
			var sts appsv1.StatefulSet
			if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &sts); err != nil || envOf(&sts)[contract.EnvWebTLS] != contract.WebTLSTailnet {
				t.Errorf("proxy %v (%v), want it serving the tailnet's certificate", envOf(&sts), err)
			}
		})
	}
}
