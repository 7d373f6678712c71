package netinit_test

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/sidecar"
	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/netns"
	"github.com/tsinject/tsinject/test/tier"
)

// Both backends install the same redirection in a fresh namespace, and
// running init again (a restarted init container) leaves one copy.
func TestInitBackends(t *testing.T) {
	bin := proxyBinary(t)
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
			ns := namespace(t, "tsi-init")
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

// The app's TCP to the tailnet reaches the sidecar's loopback listeners
// with its original destination, whatever the pod network: IPv4 only (no
// IPv6 route), an IPv6 route with only the link-local address (whose
// SYN-ACK from [::1] would have no way back), or IPv6 only (no IPv4 route
// or address). init routes through lo only what needs it: a pod's own
// IPv4 route is left to carry IPv4. --remove takes the routes away.
func TestInitRoutesToTheSidecar(t *testing.T) {
	bin := proxyBinary(t)
	// Broader than the tailnet's ranges, as a pod's default routes are.
	v4Route, v6Route := netip.MustParsePrefix("100.0.0.0/8"), netip.MustParsePrefix("fd00::/8")
	for _, tc := range []struct {
		name   string
		routes []netip.Prefix
		noIPv4 bool // an IPv6-only pod: no IPv4 address but loopback
		loV4   bool // whether init should route IPv4 through lo
	}{
		{"IPv4-only pod", []netip.Prefix{v4Route}, false, false},
		{"link-local IPv6 route", []netip.Prefix{v4Route, v6Route}, false, false},
		{"IPv6-only pod", nil, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := namespace(t, "tsi-init6")
			if tc.noIPv4 {
				if out, err := ns.Command("ip", "-4", "addr", "flush", "scope", "global").CombinedOutput(); err != nil {
					t.Fatalf("removing IPv4: %v\n%s", err, out)
				}
			}
			for _, r := range tc.routes {
				if err := ns.RouteOut(r); err != nil {
					t.Fatal(err)
				}
			}
			// The link-local address must be usable, as in a pod that has
			// run for a while: a tentative one is not chosen as source.
			if err := ns.WaitIPv6Settled(); err != nil {
				t.Fatal(err)
			}
			if out, err := ns.Command(bin, "init").CombinedOutput(); err != nil {
				t.Fatalf("init: %v\n%s", err, out)
			}
			for _, target := range []string{"100.64.0.1:80", "[fd7a:115c:a1e0::1]:80"} {
				redirected(t, ns, target)
			}
			routes, _ := ns.Command("ip", "route").CombinedOutput()
			if got := strings.Contains(string(routes), "100.64.0.0/10 dev lo"); got != tc.loV4 {
				t.Errorf("IPv4 tailnet route through lo: %v, want %v:\n%s", got, tc.loV4, routes)
			}

			if out, err := ns.Command(bin, "init", "--remove").CombinedOutput(); err != nil {
				t.Fatalf("init --remove: %v\n%s", err, out)
			}
			for _, fam := range []string{"-4", "-6"} {
				routes, _ := ns.Command("ip", fam, "route").CombinedOutput()
				if strings.Contains(string(routes), "dev lo") {
					t.Errorf("init --remove left a loopback route:\n%s", routes)
				}
			}
		})
	}
}

// redirected dials target from inside ns and checks that the redirect
// port on loopback accepts it and recovers target as the destination.
func redirected(t *testing.T, ns *netns.NS, target string) {
	t.Helper()
	loop := "127.0.0.1"
	if strings.HasPrefix(target, "[") {
		loop = "[::1]"
	}
	ln, err := ns.Listen("tcp", fmt.Sprintf("%s:%d", loop, contract.RedirectPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err.Error()
			return
		}
		defer c.Close()
		dst, err := sidecar.OriginalDst(c)
		if err != nil {
			accepted <- err.Error()
			return
		}
		accepted <- dst.String()
	}()
	c, err := ns.DialTimeout("tcp", target, 20*time.Second)
	if err != nil {
		routes, _ := ns.Command("ip", "route", "show", "table", "all").CombinedOutput()
		t.Errorf("dial %s: %v\nroutes:\n%s", target, err, routes)
		return
	}
	c.Close()
	if got := <-accepted; got != target {
		t.Errorf("the listener saw %q, want original destination %s", got, target)
	}
}

// Where the pod's IPv6 is disabled (some CNIs do so on IPv4-only
// networks) init still succeeds: there is no IPv6 traffic to route.
func TestInitWithoutIPv6(t *testing.T) {
	bin := proxyBinary(t)
	ns := namespace(t, "tsi-init4")
	if out, err := ns.Command("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6").CombinedOutput(); err != nil {
		t.Fatalf("disabling IPv6: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"init"}, {"init", "--remove"}} {
		if out, err := ns.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
}

// proxyBinary builds tsinject-proxy (gobuild shares the build), where network
// namespaces can be made.
func proxyBinary(t *testing.T) string {
	t.Helper()
	tier.Needs(t, tier.Root)
	if err := netns.Check(); err != nil {
		t.Fatalf("this test needs network namespaces: %v", err)
	}
	tier.Needs(t, tier.Processes)
	bin, err := gobuild.Binary("./cmd/tsinject-proxy")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// namespace is a fresh network namespace for this test.
func namespace(t *testing.T, prefix string) *netns.NS {
	t.Helper()
	tier.Needs(t, tier.Root)
	ns, err := netns.New(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}
