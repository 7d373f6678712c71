package charts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"

	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/testbins"
	"github.com/tsinject/tsinject/test/tier"
)

func run(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = gobuild.Root()
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// objects indexes a rendered stream by kind/namespace/name.
func objects(t *testing.T, b []byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	r := utilyaml.NewYAMLReader(bufioReader(b))
	for {
		doc, err := r.Read()
		if err != nil {
			break
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		if m == nil {
			continue
		}
		meta, _ := m["metadata"].(map[string]any)
		key := fmt.Sprintf("%s/%v/%v", m["kind"], meta["namespace"], meta["name"])
		out[key] = m
	}
	return out
}

// The Helm chart renders the same objects as the kustomize base (and, in
// cert-manager mode or with monitoring, as that overlay), save the Namespace,
// which Helm leaves to --create-namespace; both apply to the API server.
func TestChartMatchesKustomize(t *testing.T) {
	tier.Needs(t, tier.Helm)
	helm, err := testbins.EnsureHelm(context.Background(), testWriter{t})
	if err != nil {
		t.Fatalf("helm: %v", err)
	}
	c := clustertest.Start(t, cluster.Options{CRDDirs: []string{certManagerCRDs(t), prometheusOperatorCRDs(t)}})
	run(t, nil, "kubectl", "--kubeconfig", c.Kubeconfig, "create", "namespace", "tsinject-system")

	// Federated rows add the client ID as docs/install.md does: an
	// overlay on the row's kustomization, and the chart's value.
	const clientID = "kC8Hsk3CNTRL"
	broker := func(secret string) map[string]string {
		return map[string]string{"tokenAudience": "tsinject.dev/key-broker", "brokerURL": "https://tsinject-webhook.tsinject-system.svc/v1/key", "credentialSecrets": secret}
	}
	for _, tc := range []struct {
		name      string
		kustomize string
		federated bool
		args      []string          // added to the manager's by an overlay
		params    map[string]string // set in the admission params by it
		set       []string
	}{
		{"default", "manifests/base", true, nil, nil, nil},
		{"cert-manager", "manifests/overlays/cert-manager", true, nil, nil, []string{"--set", "certificates.mode=cert-manager"}},
		{"apiserver-proxy", "manifests/overlays/apiserver-proxy", true, nil, nil, []string{"--set", "apiServerProxy.enabled=true"}},
		{"nameserver", "manifests/overlays/nameserver", true, nil, nil, []string{"--set", "nameserver.enabled=true"}},
		{"key-broker", "manifests/base", false, []string{"--oauth-secret=tsinject-oauth"}, broker("tsinject-oauth"), []string{"--set", "oauth.secretName=tsinject-oauth"}},
		{"auth-key-register", "manifests/base", false, []string{"--register-nodes"}, broker("tsinject-authkey"), []string{"--set", "authKey.enabled=true"}},
		{"auth-key-copy", "manifests/overlays/auth-key", false, nil, nil, []string{"--set", "authKey.enabled=true", "--set", "authKey.mode=copy"}},
		{"monitoring", "manifests/overlays/monitoring", true, nil, nil, []string{"--set", "metrics.podMonitor.enabled=true", "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.dashboard.enabled=true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.federated {
				tc.args = append(tc.args, "--federation-client-id="+clientID)
				tc.params = map[string]string{"clientID": clientID}
				tc.set = append(tc.set, "--set", "federation.clientID="+clientID)
			}
			dir := tc.kustomize
			if len(tc.args) > 0 || len(tc.params) > 0 {
				dir = argsOverlay(t, tc.kustomize, tc.args, tc.params)
			}
			kust := run(t, nil, "kubectl", "kustomize", dir)
			args := append([]string{"template", "tsinject", "charts/tsinject", "--namespace", "tsinject-system"}, tc.set...)
			chart := run(t, nil, helm, args...)

			k, h := objects(t, kust), objects(t, chart)
			delete(k, "Namespace/<nil>/tsinject-system")
			var keys []string
			for key := range k {
				keys = append(keys, key)
			}
			sort.Strings(keys)
			if len(keys) < 10 {
				t.Fatalf("kustomize rendered only %v", keys)
			}
			for _, key := range keys {
				if _, ok := h[key]; !ok {
					t.Errorf("the chart does not render %s", key)
					continue
				}
				if !equality.Semantic.DeepEqual(k[key], h[key]) {
					a, _ := yaml.Marshal(k[key])
					b, _ := yaml.Marshal(h[key])
					t.Errorf("%s differs:\n--- kustomize\n%s\n--- helm\n%s", key, a, b)
				}
			}
			for key := range h {
				if _, ok := k[key]; !ok {
					t.Errorf("the chart renders %s, which kustomize does not", key)
				}
			}
			for _, rendered := range [][]byte{kust, chart} {
				run(t, rendered, "kubectl", "--kubeconfig", c.Kubeconfig, "apply", "--server-side", "--dry-run=server", "--field-manager=tsinject-test", "-f", "-")
			}
		})
	}

	t.Run("values", func(t *testing.T) {
		out := string(run(t, nil, helm, "template", "tsinject", "charts/tsinject", "--namespace", "tsinject-system",
			"--set", "controlURL=https://headscale.example.com", "--set", "nativeSidecar=never", "--set", "webhook.failurePolicy=Ignore",
			"--set", "replicas=3", "--set", "metrics.serviceMonitor.enabled=true", "--set", "proxyImage=registry.example/proxy:1",
			"--set", "allowedProxyImages=registry.example/proxy-debug:*",
			"--set", "federation.clientID=kC8Hsk3CNTRL", "--set", "federation.audience=https://tailnet.example",
			"--set", "federation.namespaceDefault.clientID=kC8Hsk3SHARD", "--set", "federation.namespaceDefault.audience=https://tenants.example",
			"--set", "podCIDRs=198.18.128.0/17", "--set", "metrics.podMonitor.enabled=true", "--set", "metrics.dashboard.enabled=true", "--set", "metrics.podAnnotations=true"))
		for _, bad := range [][]string{nil, {"--set", "federation.clientID=x", "--set", "authKey.enabled=true"}, {"--set", "federation.clientID=x", "--set", "oauth.secretName=y"}} {
			cmd := exec.Command(helm, append([]string{"template", "tsinject", "charts/tsinject"}, bad...)...)
			cmd.Dir = gobuild.Root()
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "federation.clientID") {
				t.Errorf("helm template %v: %v, want a failure naming federation.clientID:\n%s", bad, err, out)
			}
		}
		for _, want := range []string{"--control-url=https://headscale.example.com", "--native-sidecar=never", "failurePolicy: Ignore",
			"replicas: 3", "kind: ServiceMonitor", "--proxy-image=registry.example/proxy:1", "--allowed-proxy-images=registry.example/proxy-debug:*",
			"--federation-client-id=kC8Hsk3CNTRL", "--federation-audience=https://tailnet.example", "--pod-cidrs=198.18.128.0/17",
			"--federation-namespace-client-id=kC8Hsk3SHARD", "--federation-namespace-audience=https://tenants.example",
			"kind: PodMonitor", "name: tsinject-sidecars", "port: " + contract.SidecarHealthPortName, "name: tsinject-proxies", "port: " + contract.ProxyHealthPortName,
			`grafana_dashboard: "1"`, `"uid": "tsinject"`, "--prometheus-annotations"} {
			if !strings.Contains(out, want) {
				t.Errorf("rendered chart lacks %q", want)
			}
		}
	})
}

