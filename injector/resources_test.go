package injector

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The sidecar's request never exceeds its limit: a limit set alone below
// the default request takes the request with it (as Kubernetes does for a
// container with only limits); a request asked for above the limit is an
// error naming both.
func TestParseResources(t *testing.T) {
	def := DefaultConfig().Resources
	for _, tc := range []struct {
		name                 string
		ann                  map[string]string
		memReq, memLim, cpuR string // "" where unset
		err, warn            string
	}{
		{"defaults", nil, "48Mi", "256Mi", "20m", "", ""},
		{"higher limit", map[string]string{AnnotationMemoryLimit: "1Gi"}, "48Mi", "1Gi", "20m", "", ""},
		{"limit below the default request", map[string]string{AnnotationMemoryLimit: "32Mi"}, "32Mi", "32Mi", "20m", "", "below 64Mi"},
		{"CPU limit below the default request", map[string]string{AnnotationCPULimit: "10m"}, "48Mi", "256Mi", "10m", "", ""},
		{"no limit", map[string]string{AnnotationMemoryLimit: "none", AnnotationMemoryRequest: "300Mi"}, "300Mi", "", "20m", "", ""},
		{"request above the default limit", map[string]string{AnnotationMemoryRequest: "300Mi"}, "", "", "", "request 300Mi is above its limit 256Mi", ""},
		{"both, inconsistent", map[string]string{AnnotationMemoryRequest: "128Mi", AnnotationMemoryLimit: "64Mi"}, "", "", "", "request 128Mi is above its limit 64Mi", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p problems
			r := parseResources(tc.ann, def, &p)
			errs := strings.Join(p.errs, "; ")
			if tc.err != "" {
				if !strings.Contains(errs, tc.err) {
					t.Fatalf("errors %q, want %q", errs, tc.err)
				}
				return
			}
			if errs != "" {
				t.Fatalf("unexpected errors: %s", errs)
			}
			q := func(l corev1.ResourceList, n corev1.ResourceName) string {
				if v, ok := l[n]; ok {
					return v.String()
				}
				return ""
			}
			if got := q(r.Requests, corev1.ResourceMemory); got != tc.memReq {
				t.Errorf("memory request %q, want %q", got, tc.memReq)
			}
			if got := q(r.Limits, corev1.ResourceMemory); got != tc.memLim {
				t.Errorf("memory limit %q, want %q", got, tc.memLim)
			}
			if got := q(r.Requests, corev1.ResourceCPU); got != tc.cpuR {
				t.Errorf("CPU request %q, want %q", got, tc.cpuR)
			}
			if warns := strings.Join(p.warnings, "; "); !strings.Contains(warns, tc.warn) {
				t.Errorf("warnings %q, want %q", warns, tc.warn)
			}
		})
	}
}

func TestProxyImageAllowed(t *testing.T) {
	c := Config{ProxyImage: "ghcr.io/tsinject/tsinject-proxy:v1",
		AllowedProxyImages: []string{"registry.example/proxy:v2", "registry.example/debug/*"}}
	for image, want := range map[string]bool{
		"ghcr.io/tsinject/tsinject-proxy:v1": true,
		"ghcr.io/tsinject/tsinject-proxy:v2": false, // only the configured tag
		"registry.example/proxy:v2":          true,
		"registry.example/proxy:v3":          false,
		"registry.example/debug/proxy:1":     true,
		"registry.example/debugger:1":        false, // the prefix ends at the slash
		"attacker.example/rootkit":           false,
	} {
		if got := c.ProxyImageAllowed(image); got != want {
			t.Errorf("ProxyImageAllowed(%q) = %v, want %v", image, got, want)
		}
	}
}
