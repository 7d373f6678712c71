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

// The app's IPv6 to the tailnet reaches the sidecar's [::1] listener with
// its original destination, whatever IPv6 the pod network gives: none (an
// IPv4-only cluster), or a route out of the pod with only the link-local
// address, whose SYN-ACK from [::1] would have no way back. --remove
// takes the route away again.
func TestInitRedirectsIPv6(t *testing.T) {
	if err := netns.Check(); err != nil {
		t.Fatalf("this test needs network namespaces: %v", err)
	}
	bin, err := gobuild.Binary("./cmd/tsinject-proxy")
	if err != nil {
		t.Fatal(err)
	}
	target := "[fd7a:115c:a1e0::1]:80"
	for _, tc := range []struct {
		name     string
		routeOut bool
	}{
		{"IPv4-only pod", false},
		{"link-local IPv6 route", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, err := netns.New("tsi-init6")
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			if tc.routeOut {
				// Broader than the tailnet range, as a pod's default route is.
				if err := ns.RouteOut(netip.MustParsePrefix("fd00::/8")); err != nil {
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
			ln, err := ns.Listen("tcp", fmt.Sprintf("[::1]:%d", contract.RedirectPort))
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
				routes, _ := ns.Command("ip", "-6", "route").CombinedOutput()
				t.Fatalf("dial %s: %v\nroutes:\n%s", target, err, routes)
			}
			c.Close()
			if got := <-accepted; got != target {
				t.Errorf("the listener saw %q, want original destination %s", got, target)
			}

			if out, err := ns.Command(bin, "init", "--remove").CombinedOutput(); err != nil {
				t.Fatalf("init --remove: %v\n%s", err, out)
			}
			routes, _ := ns.Command("ip", "-6", "route").CombinedOutput()
			if strings.Contains(string(routes), "dev lo") {
				t.Errorf("init --remove left a loopback route:\n%s", routes)
			}
		})
	}
}

// Where the pod's IPv6 is disabled (some CNIs do so on IPv4-only
// networks) init still succeeds: there is no IPv6 traffic to route.
func TestInitWithoutIPv6(t *testing.T) {
	if err := netns.Check(); err != nil {
		t.Fatalf("this test needs network namespaces: %v", err)
	}
	bin, err := gobuild.Binary("./cmd/tsinject-proxy")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New("tsi-init4")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if out, err := ns.Command("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6").CombinedOutput(); err != nil {
		t.Fatalf("disabling IPv6: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"init"}, {"init", "--remove"}} {
		if out, err := ns.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
}
