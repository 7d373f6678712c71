package tsnode

import (
	"net/netip"
	"testing"
)

func TestHostAllowed(t *testing.T) {
	names := HostNames("K8s.tail-x.ts.net.")
	addrs := []netip.Addr{netip.MustParseAddr("100.64.0.7"), netip.MustParseAddr("fd7a:115c:a1e0::7")}
	for host, want := range map[string]bool{
		"k8s.tail-x.ts.net":        true,
		"K8S.tail-x.ts.net.:443":   true,
		"k8s":                      true,
		"k8s:80":                   true,
		"100.64.0.7":               true,
		"100.64.0.7:80":            true,
		"[fd7a:115c:a1e0::7]:443":  true,
		"":                         false,
		"evil.example":             false,
		"k8s.tail-x.ts.net.evil":   false,
		"k8s.other.ts.net":         false,
		"100.64.0.8":               false,
		"127.0.0.1:8080":           false,
		"[::ffff:100.64.0.7]:80":   true, // the same IPv4 address
		"k8s.tail-x.ts.net@evil.x": false,
	} {
		if got := HostAllowed(host, names, addrs); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
}
