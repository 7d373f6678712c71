package check

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/manager/nameserver"
)

var now = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)

var opts = Options{Namespace: "tsinject-system", Deployment: "tsinject-manager", WebhookConfig: "tsinject", CertSecret: "tsinject-webhook-tls",
	Now: func() time.Time { return now }}

// statusMap is the manager's status ConfigMap: its credential
// configuration and the configuration version it serves.
func statusMap(cfg credential.Config, version string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: contract.StatusConfigMap},
		Data: map[string]string{contract.StatusCredential: string(cfg.Published()), contract.StatusConfigVersion: version}}
}

var (
	federated       = credential.Config{Mode: credential.Federation, System: credential.Identity{ClientID: "kC8Hsk3CNTRL", Audience: credential.DefaultAudience}}
	federatedShared = credential.Config{Mode: credential.Federation, System: federated.System, NamespaceDefault: &credential.Identity{ClientID: "shared", Audience: credential.DefaultAudience}}
	registered      = credential.Config{Mode: credential.Register, Secret: "tsinject-authkey", SecretKey: contract.AuthSecretKey}
	copied          = credential.Config{Mode: credential.Copy, Secret: "tsinject-authkey", SecretKey: contract.AuthSecretKey}
	oauth           = credential.Config{Mode: credential.OAuth, Secret: "oauth"}
)

// enabled is a namespace labelled for injection, with annotations.
func enabled(name string, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{injector.LabelInjection: "enabled"}, Annotations: annotations}}
}

// credentialCheck reads the status as Run does, then checks the credential.
func credentialCheck(c client.Client) Result {
	ctx := context.Background()
	st, err := status(ctx, c, opts)
	return tailnetCredential(ctx, c, opts, st, err)
}

func deployment(ready int32) *appsv1.Deployment {
	two := int32(2)
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "tsinject-manager"},
		Spec:   appsv1.DeploymentSpec{Replicas: &two, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "manager"}}}}},
		Status: appsv1.DeploymentStatus{ReadyReplicas: ready}}
}

func build(objs ...client.Object) client.Client {
	s := runtime.NewScheme()
	clientgoscheme.AddToScheme(s)
	v1alpha1.AddToScheme(s)
	return fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
}

