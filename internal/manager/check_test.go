package manager_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/check"
	"github.com/tsinject/tsinject/internal/manager"
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
	// The manager publishes the version it serves.
	waitFor(t, 30*time.Second, func() error {
		var wh admissionregistrationv1.MutatingWebhookConfiguration
		if err := c.Get(ctx, client.ObjectKey{Name: "tsinject"}, &wh); err != nil {
			return err
		}
		if wh.Annotations[manager.AnnotationConfigVersion] == "" {
			return fmt.Errorf("no %s on the webhook configuration", manager.AnnotationConfigVersion)
		}
		return nil
	})
	o := check.Options{Namespace: "tsinject-system", Deployment: "tsinject-manager", WebhookConfig: "tsinject", CertSecret: "tsinject-webhook-tls",
		ConfigVersionAnnotation: manager.AnnotationConfigVersion, Proxies: true}
	got := map[string]check.Result{}
	for _, r := range check.Run(ctx, c, o) {
		got[r.Name] = r
	}
	for _, name := range []string{"CRDs", "webhook", "webhook certificate", "namespace policies", "sidecar versions"} {
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
