package charts_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/testbins"
	"github.com/tsinject/tsinject/test/tier"
)

// prometheusOperator is the Prometheus Operator release whose CRDs the
// monitoring objects are checked against (its Go module carries them).
const prometheusOperator = "github.com/prometheus-operator/prometheus-operator@v0.87.1"

// prometheusOperatorCRDs fetches the PodMonitor and ServiceMonitor CRDs
// from the operator's module (through the Go module proxy, cached) into a
// directory of their own.
func prometheusOperatorCRDs(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", prometheusOperator).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", prometheusOperator, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: %q", prometheusOperator, out)
	}
	dir := t.TempDir()
	for _, kind := range []string{"podmonitors", "servicemonitors"} {
		name := "monitoring.coreos.com_" + kind + ".yaml"
		b, err := os.ReadFile(filepath.Join(mod.Dir, "example", "prometheus-operator-crd", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The chart's PodMonitor, ServiceMonitor and dashboard ConfigMap are what
// the Prometheus Operator's own CRDs accept: a server-side dry-run against
// the real API server with them installed.
func TestMonitoringObjectsAccepted(t *testing.T) {
	tier.Needs(t, tier.Helm)
	helm, err := testbins.EnsureHelm(context.Background(), testWriter{t})
	if err != nil {
		t.Fatalf("helm: %v", err)
	}
	c := clustertest.Start(t, cluster.Options{CRDDirs: []string{prometheusOperatorCRDs(t)}})
	run(t, nil, "kubectl", "--kubeconfig", c.Kubeconfig, "create", "namespace", "tsinject-system")
	rendered := run(t, nil, helm, "template", "tsinject", "charts/tsinject", "--namespace", "tsinject-system",
		"--set", "federation.clientID=kC8Hsk3CNTRL", "--set", "metrics.podMonitor.enabled=true",
		"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.dashboard.enabled=true")
	out := string(run(t, rendered, "kubectl", "--kubeconfig", c.Kubeconfig, "apply", "--server-side", "--dry-run=server", "--field-manager=tsinject-test", "-f", "-"))
	for _, want := range []string{"podmonitor.monitoring.coreos.com/tsinject-sidecars", "podmonitor.monitoring.coreos.com/tsinject-proxies", "servicemonitor.monitoring.coreos.com/", "configmap/tsinject-dashboard"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %s:\n%s", want, out)
		}
	}
}
