package sidecar

import (
	"encoding/binary"
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

// sum16 is the ones' complement sum of b.
func sum16(b []byte, init uint32) uint32 {
	s := init
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return s
}

// checksumsValid checks an IPv4 UDP packet's header and UDP checksums.
func checksumsValid(t *testing.T, b []byte) {
	t.Helper()
	if sum16(b[:20], 0) != 0xffff {
		t.Errorf("IPv4 header checksum wrong")
	}
	udp := b[20:]
	if udp[6] == 0 && udp[7] == 0 {
		return // sent without one
	}
	pseudo := append(append(append([]byte{}, b[12:20]...), 0, byte(ipproto.UDP)), byte(len(udp)>>8), byte(len(udp)))
	if sum16(udp, sum16(pseudo, 0)) != 0xffff {
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
