// Package testbins builds the control-plane binaries that integration tests
// run (etcd and kube-apiserver) from the Go module proxy, and caches them
// outside the work tree, keyed by version, so they are built once per machine.
//
// Nothing is downloaded as a prebuilt binary: the sources come from the module
// proxy through the go command, which is the only registry these machines reach.
package testbins

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Versions of the control plane the tests run against.
const (
	KubernetesVersion = "v1.37.2"
	// StagingVersion is the release of the k8s.io/* staging modules that
	// matches KubernetesVersion (k8s.io/kubernetes requires them at v0.0.0).
	StagingVersion = "v0.37.2"
	EtcdVersion    = "v3.6.16"
)

// HelmVersion is the helm the packaging tests render the chart with.
const HelmVersion = "v3.22.0"

// BuildCommand is what a person runs to build the binaries by hand.
const BuildCommand = "go run ./test/testbins/cmd/testbins"

// Dir is where the binaries for the pinned versions live:
// $TSINJECT_CACHE_DIR, else the user cache dir, under tsinject/envtest/<versions>.
func Dir() (string, error) {
	root := os.Getenv("TSINJECT_CACHE_DIR")
	if root == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no cache dir (set TSINJECT_CACHE_DIR): %w", err)
		}
		root = filepath.Join(c, "tsinject")
	}
	return filepath.Join(root, "envtest", "k8s-"+KubernetesVersion+"_etcd-"+EtcdVersion), nil
}

// Present reports whether dir holds every binary envtest needs.
func Present(dir string) bool {
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// Ensure returns the directory holding kube-apiserver, etcd and kubectl,
// building what is missing. Concurrent callers (parallel test packages) wait
// on a file lock so the binaries are built once. Progress goes to log.
func Ensure(ctx context.Context, log io.Writer) (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	err = buildOnce(dir, log, func() bool { return Present(dir) }, func(b builder) error {
		if err := b.buildAll(ctx); err != nil {
			return fmt.Errorf("building test control plane into %s: %w (build by hand with: %s)", dir, err, BuildCommand)
		}
		return nil
	})
	return dir, err
}

// buildOnce runs build into dir unless present says it is done; other
// processes doing the same wait on a file lock, then find it done.
func buildOnce(dir string, log io.Writer, present func() bool, build func(builder) error) error {
	if present() {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	unlock, err := lock(filepath.Join(dir, ".lock"), log)
	if err != nil {
		return err
	}
	defer unlock()
	if present() { // built by whoever held the lock before us
		return nil
	}
	return build(builder{dir: dir, log: log})
}

// EnsureHelm returns the path of a helm binary built from its module
// (cached like the control plane), for the packaging tests.
func EnsureHelm(ctx context.Context, log io.Writer) (string, error) {
	dir, err := ensureTool(ctx, log, "helm", "helm.sh/helm/v3", HelmVersion,
		map[string]string{"helm": "helm.sh/helm/v3/cmd/helm"})
	return filepath.Join(dir, "helm"), err
}

// TailscaleVersion is the tailscale module tsinject builds against; the
// benchmarks compare with tailscaled at the same version.
const TailscaleVersion = "v1.102.5"

// EnsureTailscaled returns the directory holding tailscaled and tailscale
// built from tailscale.com at TailscaleVersion (for the benchmarks).
func EnsureTailscaled(ctx context.Context, log io.Writer) (string, error) {
	return ensureTool(ctx, log, "tailscale", "tailscale.com", TailscaleVersion,
		map[string]string{"tailscaled": "tailscale.com/cmd/tailscaled", "tailscale": "tailscale.com/cmd/tailscale"})
}

// ensureTool builds the binaries bins (name -> package) of module
// path@version into a cache directory, once, and returns that directory.
func ensureTool(ctx context.Context, log io.Writer, name, path, version string, bins map[string]string) (string, error) {
	root, err := Dir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(filepath.Dir(root), name+"-"+version)
	present := func() bool {
		for b := range bins {
			if !isExec(filepath.Join(dir, b)) {
				return false
			}
		}
		return true
	}
	err = buildOnce(dir, log, present, func(b builder) error {
		start := time.Now()
		fmt.Fprintf(b.log, "testbins: building %s %s from its module (minutes, once)\n", name, version)
		var pkgs []string
		for _, p := range bins {
			pkgs = append(pkgs, p)
		}
		src, err := b.moduleFor(ctx, name, path, version, nil, pkgs)
		if err != nil {
			return err
		}
		for bin, pkg := range bins {
			if err := b.goBuild(ctx, src, bin, pkg, "-s -w"); err != nil {
				return fmt.Errorf("building %s: %w", bin, err)
			}
		}
		fmt.Fprintf(b.log, "testbins: %s ready in %s\n", name, time.Since(start).Round(time.Second))
		return nil
	})
	return dir, err
}

func lock(path string, log io.Writer) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fmt.Fprintf(log, "testbins: another process is building %s; waiting\n", filepath.Dir(path))
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

type builder struct {
	dir string
	log io.Writer
}

func (b builder) buildAll(ctx context.Context) error {
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"etcd " + EtcdVersion, b.buildEtcd},
		{"kube-apiserver " + KubernetesVersion, b.buildAPIServer},
		{"kubectl", b.kubectl},
	}
	for _, s := range steps {
		start := time.Now()
		fmt.Fprintf(b.log, "testbins: preparing %s\n", s.name)
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(b.log, "testbins: %s ready in %s\n", s.name, time.Since(start).Round(time.Second))
	}
	return nil
}

