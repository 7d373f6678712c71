// Package gobuild builds this module's commands for tests and the sandbox
// that run them as real processes.
package gobuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

var (
	mu    sync.Mutex
	built = map[string]string{}
)

// Root is the module's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Binary builds the package at pkg (e.g. "./cmd/tsinject-proxy") once per
// process and returns the binary's path. The go build cache makes repeated
// builds cheap.
func Binary(pkg string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[pkg]; ok {
		return p, nil
	}
	dir, err := os.MkdirTemp("", "tsinject-bin-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = Root()
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, strings.TrimSpace(string(b)))
	}
	// Readable and executable by the unprivileged users tests run it as.
	os.Chmod(dir, 0o755)
	built[pkg] = out
	return out, nil
}
