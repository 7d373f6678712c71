package apiproxy

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// browserHeader names the first header in h that only browsers send:
// Origin (cross-origin requests and every WebSocket handshake a page
// opens) and the Fetch Metadata headers (Sec-Fetch-*). kubectl and
// client-go send neither. A tailnet user's browser carries their tailnet
// identity, so a web page they open must not reach the proxy through it.
func browserHeader(h http.Header) string {
	if _, ok := h["Origin"]; ok {
		return "Origin"
	}
	for k := range h {
		if strings.HasPrefix(k, "Sec-Fetch-") {
			return k
		}
	}
	return ""
}

// hostAllowed reports whether the request's Host names this proxy: one
// of names (its MagicDNS name, short or full, compared without case or a
// trailing dot) or addrs, with any port. A page served from another name
// that resolves to the proxy (DNS rebinding) sends that other name.
func hostAllowed(host string, names []string, addrs []netip.Addr) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		return slices.Contains(addrs, a.Unmap())
	}
	return host != "" && slices.Contains(names, host)
}

// hostNames are the names a proxy answers to for its MagicDNS name fqdn.
func hostNames(fqdn string) []string {
	fqdn = strings.TrimSuffix(strings.ToLower(fqdn), ".")
	short, _, _ := strings.Cut(fqdn, ".")
	if short == fqdn {
		return []string{fqdn}
	}
	return []string{fqdn, short}
}
