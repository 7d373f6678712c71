package netinit_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/netns"
)

// Both backends install the same redirection in a fresh namespace, and
// running init again (a restarted init container) leaves one copy.
func TestInitBackends(t *testing.T) {
	if err := netns.Check(); err != nil {
		t.Fatalf("this test needs network namespaces: %v", err)
	}
	bin, err := gobuild.Binary("./cmd/tsinject-proxy")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		backend string
		list    []string
		want    map[string]int // line -> times (once per family, or per protocol)
	}{
		{"nftables", []string{"nft", "list", "ruleset"}, map[string]int{
			"meta skuid 41641 return": 2, "udp dport 53 redirect to :15053": 2, "tcp dport 53 redirect to :15053": 2,
			"ip daddr 100.64.0.0/10 meta l4proto tcp redirect to :15001":        1,
			"ip daddr 198.18.9.0/24 meta l4proto tcp redirect to :15001":        1,
			"ip6 daddr fd7a:115c:a1e0::/48 meta l4proto tcp redirect to :15001": 1,
		}},
		{"iptables", []string{"iptables-save", "-t", "nat"}, map[string]int{
			"-A OUTPUT -j TSINJECT_OUTPUT": 1, "--uid-owner 41641 -j RETURN": 1,
			"-d 100.64.0.0/10 -p tcp -j REDIRECT --to-ports 15001": 1, "-d 198.18.9.0/24 -p tcp -j REDIRECT --to-ports 15001": 1,
			"--dport 53 -j REDIRECT --to-ports 15053": 2,
		}},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			ns, err := netns.New("tsi-init")
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			for i := 0; i < 2; i++ {
				out, err := ns.Command(bin, "init", "--backend", tc.backend, "--accept-routes", "198.18.9.0/24").CombinedOutput()
				if err != nil {
					t.Fatalf("init: %v\n%s", err, out)
				}
			}
			out, err := ns.Command(tc.list[0], tc.list[1:]...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", tc.list[0], err, out)
			}
			for w, times := range tc.want {
				if n := strings.Count(string(out), w); n != times {
					t.Errorf("%q appears %d times, want %d, in:\n%s", w, n, times, out)
				}
			}
			// Nothing leaked into the host's namespace.
			host, _ := exec.Command(tc.list[0], tc.list[1:]...).CombinedOutput()
			if strings.Contains(string(host), "41641") {
				t.Errorf("rules appeared in the host namespace")
			}
		})
	}
}
