// Package netinit programs a pod's network namespace for transparent
// egress (`tsinject-proxy init`): TCP to tailnet addresses and accepted
// routes, and all DNS, from every user but the sidecar's is redirected to
// the sidecar on loopback. nftables through netlink by default (the image
// needs no binary); iptables-restore where the kernel has no nftables.
package netinit

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/tsinject/tsinject/internal/contract"
)

// TableName is the nftables table (one per family) netinit owns.
const TableName = "tsinject"

// Rules describe the redirection.
type Rules struct {
	ProxyUID     uint32
	RedirectPort uint16
	DNSPort      uint16
	// Routes are redirected to RedirectPort (TCP): the tailnet ranges and
	// the accepted subnet routes.
	Routes []netip.Prefix
	// Tun, if set, also carries every other protocol to Routes through a
	// TUN device the sidecar attaches to (see TUN); the pod then accepts
	// from it only what answers its own traffic, and pings.
	Tun *TUN
	// Exit, with Tun, also sends what is for neither the tailnet nor the
	// cluster to the sidecar's exit node (see Exit).
	Exit *Exit
}

// quad100 is the tailnet's own resolver (MagicDNS), inside the tailnet's
// ranges, whose DNS the sidecar answers like any other.
var quad100 = []netip.Prefix{
	netip.MustParsePrefix("100.100.100.100/32"),
	netip.MustParsePrefix("fd7a:115c:a1e0::53/128"),
}

// TailnetRanges are always redirected.
var TailnetRanges = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("fd7a:115c:a1e0::/48"),
}

// Backend says which mechanism installed the rules.
type Backend string

const (
	BackendNFTables Backend = "nftables"
	BackendIPTables Backend = "iptables"
)

// Installed says how Install programmed the pod.
type Installed struct {
	Backend Backend
	// TUNErr, if not nil, is why r.Tun was not made: the pod has TCP and
	// DNS to the tailnet, not UDP and ICMP.
	TUNErr error
}

// Install replaces any previous tsinject rules with r (idempotent, so an
// init container that runs again is harmless) and routes the redirected
// prefixes through the TUN, or, without one, through the loopback where
// the pod needs it (see routeToLoopback). With backend "" it tries
// nftables, then iptables-restore. A TUN that cannot be made (a kernel
// without tun, no CAP_MKNOD) leaves the rest as without one.
func Install(r Rules, backend Backend) (Installed, error) {
	var in Installed
	if r.Tun != nil {
		if in.TUNErr = createTUN(*r.Tun); in.TUNErr != nil {
			r.Tun = nil
		}
	}
	var err error
	if in.Backend, err = installRules(r, backend); err != nil {
		return in, err
	}
	if r.Tun != nil && in.Backend == BackendIPTables {
		// Its rules do not guard the TUN's input: no TUN.
		in.TUNErr = errors.Join(errors.New("the iptables fallback carries TCP and DNS only"), removeTUN())
		r.Tun = nil
	}
	if r.Exit != nil && r.Tun == nil {
		// Without the TUN, UDP and ICMP would leave past the exit node:
		// the pod does not start.
		return in, fmt.Errorf("the exit node needs the TUN, which was not made: %w", in.TUNErr)
	}
	if r.Tun != nil {
		if err := configureTUN(r.Routes); err != nil {
			return in, err
		}
	}
	if r.Exit != nil {
		return in, routeExit(*r.Exit, r.ProxyUID)
	}
	if r.Tun != nil {
		return in, nil
	}
	return in, routeToLoopback(r.Routes)
}

func installRules(r Rules, backend Backend) (Backend, error) {
	switch backend {
	case BackendNFTables:
		return backend, installNFT(r)
	case BackendIPTables:
		return backend, installIPTables(r)
	case "":
	default:
		return "", fmt.Errorf("backend %q: allowed: %s, %s", backend, BackendNFTables, BackendIPTables)
	}
	nftErr := installNFT(r)
	if nftErr == nil {
		return BackendNFTables, nil
	}
	iptErr := installIPTables(r)
	if iptErr == nil {
		return BackendIPTables, nil
	}
	return "", fmt.Errorf("nftables: %v; iptables fallback: %v", nftErr, iptErr)
}

// Remove deletes tsinject's nftables tables and loopback routes, if any.
func Remove() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	deleteTables(c)
	return errors.Join(c.Flush(), removeLoopbackRoutes(), removeExit(), removeTUN())
}

// families are the nftables families tsinject's tables live in.
var families = []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6}

// deleteTables queues the deletion of tsinject's tables that exist.
func deleteTables(c *nftables.Conn) {
	for _, fam := range families {
		if exists(c, fam) {
			c.DelTable(&nftables.Table{Family: fam, Name: TableName})
		}
	}
}

