// Package manifests embeds the kustomize base and overlays, so tests and
// the sandbox install exactly what users apply.
package manifests

import (
	"embed"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// FS holds base/ and overlays/.
//
//go:embed base overlays
var FS embed.FS

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
