// Package dnsstub is a minimal DNS server standing in for a cluster's DNS
// in tests and the sandbox: it answers A queries from a function and
// everything else with NXDOMAIN.
package dnsstub

import (
	"net"
	"net/netip"

	"golang.org/x/net/dns/dnsmessage"
)

// Serve answers queries on pc until it is closed. lookup returns the IPv4
// address for a name (with its trailing dot), or false for NXDOMAIN.
func Serve(pc net.PacketConn, lookup func(name string) (netip.Addr, bool)) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		ip, ok := lookup(q.Name.String())
		h.Response, h.Authoritative = true, true
		if !ok {
			h.RCode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(nil, h)
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		if ok && q.Type == dnsmessage.TypeA && ip.Is4() {
			b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: ip.As4()})
		}
		if resp, err := b.Finish(); err == nil {
			pc.WriteTo(resp, from)
		}
	}
}

// Listen serves on ip:53 (UDP) and returns the socket to close.
func Listen(ip netip.Addr, lookup func(name string) (netip.Addr, bool)) (net.PacketConn, error) {
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip.String(), "53"))
	if err != nil {
		return nil, err
	}
	go Serve(pc, lookup)
	return pc, nil
}
