package manifests_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/manager"
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
// caBundle, cannot make a token Secret, cannot run anything but the proxy
// as a proxy's account (no other image, command, program's variables or
// token the API server accepts), cannot join a proxy to another tailnet
// (control server, client ID, broker, auth key, planted state), and cannot
// take over tenants' Services or traffic. What its work needs still passes.
func TestManagerCannotEscalate(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{CRDDirs: []string{certManagerCRDs(t), gatewayAPICRDs(t)}})
	rendered := kubectl(t, c.Kubeconfig, nil, "kustomize", "overlays/apiserver-proxy")
	kubectl(t, c.Kubeconfig, rendered, "apply", "--server-side", "--field-manager=tsinject-test", "-f", "-")
	// Auth-key copy mode's rights too: Secrets in every namespace.
	kubectl(t, c.Kubeconfig, nil, "apply", "--server-side", "--field-manager=tsinject-test", "-f", "components/auth-key/rbac.yaml")
	// The credential the proxies join with: a federated identity, and the
	// Secret an auth-key mode would read.
	kubectl(t, c.Kubeconfig, nil, "-n", "tsinject-system", "patch", "configmap", "tsinject-admission", "--type=merge",
		"-p", `{"data":{"clientID":"k8s-proxies","credentialSecrets":"tsinject-authkey"}}`)
	// A proxy set's Role, as the manager makes it for a Connector, and an
	// API server proxy's binding.
	kubectl(t, c.Kubeconfig, nil, "-n", "tsinject-system", "create", "role", "ts-connector-edge", "--verb=get", "--resource=secrets", "--resource-name=ts-connector-edge-0")
	kubectl(t, c.Kubeconfig, nil, "create", "clusterrolebinding", "ts-apiserver-proxy-k8s", "--clusterrole=tsinject-apiserver-proxy", "--serviceaccount=tsinject-system:ts-apiserver-proxy-k8s")
	// The webhook's CA as the manager publishes it (self mode).
	kubectl(t, c.Kubeconfig, nil, "patch", "mutatingwebhookconfiguration", "tsinject", "--type=json",
		"-p", `[{"op":"add","path":"/webhooks/0/clientConfig/caBundle","value":"`+pemBase64("old")+`"}]`)
	// A tenant's Services: a plain one, an egress one and a tailnet
	// ingress (LoadBalancer) one.
	kubectl(t, c.Kubeconfig, nil, "create", "namespace", "shop")
	kubectl(t, c.Kubeconfig, nil, "-n", "shop", "create", "service", "clusterip", "web", "--tcp=80:8080")
	kubectl(t, c.Kubeconfig, nil, "-n", "shop", "create", "service", "externalname", "db", "--external-name=placeholder.invalid")
	kubectl(t, c.Kubeconfig, nil, "-n", "shop", "annotate", "service", "db", "tsinject.dev/tailnet-fqdn=db.tailnet.ts.net")
	kubectl(t, c.Kubeconfig, nil, "-n", "shop", "create", "service", "externalname", "partner", "--external-name=api.partner.example")
	kubectl(t, c.Kubeconfig, nil, "-n", "shop", "create", "service", "loadbalancer", "cloud", "--tcp=443:8443")
	kubectl(t, c.Kubeconfig, []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"front","namespace":"shop"},
		"spec":{"type":"LoadBalancer","loadBalancerClass":"tsinject.dev/tailnet","ports":[{"port":443}]}}`), "create", "-f", "-")
	// A tenant's Ingresses: one of tsinject's class, one of another, and
	// one that left tsinject's class (its finalizer still on it).
	for name, class := range map[string]string{"grafana": "tsinject", "shopfront": "nginx", "moved": "nginx"} {
		kubectl(t, c.Kubeconfig, []byte(`{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"`+name+`","namespace":"shop"},
			"spec":{"ingressClassName":"`+class+`","defaultBackend":{"service":{"name":"web","port":{"number":80}}}}}`), "create", "-f", "-")
	}

	kubectl(t, c.Kubeconfig, nil, "-n", "shop", "patch", "ingress", "moved", "--type=merge", "-p", `{"metadata":{"finalizers":["tsinject.dev/web"]}}`)
	// A tenant's Gateways: one of tsinject's class, one of another, one
	// that left tsinject's class; a route naming the first two, with
	// another controller's entry in its status.
	kubectl(t, c.Kubeconfig, []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"GatewayClass","metadata":{"name":"tsinject"},"spec":{"controllerName":"tsinject.dev/gateway-controller"}}`), "create", "-f", "-")
	kubectl(t, c.Kubeconfig, []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"GatewayClass","metadata":{"name":"nginx"},"spec":{"controllerName":"example.com/nginx"}}`), "create", "-f", "-")
	for name, class := range map[string]string{"portal": "tsinject", "edge": "nginx", "left": "nginx"} {
		kubectl(t, c.Kubeconfig, []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway","metadata":{"name":"`+name+`","namespace":"shop"},
			"spec":{"gatewayClassName":"`+class+`","listeners":[{"name":"https","protocol":"HTTPS","port":443}]}}`), "create", "-f", "-")
	}
	kubectl(t, c.Kubeconfig, nil, "-n", "shop", "patch", "gateway", "left", "--type=merge", "-p", `{"metadata":{"finalizers":["tsinject.dev/gateway"]}}`)
	kubectl(t, c.Kubeconfig, []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"mesh","namespace":"shop"},
		"spec":{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[{"backendRefs":[{"name":"web","port":80}]}]}}`), "create", "-f", "-")
	for _, name := range []string{"app", "fresh"} { // fresh: no status yet
		kubectl(t, c.Kubeconfig, []byte(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"`+name+`","namespace":"shop"},
			"spec":{"parentRefs":[{"name":"portal"},{"name":"edge"}],"rules":[{"backendRefs":[{"name":"web","port":80}]}]}}`), "create", "-f", "-")
	}
	// The admins' resources, whose spec is theirs alone.
	kubectl(t, c.Kubeconfig, []byte(`{"apiVersion":"tsinject.dev/v1alpha1","kind":"Recorder","metadata":{"name":"audit"},"spec":{"uploaderTags":["tag:k8s-operator"],"retention":"2160h"}}`), "create", "-f", "-")
	kubectl(t, c.Kubeconfig, []byte(`{"apiVersion":"tsinject.dev/v1alpha1","kind":"APIServerProxy","metadata":{"name":"k8s"},"spec":{"mode":"auth"}}`), "create", "-f", "-")
	asManager := func(stdin string, args ...string) error {
		cmd := exec.Command("kubectl", append([]string{"--kubeconfig", c.Kubeconfig, "--as=system:serviceaccount:tsinject-system:tsinject-manager"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	binding := func(name, role, ns, sa string) string {
		return fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":%q},
			"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":%q},
			"subjects":[{"kind":"ServiceAccount","namespace":%q,"name":%q}]}`, name, role, ns, sa)
	}
	roleBinding := func(name, role, ns, sa string) string {
		return fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":%q,"namespace":"tsinject-system"},
			"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":%q},
			"subjects":[{"kind":"ServiceAccount","namespace":%q,"name":%q}]}`, name, role, ns, sa)
	}
	role := func(name, rules string) string {
		return `{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"` + name + `","namespace":"tsinject-system"},"rules":` + rules + `}`
	}
	secret := func(name, typ, data string) string {
		return fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","type":%q,"metadata":{"name":%q,"namespace":"tsinject-system",
			"annotations":{"kubernetes.io/service-account.name":"ts-apiserver-proxy-k8s"}},"data":%s}`, typ, name, data)
	}
	create := func(obj string) error { return asManager(obj, "create", "--dry-run=server", "-f", "-") }
	patch := func(ns, obj, patch string, more ...string) error {
		return asManager("", append([]string{"-n", ns, "patch", obj, "--dry-run=server", "--type=merge", "-p", patch}, more...)...)
	}
	// The manager may write a Service's status but not read it by itself
	// (kubectl patch would): put the Service as read by the admin.
	putStatus := func(name, ingress string) error {
		var svc map[string]any
		if err := json.Unmarshal(kubectl(t, c.Kubeconfig, nil, "-n", "shop", "get", "service", name, "-o", "json"), &svc); err != nil {
			return err
		}
		var lb []any
		if err := json.Unmarshal([]byte(ingress), &lb); err != nil {
			return err
		}
		svc["status"] = map[string]any{"loadBalancer": map[string]any{"ingress": lb}}
		b, _ := json.Marshal(svc)
		return asManager(string(b), "replace", "--raw", "/api/v1/namespaces/shop/services/"+name+"/status?dryRun=All", "-f", "-")
	}
	// The same for an Ingress.
	putIngressStatus := func(name, ingress string) error {
		var ing map[string]any
		if err := json.Unmarshal(kubectl(t, c.Kubeconfig, nil, "-n", "shop", "get", "ingress", name, "-o", "json"), &ing); err != nil {
			return err
		}
		var lb []any
		if err := json.Unmarshal([]byte(ingress), &lb); err != nil {
			return err
		}
		ing["status"] = map[string]any{"loadBalancer": map[string]any{"ingress": lb}}
		b, _ := json.Marshal(ing)
		return asManager(string(b), "replace", "--raw", "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/"+name+"/status?dryRun=All", "-f", "-")
	}
	webhookPatch := func(patch string) error {
		return asManager("", "patch", "mutatingwebhookconfiguration", "tsinject", "--dry-run=server", "--type=json", "-p", patch)
	}
	const gatewayAPI = "/apis/gateway.networking.k8s.io/v1/"
	putGatewayStatus := func(asAdmin bool, path, status string) error {
		var obj map[string]any
		if err := json.Unmarshal(kubectl(t, c.Kubeconfig, nil, "get", "--raw", gatewayAPI+path), &obj); err != nil {
			return err
		}
		var st any
		if err := json.Unmarshal([]byte(status), &st); err != nil {
			return err
		}
		obj["status"] = st
		b, _ := json.Marshal(obj)
		if asAdmin {
			kubectl(t, c.Kubeconfig, b, "replace", "--raw", gatewayAPI+path+"/status", "-f", "-")
			return nil
		}
		return asManager(string(b), "replace", "--raw", gatewayAPI+path+"/status?dryRun=All", "-f", "-")
	}
	now := time.Now().UTC().Format(time.RFC3339)
	entry := func(controller, gateway, status string) string {
		return `{"parentRef":{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"` + gateway + `"},"controllerName":"` + controller + `",
			"conditions":[{"type":"Accepted","status":"` + status + `","reason":"Accepted","message":"","lastTransitionTime":"` + now + `","observedGeneration":1}]}`
	}
	nginxEntry := entry("example.com/nginx", "edge", "True")
	if err := putGatewayStatus(true, "namespaces/shop/httproutes/app", `{"parents":[`+nginxEntry+`]}`); err != nil {
		t.Fatal(err)
	}
	gatewayStatus := func(addr string) string {
		return `{"addresses":[{"type":"Hostname","value":"` + addr + `"}],"conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"","lastTransitionTime":"` + now + `","observedGeneration":1}]}`
	}
	const proxyImage = "ghcr.io/tsinject/tsinject-proxy:v1.2.3" // the params allow ghcr.io/tsinject/tsinject-proxy:*
	set := func(change func(sts *proxySet)) func() error {
		return func() error {
			sts := newProxySet("ts-apiserver-proxy-k8s", proxyImage)
			change(sts)
			return create(sts.json(t))
		}
	}
	setEnv := func(name, value string) func(*proxySet) { return func(s *proxySet) { s.env(name, value) } }

	refused := []struct {
		name, want string
		try        func() error
	}{
		{"bind cluster-admin to itself", "", func() error { return create(binding("attack", "cluster-admin", "tsinject-system", "tsinject-manager")) }},
		{"bind the impersonation role to itself", "never to itself or anyone else", func() error {
			return create(binding("tsinject-manager", "tsinject-apiserver-proxy", "tsinject-system", "tsinject-manager"))
		}},
		{"bind the impersonation role to a tenant's account", "never to itself or anyone else", func() error {
			return create(binding("default", "tsinject-apiserver-proxy", "shop", "default"))
		}},
		{"bind the impersonation role to a Connector's account", "ts-apiserver-proxy-*", func() error {
			return create(binding("ts-connector-edge", "tsinject-apiserver-proxy", "tsinject-system", "ts-connector-edge"))
		}},
		{"bind the impersonation role to a second account", "one proxy set's own", func() error {
			return create(binding("ts-apiserver-proxy-k8s", "tsinject-apiserver-proxy", "tsinject-system", "ts-apiserver-proxy-other"))
		}},
		{"give its own Role to a tenant", "never to itself or anyone else", func() error {
			return create(roleBinding("attack", "tsinject-manager", "shop", "default"))
		}},
		{"give its own Role to a proxy set", "one proxy set's own", func() error {
			return create(roleBinding("ts-connector-edge", "tsinject-manager", "tsinject-system", "ts-connector-edge"))
		}},
		{"widen a proxy set's Role to every Secret", "a Role the manager writes", func() error {
			return create(role("ts-connector-new", `[{"apiGroups":[""],"resources":["secrets"],"verbs":["get","list"]}]`))
		}},
		{"delete the cluster's bindings", "may delete no ClusterRoleBinding", func() error {
			return asManager("", "delete", "clusterrolebinding", "cluster-admin", "--dry-run=server")
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
		{"create a token Secret for a proxy's account", "token Secrets", func() error {
			return create(secret("attack", "kubernetes.io/service-account-token", "{}"))
		}},
		{"swap the auth key for its own tailnet's", "only reads the tailnet credential's Secrets", func() error {
			return create(secret("tsinject-authkey", "Opaque", `{"authkey":"dHNrZXktYXR0YWNrZXI="}`))
		}},
		{"plant another tailnet's node state", "the proxy's own to write", func() error {
			return create(secret("ts-apiserver-proxy-k8s-0", "Opaque", `{"profile":"YXR0YWNrZXI="}`))
		}},
		{"plant a node state under another name", "the proxy's own to write", func() error {
			return create(secret("ts-apiserver-proxy-k8s-evil", "Opaque", `{"profile":"YXR0YWNrZXI="}`))
		}},
		{"let a proxy set read a Secret it planted", "a Role the manager writes", func() error {
			return create(role("ts-connector-new", `[{"apiGroups":[""],"resources":["secrets"],"verbs":["get","update"],"resourceNames":["ts-connector-new-evil"]}]`))
		}},
		{"let a pool read another set's files", "a Role the manager writes", func() error {
			return create(role("ts-pool-shared", `[{"apiGroups":[""],"resources":["secrets"],"verbs":["get"],"resourceNames":["ts-connector-edge-files"]}]`))
		}},
		{"let a pool write its files", "a Role the manager writes", func() error {
			return create(role("ts-pool-shared", `[{"apiGroups":[""],"resources":["secrets"],"verbs":["get","update"],"resourceNames":["ts-pool-shared-files"]}]`))
		}},
		{"run a connector as a pool", "the component their name says", func() error {
			sts := newProxySet("ts-pool-shared", proxyImage)
			sts.container()["args"] = []string{"connector"}
			sts.labels()["app.kubernetes.io/component"] = "pool"
			sts.pod["serviceAccountName"] = "ts-pool-shared"
			return create(sts.json(t))
		}},
		{"overwrite a tenant's Secret", "the auth key's copies", func() error {
			return create(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db-password","namespace":"shop"},"data":{"p":"eA=="}}`)
		}},
		{"overwrite its admission params", "only ConfigMap the manager writes", func() error {
			return create(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"tsinject-admission-2","namespace":"tsinject-system"}}`)
		}},
		{"run a shell as an API proxy's account", "only the images", set(func(s *proxySet) { s.container()["image"] = "busybox" })},
		{"run its own command in the proxy image", "own entrypoint", set(func(s *proxySet) { s.container()["command"] = []string{"/bin/sh"} })},
		{"pass the proxy flags of its own", "own entrypoint", set(func(s *proxySet) {
			s.container()["args"] = []string{"apiserver", "--control-url=https://control.attacker.example"}
		})},
		{"run a command in a lifecycle hook", "own entrypoint", set(func(s *proxySet) {
			s.container()["lifecycle"] = map[string]any{"postStart": map[string]any{"exec": map[string]any{"command": []string{"sh"}}}}
		})},
		{"add a second container", "one container", set(func(s *proxySet) {
			s.pod["containers"] = append(s.pod["containers"].([]any), map[string]any{"name": "x", "image": proxyImage, "args": []string{"connector"}})
		})},
		{"send the proxy's API token elsewhere", "only tsinject's own variables", set(setEnv("KUBERNETES_SERVICE_HOST", "198.18.0.66"))},
		{"move the proxy's service account directory", "only tsinject's own variables", set(setEnv("TSINJECT_KUBE_ROOT", "/var/run/tsinject/exit-deny"))},
		{"set variables from a Secret", "only tsinject's own variables", set(func(s *proxySet) {
			s.container()["envFrom"] = []any{map[string]any{"secretRef": map[string]any{"name": "evil"}}}
		})},
		{"run the proxy against its own control server", "only the control server", set(setEnv("TSINJECT_CONTROL_URL", "https://control.attacker.example"))},
		{"join with its own tailnet's identity", "only with the credential", set(setEnv("TSINJECT_CLIENT_ID", "attacker-client"))},
		{"fetch the key from its own broker", "only with the credential", set(setEnv("TSINJECT_KEY_BROKER_URL", "https://broker.attacker.example/v1/key"))},
		{"send the API token as the ID token", "only with the credential", set(setEnv("TSINJECT_ID_TOKEN_FILE", "/var/run/secrets/kubernetes.io/serviceaccount/token"))},
		{"keep state in files it wrote", "only with the credential", set(setEnv("TSINJECT_STATE", "dir"))},
		{"have the connector quote the API token in its crash", "only with the credential", set(func(s *proxySet) {
			s.env("TSINJECT_EXIT_DENY_FILE", "/var/run/secrets/kubernetes.io/serviceaccount/token")
		})},
		{"run the connector as an API proxy's account", "the component their name says", set(func(s *proxySet) { s.container()["args"] = []string{"connector"} })},
		{"become an endpoint of the webhook's Service", "the component their name says", set(func(s *proxySet) {
			s.labels()["app.kubernetes.io/component"] = "manager"
		})},
		{"serve the webhook's port", "no port names but health", set(func(s *proxySet) {
			s.container()["ports"] = []any{map[string]any{"name": "webhook", "containerPort": 9443}}
		})},
		{"name the state Secret itself", "take their pod's name", set(func(s *proxySet) {
			s.container()["env"].([]any)[0] = map[string]any{"name": "TSINJECT_POD_NAME", "value": "ts-apiserver-proxy-k8s-evil"}
		})},
		{"leave out the client ID", "name their control server and credential", set(func(s *proxySet) {
			env := s.container()["env"].([]any)
			s.container()["env"] = append(env[:3:3], env[4:]...)
		})},
		{"resolve the broker's name to its own server", "only through the cluster's DNS", set(func(s *proxySet) {
			s.pod["hostAliases"] = []any{map[string]any{"ip": "198.18.0.66", "hostnames": []string{"tsinject-webhook.tsinject-system.svc"}}}
		})},
		{"use its own DNS server", "only through the cluster's DNS", set(func(s *proxySet) {
			s.pod["dnsPolicy"] = "None"
			s.pod["dnsConfig"] = map[string]any{"nameservers": []string{"198.18.0.66"}}
		})},
		{"put Service links in the environment", "enableServiceLinks false", set(func(s *proxySet) { delete(s.pod, "enableServiceLinks") })},
		{"mount a token the API server accepts", "never the node's files or a token the API server accepts", set(func(s *proxySet) {
			s.volume("tsinject-token")["projected"] = map[string]any{"sources": []any{map[string]any{"serviceAccountToken": map[string]any{"path": "token"}}}}
		})},
		{"mount the node's files", "never the node's files", set(func(s *proxySet) {
			delete(s.volume("state"), "emptyDir")
			s.volume("state")["hostPath"] = map[string]any{"path": "/"}
		})},
		{"mount a Secret it wrote as the auth key", "mounted only at /var/run/tsinject/exit-deny", set(func(s *proxySet) {
			s.mount("files")["mountPath"] = "/var/run/tsinject/auth"
		})},
		{"mount its files as a certificate outside a web proxy", "mounted only at /var/run/tsinject/exit-deny", set(func(s *proxySet) {
			s.mount("files")["mountPath"] = "/var/run/tsinject/web-cert"
		})},
		{"mount another Secret", "the credential's Secrets", set(func(s *proxySet) {
			s.volume("files")["secret"] = map[string]any{"secretName": "tsinject-webhook-tls"}
		})},
		// A claim is a recorder's only, new and empty: never an existing
		// volume (another tenant's data), a copy of one, or a second one.
		{"give an API proxy a volume claim", "only a recorder's proxy set has a volume claim", set(func(s *proxySet) {
			s.obj["spec"].(map[string]any)["volumeClaimTemplates"] = []any{recordingsClaim(nil)}
		})},
		{"claim an existing volume by name", "only a recorder's proxy set has a volume claim", func() error {
			return create(recorderSet(func(spec map[string]any) { spec["volumeName"] = "shop-database" }).json(t))
		}},
		{"claim a volume by its labels", "only a recorder's proxy set has a volume claim", func() error {
			return create(recorderSet(func(spec map[string]any) {
				spec["selector"] = map[string]any{"matchLabels": map[string]any{"app": "shop-database"}}
			}).json(t))
		}},
		{"clone another claim into the recorder", "only a recorder's proxy set has a volume claim", func() error {
			return create(recorderSet(func(spec map[string]any) {
				spec["dataSource"] = map[string]any{"kind": "PersistentVolumeClaim", "name": "data-ts-connector-edge-0"}
			}).json(t))
		}},
		{"have a provisioner read a path from the claim's annotations", "only a recorder's proxy set has a volume claim", func() error {
			sts := recorderSet(nil)
			sts.obj["spec"].(map[string]any)["volumeClaimTemplates"].([]any)[0].(map[string]any)["metadata"].(map[string]any)["annotations"] = map[string]any{"nfs.io/storage-path": "../shop/db"}
			return create(sts.json(t))
		}},
		{"bind any class-less volume", "only a recorder's proxy set has a volume claim", func() error {
			return create(recorderSet(func(spec map[string]any) { spec["storageClassName"] = "" }).json(t))
		}},
		{"take the claim as a block device", "only a recorder's proxy set has a volume claim", func() error {
			return create(recorderSet(func(spec map[string]any) { spec["volumeMode"] = "Block" }).json(t))
		}},
		{"write the recordings where they are lost", "only a recorder's proxy set has a volume claim", func() error {
			sts := recorderSet(nil)
			find(sts.container()["env"], "TSINJECT_RECORDINGS_DIR")["value"] = "/var/lib/tsinject"
			return create(sts.json(t))
		}},
		{"widen who may upload recordings", "never their spec", func() error {
			return asManager("", "patch", "recorder", "audit", "--dry-run=server", "--type=merge", "-p", `{"spec":{"uploaderTags":["tag:anything"],"retention":"1h"}}`)
		}},
		{"turn an API server proxy's impersonation off", "never their spec", func() error {
			return asManager("", "patch", "apiserverproxy", "k8s", "--dry-run=server", "--type=merge", "-p", `{"spec":{"mode":"noauth"}}`)
		}},
		{"mount the recordings where the proxy reads its auth key", "only a recorder's proxy set has a volume claim", func() error {
			sts := recorderSet(nil)
			sts.mount("recordings")["mountPath"] = "/var/run/tsinject/auth"
			return create(sts.json(t))
		}},
		{"run on the node's network", "share nothing of the node", set(func(s *proxySet) { s.pod["hostNetwork"] = true })},
		{"run a proxy set as another set's account", "running as its own ServiceAccount", set(func(s *proxySet) { s.pod["serviceAccountName"] = "ts-connector-edge" })},
		{"run a proxy set as itself", "running as its own ServiceAccount", set(func(s *proxySet) { s.pod["serviceAccountName"] = "tsinject-manager" })},
		{"repoint a tenant's Service", "only an egress Service's externalName", func() error {
			return patch("shop", "service/web", `{"spec":{"selector":{"app":"attacker"}}}`)
		}},
		{"turn a tenant's Service into an ExternalName", "only an egress Service's externalName", func() error {
			return patch("shop", "service/web", `{"spec":{"type":"ExternalName","externalName":"ts-x.tsinject-system.svc.cluster.local","clusterIP":"","clusterIPs":null,"ports":null}}`)
		}},
		{"point an egress Service outside the cluster", "only an egress Service's externalName", func() error {
			return patch("shop", "service/db", `{"spec":{"externalName":"db.attacker.example"}}`)
		}},
		{"point an egress Service at a look-alike name", "only an egress Service's externalName", func() error {
			return patch("shop", "service/db", `{"spec":{"externalName":"ts-x.tsinject-system.svc.attacker.example"}}`)
		}},
		{"repoint a tenant's own ExternalName Service", "only an egress Service's externalName", func() error {
			return patch("shop", "service/partner", `{"spec":{"externalName":"ts-x.tsinject-system.svc.cluster.local"}}`)
		}},
		{"hold a Service tsinject does not serve", "adds its finalizer only", func() error {
			return patch("shop", "service/cloud", `{"metadata":{"finalizers":["tsinject.dev/ingress"]}}`)
		}},
		{"publish addresses on a Service tsinject does not serve", "only of Services tsinject takes on", func() error {
			return putStatus("cloud", `[{"hostname":"cloud.attacker.example"}]`)
		}},
		{"repoint its own webhook's Service", "never its webhook's", func() error {
			return patch("tsinject-system", "service/tsinject-webhook", `{"spec":{"selector":{"app":"ts-egress-attack"}}}`)
		}},
		{"relabel a tenant's Service", "no labels, annotations, owners or finalizers", func() error {
			return patch("shop", "service/web", `{"metadata":{"labels":{"app":"attacker"}}}`)
		}},
		{"take traffic to an outside address", "ipMode Proxy", func() error {
			return putStatus("front", `[{"ip":"198.18.0.66"}]`)
		}},
		{"repoint a tenant's Ingress of its class", "changes only its own finalizer", func() error {
			return patch("shop", "ingress/grafana", `{"spec":{"defaultBackend":{"service":{"name":"attacker","port":{"number":80}}}}}`)
		}},
		{"annotate a tenant's Ingress of its class", "changes only its own finalizer", func() error {
			return patch("shop", "ingress/grafana", `{"metadata":{"annotations":{"nginx.ingress.kubernetes.io/server-snippet":"x"}}}`)
		}},
		{"repoint a tenant's Ingress of another class", "only updates Ingresses of class tsinject", func() error {
			return patch("shop", "ingress/shopfront", `{"spec":{"defaultBackend":{"service":{"name":"attacker","port":{"number":80}}}}}`)
		}},
		{"hold an Ingress of another class", "only updates Ingresses of class tsinject", func() error {
			return patch("shop", "ingress/shopfront", `{"metadata":{"finalizers":["tsinject.dev/web"]}}`)
		}},
		{"publish addresses on an Ingress of another class", "only updates Ingresses of class tsinject", func() error {
			return putIngressStatus("shopfront", `[{"ip":"198.18.0.66"}]`)
		}},
		{"publish addresses on an Ingress that left its class", "may only clear status.loadBalancer", func() error {
			return putIngressStatus("moved", `[{"hostname":"moved.attacker.example"}]`)
		}},
		{"create an Ingress", "cannot create resource", func() error {
			return create(`{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"attack","namespace":"shop"},
				"spec":{"defaultBackend":{"service":{"name":"web","port":{"number":80}}}}}`)
		}},
		{"repoint a tenant's Gateway of its class", "changes only its own finalizer (tsinject.dev/gateway)", func() error {
			return patch("shop", "gateway/portal", `{"spec":{"listeners":[{"name":"https","protocol":"HTTPS","port":443,"allowedRoutes":{"namespaces":{"from":"All"}}}]}}`)
		}},
		{"annotate a tenant's Gateway of its class", "changes only its own finalizer (tsinject.dev/gateway)", func() error {
			return patch("shop", "gateway/portal", `{"metadata":{"annotations":{"tsinject.dev/tags":"tag:admin"}}}`)
		}},
		{"hold a Gateway of another class", "only updates Gateways of class tsinject", func() error {
			return patch("shop", "gateway/edge", `{"metadata":{"finalizers":["tsinject.dev/gateway"]}}`)
		}},
		{"publish addresses on a Gateway of another class", "only updates Gateways of class tsinject", func() error {
			return putGatewayStatus(false, "namespaces/shop/gateways/edge", gatewayStatus("edge.attacker.example"))
		}},
		{"publish addresses on a Gateway that left its class", "of one that left the class it may only clear it", func() error {
			return putGatewayStatus(false, "namespaces/shop/gateways/left", gatewayStatus("left.attacker.example"))
		}},
		{"create a Gateway", "cannot create resource", func() error {
			return create(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway","metadata":{"name":"attack","namespace":"shop"},
				"spec":{"gatewayClassName":"tsinject","listeners":[{"name":"https","protocol":"HTTPS","port":443}]}}`)
		}},
		{"repoint a tenant's HTTPRoute", "cannot patch resource", func() error {
			return patch("shop", "httproute/app", `{"spec":{"rules":[{"backendRefs":[{"name":"attacker","port":80}]}]}}`)
		}},
		{"rewrite another controller's entry in a route's status", "never another controller's", func() error {
			return putGatewayStatus(false, "namespaces/shop/httproutes/app", `{"parents":[`+entry("example.com/nginx", "edge", "False")+`]}`)
		}},
		{"take another controller's entry out of a route's status", "never another controller's", func() error {
			return putGatewayStatus(false, "namespaces/shop/httproutes/app", `{"parents":[`+entry("tsinject.dev/gateway-controller", "portal", "True")+`]}`)
		}},
		{"claim a route for a Gateway it does not name", "only for the Gateways it names", func() error {
			return putGatewayStatus(false, "namespaces/shop/httproutes/app", `{"parents":[`+nginxEntry+`,`+entry("tsinject.dev/gateway-controller", "elsewhere", "True")+`]}`)
		}},
		{"claim a route for a Gateway it names only as a Service", "only for the Gateways it names", func() error {
			return putGatewayStatus(false, "namespaces/shop/httproutes/mesh", `{"parents":[`+entry("tsinject.dev/gateway-controller", "web", "True")+`]}`)
		}},
		{"accept another controller's GatewayClass", "changes no Gateway API object", func() error {
			return putGatewayStatus(false, "gatewayclasses/nginx", `{"conditions":[{"type":"Accepted","status":"False","reason":"InvalidParameters","message":"","lastTransitionTime":"`+now+`","observedGeneration":1}]}`)
		}},
		{"take traffic to external IPs", "without externalIPs", func() error {
			return create(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"ts-attack","namespace":"tsinject-system"},
				"spec":{"ports":[{"port":53}],"externalIPs":["198.18.0.66"]}}`)
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
			return create(binding("ts-apiserver-proxy-web", "tsinject-apiserver-proxy", "tsinject-system", "ts-apiserver-proxy-web"))
		}},
		{"remove an API proxy's binding", func() error {
			return asManager("", "delete", "clusterrolebinding", "ts-apiserver-proxy-k8s", "--dry-run=server")
		}},
		{"bind a proxy set's Role to its account", func() error {
			return create(roleBinding("ts-connector-edge", "ts-connector-edge", "tsinject-system", "ts-connector-edge"))
		}},
		{"write a proxy set's Role", func() error {
			return create(role("ts-connector-new", `[{"apiGroups":[""],"resources":["secrets"],"verbs":["get","update","patch"],"resourceNames":["ts-connector-new-0"]},
				{"apiGroups":[""],"resources":["events"],"verbs":["create","patch","get"]}]`))
		}},
		{"write a pool's Role", func() error {
			return create(role("ts-pool-shared", `[{"apiGroups":[""],"resources":["secrets"],"verbs":["get","update","patch"],"resourceNames":["ts-pool-shared-0","ts-pool-shared-1"]},
				{"apiGroups":[""],"resources":["secrets"],"verbs":["get"],"resourceNames":["ts-pool-shared-files"]},
				{"apiGroups":[""],"resources":["events"],"verbs":["create","patch","get"]}]`))
		}},
		{"run a pool", func() error {
			sts := newProxySet("ts-pool-shared", proxyImage)
			sts.container()["args"] = []string{"egress"}
			sts.labels()["app.kubernetes.io/component"] = "pool"
			sts.pod["serviceAccountName"] = "ts-pool-shared"
			sts.env("TSINJECT_POOL_SECRET", "ts-pool-shared-files")
			return create(sts.json(t))
		}},
		{"publish a new CA", func() error {
			return webhookPatch(`[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"` + pemBase64("new") + `"}]`)
		}},
		{"make a proxy's state Secret", func() error { return create(secret("ts-apiserver-proxy-k8s-0", "Opaque", "{}")) }},
		{"write a proxy set's files", func() error {
			return create(secret("ts-connector-edge-files", "Opaque", `{"deny":"MTAuMC4wLjAvOA=="}`))
		}},
		{"copy the auth key into a namespace", func() error {
			return create(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"tsinject-auth","namespace":"shop"},"data":{"authkey":"eA=="}}`)
		}},
		{"publish its status", func() error {
			return create(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"tsinject-manager-status","namespace":"tsinject-system"}}`)
		}},
		{"run a proxy set", set(func(*proxySet) {})},
		{"run a Connector exit node with its files", func() error {
			sts := newProxySet("ts-connector-edge", proxyImage)
			sts.container()["args"] = []string{"connector"}
			sts.labels()["app.kubernetes.io/component"] = "connector"
			sts.env("TSINJECT_EXIT_DENY_FILE", "/var/run/tsinject/exit-deny/deny")
			sts.pod["serviceAccountName"] = "ts-connector-edge"
			sts.volume("files")["secret"] = map[string]any{"secretName": "ts-connector-edge-files"}
			return create(sts.json(t))
		}},
		{"add its finalizer to a Recorder", func() error {
			return asManager("", "patch", "recorder", "audit", "--dry-run=server", "--type=merge", "-p", `{"metadata":{"finalizers":["tsinject.dev/recorder"]}}`)
		}},
		// Its typed client writes a duration back as "2160h0m0s": an
		// update of the whole Recorder would change the admins' spec.
		{"add its finalizer to a Recorder as its controllers do", func() error {
			cfg := rest.CopyConfig(c.Config)
			cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:tsinject-system:tsinject-manager"}
			cl, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
			if err != nil {
				return err
			}
			var rec v1alpha1.Recorder
			if err := cl.Get(context.Background(), client.ObjectKey{Name: "audit"}, &rec); err != nil {
				return err
			}
			whole := rec.DeepCopy()
			whole.Finalizers = []string{"tsinject.dev/recorder"}
			if err := cl.Update(context.Background(), whole, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "never their spec") {
				return fmt.Errorf("an update of the whole Recorder: %v, want it refused as a change of its spec", err)
			}
			_, err = proxyset.Finalize(context.Background(), cl, &rec, "tsinject.dev/recorder", true)
			return err
		}},
		{"run a Recorder's recorder with its claim", func() error {
			return create(recorderSet(nil).json(t))
		}},
		{"run an Ingress's web proxy with its certificate", func() error {
			sts := newProxySet("ts-web-grafana-1234abcd", proxyImage)
			sts.container()["args"] = []string{"web"}
			sts.labels()["app.kubernetes.io/component"] = "web"
			sts.pod["serviceAccountName"] = "ts-web-grafana-1234abcd"
			sts.volume("files")["secret"] = map[string]any{"secretName": "ts-web-grafana-1234abcd-files"}
			sts.mount("files")["mountPath"] = "/var/run/tsinject/web-cert"
			return create(sts.json(t))
		}},
		{"give a proxy set its Service", func() error {
			return create(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"ts-egress-db","namespace":"tsinject-system"},"spec":{"ports":[{"port":5432}]}}`)
		}},
		{"point an egress Service at its proxies", func() error {
			return patch("shop", "service/db", `{"spec":{"externalName":"ts-egress-db.tsinject-system.svc.cluster.local"}}`)
		}},
		{"hold a tenant's Service with its finalizer", func() error {
			return patch("shop", "service/db", `{"metadata":{"finalizers":["tsinject.dev/egress"]}}`)
		}},
		{"hold an Ingress of its class", func() error {
			return patch("shop", "ingress/grafana", `{"metadata":{"finalizers":["tsinject.dev/web"]}}`)
		}},
		{"clear the status of an Ingress that left its class", func() error {
			return putIngressStatus("moved", `[]`)
		}},
		{"let go of an Ingress that left its class", func() error {
			return patch("shop", "ingress/moved", `{"metadata":{"finalizers":null}}`)
		}},
		{"publish an Ingress's tailnet name", func() error {
			return putIngressStatus("grafana", `[{"hostname":"shop-grafana.tailnet.ts.net"},{"ip":"100.64.0.7"}]`)
		}},
		{"hold a Gateway of its class", func() error {
			return patch("shop", "gateway/portal", `{"metadata":{"finalizers":["tsinject.dev/gateway"]}}`)
		}},
		{"publish a Gateway's tailnet name", func() error {
			return putGatewayStatus(false, "namespaces/shop/gateways/portal", gatewayStatus("shop-portal.tailnet.ts.net"))
		}},
		{"clear the status of a Gateway that left its class", func() error {
			return putGatewayStatus(false, "namespaces/shop/gateways/left", `{"conditions":[{"type":"Accepted","status":"Unknown","reason":"Pending","message":"Waiting for controller","lastTransitionTime":"`+now+`"},{"type":"Programmed","status":"Unknown","reason":"Pending","message":"Waiting for controller","lastTransitionTime":"`+now+`"}]}`)
		}},
		{"let go of a Gateway that left its class", func() error {
			return patch("shop", "gateway/left", `{"metadata":{"finalizers":null}}`)
		}},
		{"write its own entry in a route's status", func() error {
			return putGatewayStatus(false, "namespaces/shop/httproutes/app", `{"parents":[`+nginxEntry+`,`+entry("tsinject.dev/gateway-controller", "portal", "True")+`]}`)
		}},
		{"write the first entry in a route's status", func() error {
			return putGatewayStatus(false, "namespaces/shop/httproutes/fresh", `{"parents":[`+entry("tsinject.dev/gateway-controller", "portal", "True")+`]}`)
		}},
		{"accept its GatewayClass", func() error {
			return putGatewayStatus(false, "gatewayclasses/tsinject", `{"conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"","lastTransitionTime":"`+now+`","observedGeneration":1}]}`)
		}},
		{"publish an ingress Service's tailnet addresses", func() error {
			return putStatus("front", `[{"hostname":"front.tailnet.ts.net"},{"ip":"100.64.0.7","ipMode":"Proxy"}]`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.try(); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
}

// proxySet is a StatefulSet as the manager writes one for an API server
// proxy in federation mode, for a test to change one thing of.
type proxySet struct {
	obj map[string]any
	pod map[string]any
}

func newProxySet(name, image string) *proxySet {
	env := []any{
		map[string]any{"name": "TSINJECT_POD_NAME", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.name"}}},
		map[string]any{"name": "TSINJECT_STATE", "value": "secret"},
		map[string]any{"name": "TSINJECT_STATE_DIR", "value": "/var/lib/tsinject"},
		map[string]any{"name": "TSINJECT_CLIENT_ID", "value": "k8s-proxies"},
		map[string]any{"name": "TSINJECT_ID_TOKEN_FILE", "value": "/var/run/tsinject/token/token"},
		map[string]any{"name": "TSINJECT_TAGS", "value": "tag:k8s-api"},
	}
	pod := map[string]any{
		"serviceAccountName": name,
		"enableServiceLinks": false,
		"containers": []any{map[string]any{
			"name": "apiserver", "image": image, "args": []string{"apiserver"}, "env": env,
			"ports":          []any{map[string]any{"name": "health", "containerPort": 9002}, map[string]any{"containerPort": 443}},
			"readinessProbe": map[string]any{"httpGet": map[string]any{"path": "/readyz", "port": 9002}},
			"volumeMounts": []any{
				map[string]any{"name": "state", "mountPath": "/var/lib/tsinject"},
				map[string]any{"name": "tsinject-token", "mountPath": "/var/run/tsinject/token", "readOnly": true},
				map[string]any{"name": "files", "mountPath": "/var/run/tsinject/exit-deny", "readOnly": true},
			},
		}},
		"volumes": []any{
			map[string]any{"name": "state", "emptyDir": map[string]any{}},
			map[string]any{"name": "tsinject-token", "projected": map[string]any{"sources": []any{
				map[string]any{"serviceAccountToken": map[string]any{"audience": "tsinject.dev/tailnet", "expirationSeconds": 600, "path": "token"}}}}},
			map[string]any{"name": "files", "secret": map[string]any{"secretName": name + "-files"}},
		},
	}
	return &proxySet{pod: pod, obj: map[string]any{
		"apiVersion": "apps/v1", "kind": "StatefulSet",
		"metadata": map[string]any{"name": name, "namespace": "tsinject-system"},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"a": "b"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"a": "b", "app.kubernetes.io/component": "apiserver-proxy"}}, "spec": pod},
		},
	}}
}

