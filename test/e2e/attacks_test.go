//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/internal/federation"
	"github.com/tsinject/tsinject/test/tsapi"
)

// The attackers of docs/security.md, each on the real node: a namespace
// admin (the built-in admin role in one namespace, no cluster rights) and
// whoever took over the manager's ServiceAccount. Each attempt is refused
// with the reason a user would read, and nothing is minted or bound.

// as runs kubectl as user (impersonated by the cluster admin's kubeconfig).
func as(ctx context.Context, user, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, env.kubectl, append([]string{"--kubeconfig", env.cluster.Kubeconfig, "--as=" + user}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tenantAdmin makes user the admin of namespace ns and nothing more, as a
// platform team hands a namespace to a tenant.
func tenantAdmin(t *testing.T, ns, user string) {
	t.Helper()
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-admin"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "admin"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}}
	if _, err := env.cluster.Client.RbacV1().RoleBindings(ns).Create(testCtx(t, stepDeadline), rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// mintDirectly is what a tenant holding a token does without tsinject: the
// two documented API calls, asking for the most a key can be (reusable,
// not ephemeral, 90 days).
func mintDirectly(ctx context.Context, clientID, token string, tags []string) error {
	access, err := federation.Exchange(ctx, nil, env.tn.ControlURL(), clientID, token)
	if err != nil {
		return err
	}
	var kr federation.KeyRequest
	kr.Capabilities.Devices.Create = federation.KeyCreate{Reusable: true, Preauthorized: true, Tags: tags}
	kr.ExpirySeconds = int64(tsapi.MaxKeyExpiry / time.Second)
	body, _ := json.Marshal(kr)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, env.tn.ControlURL()+federation.KeysPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		var msg struct{ Message string }
		json.NewDecoder(res.Body).Decode(&msg)
		return fmt.Errorf("key creation: HTTP %d: %s", res.StatusCode, msg.Message)
	}
	return nil
}

// identityTags are the tags the federated identity of namespace ns may
// create keys with (the system's for tsinject's namespace).
func identityTags(ns string) []string {
	want := "e2e-ns-" + ns
	if ns == system {
		want = clientID
	}
	for _, c := range env.api.Credentials {
		if c.ClientID == want {
			return c.Tags
		}
	}
	return nil
}

// A namespace admin with a token of their own namespace (kubectl create
// token) can create keys only through their namespace's own identity, only
// with its tags; another namespace's identity and the system's refuse the
// token, and no key anyone minted carries tags beyond the identity of the
// namespace that minted it. What they can still do, within their own
// identity, is create a reusable key for 90 days: the docs say so.
func TestTenantCannotMintAnotherNamespacesKeys(t *testing.T) {
	a := namespaceWith(t, "tenant-a", map[string]string{"tsinject.dev/default-tags": "tag:tenant-a"})
	namespaceWith(t, "tenant-b", map[string]string{"tsinject.dev/default-tags": "tag:tenant-b"})
	user := "alice@tenant-a.example"
	tenantAdmin(t, a, user)
	ctx := testCtx(t, stepDeadline)
	var token string
	if err := waitFor(ctx, func(ctx context.Context) error { // the default ServiceAccount appears moments after the namespace
		out, err := as(ctx, user, "", "-n", a, "create", "token", "default", "--audience", credential.DefaultAudience, "--duration", "10m")
		token = strings.TrimSpace(out)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatalf("a namespace admin creates a token of their ServiceAccount: %v", err)
	}
	own := []string{"tag:tenant-a"}
	for _, tc := range []struct {
		name, clientID string
		tags           []string
		refused        string // "" if allowed
	}{
		{"own identity, own tags", "e2e-ns-tenant-a", own, ""},
		{"own identity, another namespace's tags", "e2e-ns-tenant-a", []string{"tag:tenant-b"}, `may not create keys with tag "tag:tenant-b"`},
		{"own identity, the proxies' tags", "e2e-ns-tenant-a", []string{"tag:k8s-operator"}, `may not create keys with tag "tag:k8s-operator"`},
		{"another namespace's identity", "e2e-ns-tenant-b", []string{"tag:tenant-b"}, `does not match "system:serviceaccount:tenant-b:*"`},
		{"the system's identity", clientID, []string{"tag:k8s-operator"}, `does not match "system:serviceaccount:tsinject-system:*"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := mintDirectly(ctx, tc.clientID, token, tc.tags)
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
				t.Errorf("got %v, want a refusal saying %s", err, tc.refused)
			}
		})
	}
	var beyond []string
	for _, m := range env.api.Mints() {
		ns, _, _ := strings.Cut(strings.TrimPrefix(m.Subject, "system:serviceaccount:"), ":")
		for _, tag := range m.Tags {
			if !slices.Contains(identityTags(ns), tag) {
				beyond = append(beyond, fmt.Sprintf("%s (by %s) carries %s", m.Key, m.Subject, tag))
			}
		}
	}
	if len(beyond) > 0 {
		t.Errorf("keys with tags beyond their namespace's identity: %v", beyond)
	}
	figure(t, "a namespace admin's token minted only within its own identity (a reusable 90-day key with tag:tenant-a, as documented); %d keys in the tailnet's API, none beyond its namespace's tags", len(env.api.Mints()))
}

// A namespace a cluster admin enabled without naming its federated
// identity: the tenant's pods are denied with their own reason, never
// given another namespace's identity or the system's.
func TestNamespaceWithoutIdentityIsDenied(t *testing.T) {
	ctx := testCtx(t, stepDeadline)
	name := "no-identity"
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"tsinject.dev/injection": "enabled"},
		Annotations: map[string]string{"tsinject.dev/default-tags": "tag:k8s"}}}
	if _, err := env.cluster.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.cluster.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	user := "bob@no-identity.example"
	tenantAdmin(t, name, user)
	out, err := as(ctx, user, appPod("app", nil, "true"), "-n", name, "apply", "-f", "-")
	if err == nil || !strings.Contains(out, "tsinject (no-credential): namespace no-identity names no federated identity") {
		t.Fatalf("a pod in a namespace without an identity: %v: %s; want a no-credential denial", err, out)
	}
	figure(t, "denied: %s", firstLine(out))
}

// A namespace admin's app container that mounts the sidecar's token, or its
// node state, by name is denied at admission: once injected, the pod would
// have those volumes.
func TestAppCannotMountTheSidecarsVolumes(t *testing.T) {
	ns := namespace(t, "mount-steal")
	user := "carol@mount-steal.example"
	tenantAdmin(t, ns, user)
	ctx := testCtx(t, stepDeadline)
	for _, vol := range []string{"tsinject-token", "tsinject-state"} {
		pod := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: steal}
spec:
  containers:
  - name: app
    image: %s
    imagePullPolicy: Never
    command: [/bin/busybox, cat, /steal/token]
    volumeMounts: [{name: %s, mountPath: /steal}]
`, appImage, vol)
		out, err := as(ctx, user, pod, "-n", ns, "apply", "-f", "-")
		if err == nil || !strings.Contains(out, `container "app" mounts volume "`+vol+`", which is reserved for tsinject's sidecar`) {
			t.Errorf("an app mounting %s: %v: %s; want a container-name-clash denial", vol, err, out)
		}
	}
	figure(t, "an app mounting tsinject-token or tsinject-state by name is denied at admission")
}

// Whoever takes over the manager's ServiceAccount, on the real node, with
// real writes: it cannot bind cluster-admin or the impersonation role to
// itself, rewrite its webhook, make a token Secret, run a shell as an API
// proxy's account, run the proxy image so as to send that account's token
// elsewhere or join it to another tailnet, give a proxy another volume's
// data, change an admin's Recorder, or repoint a tenant's Service;
// afterwards nothing of it exists.
func TestManagerCannotEscalate(t *testing.T) {
	ns := namespace(t, "manager-attack")
	ctx := testCtx(t, stepDeadline)
	manager := "system:serviceaccount:" + system + ":tsinject-manager"
	if out, err := kubectl(ctx, "-n", ns, "create", "service", "clusterip", "web", "--tcp=80:8080"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	proxySet := func(env string) string {
		return `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"ts-apiserver-proxy-attack","namespace":"` + system + `"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b","app.kubernetes.io/component":"apiserver-proxy"}},"spec":{"serviceAccountName":"ts-apiserver-proxy-attack","enableServiceLinks":false,"containers":[{"name":"apiserver","image":"` + proxyImage + `","args":["apiserver"],"env":[` + env + `]}]}}}}`
	}
	// An admins' Recorder (its claim's class does not exist: the recorder
	// stays Pending, storing nothing), whose spec the manager must not
	// change.
	apply(t, "default", `apiVersion: tsinject.dev/v1alpha1
kind: Recorder
metadata: {name: attack-target}
spec:
  uploaderTags: [tag:k8s-operator]
  retention: 2160h
  storage: {storageClassName: e2e-none}
`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
		defer cancel()
		for _, obj := range [][]string{{"recorder", "attack-target"}, {"-n", system, "pvc", "recordings-ts-recorder-attack-target-0"}} {
			if out, err := kubectl(ctx, append([]string{"delete", "--ignore-not-found", "--wait=true", "--timeout=2m"}, obj...)...); err != nil {
				t.Errorf("deleting %v: %v: %s", obj, err, out)
			}
		}
	})
	before, err := env.cluster.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "tsinject", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, stdin, want string
		args              []string
	}{
		{"bind cluster-admin to itself", "", "forbidden", []string{"create", "clusterrolebinding", "attack-admin", "--clusterrole=cluster-admin", "--serviceaccount=" + system + ":tsinject-manager"}},
		{"bind the impersonation role to itself", "", "never to itself or anyone else", []string{"create", "clusterrolebinding", "attack-impersonate", "--clusterrole=tsinject-apiserver-proxy", "--serviceaccount=" + system + ":tsinject-manager"}},
		{"widen its webhook to every namespace", "", "but each webhook's caBundle", []string{"patch", "mutatingwebhookconfiguration", "tsinject", "--type=json", "-p", `[{"op":"replace","path":"/webhooks/0/namespaceSelector","value":{}}]`}},
		{"create a token Secret for an API proxy's account", `{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/service-account-token","metadata":{"name":"attack-token","namespace":"` + system + `","annotations":{"kubernetes.io/service-account.name":"ts-apiserver-proxy-k8s"}}}`, "token Secrets", []string{"create", "-f", "-"}},
		{"run a shell as an API proxy's account", `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"ts-apiserver-proxy-attack","namespace":"` + system + `"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"serviceAccountName":"ts-apiserver-proxy-attack","containers":[{"name":"sh","image":"` + appImage + `"}]}}}}`, "only the images", []string{"create", "-f", "-"}},
		{"send an API proxy's token to its own API server", proxySet(`{"name":"KUBERNETES_SERVICE_HOST","value":"198.18.0.66"}`), "only tsinject's own variables", []string{"create", "-f", "-"}},
		{"join an API proxy to its own tailnet", proxySet(`{"name":"TSINJECT_CLIENT_ID","value":"attacker-client"}`), "only with the credential", []string{"create", "-f", "-"}},
		{"give an API proxy another volume's data", `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"ts-apiserver-proxy-attack","namespace":"` + system + `"},"spec":{"selector":{"matchLabels":{"a":"b"}},"volumeClaimTemplates":[{"metadata":{"name":"recordings"},"spec":{"volumeName":"shop-data","accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}],"template":{"metadata":{"labels":{"a":"b","app.kubernetes.io/component":"apiserver-proxy"}},"spec":{"serviceAccountName":"ts-apiserver-proxy-attack","enableServiceLinks":false,"containers":[{"name":"apiserver","image":"` + proxyImage + `","args":["apiserver"]}]}}}}`, "only a recorder's proxy set has a volume claim", []string{"create", "-f", "-"}},
		{"widen who may upload recordings and keep them an hour", "", "never their spec", []string{"patch", "recorder", "attack-target", "--type=merge", "-p", `{"spec":{"uploaderTags":["tag:anything"],"retention":"1h"}}`}},
		{"repoint a tenant's Service", "", "only an egress Service's externalName", []string{"-n", ns, "patch", "service", "web", "-p", `{"spec":{"selector":{"app":"attacker"}}}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := as(ctx, manager, tc.stdin, tc.args...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("as the manager: %v: %s; want a refusal saying %q", err, out, tc.want)
			}
		})
	}
	for _, name := range []string{"attack-admin", "attack-impersonate"} {
		if _, err := env.cluster.Client.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("ClusterRoleBinding %s: %v, want none", name, err)
		}
	}
	if _, err := env.cluster.Client.CoreV1().Secrets(system).Get(ctx, "attack-token", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("token Secret: %v, want none", err)
	}
	if _, err := env.cluster.Client.AppsV1().StatefulSets(system).Get(ctx, "ts-apiserver-proxy-attack", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("StatefulSet ts-apiserver-proxy-attack: %v, want none", err)
	}
	if svc, err := env.cluster.Client.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Error(err)
	} else if svc.Spec.Selector["app"] == "attacker" {
		t.Errorf("the tenant's Service selects %v", svc.Spec.Selector)
	}
	after, err := env.cluster.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "tsinject", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range after.Webhooks {
		if fmt.Sprint(after.Webhooks[i].NamespaceSelector) != fmt.Sprint(before.Webhooks[i].NamespaceSelector) {
			t.Errorf("webhook %s's namespaceSelector changed", after.Webhooks[i].Name)
		}
	}
	if out, _ := kubectl(ctx, "auth", "can-i", "--as="+manager, "bind", "clusterroles/cluster-admin"); !strings.HasSuffix(strings.TrimSpace(out), "\nno") && strings.TrimSpace(out) != "no" {
		t.Errorf("kubectl auth can-i --as %s bind clusterroles/cluster-admin: %s", manager, out)
	}
	if out, err := kubectl(ctx, "get", "recorder", "attack-target", "-o", "jsonpath={.spec.uploaderTags} {.spec.retention}"); err != nil || strings.TrimSpace(out) != `["tag:k8s-operator"] 2160h` {
		t.Errorf("the admins' Recorder: %v: %s", err, out)
	}
	figure(t, "as the manager's account: 10 escalations refused by RBAC or tsinject's admission policies; nothing bound, no token Secret or proxy set, the webhook and the tenant's Service as they were")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// A namespace admin trying everything docs/security.md says a tenant may
// not do through tsinject: pods asking for a tag the tailnet trusts more
// (the API proxies'), a name peers already trust, a SidecarProfile their
// namespace does not list, their own image for the root init container,
// the sidecar's SOCKS5 port on the tailnet, the sidecar's UID in
// transparent egress; a SidecarProfile or a namespace policy of their own;
// egress and ingress Services with the same tag and name, or on the
// proxies' health port. Each is refused with the reason a user reads (the
// webhook's denial, RBAC, the Service's condition), and nothing is made:
// no key minted for the namespace, no proxy.
func TestNamespaceAdminIsRefused(t *testing.T) {
	ns := namespaceWith(t, "tenant-c", map[string]string{"tsinject.dev/allowed-profiles": "tenant-c-batch"})
	user := "dave@tenant-c.example"
	tenantAdmin(t, ns, user)
	ctx := testCtx(t, podDeadline)
	// A profile the cluster admin made for the system's proxies' tag.
	apply(t, "default", `apiVersion: tsinject.dev/v1alpha1
kind: SidecarProfile
metadata: {name: trusted}
spec: {sidecar: {tags: ["tag:k8s-operator"]}}
`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
		defer cancel()
		kubectl(ctx, "delete", "sidecarprofile", "trusted", "--ignore-not-found")
	})
	pod := func(name, annotations, spec string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  annotations: {%s}
spec:
%s  containers:
  - {name: app, image: %s, imagePullPolicy: Never, command: [/bin/busybox, sleep, "3600"]}
`, name, annotations, spec, appImage)
	}
	pods := []struct{ what, manifest, want string }{
		{"the API proxies' tag", pod("climber", `tsinject.dev/tags: "tag:k8s-operator"`, ""),
			`tsinject (policy-denied): annotation tsinject.dev/tags: tag:k8s-operator is not allowed in namespace tenant-c (allowed: tag:k8s;`},
		{"a name peers trust", pod("impostor", `tsinject.dev/hostname: db`, ""),
			`tsinject (policy-denied): annotation tsinject.dev/hostname: "db" is not allowed in namespace tenant-c (allowed: tenant-c-*;`},
		{"a profile not listed", pod("borrower", `tsinject.dev/profile: trusted`, ""),
			`tsinject (policy-denied): annotation tsinject.dev/profile: SidecarProfile "trusted" is not allowed in namespace tenant-c (allowed: tenant-c-batch;`},
		{"their own init image", pod("rootkit", `tsinject.dev/egress-mode: transparent, tsinject.dev/proxy-image: "attacker.example/rootkit:latest"`, ""),
			`tsinject (invalid-annotation): annotation tsinject.dev/proxy-image: value "attacker.example/rootkit:latest" is not allowed`},
		{"the sidecar's SOCKS5 port on the tailnet", pod("open-proxy", `tsinject.dev/expose: "1080:1055"`, ""),
			`pod port 1055 is the sidecar's own SOCKS5 proxy, which must not be offered on the tailnet`},
		{"the sidecar's UID in transparent egress", pod("bypass", `tsinject.dev/egress-mode: transparent`, "  securityContext: {runAsUser: 41641}\n"),
			`tsinject (proxy-uid-clash): container "app" runs as UID 41641, the sidecar's`},
	}
	for _, p := range pods {
		out, err := as(ctx, user, p.manifest, "-n", ns, "create", "-f", "-")
		if err == nil || !strings.Contains(out, p.want) {
			t.Errorf("a pod with %s: %v: %s; want %q", p.what, err, out, p.want)
		}
	}
	rbac := []struct {
		what  string
		stdin string
		args  []string
	}{
		{"a SidecarProfile of their own", `apiVersion: tsinject.dev/v1alpha1
kind: SidecarProfile
metadata: {name: mine}
spec: {sidecar: {tags: ["tag:k8s-operator"]}}
`, []string{"create", "-f", "-"}},
		{"their namespace's policy", "", []string{"annotate", "namespace", ns, "tsinject.dev/allowed-tags=tag:k8s-operator"}},
	}
	for _, r := range rbac {
		out, err := as(ctx, user, r.stdin, r.args...)
		if err == nil || !strings.Contains(out, "forbidden") {
			t.Errorf("writing %s: %v: %s; want forbidden", r.what, err, out)
		}
	}
	services := []struct{ name, condition, manifest, want string }{
		{"egress-trusted-tag", "TailnetEgressReady", `metadata: {name: egress-trusted-tag, annotations: {tsinject.dev/tailnet-fqdn: db.tail-test.ts.net, tsinject.dev/tags: "tag:k8s-operator"}}
spec: {type: ExternalName, externalName: placeholder.invalid, ports: [{port: 80}]}`, "tag:k8s-operator is not allowed in namespace tenant-c"},
		{"egress-health-port", "TailnetEgressReady", `metadata: {name: egress-health-port, annotations: {tsinject.dev/tailnet-fqdn: db.tail-test.ts.net}}
spec: {type: ExternalName, externalName: placeholder.invalid, ports: [{port: 9002}]}`, "health and metrics port"},
		{"ingress-db", "TailnetIngressReady", `metadata: {name: ingress-db, annotations: {tsinject.dev/hostname: db}}
spec: {type: LoadBalancer, loadBalancerClass: tsinject.dev/tailnet, selector: {app: web}, ports: [{port: 80}]}`, `"db" is not allowed in namespace tenant-c (allowed: tenant-c-*`},
	}
	for _, s := range services {
		if out, err := as(ctx, user, "apiVersion: v1\nkind: Service\n"+s.manifest+"\n", "-n", ns, "create", "-f", "-"); err != nil {
			t.Fatalf("a tenant may create Services: %v: %s", err, out)
		}
	}
	for _, s := range services {
		err := waitFor(ctx, func(ctx context.Context) error {
			out, err := as(ctx, user, "", "-n", ns, "get", "service", s.name, "-o",
				fmt.Sprintf(`jsonpath={.status.conditions[?(@.type=="%s")].reason}: {.status.conditions[?(@.type=="%s")].message}`, s.condition, s.condition))
			if err != nil || !strings.HasPrefix(out, "Invalid") || !strings.Contains(out, s.want) {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		if err != nil {
			t.Errorf("Service %s: %v; want it refused mentioning %q", s.name, err, s.want)
		}
	}
	// Nothing was made: no proxy for the namespace, no key for its identity.
	if out, err := kubectl(ctx, "-n", system, "get", "statefulsets,secrets", "-l", "tsinject.dev/owner-namespace="+ns, "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("proxies made for the refused Services: %v: %s", err, out)
	}
	for _, m := range env.api.Mints() {
		if m.ClientID == "e2e-ns-"+ns {
			t.Errorf("a key was minted for %s: %+v", ns, m)
		}
	}
	if !t.Failed() {
		figure(t, "%d pods denied at admission, %d writes forbidden by RBAC, %d Services refused in their status; nothing minted or made", len(pods), len(rbac), len(services))
	}
}
