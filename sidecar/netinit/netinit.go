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

// Install replaces any previous tsinject rules with r (idempotent, so an
// init container that runs again is harmless) and routes the redirected
// prefixes through the loopback where the pod needs it (see
// routeToLoopback). With backend "" it tries nftables, then
// iptables-restore.
func Install(r Rules, backend Backend) (Backend, error) {
	used, err := installRules(r, backend)
	if err != nil {
		return "", err
	}
	return used, routeToLoopback(r.Routes)
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
	return errors.Join(c.Flush(), removeLoopbackRoutes())
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
		for _, p := range r.Routes {
			if p.Addr().Is4() != (fam == nftables.TableFamilyIPv4) {
				continue
			}
			e := daddrIn(p)
			e = append(e,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.RedirectPort)},
				&expr.Redir{RegisterProtoMin: 1})
			add(e...)
		}
	}
	return c.Flush()
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
var ErrNotRoot = errors.New("tsinject-proxy init needs CAP_NET_ADMIN in the pod's network namespace (the injector grants NET_ADMIN and NET_RAW to the tailscale-init container)")
