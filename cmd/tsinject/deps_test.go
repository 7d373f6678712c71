package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The shipped control plane links no test rig: controller-runtime's envtest
// (whose package init needs a writable /tmp and crash-looped the manager
// under a read-only root filesystem), the test control server, a DERP
// server, or anything under test/ (the in-process manager harness,
// test/managertest, among them).
func TestControlPlaneLinksNoTestRig(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list -deps returned only %d packages", len(deps))
	}
	banned := []string{
		"sigs.k8s.io/controller-runtime/pkg/envtest",
		"sigs.k8s.io/controller-runtime/pkg/internal/testing",
		"tailscale.com/tstest",
		"tailscale.com/derp/derpserver",
		"github.com/tsinject/tsinject/test/",
		"testing",
	}
	for _, d := range deps {
		for _, b := range banned {
			if d == b || strings.HasPrefix(d, b+"/") || (strings.HasSuffix(b, "/") && strings.HasPrefix(d, b)) {
				t.Errorf("tsinject links %s", d)
			}
		}
	}
}

// docs/architecture.md has a line for every package, product and rig.
func TestArchitectureNamesEveryPackage(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "e2e", "-f", "{{.ImportPath}}", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 30 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p, "github.com/tsinject/tsinject/")
		if !strings.Contains(string(doc), "`"+rel+"`") {
			t.Errorf("docs/architecture.md does not name package `%s`", rel)
		}
	}
}
