package integration_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/manager/check"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/poll"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/tier"
	"github.com/tsinject/tsinject/test/tsapi"
)

// tsinject check against a real API server and the manager serving the
// webhook: the CRDs are this release's, a dry-run pod comes back
// injected, and an injected pod runs the configuration version the
// manager publishes. (The manager runs in-process here, with no
// Deployment: the e2e story checks that part on a real installation.)
func TestCheckAgainstAPIServer(t *testing.T) {
	e := start(t, nil)
	ctx := context.Background()
	e.namespace(t, "shop", map[string]string{injector.LabelInjection: "enabled"})
	if err := e.cl.Create(ctx, pod("shop", "app")); err != nil {
		t.Fatal(err)
	}
	scheme := manager.Scheme()
	apiextensionsv1.AddToScheme(scheme)
	c, err := client.New(e.c.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	// The manager publishes the version it serves and its credential mode.
	waitFor(t, 30*time.Second, func() error {
		var cm corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: contract.StatusConfigMap}, &cm); err != nil {
			return err
		}
		for _, k := range []string{contract.StatusConfigVersion, contract.StatusCredential} {
			if cm.Data[k] == "" {
				return fmt.Errorf("no %s in the status ConfigMap: %v", k, cm.Data)
			}
		}
		return nil
	})
	o := check.Options{Namespace: "tsinject-system", Deployment: "tsinject-manager", WebhookConfig: "tsinject", CertSecret: "tsinject-webhook-tls",
		Proxies: true}
	got := map[string]check.Result{}
	for _, r := range check.Run(ctx, c, o) {
		got[r.Name] = r
	}
	for _, name := range []string{"CRDs", "webhook", "webhook certificate", "namespace policies", "sidecar versions", "sidecar profiles"} {
		if r, ok := got[name]; !ok || !r.OK || r.Warning {
			t.Errorf("check %q: %+v, want a pass", name, r)
		}
	}
	if r := got["webhook"]; r.Detail != "a dry-run pod in namespace shop came back injected" {
		t.Errorf("webhook check: %q", r.Detail)
	}
	if r := got["manager"]; r.OK {
		t.Errorf("manager check passed with no Deployment: %+v", r)
	}
}