// Each check, its passing and failing states, step by step.
func TestChecks(t *testing.T) {
	ctx := context.Background()
	ca, _ := certs.NewCA(now.Add(-time.Hour), 365*24*time.Hour)
	otherCA, _ := certs.NewCA(now.Add(-time.Hour), 365*24*time.Hour)
	serving, _ := certs.Issue(ca, []string{"tsinject-webhook.tsinject-system.svc"}, nil, now.Add(-time.Hour), 10*24*time.Hour)
	webhookConfig := func(bundle []byte, version string) *admissionregistrationv1.MutatingWebhookConfiguration {
		return &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "tsinject"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "namespace.inject.tsinject.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: bundle}}}}
	}
	certSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "tsinject-webhook-tls"}, Data: map[string][]byte{corev1.TLSCertKey: serving.CertPEM}}
	authKey := func(expires string) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "tsinject-authkey"}, Data: map[string][]byte{contract.AuthSecretKey: []byte("tskey-auth-x")}}
		if expires != "" {
			s.Annotations = map[string]string{"tsinject.dev/expires": expires}
		}
		return s
	}
	status := func(version string) string {
		b, _ := json.Marshal(injector.Status{Version: version, Sidecar: "native"})
		return string(b)
	}
	injectedPod := func(name, version string, ready bool) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Annotations: map[string]string{injector.AnnotationStatus: status(version)}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, InitContainerStatuses: []corev1.ContainerStatus{{Name: contract.SidecarContainer, Ready: ready}}}}
	}
	for _, tc := range []struct {
		name    string
		check   func(client.Client) Result
		objs    []client.Object
		ok      bool
		warning bool
		detail  string // in Detail
	}{
		{"manager ready", func(c client.Client) Result { return manager(ctx, c, opts) }, []client.Object{deployment(2)}, true, false, "2 of 2 replicas ready"},
		{"manager degraded", func(c client.Client) Result { return manager(ctx, c, opts) }, []client.Object{deployment(1)}, true, true, "1 of 2"},
		{"manager down", func(c client.Client) Result { return manager(ctx, c, opts) }, []client.Object{deployment(0)}, false, false, "the webhook is down"},
		{"manager missing", func(c client.Client) Result { return manager(ctx, c, opts) }, nil, false, false, "Deployment tsinject-system/tsinject-manager"},
		{"certificate verified, expiring", func(c client.Client) Result { return webhookCert(ctx, c, opts) }, []client.Object{webhookConfig(ca.CertPEM, ""), certSecret}, true, true, "caBundle verifies the serving certificate; it expires 2027-01-10"},
		{"certificate from another CA", func(c client.Client) Result { return webhookCert(ctx, c, opts) }, []client.Object{webhookConfig(otherCA.CertPEM, ""), certSecret}, false, false, "the caBundle does not verify the serving certificate"},
		{"no caBundle", func(c client.Client) Result { return webhookCert(ctx, c, opts) }, []client.Object{webhookConfig(nil, ""), certSecret}, false, false, "no caBundle"},
		{"federation, each namespace its own identity", credentialCheck, []client.Object{statusMap(federated, ""), enabled("shop", map[string]string{credential.AnnotationClientID: "shop-id"})}, true, false, "1 enabled namespaces name their own identity"},
		{"federation, a namespace without one", credentialCheck, []client.Object{statusMap(federated, ""), enabled("shop", map[string]string{credential.AnnotationClientID: "shop-id"}), enabled("bare", nil)}, false, false, "so their pods are denied (no-credential): bare"},
		{"federation, the shared default", credentialCheck, []client.Object{statusMap(federatedShared, ""), enabled("bare", nil)}, true, true, "1 share the default shared (bare); WARNING: namespaces without their own"},
		{"auth key, expiry unknown", credentialCheck, []client.Object{statusMap(registered, ""), authKey("")}, true, false, "expiry not recorded"},
		{"auth key expiring", credentialCheck, []client.Object{statusMap(registered, ""), authKey("2027-01-05T00:00:00Z")}, true, true, "expires in 4 days"},
		{"auth key expired", credentialCheck, []client.Object{statusMap(copied, ""), authKey("2026-12-01T00:00:00Z")}, false, false, "expired at 2026-12-01T00:00:00Z"},
		{"auth key copied", credentialCheck, []client.Object{statusMap(copied, ""), authKey("")}, true, true, "WARNING: the auth key is copied into every namespace"},
		{"auth key Secret missing", credentialCheck, []client.Object{statusMap(registered, "")}, false, false, "auth key Secret tsinject-system/tsinject-authkey"},
		{"OAuth client incomplete", credentialCheck, []client.Object{statusMap(oauth, ""),
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "oauth"}, Data: map[string][]byte{"client_id": []byte("x")}}}, false, false, `has no "client_secret"`},
		{"not published", credentialCheck, nil, false, false, "ConfigMap tsinject-system/tsinject-manager-status"},
		{"API proxy served, a standby ready", apiProxiesCheck, apiProxy(2, "ts-apiserver-proxy-k8s-1", 1), true, false, "http://k8s.ts.net served by ts-apiserver-proxy-k8s-1 on node-b, 1 of 1 standbys ready"},
		{"API proxy served alone", apiProxiesCheck, apiProxy(1, "ts-apiserver-proxy-k8s-0", 0), true, true, "0 of 0 standbys ready"},
		{"API proxy standby down", apiProxiesCheck, apiProxy(3, "ts-apiserver-proxy-k8s-1", 0), true, true, "0 of 2 standbys ready"},
		{"API proxy dark", apiProxiesCheck, apiProxy(2, "", 0), false, false, "no replica serves http://k8s.ts.net"},
		{"ingress name served, a standby ready", ingressCheck, ingressSet("web", 2, 2, "ts-ingress-web-1"), true, false, "shop/web served by ts-ingress-web-1 on node-b, 1 of 1 standbys ready"},
		{"ingress name, its standby down", ingressCheck, ingressSet("web", 3, 1, "ts-ingress-web-0"), true, true, "shop/web served by ts-ingress-web-0 on node-b, 0 of 2 standbys ready"},
		{"ingress names of one replica", ingressCheck, append(ingressSet("a", 1, 1, "ts-ingress-a-0"), ingressSet("b", 1, 1, "ts-ingress-b-0")...), true, false, "2 served by their one replica"},
		{"ingress name dark", ingressCheck, append(ingressSet("web", 2, 0, ""), ingressSet("a", 1, 1, "ts-ingress-a-0")...), false, false, "no replica serves the name of shop/web; 1 served by their one replica"},
		{"no ingress names", ingressCheck, nil, true, false, "none"},
		{"Ingress certificate valid", certsCheck, webSet("grafana", &contract.CertificateState{NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(60 * 24 * time.Hour)}), true, false, "1 of 1 valid; the first to expire: shop/grafana, 2027-03-02T00:00:00Z"},
		{"Ingress certificate not renewed", certsCheck, webSet("grafana", &contract.CertificateState{NotBefore: now.Add(-85 * 24 * time.Hour), NotAfter: now.Add(5 * 24 * time.Hour), Error: "acme: rate limited"}), true, true, "shop/grafana: not renewed, expires 2027-01-06T00:00:00Z (acme: rate limited)"},
		{"Ingress certificate expired", certsCheck, webSet("grafana", &contract.CertificateState{NotBefore: now.Add(-91 * 24 * time.Hour), NotAfter: now.Add(-time.Hour)}), false, false, "shop/grafana: expired"},
		{"Ingress without a certificate", certsCheck, webSet("grafana", &contract.CertificateState{Error: "the tailnet issues no certificates"}), false, false, "shop/grafana: no certificate (the tailnet issues no certificates)"},
		{"Ingress certificate not reported yet", certsCheck, webSet("grafana", nil), true, false, "0 of 1 valid; not reported yet: shop/grafana"},
		{"Gateway certificate expired", certsCheck, append(webSet("grafana", &contract.CertificateState{NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(60 * 24 * time.Hour)}),
			gatewaySet("portal", &contract.CertificateState{NotBefore: now.Add(-91 * 24 * time.Hour), NotAfter: now.Add(-time.Hour)})...), false, false, "Gateway shop/portal: expired 2026-12-31T23:00:00Z; 1 of 2 valid"},
		{"pool ready", poolsCheck, []client.Object{pool("shared", metav1.ConditionTrue, "2 replicas on the tailnet, serving 50 Services")}, true, false, "shared: 2 replicas on the tailnet, serving 50 Services"},
		{"pool not ready", poolsCheck, []client.Object{pool("shared", metav1.ConditionTrue, "2 replicas on the tailnet, serving 50 Services"), pool("other", metav1.ConditionFalse, "0 of 2 replicas on the tailnet")}, false, false, "other: 0 of 2 replicas on the tailnet; shared: 2 replicas"},
		{"guardrails", guardrailsCheck, guardrailObjects("ghcr.io/tsinject/tsinject-proxy:*", "", nil), true, false, "9 admission policies hold the manager"},
		{"guardrails, namespace not restricted", guardrailsCheck, guardrailObjects("ghcr.io/tsinject/tsinject-proxy:*", "", map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}), false, false, "does not enforce the restricted Pod Security Standard"},
		{"guardrails, a policy missing", guardrailsCheck, guardrailObjects("ghcr.io/tsinject/tsinject-proxy:*", "", nil)[1:], false, false, "missing: ValidatingAdmissionPolicy tsinject-manager-webhook"},
		{"guardrails, the proxy image not allowed", guardrailsCheck, guardrailObjects("registry.example/other:*", "", nil), false, false, "does not allow the manager's --proxy-image ghcr.io/tsinject/tsinject-proxy:v1"},
		{"guardrails, another tailnet credential", guardrailsCheck, withParam(guardrailObjects("ghcr.io/tsinject/tsinject-proxy:*", "", nil), contract.AdmissionClientID, "other"), false, false, `clientID is "other"`},
		{"guardrails, another cluster domain", guardrailsCheck, withParam(guardrailObjects("ghcr.io/tsinject/tsinject-proxy:*", "", nil), contract.AdmissionClusterDomain, "example.internal"), false, false, `the manager's --cluster-domain "cluster.local"`},
		{"guardrails, another control server", guardrailsCheck, guardrailObjects("ghcr.io/tsinject/tsinject-proxy:*", "https://headscale.example", nil), false, false, `the manager's --control-url ""`},
		{"policies parse", func(c client.Client) Result { return listedPolicies(ctx, c) }, []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{injector.AnnotationDefaultTags: "tag:shop"}}}}, true, false, "1 namespaces set a policy"},
		{"bad policy", func(c client.Client) Result { return listedPolicies(ctx, c) }, []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{injector.AnnotationAllowUntagged: "maybe"}}}}, false, false, "namespace shop: annotation tsinject.dev/allow-untagged"},
		{"profile missing", func(c client.Client) Result { return listedPolicies(ctx, c) }, []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{injector.AnnotationProfile: "team"}}}}, false, false, `names SidecarProfile "team", which does not exist`},
		{"profile present", func(c client.Client) Result { return listedPolicies(ctx, c) }, []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{injector.AnnotationProfile: "team"}}},
			&v1alpha1.SidecarProfile{ObjectMeta: metav1.ObjectMeta{Name: "team"}}}, true, false, "1 namespaces set a policy"},
		{"CRDs missing", func(c client.Client) Result { return crds(ctx, c) }, nil, false, false, "is not installed"},
		{"no Gateway API", func(c client.Client) Result { return gatewayAPI(ctx, noGatewayAPI{c}) }, nil, true, false, "not installed: Gateways are not served"},
		{"Gateway API, class accepted", gatewayCheck, []client.Object{gatewayClass(services.GatewayController, true), gateway("portal", services.GatewayClass, true), gateway("edge", "nginx", false)}, true, false, "GatewayClass tsinject accepted; 1 of 1 Gateways programmed"},
		{"Gateway API, a Gateway not programmed", gatewayCheck, []client.Object{gatewayClass(services.GatewayController, true), gateway("portal", services.GatewayClass, false)}, true, true, "not programmed: shop/portal"},
		{"Gateway API installed after the manager", gatewayCheck, []client.Object{gatewayClass(services.GatewayController, false)}, false, false, "is not accepted by the manager"},
		{"Gateway API, the class another's", gatewayCheck, []client.Object{gatewayClass("example.com/gw", false)}, true, true, "names controller example.com/gw"},
		{"Gateway API, no class", gatewayCheck, nil, true, true, "there is no GatewayClass tsinject"},
		{"no nameserver", nameserverCheck, nil, true, false, "not installed"},
		{"nameserver, CoreDNS not told", nameserverCheck, nameserverObjects(""), false, false, "no server block for example.ts.net"},
		{"nameserver, no CoreDNS ConfigMap", nameserverCheck, nameserverObjects("")[:2], false, false, "reading ConfigMap kube-system/coredns"},
		{"nameserver, CoreDNS caches", nameserverCheck, nameserverObjects(strings.Replace(nameserver.CoreDNSSnippet([]string{"example.ts.net."}, "198.19.16.53", "cluster.local"), "errors", "errors\n    cache 30", 1)), false, false, "remove cache"},
		{"nameserver set up", nameserverCheck, nameserverObjects(nameserver.CoreDNSSnippet([]string{"example.ts.net."}, "198.19.16.53", "cluster.local")), true, false, "1 of 2 replicas ready at 198.19.16.53; CoreDNS sends it example.ts.net"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := runtime.NewScheme()
			clientgoscheme.AddToScheme(s)
			apiextensionsv1.AddToScheme(s)
			v1alpha1.AddToScheme(s)
			gatewayv1.Install(s)
			c := fake.NewClientBuilder().WithScheme(s).WithObjects(tc.objs...).WithStatusSubresource(&gatewayv1.GatewayClass{}).Build()
			r := tc.check(c)
			if r.OK != tc.ok || r.Warning != tc.warning || !strings.Contains(r.Detail, tc.detail) {
				t.Errorf("%+v: want ok=%v warning=%v, detail containing %q", r, tc.ok, tc.warning, tc.detail)
			}
			if (!r.OK || r.Warning) && r.Fix == "" && tc.name != "manager missing" {
				t.Errorf("%s: no fix given", tc.name)
			}
		})
	}

	t.Run("proxies", func(t *testing.T) {
		c := build(statusMap(federated, "v1-aaaa"), injectedPod("a", "v1-aaaa", true), injectedPod("b", "v0-bbbb", true), injectedPod("c", "v1-aaaa", false))
		rs := listedProxies(ctx, c)
		if r := rs[0]; r.OK || !strings.Contains(r.Detail, "1 of 3 injected pods' sidecars are not ready: shop/c") {
			t.Errorf("sidecars ready: %+v", r)
		}
		if r := rs[1]; !r.OK || !r.Warning || !strings.Contains(r.Detail, "shop/b (v0-bbbb)") || strings.Contains(r.Detail, "shop/a") {
			t.Errorf("sidecar versions: %+v", r)
		}
		if r := rs[3]; !r.OK || !strings.Contains(r.Detail, "no injected pod leaves through an exit node") {
			t.Errorf("exit nodes: %+v", r)
		}
	})
	t.Run("exit nodes", func(t *testing.T) {
		exiting := func(name, exit string) *corev1.Pod {
			p := injectedPod(name, "v1-aaaa", true)
			p.Spec.InitContainers = []corev1.Container{{Name: contract.SidecarContainer, Env: []corev1.EnvVar{{Name: contract.EnvUseExitNode, Value: exit}}}}
			return p
		}
		c := build(statusMap(federated, "v1-aaaa"), exiting("a", "office-exit"), exiting("b", "office-exit"), exiting("c", "mullvad"), injectedPod("d", "v1-aaaa", true))
		r := listedProxies(ctx, c)[3]
		if !r.OK || !strings.Contains(r.Detail, "mullvad: 1 pods (shop/c); office-exit: 2 pods (shop/a, shop/b)") || strings.Contains(r.Detail, "shop/d") {
			t.Errorf("exit nodes: %+v", r)
		}
	})
}

