// Package gatewayapi finds the Gateway API's standard CRDs in the module
// tsinject builds against, for the rig to install as a cluster admin
// would (the Gateway API is the cluster's, not tsinject's, to install).
package gatewayapi

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is the Gateway API's module path.
const Module = "sigs.k8s.io/gateway-api"

// StandardCRDs is the directory of the standard channel's CRDs.
func StandardCRDs() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", Module).Output()
	if err != nil {
		return "", fmt.Errorf("locating the module %s: %w", Module, err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
	if _, err := os.Stat(filepath.Join(dir, "gateway.networking.k8s.io_gateways.yaml")); err != nil {
		return "", fmt.Errorf("the Gateway API's standard CRDs: %w", err)
	}
	return dir, nil
}
