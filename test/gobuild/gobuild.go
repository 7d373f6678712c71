// Package gobuild builds this module's commands for tests and the sandbox
// that run them as real processes.
package gobuild

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
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
//
// Binaries are kept by content in one shared directory: identical builds
// (every test process of one tree) share one file, and other builds of a
// command are removed once a day old. A directory per process was never
// removed (a library has no end to clean up at), and hundreds of 100 MB
// directories filled the disk.
func Binary(pkg string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[pkg]; ok {
		return p, nil
	}
	dir := filepath.Join(os.TempDir(), "tsinject-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Readable and executable by the unprivileged users tests run it as.
	os.Chmod(dir, 0o755)
	name := filepath.Base(pkg)
	tmp, err := os.CreateTemp(dir, name+".building-")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // gone once renamed
	cmd := exec.Command("go", "build", "-o", tmp.Name(), pkg)
	cmd.Dir = Root()
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, strings.TrimSpace(string(b)))
	}
	sum, err := fileSum(tmp.Name())
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name+"-"+sum)
	now := time.Now()
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return "", err
	}
	// Renaming over an identical binary another process runs leaves it
	// intact; the fresh time keeps it from the pruning below.
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	os.Chtimes(out, now, now)
	prune(dir, name, out, now.Add(-24*time.Hour))
	built[pkg] = out
	return out, nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// prune removes other builds of command name last built before cutoff.
func prune(dir, name, keep string, cutoff time.Time) {
	old, _ := filepath.Glob(filepath.Join(dir, name+"-"+strings.Repeat("?", 16)))
	for _, p := range old {
		if fi, err := os.Stat(p); err == nil && p != keep && fi.ModTime().Before(cutoff) {
			os.Remove(p)
		}
	}
}
