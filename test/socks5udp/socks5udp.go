// Package socks5udp is a SOCKS5 client's UDP ASSOCIATE (RFC 1928, no
// authentication), as an app speaks it to a sidecar's or tailscaled's
// proxy in tests and benchmarks.
package socks5udp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// Assoc is one association: datagrams to any target through the proxy's
// relay, for as long as its control connection stays open.
type Assoc struct {
	ctrl  net.Conn
	relay *net.UDPConn
}

// Associate opens an association with the proxy at addr.
func Associate(addr string, timeout time.Duration) (*Assoc, error) {
	ctrl, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Assoc, error) { ctrl.Close(); return nil, err }
	ctrl.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 10)
	ctrl.Write([]byte{5, 1, 0}) // version 5, one method: no authentication
	if _, err := io.ReadFull(ctrl, buf[:2]); err != nil || buf[1] != 0 {
		return fail(fmt.Errorf("greeting: %v %v", buf[:2], err))
	}
	ctrl.Write([]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0}) // UDP ASSOCIATE, from any address
	if _, err := io.ReadFull(ctrl, buf[:10]); err != nil || buf[1] != 0 || buf[3] != 1 {
		return fail(fmt.Errorf("associate: %v %v", buf, err))
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(buf[4:8])), uint16(buf[8])<<8|uint16(buf[9]))
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(relay))
	if err != nil {
		return fail(err)
	}
	ctrl.SetDeadline(time.Time{})
	return &Assoc{ctrl: ctrl, relay: c}, nil
}

// Header is the datagram header for target ("host:port": a name or an IP).
func Header(target string) ([]byte, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, err
	}
	hdr := []byte{0, 0, 0}
	switch ip, err := netip.ParseAddr(host); {
	case err == nil && ip.Is4():
		hdr = append(append(hdr, 1), ip.AsSlice()...)
	case err == nil:
		hdr = append(append(hdr, 4), ip.AsSlice()...)
	case len(host) > 255:
		return nil, errors.New("name too long")
	default:
		hdr = append(append(hdr, 3, byte(len(host))), host...)
	}
	return append(hdr, byte(port>>8), byte(port)), nil
}

// Send sends payload behind hdr (Header's).
func (a *Assoc) Send(hdr, payload []byte) error {
	_, err := a.relay.Write(append(hdr[:len(hdr):len(hdr)], payload...))
	return err
}

// Receive reads one answer into buf and returns its payload.
func (a *Assoc) Receive(buf []byte, deadline time.Time) ([]byte, error) {
	a.relay.SetReadDeadline(deadline)
	n, err := a.relay.Read(buf)
	if err != nil {
		return nil, err
	}
	if n < 4 {
		return nil, errors.New("short answer")
	}
	skip := map[byte]int{1: 4, 4: 16}[buf[3]] + 6
	if buf[3] == 3 {
		skip = int(buf[4]) + 7
	}
	if n < skip {
		return nil, errors.New("short answer")
	}
	return buf[skip:n], nil
}

// Close ends the association.
func (a *Assoc) Close() error {
	a.relay.Close()
	return a.ctrl.Close()
}
