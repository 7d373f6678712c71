package sidecar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// With an exit node, a name outside the cluster is resolved where the
// exit node resolves it, as a Tailscale client using that exit node does:
// the node's own resolver sends it to the exit node's DNS (its PeerAPI
// DNS-over-HTTPS proxy, or the resolvers a WireGuard-only exit node names,
// or the tailnet's resolvers marked for use with exit nodes). The
// cluster's names, and reverse lookups, stay with the pod's nameservers.
// Nothing falls back to them: a name the exit node cannot resolve fails
// rather than leaking to the cluster's DNS.

// clusterZones are the DNS suffixes the pod's nameservers keep (lower
// case, no trailing dot).
type clusterZones []string

// reverseZones are always the cluster's: a PTR lookup names an address,
// most often the cluster's own.
var reverseZones = clusterZones{"in-addr.arpa", "ip6.arpa"}

// zonesFromResolvConf reads the cluster's domain from a pod's resolv.conf
// search list: Kubernetes writes "<namespace>.svc.<domain> svc.<domain>
// <domain>" first. Without such an entry every search domain counts.
func zonesFromResolvConf(r io.Reader) clusterZones {
	var search []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "search" {
			search = f[1:]
		}
	}
	for _, s := range search {
		if domain, ok := strings.CutPrefix(strings.ToLower(strings.TrimSuffix(s, ".")), "svc."); ok && domain != "" {
			return append(clusterZones{domain}, reverseZones...)
		}
	}
	zones := append(clusterZones(nil), reverseZones...)
	for _, s := range search {
		if s = strings.ToLower(strings.TrimSuffix(s, ".")); s != "" {
			zones = append(zones, s)
		}
	}
	return zones
}

// covers says whether name (any case, trailing dot or not) is in one of
// the zones.
func (z clusterZones) covers(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, zone := range z {
		if name == zone || strings.HasSuffix(name, "."+zone) {
			return true
		}
	}
	return false
}

// carried are the record types the node's resolver takes by name (its
// local API's), each with that name.
var carried = map[dnsmessage.Type]string{
	dnsmessage.TypeA: "A", dnsmessage.TypeAAAA: "AAAA", dnsmessage.TypeCNAME: "CNAME", dnsmessage.TypeMX: "MX",
	dnsmessage.TypeNS: "NS", dnsmessage.TypePTR: "PTR", dnsmessage.TypeSOA: "SOA", dnsmessage.TypeSRV: "SRV", dnsmessage.TypeTXT: "TXT",
}

// errTypeNotCarried: a query of another type (answered NOTIMP).
var errTypeNotCarried = errors.New("a record type the tailnet resolver does not take")

// queryOutside answers the query msg (question q) with the node's
// resolver, which follows the exit node.
func (n *Node) queryOutside(ctx context.Context, msg []byte, q dnsmessage.Question) ([]byte, error) {
	typ, ok := carried[q.Type]
	if q.Class != dnsmessage.ClassINET || !ok {
		return nil, errTypeNotCarried
	}
	resp, _, err := n.LC.QueryDNS(ctx, q.Name.String(), typ)
	if err != nil {
		return nil, err
	}
	if len(resp) < 12 {
		return nil, fmt.Errorf("a %d-byte answer", len(resp))
	}
	resp[0], resp[1] = msg[0], msg[1] // the asker's ID
	return resp, nil
}

// lookupOutside resolves host's IPv4 and IPv6 addresses with the node's
// resolver (explicit mode's dials by name, with an exit node).
func (n *Node) lookupOutside(ctx context.Context, host string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	var errs []error
	for _, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		resp, _, err := n.LC.QueryDNS(ctx, host, carried[typ])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		got, err := answers(resp, typ)
		if err != nil {
			errs = append(errs, err)
		}
		addrs = append(addrs, got...)
	}
	if len(addrs) == 0 {
		if len(errs) == 0 {
			errs = append(errs, errors.New("no address"))
		}
		return nil, fmt.Errorf("%s, resolved through the exit node: %w", host, errors.Join(errs...))
	}
	return addrs, nil
}

// answers are the addresses of type typ in the DNS response resp.
func answers(resp []byte, typ dnsmessage.Type) ([]netip.Addr, error) {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return nil, err
	}
	if h.RCode != dnsmessage.RCodeSuccess {
		return nil, fmt.Errorf("%v", h.RCode)
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, err
	}
	var out []netip.Addr
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		switch {
		case rh.Type == dnsmessage.TypeA && typ == dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return out, err
			}
			out = append(out, netip.AddrFrom4(r.A))
		case rh.Type == dnsmessage.TypeAAAA && typ == dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return out, err
			}
			out = append(out, netip.AddrFrom16(r.AAAA))
		default:
			if err := p.SkipAnswer(); err != nil {
				return out, err
			}
		}
	}
}
