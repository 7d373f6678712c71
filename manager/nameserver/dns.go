// Package nameserver is `tsinject nameserver`: the cluster's nameserver
// for tailnet names. The cluster's CoreDNS forwards the tailnet's domain to
// it, naming the pod that asked (EDNS0 options it sets from its kubernetes
// metadata); it answers a name with the address of the asking namespace's
// egress Service for it, and anything else with NXDOMAIN and an Event on
// the asking pod that says why. It answers only what a namespace's own
// egress Services allow, and no name to a query that names no namespace.
package nameserver

import (
	"context"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/tsinject/tsinject/internal/contract"
)

// Names resolves a tailnet name for the pods of one namespace.
type Names interface {
	// Resolve returns the addresses namespace's pods reach name at, or
	// none and why there are none (for the Event).
	Resolve(ctx context.Context, namespace, name string) (addrs []netip.Addr, why string)
}

// Results of a query, the label of the queries metric.
const (
	ResultAnswered  = "answered"
	ResultNoData    = "nodata"
	ResultNXDomain  = "nxdomain"
	ResultNoClient  = "no-namespace" // SERVFAIL: the query names no namespace
	ResultOutside   = "outside-zones"
	ResultMalformed = "malformed"
	ResultNotImpl   = "notimp"
)

// Miss is a name a pod asked for that has no egress path in its
// namespace.
type Miss struct {
	Namespace, Pod, Name, Why string
}

// Answerer turns a request into its response.
type Answerer struct {
	// Zones are the tailnet's domains, lower case with a trailing dot.
	Zones []string
	// TTL of answers, and of NXDOMAIN in resolvers' negative caches.
	TTL   uint32
	Names Names
}

// query is what the server needs of a request.
type query struct {
	header              dnsmessage.Header
	question            dnsmessage.Question
	namespace, pod      string
	edns                bool
	udpSize             int
	malformed, notQuery bool
}

// minUDP is the size every DNS client accepts; ednsUDP the size this
// server offers (the DNS flag day's 1232, which fits any path's MTU).
const (
	minUDP  = 512
	ednsUDP = 1232
)

func parse(req []byte) (query, bool) {
	var q query
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil || h.Response {
		return q, false // not a request: nothing to answer
	}
	q.header, q.udpSize = h, minUDP
	if h.OpCode != 0 {
		q.notQuery = true
		return q, true
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		q.malformed = true
		return q, true
	}
	q.question = qs[0]
	if p.SkipAllAnswers() != nil || p.SkipAllAuthorities() != nil {
		q.malformed = true
		return q, true
	}
	for {
		ah, err := p.AdditionalHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			q.malformed = true
			return q, true
		}
		if ah.Type != dnsmessage.TypeOPT {
			if p.SkipAdditional() != nil {
				q.malformed = true
				return q, true
			}
			continue
		}
		opt, err := p.OPTResource()
		if err != nil || q.edns { // a second OPT is malformed (RFC 6891)
			q.malformed = true
			return q, true
		}
		q.edns = true
		q.udpSize = max(minUDP, min(int(ah.Class), ednsUDP))
		for _, o := range opt.Options {
			switch o.Code {
			case contract.DNSOptionNamespace:
				q.namespace = string(o.Data)
			case contract.DNSOptionPod:
				q.pod = string(o.Data)
			}
		}
	}
	return q, true
}

