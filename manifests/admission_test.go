package manifests_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/poll"
)

// Whoever takes over the manager's ServiceAccount (docs/security.md) keeps
// only what the shipped admission policies leave it, on the real API
// server, each attempt made as that account (server-side dry runs, which
// admission policies judge like real writes): it cannot bind cluster-admin
// or the impersonation role to itself or to anyone but an API server
// proxy's account, cannot change its webhook configuration but for the
// caBundle, cannot make a token Secret, and cannot run anything but the
// proxy image, against another control server, as a proxy's account.
// What it needs for its work still passes.
func TestManagerCannotEscalate(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{CRDDirs: []string{certManagerCRDs(t)}})
	rendered := kubectl(t, c.Kubeconfig, nil, "kustomize", "overlays/apiserver-proxy")
	kubectl(t, c.Kubeconfig, rendered, "apply", "--server-side", "--field-manager=tsinject-test", "-f", "-")
	// A proxy set's Role, as the manager makes it for a Connector.
	kubectl(t, c.Kubeconfig, nil, "-n", "tsinject-system", "create", "role", "ts-connector-edge", "--verb=get", "--resource=secrets", "--resource-name=ts-connector-edge-0")
	// The webhook's CA as the manager publishes it (self mode).
	kubectl(t, c.Kubeconfig, nil, "patch", "mutatingwebhookconfiguration", "tsinject", "--type=json",
		"-p", `[{"op":"add","path":"/webhooks/0/clientConfig/caBundle","value":"`+pemBase64("old")+`"}]`)

	asManager := func(stdin string, args ...string) error {
		cmd := exec.Command("kubectl", append([]string{"--kubeconfig", c.Kubeconfig, "--as=system:serviceaccount:tsinject-system:tsinject-manager"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	binding := func(role, ns, sa string) string {
		return fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"attack"},
			"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":%q},
			"subjects":[{"kind":"ServiceAccount","namespace":%q,"name":%q}]}`, role, ns, sa)
	}
	roleBinding := func(role, ns, sa string) string {
		return fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"attack","namespace":"tsinject-system"},
			"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":%q},
			"subjects":[{"kind":"ServiceAccount","namespace":%q,"name":%q}]}`, role, ns, sa)
	}
	statefulSet := func(name, sa, image, controlURL string) string {
		env := ""
		if controlURL != "" {
			env = fmt.Sprintf(`,"env":[{"name":"TSINJECT_CONTROL_URL","value":%q}]`, controlURL)
		}
		return fmt.Sprintf(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":%q,"namespace":"tsinject-system"},
			"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},
			"spec":{"serviceAccountName":%q,"containers":[{"name":"proxy","image":%q,"args":["apiserver"]%s}]}}}}`, name, sa, image, env)
	}
	secret := func(typ string) string {
		return fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","type":%q,"metadata":{"name":"attack","namespace":"tsinject-system",
			"annotations":{"kubernetes.io/service-account.name":"ts-apiserver-proxy-k8s"}}}`, typ)
	}
	create := func(obj string) error { return asManager(obj, "create", "--dry-run=server", "-f", "-") }
	webhookPatch := func(patch string) error {
		return asManager("", "patch", "mutatingwebhookconfiguration", "tsinject", "--dry-run=server", "--type=json", "-p", patch)
	}
	const proxyImage = "ghcr.io/tsinject/tsinject-proxy:v1.2.3" // the params allow ghcr.io/tsinject/tsinject-proxy:*

	refused := []struct {
		name, want string
		try        func() error
	}{
		{"bind cluster-admin to itself", "", func() error { return create(binding("cluster-admin", "tsinject-system", "tsinject-manager")) }},
		{"bind the impersonation role to itself", "never to itself or anyone else", func() error {
			return create(binding("tsinject-apiserver-proxy", "tsinject-system", "tsinject-manager"))
		}},
		{"bind the impersonation role to a tenant's account", "never to itself or anyone else", func() error {
			return create(binding("tsinject-apiserver-proxy", "shop", "default"))
		}},
		{"bind the impersonation role to a Connector's account", "ts-apiserver-proxy-*", func() error {
			return create(binding("tsinject-apiserver-proxy", "tsinject-system", "ts-connector-edge"))
		}},
		{"give its own Role to a tenant", "never to itself or anyone else", func() error {
			return create(roleBinding("tsinject-manager", "shop", "default"))
		}},
		{"widen its webhook's namespaceSelector", "but each webhook's caBundle", func() error {
			return webhookPatch(`[{"op":"replace","path":"/webhooks/0/namespaceSelector","value":{}}]`)
		}},
		{"drop kube-system from its webhook", "but each webhook's caBundle", func() error {
			return webhookPatch(`[{"op":"remove","path":"/webhooks/0/namespaceSelector/matchExpressions"}]`)
		}},
		{"make its webhook ignore failures", "but each webhook's caBundle", func() error {
			return webhookPatch(`[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]`)
		}},
		{"hand its webhook to cert-manager's cainjector", "labels or annotations", func() error {
			return webhookPatch(`[{"op":"add","path":"/metadata/annotations","value":{"cert-manager.io/inject-ca-from":"shop/evil"}}]`)
		}},
		{"create a token Secret for a proxy's account", "token Secrets", func() error { return create(secret("kubernetes.io/service-account-token")) }},
		{"run a shell as an API proxy's account", "only the images", func() error {
			return create(statefulSet("ts-apiserver-proxy-k8s", "ts-apiserver-proxy-k8s", "busybox", ""))
		}},
		{"run the proxy against its own control server", "only the control server", func() error {
			return create(statefulSet("ts-apiserver-proxy-k8s", "ts-apiserver-proxy-k8s", proxyImage, "https://control.attacker.example"))
		}},
		{"run a proxy set as another set's account", "running as its own ServiceAccount", func() error {
			return create(statefulSet("ts-connector-edge", "ts-apiserver-proxy-k8s", proxyImage, ""))
		}},
		{"run a proxy set as itself", "running as its own ServiceAccount", func() error {
			return create(statefulSet("ts-connector-edge", "tsinject-manager", proxyImage, ""))
		}},
	}
	// Policies take effect moments after they are created: wait until the
	// first refusal that only a policy makes is made.
	ctx := context.Background()
	if err := poll.Until(ctx, time.Minute, 200*time.Millisecond, func() error {
		if refused[1].try() == nil {
			return errors.New("the admission policies are not in effect yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.try()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want a refusal saying %q", err, tc.want)
			}
		})
	}

	// What the manager's work needs still passes.
	for _, tc := range []struct {
		name string
		try  func() error
	}{
		{"bind the impersonation role to an API proxy's account", func() error {
			return create(binding("tsinject-apiserver-proxy", "tsinject-system", "ts-apiserver-proxy-k8s"))
		}},
		{"bind a proxy set's Role to its account", func() error {
			return create(roleBinding("ts-connector-edge", "tsinject-system", "ts-connector-edge"))
		}},
		{"publish a new CA", func() error {
			return webhookPatch(`[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"` + pemBase64("new") + `"}]`)
		}},
		{"keep a proxy's state", func() error { return create(secret("Opaque")) }},
		{"run a proxy set", func() error {
			return create(statefulSet("ts-apiserver-proxy-k8s", "ts-apiserver-proxy-k8s", proxyImage, ""))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.try(); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
}

// pemBase64 is a caBundle value: base64 of some PEM-looking text.
func pemBase64(s string) string {
	return base64.StdEncoding.EncodeToString([]byte("-----BEGIN CERTIFICATE-----\n" + s + "\n-----END CERTIFICATE-----\n"))
}

// With cert-manager, its cainjector writes the webhook's caBundle, and the
// manager may not write its webhook configuration at all.
func TestCertManagerModeLeavesTheWebhookAlone(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{CRDDirs: []string{certManagerCRDs(t)}})
	can := func(args ...string) bool {
		cmd := exec.Command("kubectl", append([]string{"--kubeconfig", c.Kubeconfig, "auth", "can-i", "--as=system:serviceaccount:tsinject-system:tsinject-manager"}, args...)...)
		out, _ := cmd.Output()
		return strings.TrimSpace(string(out)) == "yes"
	}
	for _, step := range []struct {
		dir  string
		want bool
	}{{"overlays/cert-manager", false}, {"base", true}} {
		rendered := kubectl(t, c.Kubeconfig, nil, "kustomize", step.dir)
		kubectl(t, c.Kubeconfig, rendered, "apply", "--server-side", "--field-manager=tsinject-test", "-f", "-")
		for _, verb := range []string{"update", "patch"} {
			if got := can(verb, "mutatingwebhookconfigurations/tsinject"); got != step.want {
				t.Errorf("%s: the manager may %s its webhook configuration: %v, want %v", step.dir, verb, got, step.want)
			}
		}
	}
}
