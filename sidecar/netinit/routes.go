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

// routeIPv6ToLoopback routes the redirected IPv6 prefixes through the
// loopback, so that an app's SYN meets the redirect with a source address
// the sidecar can answer.
//
// Without it, IPv6 to the tailnet fails in the common pod: on an IPv4-only
// pod network there is no IPv6 route at all (the connect fails at once),
// and where an IPv6 route exists but the pod has only its link-local
// address, the SYN leaves from fe80::, is redirected to [::1], and the
// listener's SYN-ACK to a link-local address on another interface has no
// route: the connect times out. Through the loopback the source is ::1.
//
// IPv4 needs none of this: a pod always has an IPv4 route and address, and
// adding 100.64.0.0/10 would take UDP from clusters that use that range.
func routeIPv6ToLoopback(prefixes []netip.Prefix) error {
	lo, ok, err := loopbackWithIPv6()
	if err != nil || !ok {
		return err // IPv6 disabled in the pod: no IPv6 traffic to redirect.
	}
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	defer c.Close()
	for _, p := range prefixes {
		if !p.Addr().Is6() {
			continue
		}
		if err := c.Route.Replace(loopbackRoute(p, lo)); err != nil {
			return fmt.Errorf("route %s dev lo: %w", p, err)
		}
	}
	return nil
}

// removeLoopbackRoutes deletes the routes routeIPv6ToLoopback added.
func removeLoopbackRoutes() error {
	lo, ok, err := loopbackWithIPv6()
	if err != nil || !ok {
		return err
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
		if r.Family == unix.AF_INET6 && r.Table == unix.RT_TABLE_MAIN && r.Attributes.OutIface == uint32(lo.Index) && r.Attributes.Priority == routeMetric {
			p, _ := netip.AddrFromSlice(r.Attributes.Dst)
			errs = append(errs, c.Route.Delete(loopbackRoute(netip.PrefixFrom(p, int(r.DstLength)), lo)))
		}
	}
	return errors.Join(errs...)
}

func loopbackRoute(p netip.Prefix, lo *net.Interface) *rtnetlink.RouteMessage {
	return &rtnetlink.RouteMessage{
		Family:    unix.AF_INET6,
		DstLength: uint8(p.Bits()),
		Table:     unix.RT_TABLE_MAIN,
		Protocol:  unix.RTPROT_STATIC,
		Scope:     unix.RT_SCOPE_UNIVERSE,
		Type:      unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{
			Dst:      net.IP(p.Masked().Addr().AsSlice()),
			OutIface: uint32(lo.Index),
			Priority: routeMetric,
		},
	}
}

// loopbackWithIPv6 returns the loopback interface, and whether it has ::1
// (it has not where the pod's IPv6 is disabled).
func loopbackWithIPv6() (*net.Interface, bool, error) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, false, fmt.Errorf("routes: %w", err)
	}
	addrs, err := lo.Addrs()
	if err != nil {
		return nil, false, fmt.Errorf("routes: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(net.IPv6loopback) {
			return lo, true, nil
		}
	}
	return lo, false, nil
}
