// Package tier sorts tests by what they need beyond the Go toolchain.
// `make unit` runs `go test -short`: the tests that need nothing else (pure
// functions, fake clients, golden files) run anywhere, without root, in
// about a minute warm; the others skip, saying what they need. `make test`
// runs them all against the real components.
package tier

import (
	"strings"
	"testing"
)

// Need is what a test needs beyond Go.
type Need string

// What tests need.
const (
	APIServer Need = "a real kube-apiserver and etcd (built from the Go module proxy on first use)"
	Tailnet   Need = "an in-process tailnet (control server, DERP, STUN) and real tsnet nodes"
	Root      Need = "root, for network namespaces and nftables"
	Processes Need = "this module's binaries, built and run as processes"
	Helm      Need = "helm (built from the Go module proxy on first use)"
	Browser   Need = "Debian's chromium, headless (.ci/run installs it)"
)

// Needs skips t in the unit tier (go test -short), saying what it needs
// and where it runs. In the full tier it does nothing: a test that lacks
// what it needs there fails, with the reason.
func Needs(t testing.TB, needs ...Need) {
	t.Helper()
	if !testing.Short() {
		return
	}
	s := make([]string, len(needs))
	for i, n := range needs {
		s[i] = string(n)
	}
	t.Skipf("needs %s: make test runs it (make unit, go test -short, skips it)", strings.Join(s, "; "))
}