// recordingsClaim is a recorder's claim template; change edits its spec.
func recordingsClaim(change func(spec map[string]any)) map[string]any {
	spec := map[string]any{"accessModes": []string{"ReadWriteOnce"}, "resources": map[string]any{"requests": map[string]any{"storage": "1Gi"}}}
	if change != nil {
		change(spec)
	}
	return map[string]any{"metadata": map[string]any{"name": "recordings"}, "spec": spec}
}

// recorderSet is a StatefulSet as the manager writes one for a Recorder.
func recorderSet(change func(spec map[string]any)) *proxySet {
	sts := newProxySet("ts-recorder-audit", "ghcr.io/tsinject/tsinject-proxy:v1.2.3")
	sts.container()["args"] = []string{"recorder"}
	sts.labels()["app.kubernetes.io/component"] = "recorder"
	sts.pod["serviceAccountName"] = "ts-recorder-audit"
	sts.volume("files")["secret"] = map[string]any{"secretName": "ts-recorder-audit-files"}
	sts.container()["volumeMounts"] = append(sts.container()["volumeMounts"].([]any), map[string]any{"name": "recordings", "mountPath": "/var/lib/tsinject-recordings"})
	sts.env("TSINJECT_RECORDINGS_DIR", "/var/lib/tsinject-recordings")
	sts.obj["spec"].(map[string]any)["volumeClaimTemplates"] = []any{recordingsClaim(change)}
	return sts
}