func apiProxiesCheck(c client.Client) Result { return apiServerProxies(context.Background(), c, opts) }
func ingressCheck(c client.Client) Result    { return ingressNames(context.Background(), c, opts) }
func poolsCheck(c client.Client) Result      { return proxyPools(context.Background(), c) }
func certsCheck(c client.Client) Result      { return webCertificates(context.Background(), c, opts) }
func gatewayCheck(c client.Client) Result    { return gatewayAPI(context.Background(), c) }
func nameserverCheck(c client.Client) Result {
	return clusterNameserver(context.Background(), c, opts)
}

// nameserverObjects: the nameserver's Service and Deployment (one of two
// replicas ready) and CoreDNS's ConfigMap with corefile.
func nameserverObjects(corefile string) []client.Object {
	dep := deployment(1)
	dep.Name = nameserverName
	dep.Spec.Template.Spec.Containers[0].Args = []string{"nameserver", "--zones=example.ts.net"}
	dep.Status.Replicas = 2
	return []client.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: nameserverName}, Spec: corev1.ServiceSpec{ClusterIP: "198.19.16.53"}},
		dep,
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"}, Data: map[string]string{"Corefile": ".:53 {\n    forward . /etc/resolv.conf\n}\n" + corefile}},
	}
}

// noGatewayAPI is a cluster without the Gateway API's CRDs.
type noGatewayAPI struct{ client.Client }

