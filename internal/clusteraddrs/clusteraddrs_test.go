package clusteraddrs

import (
	"strings"
	"testing"

	"github.com/tsinject/tsinject/internal/contract"
)

func TestFromEnv(t *testing.T) {
	env := map[string]string{
		contract.EnvHostIP: "198.19.0.1", contract.EnvPodIP: "198.19.0.9", "KUBERNETES_SERVICE_HOST": "198.19.16.1",
		contract.EnvHostIPs: "198.19.0.1,fd00:19::1", contract.EnvPodIPs: "198.19.0.9,fd00:19::9",
		contract.EnvExitDeny: "198.19.16.0/24, 198.19.0.0/24",
	}
	got, err := FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	if want := "198.19.0.1/32 198.19.0.9/32 198.19.0.1/32 fd00:19::1/128 198.19.0.9/32 fd00:19::9/128 198.19.16.1/32 198.19.16.0/24 198.19.0.0/24"; strings.Join(s, " ") != want {
		t.Errorf("got %v, want %s", s, want)
	}
	env[contract.EnvExitDeny] = "10.96.0.0"
	if _, err := FromEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), contract.EnvExitDeny) {
		t.Errorf("a bad CIDR: %v", err)
	}
}
