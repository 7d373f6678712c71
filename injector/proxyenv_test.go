package injector

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// proxy-env sets both spellings of each variable (curl and busybox wget
// read only http_proxy, many others only HTTP_PROXY), and leaves both
// alone where the container sets either itself.
func TestAddProxyEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		own  []corev1.EnvVar
		want map[string]string // name -> value; "" = ours must be absent
	}{
		{"none of its own", nil, map[string]string{
			"HTTP_PROXY": "http://127.0.0.1:1056", "http_proxy": "http://127.0.0.1:1056",
			"HTTPS_PROXY": "http://127.0.0.1:1056", "https_proxy": "http://127.0.0.1:1056",
			"ALL_PROXY": "socks5h://127.0.0.1:1055", "all_proxy": "socks5h://127.0.0.1:1055",
			"NO_PROXY": noProxy, "no_proxy": noProxy,
		}},
		{"its own no_proxy", []corev1.EnvVar{{Name: "no_proxy", Value: "internal"}}, map[string]string{
			"no_proxy": "internal", "NO_PROXY": "", "http_proxy": "http://127.0.0.1:1056",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &corev1.Container{Env: append([]corev1.EnvVar(nil), tc.own...)}
			if !addProxyEnv(c) {
				t.Fatal("added nothing")
			}
			got := map[string]string{}
			for _, e := range c.Env {
				if _, dup := got[e.Name]; dup {
					t.Errorf("%s set twice", e.Name)
				}
				got[e.Name] = e.Value
			}
			for name, want := range tc.want {
				v, ok := got[name]
				if want == "" && ok {
					t.Errorf("%s = %q: the container's own spelling should win", name, v)
				} else if want != "" && v != want {
					t.Errorf("%s = %q, want %q", name, v, want)
				}
			}
		})
	}
}
