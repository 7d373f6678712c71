package netinit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/tsinject/tsinject/internal/contract"
)

// Exit sends what is for neither the tailnet nor the cluster through the
// TUN, to the sidecar's exit node: a routing table of its own that every
// user but the sidecar looks up first (the sidecar's own traffic, to the
// control server, DERP and peers, keeps the pod's routes), whose two
// halves of the address space go to the TUN except the ranges Keep
// throws back to the pod's own routes; and TCP to those destinations is
// redirected like the tailnet's.
type Exit struct {
	// Keep never go through the exit node: the cluster's addresses and
	// what no exit node carries (package clusteraddrs).
	Keep []netip.Prefix
}

const (
	// exitTable is the routing table of the exit node's routes.
	exitTable = 41641
	// Rule priorities: replies to connections the pod accepted (exitMark)
	// and the sidecar's UID keep the main table, before everyone else
	// looks up exitTable. All come before main (32766).
	rulePrioAccepted = 41639 - 10000
	rulePrioSidecar  = 41640 - 10000
	rulePrioExit     = 41641 - 10000
)

var rulePrios = []uint32{rulePrioAccepted, rulePrioSidecar, rulePrioExit}

var halves = map[bool][]netip.Prefix{
	false: {netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")},
	true:  {netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")},
}

// routeExit installs the exit node's table and rules (idempotent).
func routeExit(e Exit, uid uint32) error {
	ifc, v6, c, err := tunLink()
	if err != nil {
		return fmt.Errorf("exit node: %w", err)
	}
	defer c.Close()
	families := []bool{false}
	if v6 {
		families = append(families, true)
	}
	for _, is6 := range families {
		src := netip.MustParseAddr(contract.TunLocal4)
		family := uint8(unix.AF_INET)
		if is6 {
			src, family = netip.MustParseAddr(contract.TunLocal6), unix.AF_INET6
		}
		for _, h := range halves[is6] {
			rt := tunRoute(h, uint32(ifc.Index), src)
			rt.Table, rt.Attributes.Table = unix.RT_TABLE_UNSPEC, exitTable
			if err := c.Route.Replace(rt); err != nil {
				return fmt.Errorf("exit node: route %s dev %s table %d: %w", h, contract.TunName, exitTable, err)
			}
		}
		for _, k := range e.Keep {
			if k.Addr().Is6() != is6 {
				continue
			}
			if err := c.Route.Replace(throwRoute(k)); err != nil {
				return fmt.Errorf("exit node: throw %s table %d: %w", k, exitTable, err)
			}
		}
		if err := addExitRules(family, uid); err != nil {
			return fmt.Errorf("exit node: %w", err)
		}
	}
	return nil
}

func throwRoute(p netip.Prefix) *rtnetlink.RouteMessage {
	family := uint8(unix.AF_INET6)
	if p.Addr().Is4() {
		family = unix.AF_INET
	}
	return &rtnetlink.RouteMessage{
		Family: family, DstLength: uint8(p.Bits()), Table: unix.RT_TABLE_UNSPEC,
		Protocol: unix.RTPROT_STATIC, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_THROW,
		Attributes: rtnetlink.RouteAttributes{Dst: net.IP(p.Masked().Addr().AsSlice()), Table: exitTable},
	}
}

// addExitRules adds the two rules of a family: the sidecar's UID looks
// up main; then everyone exitTable. Written by hand: rtnetlink's rule
// message encodes a UID range in 16 bits where the kernel wants 32.
func addExitRules(family uint8, uid uint32) error {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, r := range []struct {
		prio, table uint32
		uid, mark   bool
	}{{rulePrioAccepted, unix.RT_TABLE_MAIN, false, true}, {rulePrioSidecar, unix.RT_TABLE_MAIN, true, false}, {rulePrioExit, exitTable, false, false}} {
		ae := netlink.NewAttributeEncoder()
		ae.Uint32(unix.FRA_PRIORITY, r.prio)
		ae.Uint32(unix.FRA_TABLE, r.table)
		if r.uid {
			rng := make([]byte, 8)
			binary.NativeEndian.PutUint32(rng[0:4], uid)
			binary.NativeEndian.PutUint32(rng[4:8], uid)
			ae.Bytes(unix.FRA_UID_RANGE, rng)
		}
		if r.mark {
			ae.Uint32(unix.FRA_FWMARK, exitMark)
			ae.Uint32(unix.FRA_FWMASK, 0xffffffff)
		}
		if err := ruleOp(c, unix.RTM_NEWRULE, netlink.Create|netlink.Excl, family, ae); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("rule %d: %w", r.prio, err)
		}
	}
	return nil
}

// ruleOp sends one rule message: struct fib_rule_hdr (family, dst_len,
// src_len, tos, table, res1, res2, action, flags u32), then attributes.
func ruleOp(c *netlink.Conn, typ netlink.HeaderType, flags netlink.HeaderFlags, family uint8, ae *netlink.AttributeEncoder) error {
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	hdr := []byte{family, 0, 0, 0, unix.RT_TABLE_UNSPEC, 0, 0, unix.FR_ACT_TO_TBL, 0, 0, 0, 0}
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   append(hdr, attrs...),
	})
	return err
}

// removeExit deletes the exit node's rules and table, if any. Rules are
// deleted by priority alone, by hand: rtnetlink cannot give back the UID
// range it read.
func removeExit() error {
	var errs []error
	nc, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, prio := range rulePrios {
			for range 8 { // each at most once per family; bounded all the same
				ae := netlink.NewAttributeEncoder()
				ae.Uint32(unix.FRA_PRIORITY, prio)
				if err := ruleOp(nc, unix.RTM_DELRULE, 0, family, ae); err != nil {
					if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EAFNOSUPPORT) {
						errs = append(errs, fmt.Errorf("rule %d: %w", prio, err))
					}
					break
				}
			}
		}
	}
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer c.Close()
	routes, err := c.Route.List()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range routes {
		if r.Attributes.Table == exitTable {
			r := r
			errs = append(errs, c.Route.Delete(&r))
		}
	}
	return errors.Join(errs...)
}
