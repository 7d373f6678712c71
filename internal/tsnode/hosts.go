package tsnode

import (
	"net"
	"net/netip"
	"slices"
	"strings"
)

// HostAllowed reports whether a request's Host names this node: one of
// names (its MagicDNS name, short or full, compared without case or a
// trailing dot) or addrs, with any port. A page served from another name
// that resolves to the node (DNS rebinding) sends that other name, with
// its visitor's tailnet identity.
func HostAllowed(host string, names []string, addrs []netip.Addr) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		return slices.Contains(addrs, a.Unmap())
	}
	return host != "" && slices.Contains(names, host)
}

// HostNames are the names a node answers to for its MagicDNS name fqdn.
func HostNames(fqdn string) []string {
	fqdn = strings.TrimSuffix(strings.ToLower(fqdn), ".")
	short, _, _ := strings.Cut(fqdn, ".")
	if short == fqdn {
		return []string{fqdn}
	}
	return []string{fqdn, short}
}
