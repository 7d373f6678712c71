package podevents

import (
	"strings"
	"testing"

	"github.com/tsinject/tsinject/injector"
)

// The Injected Event says, from the status annotation, what was added,
// by which configuration and with which SidecarProfiles.
func TestMessage(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         []string
	}{
		{"native, profiles", `{"version":"v1-a","sidecar":"native","initContainers":["tailscale"],"volumes":[],"profiles":["default@3","team@1"]}`,
			[]string{"native sidecar", "injection config v1-a", "SidecarProfiles default@3, team@1"}},
		{"fallback, transparent, proxy env", `{"version":"v1-a","sidecar":"container","initContainers":["tailscale-init"],"volumes":[],"proxyEnv":["app"]}`,
			[]string{"the first container", "init container tailscale-init (transparent egress)", "proxy variables in app"}},
		{"not JSON", `{`, []string{"not valid JSON"}},
	} {
		got, ok := Message(map[string]string{injector.AnnotationStatus: tc.status})
		if !ok {
			t.Fatalf("%s: no message", tc.name)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", tc.name, got, w)
			}
		}
		if tc.name != "native, profiles" && strings.Contains(got, "SidecarProfiles") {
			t.Errorf("%s: %q names profiles it did not use", tc.name, got)
		}
	}
	if _, ok := Message(map[string]string{}); ok {
		t.Error("a message for a pod tsinject did not inject")
	}
}
