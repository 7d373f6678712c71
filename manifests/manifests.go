// Package manifests embeds the kustomize base and overlays, so tests and
// the sandbox install exactly what users apply.
package manifests

import (
	"bytes"
	"embed"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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

// AdmissionPolicy returns the objects of the base's admission policies
// (manifests/base/admission-policy.yaml): their params ConfigMap, with
// params (contract.Admission* keys) replacing the base's values, then the
// policies and bindings.
func AdmissionPolicy(params map[string]string) ([]*unstructured.Unstructured, error) {
	b, err := FS.ReadFile("base/admission-policy.yaml")
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, fmt.Errorf("base/admission-policy.yaml: %w", err)
		}
		if u.GetKind() == "ConfigMap" {
			data, _ := u.Object["data"].(map[string]any)
			for k, v := range params {
				if _, ok := data[k]; !ok {
					return nil, fmt.Errorf("admission param %q: the base has no such key", k)
				}
				data[k] = v
			}
		}
		out = append(out, &u)
	}
	return out, nil
}
