package connector

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tsinject/tsinject/internal/contract"
)

// exitNodeNeverRanges are never forwarded as an exit node unless the
// Connector advertises them explicitly: what an exit node's users have no
// business reaching from inside the cluster. Link-local holds most cloud
// metadata services (169.254.169.254); the rest are listed one by one:
// AWS's over IPv6 (fd00:ec2::254), Google's (fd20:ce::254) and Azure's
// wire server (168.63.129.16). Loopback and "this network" reach the pod
// itself; multicast and broadcast are not for unicast flows.
var exitNodeNeverRanges = []netip.Prefix{
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
// without API access: the node's (kubelet, node ports) and the pod's, every
// one of them (status.hostIPs, status.podIPs, and the single ones older
// clusters give), the API server's ClusterIP (KUBERNETES_SERVICE_HOST, set
// in every pod), and the ranges an admin lists in contract.EnvExitDeny.
func ExitDenyFromEnv(getenv func(string) string) ([]netip.Prefix, error) {
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
	list, err := parseDeny(getenv(contract.EnvExitDeny))
	if err != nil {
		return nil, fmt.Errorf("$%s: %w", contract.EnvExitDeny, err)
	}
	return append(out, list...), nil
}

// parseDeny reads CIDRs separated by commas, spaces or lines.
func parseDeny(s string) ([]netip.Prefix, error) {
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

// denyFile keeps an exit node's deny list from a file the manager updates
// while the node runs (a mounted Secret the kubelet refreshes): the node
// addresses of a cluster change as it scales, and a restart for each would
// drop every flow through the exit node.
type denyFile struct {
	path string
	logf func(format string, args ...any)
	list atomic.Pointer[[]netip.Prefix]
	last string
}

// load reads the file; on an error the previous list stays.
func (d *denyFile) load() {
	b, err := os.ReadFile(d.path)
	if err != nil {
		if d.last != "\x00missing" {
			d.logf("exit node: deny list %s: %v (keeping the previous one)", d.path, err)
			d.last = "\x00missing"
		}
		return
	}
	if string(b) == d.last {
		return
	}
	list, err := parseDeny(string(b))
	if err != nil {
		d.logf("exit node: deny list %s: %v (keeping the previous one)", d.path, err)
		return
	}
	d.last = string(b)
	d.list.Store(&list)
	d.logf("exit node: refusing %d more ranges from %s", len(list), d.path)
}

// run re-reads the file every interval until ctx ends.
func (d *denyFile) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.load()
		}
	}
}

// current is the list as last read (nil before the first read).
func (d *denyFile) current() []netip.Prefix {
	if d == nil {
		return nil
	}
	if p := d.list.Load(); p != nil {
		return *p
	}
	return nil
}
