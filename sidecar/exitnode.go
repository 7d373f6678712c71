package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"tailscale.com/ipn"
	"tailscale.com/tsnet"

	"github.com/tsinject/tsinject/internal/clusteraddrs"
)

// A pod with an exit node (tsinject.dev/exit-node) sends what is for
// neither the tailnet nor the cluster through it: in transparent mode
// everything (init routes it to the TUN and redirects its TCP), in
// explicit mode what its proxies carry. The cluster's own addresses
// (clusteraddrs: its ranges, the node's and the pod's addresses, link
// local and metadata) never go through it.

// exitNodeAddr is the exit node's tailnet address in v, resolving a
// MagicDNS name (FQDN or short) or taking an IP; invalid if v has no such
// peer yet.
func exitNodeAddr(v *netView, name string) netip.Addr {
	if ip, err := netip.ParseAddr(name); err == nil {
		return ip
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	addrs, ok := v.names[name]
	if !ok && v.domain != "" {
		addrs, ok = v.names[name+"."+v.domain]
	}
	for _, a := range addrs {
		if a.Is4() {
			return a
		}
	}
	if ok && len(addrs) > 0 {
		return addrs[0]
	}
	return netip.Addr{}
}

// chooseExitNode points the node's prefs at the configured exit node
// once it is a peer, and again if its address changes.
func (n *Node) chooseExitNode(ctx context.Context, v *netView) {
	want := exitNodeAddr(v, n.cfg.ExitNode)
	if !want.IsValid() || want == n.exitIP {
		if !want.IsValid() && !n.exitMissingSaid {
			n.logf("exit node %s: not a peer of this node yet; traffic for it waits (nothing leaves another way)", n.cfg.ExitNode)
			n.exitMissingSaid = true
		}
		return
	}
	if _, err := n.LC.EditPrefs(ctx, &ipn.MaskedPrefs{Prefs: ipn.Prefs{ExitNodeIP: want}, ExitNodeIPSet: true}); err != nil {
		n.logf("exit node %s (%s): %v", n.cfg.ExitNode, want, err)
		return
	}
	n.exitIP = want
	n.logf("exit node %s (%s) chosen", n.cfg.ExitNode, want)
}

// allowedOut reports why ip, for neither the tailnet nor an accepted
// route, may not leave through the exit node, or nil.
func (d *Dialer) allowedOut(ip netip.Addr) error {
	in := func(p netip.Prefix) bool { return p.Contains(ip) }
	if slices.ContainsFunc(clusteraddrs.Never, in) || slices.ContainsFunc(d.node.cfg.ExitDeny, in) {
		return &DialError{Cause: causeCluster, Dest: ip.String(), Err: errors.New("a cluster or link-local address, which never leaves through the exit node")}
	}
	if v := d.node.view.Load(); !v.exitOnline {
		return &DialError{Cause: causeExitOffline, Dest: ip.String(), Err: fmt.Errorf("the exit node %s is not online", d.node.cfg.ExitNode)}
	}
	return nil
}

// dialThroughTailnet makes every dial of the node's own go through the
// tailnet (netstack), never the host's network: with an exit node, what
// the sidecar lets through goes to it or nowhere, also in the moment it
// goes offline.
func dialThroughTailnet(srv *tsnet.Server) error {
	d, ok := srv.Sys().Dialer.GetOK()
	if !ok {
		return errors.New("exit node: the node has no dialer to confine")
	}
	d.UseNetstackForIP = func(netip.Addr) bool { return true }
	return nil
}
