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

// The paths show the layers (docs/architecture.md): internal/ is shared by
// both planes and imports neither; no two product packages share a name,
// so no file needs an import alias to tell them apart.
func TestLayers(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{.Name}} {{join .Imports \",\"}}", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/tsinject/tsinject/"
	names := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		path, name := strings.TrimPrefix(f[0], mod), f[1]
		if strings.HasPrefix(path, "test/") || name == "main" {
			continue
		}
		if other, ok := names[name]; ok {
			t.Errorf("packages %s and %s are both named %s", other, path, name)
		}
		names[name] = path
		if !strings.HasPrefix(path, "internal/") || len(f) < 3 {
			continue
		}
		for _, imp := range strings.Split(f[2], ",") {
			for _, upper := range []string{"manager", "controllers", "injector", "sidecar", "proxy", "certs"} {
				if imp == mod+upper || strings.HasPrefix(imp, mod+upper+"/") {
					t.Errorf("%s (shared) imports %s", path, strings.TrimPrefix(imp, mod))
				}
			}
		}
	}
	if len(names) < 30 {
		t.Fatalf("only %d product packages", len(names))
	}
}