func (s *proxySet) container() map[string]any { return s.pod["containers"].([]any)[0].(map[string]any) }

func (s *proxySet) labels() map[string]any {
	return s.obj["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any)
}

func (s *proxySet) env(name, value string) {
	c := s.container()
	c["env"] = append(c["env"].([]any), map[string]any{"name": name, "value": value})
}

func (s *proxySet) volume(name string) map[string]any { return find(s.pod["volumes"], name) }

func (s *proxySet) mount(name string) map[string]any {
	return find(s.container()["volumeMounts"], name)
}

func find(list any, name string) map[string]any {
	for _, v := range list.([]any) {
		if m := v.(map[string]any); m["name"] == name {
			return m
		}
	}
	panic("no " + name)
}

func (s *proxySet) json(t *testing.T) string {
	b, err := json.Marshal(s.obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
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

// Without the params ConfigMap (an uninstall deletes it before the rest)
// the policies that read params block no one: the API server reads params
// before it evaluates the match conditions, so Deny would refuse every
// Secret, Service and StatefulSet write they match, anyone's, and leave an
// uninstall or a namespace deletion stuck. (They then hold the manager to
// nothing either, which tsinject check reports.)
func TestMissingParamsBlockNoOne(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{CRDDirs: []string{certManagerCRDs(t)}})
	rendered := kubectl(t, c.Kubeconfig, nil, "kustomize", "base")
	kubectl(t, c.Kubeconfig, rendered, "apply", "--server-side", "--field-manager=tsinject-test", "-f", "-")
	kubectl(t, c.Kubeconfig, nil, "-n", "tsinject-system", "create", "secret", "generic", "sh.helm.release.v1.tsinject.v1")
	try := func(as string, args ...string) error {
		cmd := exec.Command("kubectl", append([]string{"--kubeconfig", c.Kubeconfig, "-n", "tsinject-system"}, args...)...)
		if as != "" {
			cmd.Args = append(cmd.Args, "--as="+as)
		}
		cmd.Stdin = strings.NewReader(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ts-x-0"},"data":{"k":"dg=="}}`)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	const manager = "system:serviceaccount:tsinject-system:tsinject-manager"
	plant := []string{"create", "--dry-run=server", "-f", "-"}
	ctx := context.Background()
	// The policy holds while its params exist...
	if err := poll.Until(ctx, time.Minute, 200*time.Millisecond, func() error {
		if try(manager, plant...) == nil {
			return errors.New("the admission policies are not in effect yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	kubectl(t, c.Kubeconfig, nil, "-n", "tsinject-system", "delete", "configmap", "tsinject-admission")
	// ...and, once the API server sees them gone, lets writes through.
	if err := poll.Until(ctx, time.Minute, 200*time.Millisecond, func() error { return try(manager, plant...) }); err != nil {
		t.Fatal(err)
	}
	if err := try("", "delete", "secret", "sh.helm.release.v1.tsinject.v1", "--dry-run=server"); err != nil {
		t.Errorf("an admin deleting a Secret of tsinject-system without the params: %v", err)
	}
}