func exists(c *nftables.Conn, fam nftables.TableFamily) bool {
	ts, err := c.ListTablesOfFamily(fam)
	if err != nil {
		return false
	}
	for _, t := range ts {
		if t.Name == TableName {
			return true
		}
	}
	return false
}

func installNFT(r Rules) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	deleteTables(c) // replaced whole, in the same transaction
	for _, fam := range families {
		t := c.AddTable(&nftables.Table{Family: fam, Name: TableName})
		ch := c.AddChain(&nftables.Chain{
			Name: "output", Table: t,
			Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest,
		})
		add := func(exprs ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs}) }

		// The sidecar's own traffic goes where it is headed.
		add(&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(r.ProxyUID)},
			&expr.Verdict{Kind: expr.VerdictReturn})
		routes := familyRoutes(r.Routes, fam == nftables.TableFamilyIPv6)
		if r.Tun != nil {
			// With the TUN, the tailnet is reached whatever the protocol
			// and port: DNS to a tailnet nameserver reaches it (but
			// MagicDNS's address stays the sidecar's), TCP is redirected,
			// everything else is routed to the TUN.
			q := familyRoutes(quad100, fam == nftables.TableFamilyIPv6)[0]
			for _, p := range routes {
				notQuad := append(daddrIn(p), daddrNot(q)...)
				add(append(notQuad,
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
					&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.RedirectPort)},
					&expr.Redir{RegisterProtoMin: 1})...)
				add(append(append([]expr.Any{}, notQuad...), &expr.Verdict{Kind: expr.VerdictReturn})...)
			}
		}
		// DNS, UDP and TCP, to the sidecar's resolver, whatever the
		// nameserver (a loopback one included).
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
				&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.DNSPort)},
				&expr.Redir{RegisterProtoMin: 1})
		}
		loop := netip.MustParsePrefix("127.0.0.0/8")
		if fam == nftables.TableFamilyIPv6 {
			loop = netip.MustParsePrefix("::1/128")
		}
		add(append(daddrIn(loop), &expr.Verdict{Kind: expr.VerdictReturn})...)
		for _, p := range routes {
			e := daddrIn(p)
			e = append(e,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.RedirectPort)},
				&expr.Redir{RegisterProtoMin: 1})
			add(e...)
		}
		if r.Exit != nil && r.Tun != nil {
			// The rest of TCP leaves through the exit node, but for
			// what must not.
			for _, k := range familyRoutes(r.Exit.Keep, fam == nftables.TableFamilyIPv6) {
				add(append(daddrIn(k), &expr.Verdict{Kind: expr.VerdictReturn})...)
			}
			add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.RedirectPort)},
				&expr.Redir{RegisterProtoMin: 1})
		}
		if r.Tun != nil {
			tunInput(c, t, fam)
		}
		if r.Exit != nil && r.Tun != nil {
			exitGuard(c, t, fam, r)
		}
	}
	return c.Flush()
}

// exitMark marks connections the pod accepted from anywhere but the TUN
// (another pod, the node, a load balancer's client), so that its replies
// keep the pod's routes rather than the exit node's table.
const exitMark = 41641

// exitGuard keeps a pod with an exit node on it: connections accepted
// from elsewhere are marked and answered through the pod's routes (an ip
// rule on the mark), and nothing else of the pod's leaves by another
// interface than the TUN but to the kept ranges, even from a socket bound
// to eth0. (Packet sockets bypass netfilter: PodSecurity restricted takes
// NET_RAW from apps.)
func exitGuard(c *nftables.Conn, t *nftables.Table, fam nftables.TableFamily, r Rules) {
	mark := binaryutil.NativeEndian.PutUint32(exitMark)
	in := c.AddChain(&nftables.Chain{Name: "exit-in", Table: t,
		Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityMangle})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(contract.TunName)},
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Immediate{Register: 1, Data: mark},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	}})
	// A route chain: a mark set here routes the packet again.
	route := c.AddChain(&nftables.Chain{Name: "exit-route", Table: t,
		Type: nftables.ChainTypeRoute, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle})
	c.AddRule(&nftables.Rule{Table: t, Chain: route, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark},
		&expr.Immediate{Register: 1, Data: mark},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
	}})
	guard := c.AddChain(&nftables.Chain{Name: "exit-guard", Table: t,
		Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	add := func(exprs ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: guard, Exprs: exprs}) }
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	add(&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(r.ProxyUID)}, accept)
	for _, dev := range []string{"lo", contract.TunName} {
		add(&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(dev)}, accept)
	}
	add(&expr.Ct{Register: 1, Key: expr.CtKeyMARK}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark}, accept)
	for _, k := range familyRoutes(r.Exit.Keep, fam == nftables.TableFamilyIPv6) {
		add(append(daddrIn(k), accept)...)
	}
	add(&expr.Verdict{Kind: expr.VerdictDrop})
}

