//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tsinject/tsinject/manager/check"
	"github.com/tsinject/tsinject/test/gobuild"
)

// `tsinject check` on the real installation: every check passes with a
// running injected pod; a namespace policy an admin got wrong fails the
// check, exit code 1, naming the namespace and the annotation; fixed, it
// passes again.
func TestCheck(t *testing.T) {
	ns := namespace(t, "checked")
	apply(t, ns, sleeper("app", map[string]string{"egress": "8080=db:80"}))
	waitPod(t, ns, "app", "Ready", ready)
	run := func() ([]check.Result, int) { return runCheck(t, "--proxy") }

	rs, code := run()
	if code != 0 {
		t.Errorf("tsinject check exited %d on a working installation: %+v", code, rs)
	}
	names := map[string]check.Result{}
	for _, r := range rs {
		names[r.Name] = r
		if !r.OK {
			t.Errorf("check %q failed: %s (fix: %s)", r.Name, r.Detail, r.Fix)
		}
	}
	for _, want := range []string{"CRDs", "manager", "webhook certificate", "webhook", "tailnet credential", "control server", "guardrails", "namespace policies", "sidecars ready", "sidecar versions"} {
		if _, ok := names[want]; !ok {
			t.Errorf("no %q check in %+v", want, rs)
		}
	}
	if r := names["webhook"]; !strings.Contains(r.Detail, "came back injected") {
		t.Errorf("webhook check %q: want a dry-run pod injected", r.Detail)
	}
	// The federated trust, proven: a ServiceAccount token of an injected
	// namespace exchanged at the control server.
	if r := names["tailnet credential"]; !strings.Contains(r.Detail, "exchanged a token of ServiceAccount") {
		t.Errorf("credential check %q: want the token exchange tried", r.Detail)
	}

	// An admin's typo in a namespace's policy.
	ctx := testCtx(t, stepDeadline)
	patch := func(v string) {
		t.Helper()
		body := `{"metadata":{"annotations":{"tsinject.dev/allow-untagged":` + v + `}}}`
		if _, err := env.cluster.Client.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(body), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	patch(`"maybe"`)
	rs, code = run()
	var pol check.Result
	for _, r := range rs {
		if r.Name == "namespace policies" {
			pol = r
		}
	}
	if code != 1 || pol.OK || !strings.Contains(pol.Detail, "namespace "+ns+": annotation tsinject.dev/allow-untagged") || pol.Fix == "" {
		t.Errorf("with a bad policy: exit %d, %+v; want exit 1 and the namespace and annotation named, with a fix", code, pol)
	}
	patch(`null`)
	if _, code = run(); code != 0 {
		t.Errorf("tsinject check exited %d after the policy was fixed", code)
	}
	figure(t, "tsinject check: %d checks pass on the real installation; a bad namespace policy fails it with exit 1", len(names))
}

// runCheck runs tsinject check -o json with args against the cluster:
// its results and exit code.
func runCheck(t *testing.T, args ...string) ([]check.Result, int) {
	t.Helper()
	tsinject, err := gobuild.Binary("./cmd/tsinject")
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, stepDeadline)
	out, err := exec.CommandContext(ctx, tsinject, append([]string{"check", "--kubeconfig", env.cluster.Kubeconfig, "-o", "json"}, args...)...).Output()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rs []check.Result
	if err := json.Unmarshal(out, &rs); err != nil {
		t.Fatalf("tsinject check -o json: %v\n%s", err, out)
	}
	return rs, code
}

// checkResult is the named result of tsinject check.
func checkResult(t *testing.T, name string) check.Result {
	t.Helper()
	rs, _ := runCheck(t)
	for _, r := range rs {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("tsinject check has no %q result: %+v", name, rs)
	return check.Result{}
}
