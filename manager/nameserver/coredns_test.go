package nameserver

import (
	"strings"
	"testing"
)

func TestCorefile(t *testing.T) {
	zones := []string{"ts.net.", "example.ts.net."}
	snippet := CoreDNSSnippet(zones, "198.19.16.53", "cluster.local")
	main := `.:53 {
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
}
`
	if p := CheckCorefile(main+snippet, zones, "198.19.16.53"); len(p) != 0 {
		t.Errorf("the printed snippet does not pass: %q", p)
	}
	// As an admin adapts it: other lines, the kubernetes plugin's own
	// settings, comments, dns:// and a port.
	adapted := strings.NewReplacer("pods verified", "kubeconfig /etc/coredns/kubeconfig\n        pods verified # for metadata",
		"forward . 198.19.16.53", "log\n    forward . dns://198.19.16.53:53", "ts.net:53 example.ts.net:53", "dns://ts.net:53 example.ts.net.:53").Replace(snippet)
	if p := CheckCorefile(main+adapted, zones, "198.19.16.53"); len(p) != 0 {
		t.Errorf("an adapted snippet does not pass: %q\n%s", p, adapted)
	}
	for _, tc := range []struct{ name, corefile, want string }{
		{"no block", main, "no server block for ts.net"},
		{"another nameserver", strings.ReplaceAll(snippet, "198.19.16.53", "198.19.16.54"), "lacks: forward . 198.19.16.53"},
		{"no metadata", strings.Replace(snippet, "    metadata\n", "", 1), "lacks: metadata"},
		{"pods insecure", strings.Replace(snippet, "pods verified", "pods insecure", 1), "lacks: pods verified"},
		{"no unset", strings.Replace(snippet, "    rewrite continue edns0 local unset 0xffee\n", "", 1), "lacks: rewrite continue edns0 local unset 0xffee"},
		{"no pod name", strings.Replace(snippet, "{kubernetes/client-pod-name}", "{kubernetes/client-namespace}", 1), "set 0xffef {kubernetes/client-pod-name}"},
		{"cached", strings.Replace(snippet, "    errors\n", "    errors\n    cache 30\n", 1), "caches: remove cache"},
	} {
		if p := strings.Join(CheckCorefile(main+tc.corefile, zones, "198.19.16.53"), "\n"); !strings.Contains(p, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, p, tc.want)
		}
	}
}

func TestZones(t *testing.T) {
	if z, err := Zones([]string{"Example.TS.net.", "ts.net"}); err != nil || strings.Join(z, " ") != "example.ts.net. ts.net." {
		t.Errorf("%v %v", z, err)
	}
	// hostmaster.<zone> must stay a name: a zone that long would panic
	// the first NXDOMAIN.
	for _, bad := range []string{strings.Repeat("a.", 121) + "net", "not a zone", "-x.net"} {
		if _, err := Zones([]string{bad}); err == nil || !strings.Contains(err.Error(), "--zones") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
