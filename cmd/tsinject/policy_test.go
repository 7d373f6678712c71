package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/internal/cli"
)

// `tsinject policy -f` reads egress Services and SidecarProfiles beside
// Connectors: the proxies' and the profiles' tags get owners, and an
// address target a grant to its ports.
func TestPolicyFromFileWithEgressServices(t *testing.T) {
	file := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(file, []byte(`apiVersion: v1
kind: Service
metadata:
  name: db
  annotations:
    tsinject.dev/tailnet-ip: 100.64.0.5
    tsinject.dev/tags: tag:shop
spec:
  type: ExternalName
  externalName: placeholder.invalid
  ports: [{port: 5432}, {port: 53, protocol: UDP, targetPort: 5353}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations: {tsinject.dev/tags: "tag:web"}
spec: {type: LoadBalancer, loadBalancerClass: tsinject.dev/tailnet, ports: [{port: 80}]}
---
apiVersion: tsinject.dev/v1alpha1
kind: SidecarProfile
metadata: {name: batch}
spec: {sidecar: {tags: [tag:batch]}}
---
apiVersion: v1
kind: Service
metadata: {name: plain}
spec: {ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: grafana
  annotations: {tsinject.dev/tags: "tag:dashboards"}
spec:
  ingressClassName: tsinject
  defaultBackend: {service: {name: grafana, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: other
  annotations: {tsinject.dev/tags: "tag:not-ours"}
spec:
  ingressClassName: nginx
  defaultBackend: {service: {name: web, port: {number: 80}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: portal
  annotations: {tsinject.dev/tags: "tag:portal"}
spec:
  gatewayClassName: tsinject
  listeners: [{name: https, protocol: HTTPS, port: 443}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  annotations: {tsinject.dev/tags: "tag:edge-not-ours"}
spec:
  gatewayClassName: nginx
  listeners: [{name: https, protocol: HTTPS, port: 443}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := cli.Run("tsinject", "", []*cli.Command{policyCommand()}, []string{"policy", "-f", file}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var s struct {
		TagOwners map[string][]string
		Grants    []struct{ Src, Dst, IP []string }
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	for _, tag := range []string{"tag:not-ours", "tag:edge-not-ours"} {
		if _, ok := s.TagOwners[tag]; ok {
			t.Errorf("an Ingress or Gateway of another class got its tags (%s) owned:\n%s", tag, out.String())
		}
	}
	for _, tag := range []string{"tag:shop", "tag:web", "tag:batch", "tag:dashboards", "tag:portal"} {
		if _, ok := s.TagOwners[tag]; !ok {
			t.Errorf("tagOwners lack the tag %s (of the proxies, or of a profile's pods):\n%s", tag, out.String())
		}
	}
	if len(s.Grants) != 1 || s.Grants[0].Dst[0] != "100.64.0.5" || len(s.Grants[0].IP) != 2 || s.Grants[0].IP[1] != "udp:5353" {
		t.Errorf("grants:\n%s", out.String())
	}
}

// With no cluster and no -f, policy says so in its own words and names
// the way out.
func TestPolicyWithoutCluster(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	var out, errOut bytes.Buffer
	if code := cli.Run("tsinject", "", []*cli.Command{policyCommand()}, []string{"policy"}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if msg := errOut.String(); !strings.HasPrefix(msg, "tsinject policy: no cluster to talk to") || !strings.Contains(msg, "-f FILE") {
		t.Errorf("message %q", msg)
	}
}
