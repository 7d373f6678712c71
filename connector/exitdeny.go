package connector

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tsinject/tsinject/internal/contract"
)

// exitNodeNeverRanges are never forwarded as an exit node unless the
// Connector advertises them explicitly: what an exit node's users have no
// business reaching from inside the cluster. Link-local holds cloud
// metadata services (169.254.169.254, fd00:ec2::254 is ULA and listed by
// the admin if wanted); loopback and "this network" reach the pod itself;
// multicast and broadcast are not for unicast flows.
var exitNodeNeverRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// exitDenied reports whether an exit node must refuse dst: it is in one of
// the never ranges or in deny (the cluster's own addresses: the node's,
// the pod's, the API server's, the Service and pod ranges), and in no
// route the Connector advertises explicitly.
func exitDenied(dst netip.Addr, routes, deny []netip.Prefix) bool {
	in := func(p netip.Prefix) bool { return p.Contains(dst) }
	if slices.ContainsFunc(routes, in) {
		return false
	}
	return slices.ContainsFunc(exitNodeNeverRanges, in) || slices.ContainsFunc(deny, in)
}

// ExitDenyFromEnv collects the cluster's own addresses a pod can learn
// without API access: the node's (kubelet, node ports), the pod's, the
// API server's ClusterIP (KUBERNETES_SERVICE_HOST, set in every pod), and
// the ranges an admin lists in contract.EnvExitDeny.
func ExitDenyFromEnv(getenv func(string) string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, name := range []string{contract.EnvHostIP, contract.EnvPodIP, "KUBERNETES_SERVICE_HOST"} {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("$%s=%q: not an IP address", name, v)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	for _, f := range strings.FieldsFunc(getenv(contract.EnvExitDeny), func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("$%s: %q is not a CIDR such as 10.96.0.0/12", contract.EnvExitDeny, f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
