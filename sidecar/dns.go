package sidecar

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer answers the pod's DNS queries in transparent mode (netinit
// redirects port 53 here): MagicDNS names from the tailnet view; with an
// exit node, names outside the cluster through it (exitdns.go); anything
// else forwarded to the pod's own nameservers, so cluster names still work.
type dnsServer struct {
	s        *Sidecar
	upstream []netip.AddrPort
	cluster  clusterZones
}

// answer returns the response to the query msg, forwarding over network.
func (d *dnsServer) answer(ctx context.Context, network string, msg []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	name := strings.TrimSuffix(q.Name.String(), ".")
	if q.Class == dnsmessage.ClassINET {
		if addrs, err := d.s.dialer.Resolve(name); err == nil && !isIPLiteral(name) {
			d.s.metrics.dnsQueries.WithLabelValues("magicdns").Inc()
			return reply(h, q, addrs, dnsmessage.RCodeSuccess)
		}
		if v := d.s.node.view.Load(); v != nil && v.domain != "" && strings.HasSuffix(strings.ToLower(name), "."+v.domain) {
			d.s.metrics.dnsQueries.WithLabelValues("magicdns").Inc()
			return reply(h, q, nil, dnsmessage.RCodeNameError)
		}
	}
	if d.s.cfg.ExitNode != "" && !d.cluster.covers(name) {
		resp, err := d.s.node.queryOutside(ctx, msg, q)
		switch {
		case errors.Is(err, errTypeNotCarried):
			d.s.metrics.dnsQueries.WithLabelValues("error").Inc()
			return reply(h, q, nil, dnsmessage.RCodeNotImplemented)
		case err != nil:
			d.s.metrics.dnsQueries.WithLabelValues("error").Inc()
			return reply(h, q, nil, dnsmessage.RCodeServerFailure)
		}
		d.s.metrics.dnsQueries.WithLabelValues("exit-node").Inc()
		return resp, nil
	}
	resp, err := d.forward(ctx, network, msg)
	if err != nil {
		d.s.metrics.dnsQueries.WithLabelValues("error").Inc()
		return reply(h, q, nil, dnsmessage.RCodeServerFailure)
	}
	d.s.metrics.dnsQueries.WithLabelValues("forwarded").Inc()
	return resp, nil
}

func isIPLiteral(s string) bool { _, err := netip.ParseAddr(s); return err == nil }

func reply(h dnsmessage.Header, q dnsmessage.Question, addrs []netip.Addr, rcode dnsmessage.RCode) ([]byte, error) {
	h.Response, h.Authoritative, h.RecursionAvailable, h.RCode = true, true, true, rcode
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
	for _, a := range addrs {
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			if err := b.AResource(rh, dnsmessage.AResource{A: a.As4()}); err != nil {
				return nil, err
			}
		case q.Type == dnsmessage.TypeAAAA && a.Is6():
			if err := b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// forward asks the pod's nameservers in turn.
func (d *dnsServer) forward(ctx context.Context, network string, msg []byte) ([]byte, error) {
	if len(d.upstream) == 0 {
		return nil, errors.New("no upstream nameservers")
	}
	var last error
	for _, ns := range d.upstream {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := exchange(ctx, network, ns, msg)
		cancel()
		if err == nil {
			return resp, nil
		}
		last = err
	}
	return nil, last
}

func exchange(ctx context.Context, network string, ns netip.AddrPort, msg []byte) ([]byte, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, network, ns.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl) // a failed read reports it
	}
	if network == "tcp" {
		return tcpExchange(c, msg)
	}
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func tcpExchange(c net.Conn, msg []byte) ([]byte, error) {
	if err := writeTCPMsg(c, msg); err != nil {
		return nil, err
	}
	return readTCPMsg(c)
}

func writeTCPMsg(w io.Writer, msg []byte) error {
	b := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	copy(b[2:], msg)
	_, err := w.Write(b)
	return err
}

func readTCPMsg(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}

// serveUDP answers queries on pc until it is closed.
func (d *dnsServer) serveUDP(ctx context.Context, pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := append([]byte(nil), buf[:n]...)
		go func() {
			if resp, err := d.answer(ctx, "udp", q); err == nil {
				_, _ = pc.WriteTo(resp, from) // UDP: the client asks again
			}
		}()
	}
}

// serveTCP answers queries on ln until it is closed.
func (d *dnsServer) serveTCP(ctx context.Context, ln net.Listener) {
	d.s.accept(ln, func(c net.Conn) {
		defer c.Close()
		for {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			q, err := readTCPMsg(c)
			if err != nil {
				return
			}
			resp, err := d.answer(ctx, "tcp", q)
			if err != nil || writeTCPMsg(c, resp) != nil {
				return
			}
		}
	})
}
