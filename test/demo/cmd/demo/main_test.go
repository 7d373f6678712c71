package main

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/tier"
)

// make demo's sandbox runs every step and cleans up (demo run --once).
func TestDemoOnce(t *testing.T) {
	tier.Needs(t, tier.Processes)
	sandbox, err := gobuild.Binary("./test/demo/cmd/demo")
	if err != nil {
		t.Fatal(err)
	}
	tier.Needs(t, tier.Processes)
	proxy, err := gobuild.Binary("./cmd/tsinject-proxy")
	if err != nil {
		t.Fatal(err)
	}
	tier.Needs(t, tier.Processes)
	tsinject, err := gobuild.Binary("./cmd/tsinject")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sandbox, "run", "--once", "--proxy-bin", proxy, "--tsinject-bin", tsinject).CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"==> 1.", "==> 5.", "All steps passed",
		"exchanged a token of ServiceAccount demo/default",
		"hello from db, a service on the tailnet",
		"namespace/made-over-the-tailnet created",
		"is forbidden",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// The check's columns widen with its marks (a WARN is wider than ok).
	if !regexp.MustCompile(`(?m)^\s+ok\s+control server\s`).Match(out) {
		t.Errorf("demo output lacks a passing control server check:\n%s", out)
	}
	if netns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(netns), "tsi-demo") {
		t.Errorf("demo left network namespaces behind: %s", netns)
	}
}
