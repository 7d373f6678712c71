package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The data plane stays free of controller-runtime and the injector, so
// its image stays small and starts fast.
func TestDataPlaneDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps returned only %d packages", len(deps))
	}
	for _, d := range deps {
		for _, banned := range []string{"sigs.k8s.io/controller-runtime", "github.com/tsinject/tsinject/injector", "k8s.io/client-go", "github.com/cert-manager"} {
			if strings.HasPrefix(d, banned) {
				t.Errorf("tsinject-proxy depends on %s", d)
			}
		}
	}
}
