// Package clusteraddrs is the cluster's own addresses as the data plane
// learns them, and the ranges no exit node may carry: an exit-node
// Connector refuses them to its tailnet users, and a pod that leaves
// through an exit node keeps them off it.
package clusteraddrs

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/tsinject/tsinject/internal/contract"
)

// Never are never carried through an exit node (unless a Connector
// advertises them explicitly): what an exit node's users have no
// business reaching from inside the cluster. Link-local holds most cloud
// metadata services (169.254.169.254); the rest are listed one by one:
// AWS's over IPv6 (fd00:ec2::254), Google's (fd20:ce::254) and Azure's
// wire server (168.63.129.16). Loopback and "this network" reach the pod
// itself; multicast and broadcast are not for unicast flows.
var Never = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("168.63.129.16/32"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
	netip.MustParsePrefix("fd20:ce::254/128"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// FromEnv collects the cluster's own addresses a pod can learn
// without API access: the node's (kubelet, node ports) and the pod's, every
// one of them (status.hostIPs, status.podIPs, and the single ones older
// clusters give), the API server's ClusterIP (KUBERNETES_SERVICE_HOST, set
// in every pod), and the ranges an admin lists in contract.EnvExitDeny.
func FromEnv(getenv func(string) string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, name := range []string{contract.EnvHostIP, contract.EnvPodIP, contract.EnvHostIPs, contract.EnvPodIPs, "KUBERNETES_SERVICE_HOST"} {
		for _, v := range strings.FieldsFunc(getenv(name), func(r rune) bool { return r == ',' || r == ' ' }) {
			a, err := netip.ParseAddr(v)
			if err != nil {
				return nil, fmt.Errorf("$%s: %q is not an IP address", name, v)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	list, err := Parse(getenv(contract.EnvExitDeny))
	if err != nil {
		return nil, fmt.Errorf("$%s: %w", contract.EnvExitDeny, err)
	}
	return append(out, list...), nil
}

// Parse reads CIDRs separated by commas, spaces or lines.
func Parse(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			if len(f) > 45 { // a deny list, not whatever file it was pointed at, belongs in a log
				f = f[:45] + "…"
			}
			return nil, fmt.Errorf("%q is not a CIDR such as 10.96.0.0/12", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
