package netinit

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink"
	"golang.org/x/sys/unix"
)

// routeMetric marks the routes netinit adds, and is high so that a route
// the pod already has for the same prefix wins.
const routeMetric = 41641

// routeToLoopback routes redirected prefixes through the loopback where
// the pod's own routes would not get an app's SYN to the redirect with a
// source address the sidecar can answer:
//
//   - IPv6, always (where the pod has IPv6). On an IPv4-only pod network
//     there is no IPv6 route, so connect() fails at once; where there is
//     one but the pod has only its link-local address, the SYN leaves
//     from fe80::, is redirected to [::1], and the listener's SYN-ACK to
//     a link-local address on another interface has no route: the
//     connect times out. Through the loopback the source is ::1.
//   - IPv4, only where the pod has no route at all (an IPv6-only pod
//     network). A pod with an IPv4 route has an address to answer, and
//     100.64.0.0/10 may be cluster address space that UDP must still
//     reach.
func routeToLoopback(prefixes []netip.Prefix) error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	v6, err := hasIPv6(lo)
	if err != nil {
		return err
	}
	var add []netip.Prefix
	for _, p := range prefixes {
		if p.Addr().Is6() && v6 || p.Addr().Is4() && !routable(p.Masked().Addr()) {
			add = append(add, p)
		}
	}
	if len(add) == 0 {
		return nil
	}
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	defer c.Close()
	for _, p := range add {
		if err := c.Route.Replace(loopbackRoute(p, lo)); err != nil {
			return fmt.Errorf("route %s dev lo: %w", p, err)
		}
	}
	return nil
}

// routable reports whether the pod has a route to a: connecting a UDP
// socket looks the route up and sends nothing.
func routable(a netip.Addr) bool {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 9)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// removeLoopbackRoutes deletes the routes routeToLoopback added.
func removeLoopbackRoutes() error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	defer c.Close()
	routes, err := c.Route.List()
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	var errs []error
	for _, r := range routes {
		if r.Table == unix.RT_TABLE_MAIN && r.Attributes.OutIface == uint32(lo.Index) && r.Attributes.Priority == routeMetric {
			a, _ := netip.AddrFromSlice(r.Attributes.Dst)
			errs = append(errs, c.Route.Delete(loopbackRoute(netip.PrefixFrom(a.Unmap(), int(r.DstLength)), lo)))
		}
	}
	return errors.Join(errs...)
}

func loopbackRoute(p netip.Prefix, lo *net.Interface) *rtnetlink.RouteMessage {
	// The loopback address as the source: nothing else on lo may be used
	// for an IPv4 destination, and it is what the sidecar answers.
	family, src := uint8(unix.AF_INET6), net.IPv6loopback
	if p.Addr().Is4() {
		family, src = unix.AF_INET, net.IPv4(127, 0, 0, 1).To4()
	}
	return &rtnetlink.RouteMessage{
		Family:    family,
		DstLength: uint8(p.Bits()),
		Table:     unix.RT_TABLE_MAIN,
		Protocol:  unix.RTPROT_STATIC,
		Scope:     unix.RT_SCOPE_UNIVERSE,
		Type:      unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{
			Dst:      net.IP(p.Masked().Addr().AsSlice()),
			Src:      src,
			OutIface: uint32(lo.Index),
			Priority: routeMetric,
		},
	}
}

// hasIPv6 reports whether the loopback has ::1 (it has not where the
// pod's IPv6 is disabled; adding an IPv6 route there fails).
func hasIPv6(lo *net.Interface) (bool, error) {
	addrs, err := lo.Addrs()
	if err != nil {
		return false, fmt.Errorf("routes: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(net.IPv6loopback) {
			return true, nil
		}
	}
	return false, nil
}