func (b builder) buildEtcd(ctx context.Context) error {
	if isExec(filepath.Join(b.dir, "etcd")) {
		return nil
	}
	src, err := b.module(ctx, "etcd", "go.etcd.io/etcd/server/v3", EtcdVersion, nil)
	if err != nil {
		return err
	}
	return b.goBuild(ctx, src, "etcd", "go.etcd.io/etcd/server/v3", "")
}

func (b builder) buildAPIServer(ctx context.Context) error {
	if isExec(filepath.Join(b.dir, "kube-apiserver")) {
		return nil
	}
	src, err := b.kubernetesModule(ctx)
	if err != nil {
		return err
	}
	return b.goBuild(ctx, src, "kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", b.versionLDFlags())
}

// kubernetesModule is the throwaway module that builds k8s.io/kubernetes
// commands, its staging modules replaced by their releases.
func (b builder) kubernetesModule(ctx context.Context) (string, error) {
	gomod, err := b.downloadGoMod(ctx, "k8s.io/kubernetes", KubernetesVersion)
	if err != nil {
		return "", err
	}
	staging := StagingModules(gomod)
	if len(staging) == 0 {
		return "", errors.New("k8s.io/kubernetes go.mod lists no staging modules at v0.0.0; the layout changed")
	}
	fmt.Fprintf(b.log, "testbins: replacing %d staging modules with their %s releases\n", len(staging), StagingVersion)
	replace := map[string]string{}
	for _, m := range staging {
		replace[m] = StagingVersion
	}
	return b.module(ctx, "kube-apiserver", "k8s.io/kubernetes", KubernetesVersion, replace)
}

// NodeBinaries are what a real node adds to the control plane that
// envtest runs: the kubelet and the controllers and proxy a cluster needs
// for pods, Deployments, Jobs and Services to work.
var NodeBinaries = map[string]string{
	"kubelet":                 "k8s.io/kubernetes/cmd/kubelet",
	"kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
	"kube-scheduler":          "k8s.io/kubernetes/cmd/kube-scheduler",
	"kube-proxy":              "k8s.io/kubernetes/cmd/kube-proxy",
}

