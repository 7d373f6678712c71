package manifests_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ctrlapiproxy "github.com/tsinject/tsinject/controllers/apiserverproxies"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/manifests"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/gatewayapi"
)

func kubectl(t *testing.T, kubeconfig string, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// certManagerCRDs is the directory of cert-manager's CRDs in its module.
func certManagerCRDs(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		t.Fatalf("locating the cert-manager module: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
}

// gatewayAPICRDs is the directory of the Gateway API's standard CRDs.
func gatewayAPICRDs(t *testing.T) string {
	t.Helper()
	dir, err := gatewayapi.StandardCRDs()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// The kustomize base and the cert-manager overlay render with kubectl and
// the real API server accepts every object.
func TestManifestsApply(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{CRDDirs: []string{certManagerCRDs(t), gatewayAPICRDs(t)}})
	for _, dir := range []string{"base", "overlays/gateway-api", "overlays/apiserver-proxy", "overlays/cert-manager"} {
		t.Run(dir, func(t *testing.T) {
			rendered := kubectl(t, c.Kubeconfig, nil, "kustomize", dir)
			out := kubectl(t, c.Kubeconfig, rendered, "apply", "--server-side", "--field-manager=tsinject-test", "-f", "-")
			for _, want := range []string{"namespace/tsinject-system", "deployment.apps/tsinject-manager", "mutatingwebhookconfiguration.admissionregistration.k8s.io/tsinject", "poddisruptionbudget.policy/tsinject-manager"} {
				if !bytes.Contains(out, []byte(want)) {
					t.Errorf("apply output lacks %s:\n%s", want, out)
				}
			}
		})
	}
	var wh admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Client.Get(context.Background(), client.ObjectKey{Name: "tsinject"}, &wh); err != nil {
		t.Fatal(err)
	}
	if wh.Annotations["cert-manager.io/inject-ca-from"] != "tsinject-system/tsinject-webhook" {
		t.Errorf("overlay did not annotate the webhook for cainjector: %v", wh.Annotations)
	}
}

// The manager's ServiceAccount holds what docs/security.md lists and no
// more, as the API server's RBAC sees it: without API server proxies it
// can neither impersonate nor write RBAC; with them it may bind exactly
// the impersonation role, and still not impersonate or write ClusterRoles.
func TestManagerRights(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{CRDDirs: []string{certManagerCRDs(t)}})
	as := "--as=system:serviceaccount:tsinject-system:tsinject-manager"
	can := func(args ...string) bool {
		cmd := exec.Command("kubectl", append([]string{"--kubeconfig", c.Kubeconfig, "auth", "can-i", as}, args...)...)
		out, _ := cmd.Output()
		return strings.TrimSpace(string(out)) == "yes"
	}
	never := [][]string{
		{"impersonate", "users"}, {"impersonate", "groups"}, {"impersonate", "serviceaccounts"},
		{"create", "clusterroles"}, {"update", "clusterroles"}, {"escalate", "clusterroles"},
		{"bind", "clusterroles/cluster-admin"}, {"create", "roles", "-n", "default"},
		{"create", "pods", "-n", "default"}, {"delete", "namespaces"}, {"create", "servicecidrs.networking.k8s.io"},
		// Egress Services: the manager edits annotated Services, but
		// makes and deletes Services only in its own namespace.
		{"create", "services", "-n", "default"}, {"delete", "services", "-n", "default"},
		// SidecarProfiles are the admins': the manager only reads them.
		{"create", "sidecarprofiles.tsinject.dev"}, {"update", "sidecarprofiles.tsinject.dev"}, {"delete", "sidecarprofiles.tsinject.dev"},
		// Disruption budgets for its proxies only: a budget elsewhere
		// could block every drain of the tenants' pods.
		{"create", "poddisruptionbudgets.policy", "-n", "default"},
	}
	for _, step := range []struct {
		dir              string
		allowed, refused [][]string
	}{
		{"base", [][]string{{"get", "pods", "-n", "default"}, {"create", "statefulsets", "-n", "tsinject-system"}, {"list", "clusterrolebindings"}, {"list", "servicecidrs.networking.k8s.io"},
			{"get", "secrets", "-n", "tsinject-system"}, {"create", "secrets", "-n", "tsinject-system"}, {"create", "tokenreviews.authentication.k8s.io"},
			{"update", "services", "-n", "default"}, {"update", "services/status", "-n", "default"}, {"update", "services/finalizers", "-n", "default"},
			{"create", "services", "-n", "tsinject-system"}, {"delete", "services", "-n", "tsinject-system"},
			{"list", "sidecarprofiles.tsinject.dev"}, {"watch", "sidecarprofiles.tsinject.dev"},
			{"watch", "nodes"}, {"list", "endpointslices.discovery.k8s.io", "-n", "default"},
			{"patch", "configmaps/tsinject-manager-status", "-n", "tsinject-system"}, {"create", "leases.coordination.k8s.io", "-n", "tsinject-system"},
			{"create", "poddisruptionbudgets.policy", "-n", "tsinject-system"}, {"delete", "poddisruptionbudgets.policy", "-n", "tsinject-system"}},
			append([][]string{{"create", "clusterrolebindings"}, {"bind", "clusterroles/tsinject-apiserver-proxy"},
				{"get", "secrets", "-n", "default"}, {"list", "secrets", "--all-namespaces"}, {"create", "secrets", "-n", "default"},
				{"list", "endpointslices.discovery.k8s.io", "-n", "shop"}, {"update", "nodes"},
				{"patch", "configmaps/tsinject-admission", "-n", "tsinject-system"}, {"delete", "configmaps", "-n", "tsinject-system"}}, never...)},
		{"overlays/apiserver-proxy", [][]string{{"create", "clusterrolebindings"}, {"bind", "clusterroles/tsinject-apiserver-proxy"}},
			append([][]string{{"get", "secrets", "-n", "default"}}, never...)},
		// Auth-key mode adds Secrets everywhere (the copies), nothing else.
		{"overlays/auth-key", [][]string{{"list", "secrets", "--all-namespaces"}, {"create", "secrets", "-n", "default"}}, never},
	} {
		rendered := kubectl(t, c.Kubeconfig, nil, "kustomize", step.dir)
		kubectl(t, c.Kubeconfig, rendered, "apply", "--server-side", "--field-manager=tsinject-test", "-f", "-")
		if !can("get", "pods", "-n", "default") {
			t.Fatalf("%s: the manager may not even read pods: is RBAC on?", step.dir)
		}
		for _, a := range step.allowed {
			if !can(a...) {
				t.Errorf("%s: the manager may not %v, which it needs", step.dir, a)
			}
		}
		for _, r := range step.refused {
			if can(r...) {
				t.Errorf("%s: the manager may %v", step.dir, r)
			}
		}
	}
}

// The shipped impersonation role is exactly what the controller documents.
func TestImpersonatorRole(t *testing.T) {
	role, err := manifests.ImpersonatorRole()
	if err != nil {
		t.Fatal(err)
	}
	if role.Name != ctrlapiproxy.ImpersonatorRole || !equality.Semantic.DeepEqual(role.Rules, ctrlapiproxy.ImpersonateRules) {
		t.Errorf("components/apiserver-proxy ships %s with %+v, want %s with %+v", role.Name, role.Rules, ctrlapiproxy.ImpersonatorRole, ctrlapiproxy.ImpersonateRules)
	}
}

// The manifests agree with the manager's defaults: Secret, Service and
// webhook configuration names, and the webhook path.
func TestManifestsMatchDefaults(t *testing.T) {
	o := manager.DefaultOptions()
	wh, err := manifests.WebhookConfiguration("")
	if err != nil {
		t.Fatal(err)
	}
	if wh.Name != o.WebhookConfigName {
		t.Errorf("webhook configuration %q, manager default %q", wh.Name, o.WebhookConfigName)
	}
	for _, w := range wh.Webhooks {
		s := w.ClientConfig.Service
		if s == nil || s.Name != o.ServiceName || s.Namespace != o.Namespace || s.Path == nil || *s.Path != "/inject-pod" {
			t.Errorf("webhook %s calls %+v", w.Name, s)
		}
		if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone {
			t.Errorf("webhook %s must declare sideEffects None (dry-run)", w.Name)
		}
	}
	b, err := os.ReadFile("overlays/cert-manager/certificate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(b, []byte("\n---\n"))
	var cert cmapi.Certificate
	if err := yaml.Unmarshal(docs[len(docs)-1], &cert); err != nil {
		t.Fatal(err)
	}
	if cert.Spec.SecretName != o.CertSecret {
		t.Errorf("Certificate writes %q, the manager reads %q", cert.Spec.SecretName, o.CertSecret)
	}
	for _, n := range cert.Spec.DNSNames {
		if !strings.HasPrefix(n, o.ServiceName+"."+o.Namespace) {
			t.Errorf("Certificate DNS name %q is not the webhook Service", n)
		}
	}
}

// The admission policies and their params are named as tsinject check and
// the contract name them.
func TestAdmissionPolicyNames(t *testing.T) {
	b, err := manifests.FS.ReadFile("base/admission-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var policies, bindings []string
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		var obj struct {
			Kind     string
			Metadata struct{ Name string }
			Data     map[string]string
			Spec     struct {
				ParamRef *struct{ Name string }
			}
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		switch obj.Kind {
		case "ConfigMap":
			if obj.Metadata.Name != contract.AdmissionParams {
				t.Errorf("params ConfigMap %q, want %q", obj.Metadata.Name, contract.AdmissionParams)
			}
			for _, k := range []string{contract.AdmissionProxyImages, contract.AdmissionControlURL} {
				if _, ok := obj.Data[k]; !ok {
					t.Errorf("params ConfigMap lacks %s", k)
				}
			}
		case "ValidatingAdmissionPolicy":
			policies = append(policies, obj.Metadata.Name)
		case "ValidatingAdmissionPolicyBinding":
			bindings = append(bindings, obj.Metadata.Name)
			if p := obj.Spec.ParamRef; p != nil && p.Name != contract.AdmissionParams {
				t.Errorf("binding %s reads params %q", obj.Metadata.Name, p.Name)
			}
		}
	}
	if !slices.Equal(policies, contract.AdmissionPolicies) || !slices.Equal(bindings, contract.AdmissionPolicies) {
		t.Errorf("policies %v, bindings %v; tsinject check looks for %v", policies, bindings, contract.AdmissionPolicies)
	}
}