func (c noGatewayAPI) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*gatewayv1.GatewayClass); ok {
		return &meta.NoKindMatchError{GroupKind: services.GatewayAPI.WithKind("GatewayClass").GroupKind()}
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

func gatewayClass(controller string, accepted bool) *gatewayv1.GatewayClass {
	gc := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: services.GatewayClass, Generation: 1},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: gatewayv1.GatewayController(controller)}}
	if accepted {
		gc.Status.Conditions = []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: 1}}
	}
	return gc
}

func gateway(name, class string, programmed bool) *gatewayv1.Gateway {
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: gatewayv1.GatewaySpec{GatewayClassName: gatewayv1.ObjectName(class)}}
	if programmed {
		gw.Status.Conditions = []metav1.Condition{{Type: "Programmed", Status: metav1.ConditionTrue, Reason: "Programmed"}}
	}
	return gw
}

// webSet is the web proxy set of Ingress shop/<ing>, its state Secret
// holding st as the proxy reports it (nil: not yet).
func webSet(ing string, st *contract.CertificateState) []client.Object {
	labels := map[string]string{proxyset.LabelComponent: services.WebComponent, proxyset.LabelManagedBy: proxyset.ManagedBy,
		proxyset.LabelOwner: ing, proxyset.LabelOwnerNamespace: "shop"}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "ts-web-" + ing, Labels: labels}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: sts.Name + "-0"}}
	if st != nil {
		b, _ := json.Marshal(st)
		sec.Data = map[string][]byte{contract.DeviceCertificate: b}
	}
	return []client.Object{sts, sec}
}

