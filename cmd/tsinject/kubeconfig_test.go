package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/internal/cli"
)

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Run("tsinject", "", commands(), args, &out, &errb)
	return out.String(), errb.String(), code
}

// kubeconfig honours $KUBECONFIG, merges without clobbering, writes 0600,
// names the context, and can print to stdout; kubectl reads the result.
func TestKubeconfig(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	existing := `apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {server: https://prod.example.com}
users:
- name: prod-admin
  user: {token: secret}
contexts:
- name: prod
  context: {cluster: prod, user: prod-admin}
current-context: prod
`
	os.WriteFile(first, []byte(existing), 0o644)
	t.Setenv("KUBECONFIG", first+string(os.PathListSeparator)+second)

	if _, errOut, code := runCLI(t, "kubeconfig", "--context", "tailnet-k8s", "k8s.tail-x.ts.net"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	fi, err := os.Stat(first)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	if _, err := os.Stat(second); err == nil {
		t.Errorf("wrote the second $KUBECONFIG file")
	}
	out, err := exec.Command("kubectl", "config", "view", "-o", "jsonpath={.current-context} {.clusters[?(@.name=='tailnet-k8s')].cluster.server} {.clusters[?(@.name=='prod')].cluster.server} {.users[?(@.name=='prod-admin')].user.token}", "--raw").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl: %v %s", err, out)
	}
	if got := string(out); got != "tailnet-k8s https://k8s.tail-x.ts.net https://prod.example.com secret" {
		t.Errorf("kubectl config view = %q", got)
	}

	stdout, _, code := runCLI(t, "kubeconfig", "--stdout", "--http", "k8s")
	if code != 0 || !strings.Contains(stdout, "server: http://k8s") || strings.Contains(stdout, "prod") || !strings.Contains(stdout, "current-context: k8s") {
		t.Errorf("--stdout printed (%d):\n%s", code, stdout)
	}
	stdout, _, code = runCLI(t, "kubeconfig", "--stdout", "--http", "--proxy-url", "socks5://127.0.0.1:1055", "k8s.tail-x.ts.net")
	if code != 0 || !strings.Contains(stdout, "proxy-url: socks5://127.0.0.1:1055") {
		t.Errorf("--proxy-url printed (%d):\n%s", code, stdout)
	}
	if _, errOut, code := runCLI(t, "kubeconfig", "--proxy-url", "ftp://x:1", "k8s"); code == 0 || !strings.Contains(errOut, "--proxy-url") {
		t.Errorf("--proxy-url ftp: exit %d, %s", code, errOut)
	}
	if _, errOut, code := runCLI(t, "kubeconfig"); code != 2 || !strings.Contains(errOut, "Usage") {
		t.Errorf("missing HOST: exit %d, %s", code, errOut)
	}
}
