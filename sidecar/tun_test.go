package sidecar

import (
	"net/netip"
	"os"
	"testing"

	"github.com/tailscale/wireguard-go/tun"
	"tailscale.com/net/packet"
	"tailscale.com/types/ipproto"
)

// fakeTUN hands out queued packets and keeps what is written.
type fakeTUN struct {
	tun.Device
	in      [][]byte
	written [][]byte
}

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for ; n < len(bufs) && len(f.in) > 0; n++ {
		sizes[n] = copy(bufs[n][offset:], f.in[0])
		f.in = f.in[1:]
	}
	return n, nil
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		f.written = append(f.written, append([]byte(nil), b[offset:]...))
	}
	return len(bufs), nil
}

func (f *fakeTUN) File() *os.File { return nil }

// checksumsValid checks an IPv4 UDP packet's header and UDP checksums.
func checksumsValid(t *testing.T, b []byte) {
	t.Helper()
	if onesSum(b[:20], 0) != 0xffff {
		t.Errorf("IPv4 header checksum wrong")
	}
	udp := b[20:]
	if udp[6] == 0 && udp[7] == 0 {
		return // sent without one
	}
	pseudo := append(append(append([]byte{}, b[12:20]...), 0, byte(ipproto.UDP)), byte(len(udp)>>8), byte(len(udp)))
	if onesSum(udp, uint32(onesSum(pseudo, 0))) != 0xffff {
		t.Errorf("UDP checksum wrong")
	}
}

// The TUN's address becomes the node's on the way out, and back on the
// way in, with checksums that verify; a packet sent without a UDP
// checksum keeps none; a packet from another source is left alone.
func TestPodTUNTranslates(t *testing.T) {
	self := netip.MustParseAddr("100.64.0.7")
	peer := netip.MustParseAddr("100.64.0.9")
	udp := func(src, dst netip.Addr, noSum bool) []byte {
		b := packet.Generate(packet.UDP4Header{IP4Header: packet.IP4Header{IPProto: ipproto.UDP, Src: src, Dst: dst},
			SrcPort: 4242, DstPort: 7}, []byte("hello over udp"))
		if noSum {
			b[26], b[27] = 0, 0
		}
		return b
	}
	other := netip.MustParseAddr("198.18.0.5")
	f := &fakeTUN{in: [][]byte{udp(tunLocal4, peer, false), udp(tunLocal4, peer, true), udp(other, peer, false)}}
	d := newPodTUN(f, &tunCounters{})
	d.setSelf([]netip.Addr{self, netip.MustParseAddr("fd7a:115c:a1e0::7")})
	bufs := [][]byte{make([]byte, 1500), make([]byte, 1500), make([]byte, 1500)}
	sizes := make([]int, 3)
	n, _ := d.Read(bufs, sizes, 0)
	if n != 3 {
		t.Fatalf("read %d packets", n)
	}
	for i, wantSrc := range []netip.Addr{self, self, other} {
		var q packet.Parsed
		q.Decode(bufs[i][:sizes[i]])
		if q.Src.Addr() != wantSrc {
			t.Errorf("packet %d: source %v, want %v", i, q.Src.Addr(), wantSrc)
		}
		checksumsValid(t, bufs[i][:sizes[i]])
	}
	if b := bufs[1]; b[26] != 0 || b[27] != 0 {
		t.Errorf("a datagram sent without a checksum got one: %x", b[26:28])
	}
	d.Write([][]byte{udp(peer, self, false)}, 0)
	var q packet.Parsed
	q.Decode(f.written[0])
	if q.Dst.Addr() != tunLocal4 {
		t.Errorf("inbound destination %v, want the TUN's %v", q.Dst.Addr(), tunLocal4)
	}
	checksumsValid(t, f.written[0])
	if got := d.count.packets[0][wayOut].Load(); got != 3 {
		t.Errorf("counted %d UDP packets out, want 3", got)
	}
}

// An ICMP error from the tailnet about the pod's own datagram quotes it
// with the node's address as its source: the quote is translated too,
// with checksums that verify, so the pod's conntrack ties the error to
// its flow. IPv4 and IPv6.
func TestPodTUNTranslatesICMPErrors(t *testing.T) {
	self4, peer4 := netip.MustParseAddr("100.64.0.7"), netip.MustParseAddr("100.64.0.9")
	self6, peer6 := netip.MustParseAddr("fd7a:115c:a1e0::7"), netip.MustParseAddr("fd7a:115c:a1e0::9")
	quoted4 := packet.Generate(packet.UDP4Header{IP4Header: packet.IP4Header{IPProto: ipproto.UDP, Src: self4, Dst: peer4},
		SrcPort: 4242, DstPort: 7}, []byte("hello over udp"))
	err4 := packet.Generate(packet.ICMP4Header{IP4Header: packet.IP4Header{IPProto: ipproto.ICMPv4, Src: peer4, Dst: self4},
		Type: packet.ICMP4Unreachable, Code: 3}, append([]byte{0, 0, 0, 0}, quoted4[:28]...))
	quoted6 := packet.Generate(packet.UDP6Header{IP6Header: packet.IP6Header{IPProto: ipproto.UDP, Src: self6, Dst: peer6},
		SrcPort: 4242, DstPort: 7}, []byte("hello over udp"))
	err6 := packet.Generate(packet.ICMP6Header{IP6Header: packet.IP6Header{IPProto: ipproto.ICMPv6, Src: peer6, Dst: self6},
		Type: packet.ICMP6Unreachable, Code: 4}, append([]byte{0, 0, 0, 0}, quoted6[:48]...))
	f := &fakeTUN{}
	d := newPodTUN(f, &tunCounters{})
	d.setSelf([]netip.Addr{self4, self6})
	d.Write([][]byte{err4, err6}, 0)

	b := f.written[0]
	inner := b[28:]
	if got := netip.AddrFrom4([4]byte(inner[12:16])); got != tunLocal4 {
		t.Errorf("IPv4: the quoted source is %v, want the TUN's %v", got, tunLocal4)
	}
	if onesSum(inner[:20], 0) != 0xffff {
		t.Errorf("IPv4: the quoted header's checksum does not verify")
	}
	if onesSum(b[20:], 0) != 0xffff {
		t.Errorf("IPv4: the ICMP checksum does not verify")
	}

	b = f.written[1]
	if got := netip.AddrFrom16([16]byte(b[48+8 : 48+24])); got != tunLocal6 {
		t.Errorf("IPv6: the quoted source is %v, want the TUN's %v", got, tunLocal6)
	}
	msg := b[40:]
	pseudo := uint32(onesSum(b[8:40], 0)) + uint32(len(msg)) + uint32(ipproto.ICMPv6)
	if onesSum(msg, pseudo) != 0xffff {
		t.Errorf("IPv6: the ICMPv6 checksum does not verify")
	}
}
