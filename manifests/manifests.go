// Package manifests embeds the kustomize base and overlays, so tests and
// the sandbox install exactly what users apply.
package manifests

import (
	"bytes"
	"embed"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// FS holds base/, components/ and overlays/.
//
//go:embed base components overlays
var FS embed.FS

// ImpersonatorRole returns the ClusterRole the apiserver-proxy component
// installs for auth-mode API server proxies (and the chart with
// apiServerProxy.enabled).
func ImpersonatorRole() (*rbacv1.ClusterRole, error) {
	b, err := FS.ReadFile("components/apiserver-proxy/rbac.yaml")
	if err != nil {
		return nil, err
	}
	first, _, _ := bytes.Cut(b, []byte("\n---\n"))
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(first, &role); err != nil {
		return nil, fmt.Errorf("components/apiserver-proxy/rbac.yaml: %w", err)
	}
	return &role, nil
}

// WebhookConfiguration returns the base's MutatingWebhookConfiguration. If
// url is set, every webhook calls it instead of the in-cluster Service (an
// out-of-cluster manager, as in tests and the sandbox).
func WebhookConfiguration(url string) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	b, err := FS.ReadFile("base/webhook.yaml")
	if err != nil {
		return nil, err
	}
	var wh admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(b, &wh); err != nil {
		return nil, fmt.Errorf("base/webhook.yaml: %w", err)
	}
	if url != "" {
		for i := range wh.Webhooks {
			wh.Webhooks[i].ClientConfig.Service = nil
			wh.Webhooks[i].ClientConfig.URL = &url
		}
	}
	return &wh, nil
}