// tsinject check proves the credential at the tailnet's API, creating
// nothing: a token of an injected namespace's ServiceAccount is exchanged
// (federation), or the OAuth client obtains an access token. A trust that
// does not hold, or a wrong secret, fails with the API's own refusal.
func TestCheckTriesTheCredential(t *testing.T) {
	ctx := context.Background()
	e := &env{c: clustertest.Start(t, cluster.Options{CRDDirs: crds(), Scheme: manager.Scheme()})}
	e.cl = e.c.Client
	for _, ns := range []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "tsinject-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{injector.LabelInjection: "enabled"}, Annotations: map[string]string{credential.AnnotationClientID: "client-shop"}}}} {
		if err := e.cl.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	issuer, hc, err := cluster.OpenIssuerDiscovery(ctx, e.c.Config)
	if err != nil {
		t.Fatal(err)
	}
	api := &tsapi.Server{Client: hc,
		Credentials:  []tsapi.Credential{{ClientID: "client-shop", Issuer: issuer, Audience: "tsinject.dev/test", Subject: "system:serviceaccount:shop:*", Scopes: []string{tsapi.ScopeAuthKeys}, Tags: []string{"tag:shop"}}},
		OAuthClients: []tsapi.OAuthClient{{ID: "oauth-id", Secret: "oauth-secret", Scopes: []string{tsapi.ScopeAuthKeys}, Tags: []string{"tag:shop"}}},
	}
	srv := httptest.NewServer(api)
	defer srv.Close()
	// envtest runs no controller-manager to make it.
	if err := e.cl.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "default"}}); err != nil {
		t.Fatal(err)
	}
	scheme := manager.Scheme()
	apiextensionsv1.AddToScheme(scheme)
	c, err := client.New(e.c.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "oauth"},
		Data: map[string][]byte{"client_id": []byte("oauth-id"), "client_secret": []byte("oauth-secret")}}); err != nil {
		t.Fatal(err)
	}
	deploy := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "tsinject-manager"},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "m"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "m"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "tsinject"}}}}}}
	if err := c.Create(ctx, deploy); err != nil {
		t.Fatal(err)
	}
	o := check.Options{Namespace: "tsinject-system", Deployment: "tsinject-manager", WebhookConfig: "tsinject", CertSecret: "tsinject-webhook-tls",
		TryCredential: true, HTTPClient: srv.Client()}
	system := credential.Identity{ClientID: "client-system", Audience: "tsinject.dev/test"}
	publish := func(cfg credential.Config) {
		t.Helper()
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: contract.StatusConfigMap},
			Data: map[string]string{contract.StatusCredential: string(cfg.Published()), contract.StatusControlURL: srv.URL}}
		if err := c.Delete(ctx, cm); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		if err := c.Create(ctx, cm); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		cfg  credential.Config
		ok   bool
		want string
	}{
		{"federation", credential.Config{Mode: credential.Federation, System: system}, true, "exchanged a token of ServiceAccount shop/default (audience tsinject.dev/test)"},
		{"federation, wrong audience", credential.Config{Mode: credential.Federation, System: credential.Identity{ClientID: "client-system", Audience: "tsinject.dev/other"}}, false, "was not exchanged"},
		{"OAuth client", oauthMode, true, "accepted by " + srv.URL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if cfg.Mode == credential.OAuth {
				cfg.Secret = "oauth"
			}
			publish(cfg)
			var got check.Result
			for _, r := range check.Run(ctx, c, o) {
				if r.Name == "tailnet credential" {
					got = r
				}
			}
			if got.OK != tc.ok || !strings.Contains(got.Detail, tc.want) {
				t.Errorf("%+v: want ok=%v, detail containing %q", got, tc.ok, tc.want)
			}
		})
	}
	// A wrong secret.
	var sec corev1.Secret
	publish(credential.Config{Mode: credential.OAuth, Secret: "oauth"})
	c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: "oauth"}, &sec)
	sec.Data["client_secret"] = []byte("wrong")
	if err := c.Update(ctx, &sec); err != nil {
		t.Fatal(err)
	}
	for _, r := range check.Run(ctx, c, o) {
		if r.Name == "tailnet credential" && (r.OK || !strings.Contains(r.Detail, "wrong secret")) {
			t.Errorf("wrong OAuth secret: %+v", r)
		}
	}
	if len(api.Mints()) != 0 {
		t.Errorf("check created keys: %+v", api.Mints())
	}
}

// The manager's leader asks the control server for its keys and publishes
// whether it answered; tsinject check reads it. A control server that
// does not answer (here a closed port on loopback) fails the check.
func TestCheckControlServerFromTheManager(t *testing.T) {
	tier.Needs(t, tier.Tailnet)
	tn, err := tailnet.Start(tailnet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	closed := poll.FreeAddr()
	for _, tc := range []struct {
		name, url string
		ok        bool
		want      string
	}{
		{"answers", tn.ControlURL(), true, "the manager reaches " + tn.ControlURL()},
		{"closed", "http://" + closed, false, "the manager cannot reach http://" + closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, func(o *manager.Options) {
				o.Injector.ControlURL = tc.url
				o.ControlProbeEvery = 100 * time.Millisecond
			})
			o := check.Options{Namespace: "tsinject-system", WebhookConfig: "tsinject"}
			var got check.Result
			waitFor(t, 30*time.Second, func() error {
				for _, r := range check.Run(context.Background(), e.cl, o) {
					if r.Name == "control server" {
						got = r
					}
				}
				if got.Warning || got.OK != tc.ok || !strings.Contains(got.Detail, tc.want) {
					return fmt.Errorf("%+v: want ok=%v, detail containing %q", got, tc.ok, tc.want)
				}
				return nil
			})
			if !tc.ok && got.Fix == "" {
				t.Errorf("no fix: %+v", got)
			}
		})
	}
}