// EnsureNode returns the directory of Ensure with the NodeBinaries built
// into it too (same version, same flags, so the build cache of
// kube-apiserver is reused: about 5 minutes more when cold).
func EnsureNode(ctx context.Context, log io.Writer) (string, error) {
	dir, err := Ensure(ctx, log)
	if err != nil {
		return "", err
	}
	present := func() bool {
		for bin := range NodeBinaries {
			if !isExec(filepath.Join(dir, bin)) {
				return false
			}
		}
		return true
	}
	err = buildOnce(dir, log, present, func(b builder) error {
		src, err := b.kubernetesModule(ctx)
		if err != nil {
			return err
		}
		for _, bin := range sortedKeys(NodeBinaries) {
			if isExec(filepath.Join(dir, bin)) {
				continue
			}
			start := time.Now()
			if err := b.goBuild(ctx, src, bin, NodeBinaries[bin], b.versionLDFlags()); err != nil {
				return fmt.Errorf("building %s: %w (build by hand with: %s --node)", bin, err, BuildCommand)
			}
			fmt.Fprintf(b.log, "testbins: %s ready in %s\n", bin, time.Since(start).Round(time.Second))
		}
		return nil
	})
	return dir, err
}

// CoreDNSVersion is the cluster DNS a real node runs.
const CoreDNSVersion = "v1.15.0"

// KubeRouterVersion is the kube-router whose NetworkPolicy controller the
// e2e nodes run. The newest the module proxy serves here; it has reported
// security flaws, which matter little on a test node with no route out.
// SIG Network's kube-network-policies would be preferred, but it queues
// packets with nftables' queue expression, which this kernel lacks
// (docs/testing.md).
const KubeRouterVersion = "v2.1.0"

// EnsureKubeRouter returns the path of kube-router built from its module.
func EnsureKubeRouter(ctx context.Context, log io.Writer) (string, error) {
	dir, err := ensureTool(ctx, log, "kube-router", "github.com/cloudnativelabs/kube-router/v2", KubeRouterVersion,
		map[string]string{"kube-router": "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"})
	return filepath.Join(dir, "kube-router"), err
}

// EnsureCoreDNS returns the path of coredns built from its module.
func EnsureCoreDNS(ctx context.Context, log io.Writer) (string, error) {
	dir, err := ensureTool(ctx, log, "coredns", "github.com/coredns/coredns", CoreDNSVersion,
		map[string]string{"coredns": "github.com/coredns/coredns"})
	return filepath.Join(dir, "coredns"), err
}

// kubectl points envtest at the kubectl on PATH (envtest wants one beside
// the API server; tests use it as a real client), or builds the matching
// release from the kube-apiserver module where a machine has none.
func (b builder) kubectl(ctx context.Context) error {
	dst := filepath.Join(b.dir, "kubectl")
	if isExec(dst) {
		return nil
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		os.Remove(dst)
		return os.Symlink(p, dst)
	}
	fmt.Fprintf(b.log, "testbins: no kubectl on PATH; building %s\n", KubernetesVersion)
	return b.goBuild(ctx, filepath.Join(b.dir, "src", "kube-apiserver"), "kubectl", "k8s.io/kubernetes/cmd/kubectl", b.versionLDFlags())
}

// versionLDFlags stamp the Kubernetes version into a binary built from
// source, which otherwise reports v0.0.0-master and defeats version checks.
func (builder) versionLDFlags() string {
	major, minor := splitVersion(KubernetesVersion)
	return strings.Join([]string{
		"-s", "-w",
		"-X k8s.io/component-base/version.gitVersion=" + KubernetesVersion,
		"-X k8s.io/component-base/version.gitMajor=" + major,
		"-X k8s.io/component-base/version.gitMinor=" + minor,
		"-X k8s.io/component-base/version.gitTreeState=clean",
	}, " ")
}

// StagingModules lists the k8s.io/* modules a k8s.io/kubernetes go.mod
// requires at v0.0.0 (they live in its staging tree and are published apart).
func StagingModules(gomod []byte) []string {
	re := regexp.MustCompile(`^\s*(?:require\s+)?(k8s\.io/[^\s]+)\s+v0\.0\.0\s*(?://.*)?$`)
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, m[1])
		}
	}
	return out
}