// gatewaySet is webSet for Gateway shop/<gw>.
func gatewaySet(gw string, st *contract.CertificateState) []client.Object {
	objs := webSet(gw, st)
	objs[0].GetLabels()[proxyset.LabelComponent] = services.GatewayComponent
	objs[0].SetName("ts-gateway-" + gw)
	objs[1].SetName("ts-gateway-" + gw + "-0")
	return objs
}

// ingressSet is the proxy set of ingress Service shop/<svc>: replicas,
// ready of them, its state Secret's serving record naming servedBy (on
// node-b).
func ingressSet(svc string, replicas, ready int32, servedBy string) []client.Object {
	labels := map[string]string{proxyset.LabelComponent: services.IngressComponent, proxyset.LabelManagedBy: proxyset.ManagedBy,
		proxyset.LabelOwner: svc, proxyset.LabelOwnerNamespace: "shop"}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "ts-ingress-" + svc, Labels: labels},
		Spec: appsv1.StatefulSetSpec{Replicas: &replicas}, Status: appsv1.StatefulSetStatus{ReadyReplicas: ready}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: sts.Name + "-0"}}
	if servedBy == "" {
		return []client.Object{sts, sec}
	}
	sec.Annotations = map[string]string{contract.AnnotationServing: contract.ServingRecord{Pod: servedBy, Renewed: now}.String()}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: servedBy}, Spec: corev1.PodSpec{NodeName: "node-b"}}
	return []client.Object{sts, sec, pod}
}