// Answer is the response to req (nil: none is owed), the query's result,
// and the miss to report, if any. Over UDP the response fits the size
// the client offered (truncated if need be).
func (a *Answerer) Answer(ctx context.Context, req []byte, udp bool) ([]byte, string, *Miss) {
	q, ok := parse(req)
	if !ok {
		return nil, ResultMalformed, nil
	}
	h := dnsmessage.Header{ID: q.header.ID, Response: true, OpCode: q.header.OpCode, RecursionDesired: q.header.RecursionDesired}
	r := response{h: h, q: q}
	switch {
	case q.notQuery:
		r.h.RCode = dnsmessage.RCodeNotImplemented
		return r.pack(udp), ResultNotImpl, nil
	case q.malformed:
		r.h.RCode = dnsmessage.RCodeFormatError
		return r.pack(udp), ResultMalformed, nil
	}
	name := strings.ToLower(q.question.Name.String())
	zone := a.zoneOf(name)
	if zone == "" || q.question.Class != dnsmessage.ClassINET {
		r.h.RCode = dnsmessage.RCodeRefused
		return r.pack(udp), ResultOutside, nil
	}
	r.zone, r.ttl = zone, a.TTL
	if !validNamespace(q.namespace) || (q.pod != "" && !validName(q.pod)) {
		// No namespace, so no name is the asker's to see. Through the
		// cluster's CoreDNS this happens to a pod's first queries, before
		// CoreDNS's pod watch has its address: SERVFAIL, which resolvers
		// take as "try again", not NXDOMAIN, which they would cache.
		r.h.RCode = dnsmessage.RCodeServerFailure
		return r.pack(udp), ResultNoClient, nil
	}
	r.h.Authoritative = true
	if name == zone {
		return r.pack(udp), ResultNoData, nil // the apex: only the SOA, in authority
	}
	addrs, why := a.Names.Resolve(ctx, q.namespace, strings.TrimSuffix(name, "."))
	if len(addrs) == 0 {
		r.h.RCode = dnsmessage.RCodeNameError
		return r.pack(udp), ResultNXDomain, &Miss{Namespace: q.namespace, Pod: q.pod, Name: strings.TrimSuffix(name, "."), Why: why}
	}
	for _, ad := range addrs {
		if (q.question.Type == dnsmessage.TypeA && ad.Is4()) || (q.question.Type == dnsmessage.TypeAAAA && ad.Is6()) {
			r.addrs = append(r.addrs, ad)
		}
	}
	if len(r.addrs) == 0 {
		return r.pack(udp), ResultNoData, nil
	}
	return r.pack(udp), ResultAnswered, nil
}

func (a *Answerer) zoneOf(name string) string {
	best := ""
	for _, z := range a.Zones {
		if (name == z || strings.HasSuffix(name, "."+z)) && len(z) > len(best) {
			best = z
		}
	}
	return best
}

// validNamespace: a DNS label, as namespace names are; validName: a DNS
// subdomain, as pod names are. Anything else did not come from CoreDNS.
func validNamespace(s string) bool {
	return s != "" && len(s) <= 63 && validChars(s) && !strings.Contains(s, ".")
}

func validName(s string) bool { return len(s) <= 253 && validChars(s) }

func validChars(s string) bool {
	if s == "" || s[0] == '-' || s[0] == '.' || s[len(s)-1] == '-' || s[len(s)-1] == '.' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

type response struct {
	h     dnsmessage.Header
	q     query
	zone  string // set when the name is in a zone: SOA in authority
	ttl   uint32
	addrs []netip.Addr
}

// pack builds the response; a UDP one that does not fit is sent
// truncated, so the client asks again over TCP.
func (r response) pack(udp bool) []byte {
	b := r.build(false)
	if udp && len(b) > r.q.udpSize {
		b = r.build(true)
	}
	return b
}

func (r response) build(truncated bool) []byte {
	h := r.h
	h.Truncated = truncated
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
	b.EnableCompression()
	if r.q.malformed || r.q.notQuery {
		out, _ := b.Finish()
		return out
	}
	_ = b.StartQuestions()
	_ = b.Question(r.q.question)
	if !truncated {
		_ = b.StartAnswers()
		for _, a := range r.addrs {
			rh := dnsmessage.ResourceHeader{Name: r.q.question.Name, Class: dnsmessage.ClassINET, TTL: r.ttl}
			if a.Is4() {
				_ = b.AResource(rh, dnsmessage.AResource{A: a.As4()})
			} else {
				_ = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
			}
		}
		_ = b.StartAuthorities()
		if r.zone != "" && len(r.addrs) == 0 && r.h.RCode == dnsmessage.RCodeSuccess || r.h.RCode == dnsmessage.RCodeNameError {
			zone := dnsmessage.MustNewName(r.zone)
			_ = b.SOAResource(dnsmessage.ResourceHeader{Name: zone, Class: dnsmessage.ClassINET, TTL: r.ttl}, dnsmessage.SOAResource{
				NS: dnsmessage.MustNewName("ns." + r.zone), MBox: dnsmessage.MustNewName("hostmaster." + r.zone),
				Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, MinTTL: r.ttl,
			})
		}
	}
	_ = b.StartAdditionals()
	if r.q.edns {
		var rh dnsmessage.ResourceHeader
		_ = rh.SetEDNS0(ednsUDP, dnsmessage.RCodeSuccess, false)
		_ = b.OPTResource(rh, dnsmessage.OPTResource{})
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}