// Each failure tsinject check names, on a real API server (no manager
// runs here: the objects are set as a broken installation has them).
func TestCheckFailuresAgainstAPIServer(t *testing.T) {
	ctx := context.Background()
	c := clustertest.Start(t, cluster.Options{CRDDirs: crds(), Scheme: manager.Scheme()})
	scheme := manager.Scheme()
	apiextensionsv1.AddToScheme(scheme)
	cl, err := client.New(c.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"tsinject-system", "shop"} {
		if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	ca, _ := certs.NewCA(now.Add(-time.Hour), 365*24*time.Hour)
	other, _ := certs.NewCA(now.Add(-time.Hour), 365*24*time.Hour)
	serving, _ := certs.Issue(ca, []string{"tsinject-webhook.tsinject-system.svc"}, nil, now.Add(-time.Hour), 30*24*time.Hour)
	zero := int32(0)
	labels := map[string]string{"app": "tsinject-manager"}
	url := "https://tsinject-webhook.tsinject-system.svc/inject-pod"
	none := admissionregistrationv1.SideEffectClassNone
	objs := []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "tsinject-webhook-tls"},
			Data: map[string][]byte{corev1.TLSCertKey: serving.CertPEM, corev1.TLSPrivateKeyKey: serving.KeyPEM}},
		// A CA bundle from another CA than the one that signed the certificate.
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: contract.StatusConfigMap}, Data: map[string]string{contract.StatusConfigVersion: "v2-new"}},
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "tsinject"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "namespace.inject.tsinject.dev", AdmissionReviewVersions: []string{"v1"}, SideEffects: &none,
				ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: other.CertPEM},
				// Selects nothing: this installation's webhook is not running.
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"nothing": "here"}}}}},
		// Scaled to zero.
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "tsinject-manager"},
			Spec: appsv1.DeploymentSpec{Replicas: &zero, Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "tsinject", Args: []string{"manager", "--federation-client-id=x"}}}}}}},
		// A pod injected with an older configuration, and profiles one of
		// which is gone and the other changed since (it is at generation 1).
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "old", Annotations: map[string]string{injector.AnnotationStatus: `{"version":"v1-old","sidecar":"native","volumes":[],"profiles":["gone@4","team@0"]}`}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}},
		&v1alpha1.SidecarProfile{ObjectMeta: metav1.ObjectMeta{Name: "team"}},
		// A namespace naming a profile nobody created.
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "profiled", Annotations: map[string]string{injector.AnnotationProfile: "gpu"}}},
	}
	for _, o := range objs {
		if err := cl.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// A CRD missing.
	if err := cl.Delete(ctx, &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: "connectors.tsinject.dev"}}); err != nil {
		t.Fatal(err)
	}
	o := check.Options{Namespace: "tsinject-system", Deployment: "tsinject-manager", WebhookConfig: "tsinject", CertSecret: "tsinject-webhook-tls",
		Proxies: true}
	var got map[string]check.Result
	waitFor(t, 30*time.Second, func() error {
		got = map[string]check.Result{}
		for _, r := range check.Run(ctx, cl, o) {
			got[r.Name] = r
		}
		if r := got["CRDs"]; r.OK {
			return fmt.Errorf("CRDs still pass (deletion pending): %+v", r)
		}
		return nil
	})
	for name, want := range map[string]string{
		"CRDs":                "connectors.tsinject.dev is not installed",
		"manager":             "0 of 0 replicas ready: the webhook is down",
		"webhook certificate": "the caBundle does not verify the serving certificate",
		"namespace policies":  `namespace profiled: annotation tsinject.dev/profile names SidecarProfile "gpu", which does not exist`,
	} {
		if r := got[name]; r.OK || !strings.Contains(r.Detail, want) || r.Fix == "" {
			t.Errorf("check %q: %+v; want a failure saying %q, with a fix", name, r, want)
		}
	}
	if r := got["sidecar versions"]; !r.Warning || !strings.Contains(r.Detail, "shop/old (v1-old)") || r.Fix == "" {
		t.Errorf("check \"sidecar versions\": %+v; want a warning naming shop/old (v1-old), with a fix", r)
	}
	if r := got["sidecar profiles"]; !r.Warning || !strings.Contains(r.Detail, "shop/old (gone@4, now deleted)") || !strings.Contains(r.Detail, "team@0, now @1") || r.Fix == "" {
		t.Errorf("check \"sidecar profiles\": %+v; want a warning naming shop/old's two stale profiles, with a fix", r)
	}
	if !check.Failed(check.Run(ctx, cl, o)) {
		t.Error("check.Failed is false for a broken installation")
	}
}