// pool is a ProxyPool whose Ready condition is status, saying message.
func pool(name string, status metav1.ConditionStatus, message string) *v1alpha1.ProxyPool {
	return &v1alpha1.ProxyPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: v1alpha1.ProxyPoolStatus{
		Conditions: []metav1.Condition{{Type: "Ready", Status: status, Reason: "x", Message: message}}}}
}

// apiProxy is an APIServerProxy of replicas, served by the named replica
// (on node-b) with standbys ready.
func apiProxy(replicas int32, servedBy string, standbys int32) []client.Object {
	p := &v1alpha1.APIServerProxy{ObjectMeta: metav1.ObjectMeta{Name: "k8s"}, Spec: v1alpha1.APIServerProxySpec{Replicas: &replicas},
		Status: v1alpha1.APIServerProxyStatus{URLs: []string{"http://k8s.ts.net"}, ServedBy: servedBy, StandbysReady: standbys}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: servedBy}, Spec: corev1.PodSpec{NodeName: "node-b"}}
	if servedBy == "" {
		return []client.Object{p}
	}
	return []client.Object{p, pod}
}

// listedPolicies is policies with the profiles listed, as Run does.
func listedPolicies(ctx context.Context, c client.Client) Result {
	var sps v1alpha1.SidecarProfileList
	err := c.List(ctx, &sps)
	return policies(ctx, c, sps.Items, err)
}

// listedProxies is proxies with the status and profiles listed, as Run does.
func listedProxies(ctx context.Context, c client.Client) []Result {
	var sps v1alpha1.SidecarProfileList
	err := c.List(ctx, &sps)
	st, _ := status(ctx, c, opts)
	return proxies(ctx, c, st, sps.Items, err)
}

// guardrailObjects is an installation whose admission params allow
// images and control, its namespace labelled labels (default: restricted).
func guardrailObjects(images, control string, labels map[string]string) []client.Object {
	var objs []client.Object
	for _, p := range contract.AdmissionPolicies {
		objs = append(objs, &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: p}},
			&admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: p}})
	}
	if labels == nil {
		labels = map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
	}
	st := statusMap(federated, "v1")
	st.Data[contract.StatusProxyImage] = "ghcr.io/tsinject/tsinject-proxy:v1"
	st.Data[contract.StatusControlURL] = ""
	st.Data[contract.StatusClusterDomain] = "cluster.local"
	params := federated.AdmissionParams()
	params[contract.AdmissionProxyImages], params[contract.AdmissionControlURL] = images, control
	params[contract.AdmissionClusterDomain] = "cluster.local"
	return append(objs, st,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tsinject-system", Labels: labels}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: contract.AdmissionParams}, Data: params})
}

// withParam sets one admission param of guardrailObjects' installation.
func withParam(objs []client.Object, key, value string) []client.Object {
	params := objs[len(objs)-1].(*corev1.ConfigMap)
	params.Data[key] = value
	return objs
}

func guardrailsCheck(c client.Client) Result {
	ctx := context.Background()
	st, _ := status(ctx, c, opts)
	return guardrails(ctx, c, opts, st)
}