func splitVersion(v string) (major, minor string) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return "", ""
	}
	return parts[0], parts[1]
}

func (b builder) downloadGoMod(ctx context.Context, path, version string) ([]byte, error) {
	out, err := b.goOutput(ctx, os.TempDir(), "mod", "download", "-json", path+"@"+version)
	if err != nil {
		return nil, err
	}
	var info struct{ GoMod, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		return nil, fmt.Errorf("go mod download %s@%s: %w", path, version, err)
	}
	if info.Error != "" {
		return nil, fmt.Errorf("go mod download %s@%s: %s", path, version, info.Error)
	}
	return os.ReadFile(info.GoMod)
}

// module writes a throwaway main module that requires path@version (plus
// replacements) and resolves its dependency graph. go install pkg@version
// would refuse these modules because their own go.mod files use replace.
func (b builder) module(ctx context.Context, name, path, version string, replace map[string]string) (string, error) {
	return b.moduleFor(ctx, name, path, version, replace, mainPackages(name, path))
}

// moduleFor is module with the main packages to keep named.
func (b builder) moduleFor(ctx context.Context, name, path, version string, replace map[string]string, pkgs []string) (string, error) {
	src := filepath.Join(b.dir, "src", name)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	var gm strings.Builder
	fmt.Fprintf(&gm, "module tsinject.dev/testbins/%s\n\ngo 1.26\n\nrequire %s %s\n", name, path, version)
	if len(replace) > 0 {
		gm.WriteString("\nreplace (\n")
		for _, m := range sortedKeys(replace) {
			fmt.Fprintf(&gm, "\t%s => %s %s\n", m, m, replace[m])
		}
		gm.WriteString(")\n")
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(gm.String()), 0o644); err != nil {
		return "", err
	}
	// Blank imports keep `go mod tidy` from dropping the requirement.
	var tools strings.Builder
	tools.WriteString("//go:build tools\n\npackage tools\n\n")
	for _, pkg := range pkgs {
		fmt.Fprintf(&tools, "import _ %q\n", pkg)
	}
	if err := os.WriteFile(filepath.Join(src, "tools.go"), []byte(tools.String()), 0o644); err != nil {
		return "", err
	}
	fmt.Fprintf(b.log, "testbins: resolving modules for %s (downloads sources from the module proxy)\n", name)
	if _, err := b.goOutput(ctx, src, "mod", "tidy"); err != nil {
		return "", err
	}
	return src, nil
}

func mainPackages(name, modPath string) []string {
	if name == "kube-apiserver" {
		pkgs := []string{"k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl"}
		for _, bin := range sortedKeys(NodeBinaries) {
			pkgs = append(pkgs, NodeBinaries[bin])
		}
		return pkgs
	}
	return []string{modPath}
}

func (b builder) goBuild(ctx context.Context, src, out, pkg, ldflags string) error {
	tmp := filepath.Join(b.dir, out+".tmp")
	args := []string{"build", "-trimpath", "-o", tmp}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	args = append(args, pkg)
	fmt.Fprintf(b.log, "testbins: go %s\n", strings.Join(args, " "))
	done := b.ticker(out)
	_, err := b.goOutput(ctx, src, args...)
	done()
	if err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(b.dir, out))
}

// ticker prints a line every 30 s so a long cold build does not look hung.
func (b builder) ticker(what string) func() {
	stop := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fmt.Fprintf(b.log, "testbins: still building %s (%s)\n", what, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(stop) }
}

func (b builder) goOutput(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, goBinary(), args...)
	cmd.Dir = dir
	// The throwaway modules are not part of any workspace, must not pick up
	// the caller's build flags, and must build with the local toolchain.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, lastLines(stderr.String(), 30))
	}
	return out, nil
}

func goBinary() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); isExec(p) {
			return p
		}
	}
	return "go"
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