// tunInput lets in from the TUN only what answers the pod's own traffic
// (and ICMP errors about it), and pings: the tailnet reaches the pod's
// servers only through the ports the sidecar exposes, which it serves
// itself.
func tunInput(c *nftables.Conn, t *nftables.Table, fam nftables.TableFamily) {
	ch := c.AddChain(&nftables.Chain{
		Name: "input", Table: t,
		Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	})
	add := func(exprs ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs}) }
	fromTUN := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(contract.TunName)},
	}
	// Anything but ESTABLISHED or RELATED: drop (after the ping rule).
	add(append(append([]expr.Any{}, fromTUN...),
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Verdict{Kind: expr.VerdictAccept})...)
	proto, echo := byte(unix.IPPROTO_ICMP), byte(8)
	if fam == nftables.TableFamilyIPv6 {
		proto, echo = unix.IPPROTO_ICMPV6, 128
	}
	add(append(append([]expr.Any{}, fromTUN...),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{echo}},
		&expr.Verdict{Kind: expr.VerdictAccept})...)
	add(append(append([]expr.Any{}, fromTUN...), &expr.Verdict{Kind: expr.VerdictDrop})...)
}

// ifname is an interface name as nftables compares it (NUL-padded).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// familyRoutes are the prefixes of one family.
func familyRoutes(ps []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
}

// daddrNot matches packets whose destination address is not in p.
func daddrNot(p netip.Prefix) []expr.Any {
	e := daddrIn(p)
	e[len(e)-1].(*expr.Cmp).Op = expr.CmpOpNeq
	return e
}

// daddrIn matches packets whose destination address is in p.
func daddrIn(p netip.Prefix) []expr.Any {
	offset, size := uint32(16), uint32(4) // IPv4 header
	if p.Addr().Is6() {
		offset, size = 24, 16
	}
	mask := make([]byte, size)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// IPTablesRules renders the same rules for iptables-restore (one family).
func IPTablesRules(r Rules, v6 bool) string {
	var b strings.Builder
	chain := "TSINJECT_OUTPUT"
	loop := "127.0.0.0/8"
	if v6 {
		loop = "::1/128"
	}
	fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n-F %s\n", chain, chain)
	fmt.Fprintf(&b, "-D OUTPUT -j %s\n", chain) // removed again below if absent; see installIPTables
	fmt.Fprintf(&b, "-A OUTPUT -j %s\n", chain)
	fmt.Fprintf(&b, "-A %s -m owner --uid-owner %d -j RETURN\n", chain, r.ProxyUID)
	for _, proto := range []string{"udp", "tcp"} {
		fmt.Fprintf(&b, "-A %s -p %s --dport 53 -j REDIRECT --to-ports %d\n", chain, proto, r.DNSPort)
	}
	fmt.Fprintf(&b, "-A %s -d %s -j RETURN\n", chain, loop)
	for _, p := range r.Routes {
		if p.Addr().Is6() != v6 {
			continue
		}
		fmt.Fprintf(&b, "-A %s -p tcp -d %s -j REDIRECT --to-ports %d\n", chain, p, r.RedirectPort)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func installIPTables(r Rules) error {
	for _, fam := range []struct {
		bin string
		v6  bool
	}{{"iptables-restore", false}, {"ip6tables-restore", true}} {
		path, err := exec.LookPath(fam.bin)
		if err != nil {
			return fmt.Errorf("%s not found (the tsinject-proxy image carries no iptables; this fallback needs an image that does)", fam.bin)
		}
		rules := IPTablesRules(r, fam.v6)
		// First install: there is no OUTPUT jump to delete yet.
		for _, attempt := range []string{rules, strings.Replace(rules, "-D OUTPUT -j TSINJECT_OUTPUT\n", "", 1)} {
			cmd := exec.Command(path, "--noflush")
			cmd.Stdin = strings.NewReader(attempt)
			out, err := cmd.CombinedOutput()
			if err == nil {
				break
			}
			if attempt != rules {
				return fmt.Errorf("%s: %v: %s", fam.bin, err, out)
			}
		}
	}
	return nil
}

// ErrNotRoot explains the one privilege init needs.
var ErrNotRoot = errors.New("tsinject-proxy init needs CAP_NET_ADMIN in the pod's network namespace (the injector grants NET_ADMIN, NET_RAW and MKNOD to the tailscale-init container)")
