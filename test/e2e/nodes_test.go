//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// An injected pod on every node joins the tailnet and reaches a tailnet
// service: node 2's pods reach the control server, DERP and the key
// issuer on the host through node 2's own network, kube-proxy and DNS.
func TestInjectedPodsOnEveryNode(t *testing.T) {
	ns := namespace(t, "nodes")
	url := "http://" + env.db.FQDN + "/"
	for i, n := range env.cluster.Nodes {
		name := fmt.Sprintf("app-%d", i+1)
		apply(t, ns, onNode(appPod(name, map[string]string{"egress-mode": "transparent"}, fetch(url)), n.Name))
		p, took := waitPod(t, ns, name, "Succeeded", succeeded)
		if p.Spec.NodeName != n.Name {
			t.Errorf("%s ran on %q, want %s", name, p.Spec.NodeName, n.Name)
		}
		if out := logs(t, ns, name, "app"); !strings.Contains(out, "ok "+url) {
			t.Errorf("%s on %s did not reach %s:\n%s", name, n, url, out)
		}
		figure(t, "injected pod on %s Succeeded (reached %s) %.1fs after creation", n, url, took.Seconds())
	}
}