// argsOverlay writes an overlay like docs/install.md's on base, adding
// args to the manager's and setting params in its admission params.
func argsOverlay(t *testing.T, base string, args []string, params map[string]string) string {
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, filepath.Join(gobuild.Root(), base))
	if err != nil {
		t.Fatal(err)
	}
	var ops, data strings.Builder
	for _, a := range args {
		fmt.Fprintf(&ops, "    - {op: add, path: /spec/template/spec/containers/0/args/-, value: %q}\n", a)
	}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		fmt.Fprintf(&data, "    - {op: replace, path: /data/%s, value: %q}\n", k, params[k])
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [%s]
patches:
- target: {kind: Deployment, name: tsinject-manager}
  patch: |-
    - {op: test, path: /kind, value: Deployment}
%s- target: {kind: ConfigMap, name: tsinject-admission}
  patch: |-
    - {op: test, path: /kind, value: ConfigMap}
%s`, rel, ops.String(), data.String())
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func certManagerCRDs(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager")
	cmd.Dir = gobuild.Root()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("locating the cert-manager module: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Logf("%s", p); return len(p), nil }

// The dashboard parses, and every metric its queries use is one tsinject
// exports (a renamed metric would leave a panel silently empty).
func TestDashboardQueriesExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(gobuild.Root(), "charts/tsinject/files/dashboards/tsinject.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var src strings.Builder
	for _, dir := range []string{"injector", "sidecar", "proxy", "controllers", "manager", "internal"} {
		filepath.WalkDir(filepath.Join(gobuild.Root(), dir), func(p string, e os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
				b, _ := os.ReadFile(p)
				src.Write(b)
			}
			return nil
		})
	}
	metric := regexp.MustCompile(`tsinject_[a-z_]+`)
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range metric.FindAllString(tg.Expr, -1) {
				n++
				if !strings.Contains(src.String(), `"`+m+`"`) {
					t.Errorf("panel %q queries %s, which no product code exports", p.Title, m)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d metric references in the dashboard", n)
	}
}
