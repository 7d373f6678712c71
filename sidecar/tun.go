package sidecar

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tailscale/wireguard-go/tun"
	"golang.org/x/sys/unix"
	"tailscale.com/net/packet"
	"tailscale.com/net/packet/checksum"
	"tailscale.com/types/ipproto"

	"github.com/tsinject/tsinject/internal/contract"
)

// Transparent egress carries UDP and ICMP through a TUN device that
// tailscale-init made (package netinit): the pod's kernel routes the
// tailnet ranges there, and the node's WireGuard engine reads and writes
// the packets directly, without netstack. TCP is still redirected to the
// sidecar's listener, before routing, and never reaches the TUN.
//
// The kernel gives what it routes to the TUN the TUN's own address as
// source (contract.TunLocal4/6), since the node's tailnet addresses are not
// known when init runs and the sidecar cannot change interfaces. podTUN
// translates between the two, one to one and statelessly: out, the TUN's
// address becomes the node's; in, the node's becomes the TUN's. Nothing
// else is rewritten, so a packet from another source reaches the tailnet
// with it and is dropped by the peer, as WireGuard drops a source outside
// the sender's addresses.

var (
	tunLocal4 = netip.MustParseAddr(contract.TunLocal4)
	tunLocal6 = netip.MustParseAddr(contract.TunLocal6)
)

// openTUN attaches to the pod's TUN. The device is persistent and owned
// by the sidecar's UID, which is all the kernel asks of an unprivileged
// process that attaches to it.
func openTUN(dir string) (tun.Device, error) {
	path := filepath.Join(dir, contract.TunDevice)
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w (tailscale-init makes it; a volume mounted nodev cannot carry it)", path, err)
	}
	ifr, err := unix.NewIfreq(contract.TunName)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attaching to %s: %w (it must be persistent and owned by UID %d)", contract.TunName, err, contract.ProxyUID)
	}
	dev, _, err := tun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", contract.TunName, err)
	}
	return dev, nil
}

// podTUN is the pod's TUN as the node's engine sees it: the TUN's own
// addresses translated to the node's tailnet addresses, and packets
// counted.
type podTUN struct {
	tun.Device
	self  atomic.Pointer[selfAddrs]
	count *tunCounters
}

// selfAddrs are the node's tailnet addresses; invalid until it joins.
type selfAddrs struct{ v4, v6 netip.Addr }

func newPodTUN(dev tun.Device, count *tunCounters) *podTUN {
	return &podTUN{Device: dev, count: count}
}

// setSelf records the node's tailnet addresses (on joining, and whenever
// the control server changes them).
func (d *podTUN) setSelf(addrs []netip.Addr) {
	var s selfAddrs
	for _, a := range addrs {
		if a.Is4() && !s.v4.IsValid() {
			s.v4 = a
		} else if a.Is6() && !s.v6.IsValid() {
			s.v6 = a
		}
	}
	if cur := d.self.Load(); cur == nil || *cur != s {
		d.self.Store(&s)
	}
}

// Read takes the pod's packets to the tailnet, with the node's address as
// their source.
func (d *podTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Device.Read(bufs, sizes, offset)
	self := d.self.Load()
	var q packet.Parsed
	for i := 0; i < n; i++ {
		b := bufs[i][offset : offset+sizes[i]]
		q.Decode(b)
		d.count.add(q.IPProto, wayOut, len(b))
		if self == nil {
			continue
		}
		switch src := q.Src.Addr(); {
		case src == tunLocal4 && self.v4.IsValid():
			noSum := udp4NoChecksum(&q)
			checksum.UpdateSrcAddr(&q, self.v4)
			keepNoChecksum(&q, noSum)
			translateQuoted(b, &q, tunLocal4, self.v4, false)
		case src == tunLocal6 && self.v6.IsValid():
			checksum.UpdateSrcAddr(&q, self.v6)
			translateQuoted(b, &q, tunLocal6, self.v6, false)
		}
	}
	return n, err
}

// Write gives the pod the tailnet's packets for it, addressed to the TUN.
func (d *podTUN) Write(bufs [][]byte, offset int) (int, error) {
	self := d.self.Load()
	var q packet.Parsed
	for _, buf := range bufs {
		b := buf[offset:]
		q.Decode(b)
		d.count.add(q.IPProto, wayIn, len(b))
		if self == nil {
			continue
		}
		switch dst := q.Dst.Addr(); {
		case dst == self.v4 && dst.IsValid():
			noSum := udp4NoChecksum(&q)
			checksum.UpdateDstAddr(&q, tunLocal4)
			keepNoChecksum(&q, noSum)
			translateQuoted(b, &q, self.v4, tunLocal4, true)
		case dst == self.v6 && dst.IsValid():
			checksum.UpdateDstAddr(&q, tunLocal6)
			translateQuoted(b, &q, self.v6, tunLocal6, true)
		}
	}
	return d.Device.Write(bufs, offset)
}

// translateQuoted translates the packet an ICMP error quotes (the
// offending packet's header and first bytes) as the error itself was:
// coming in, the quoted packet is the pod's, from the node's address
// (from becomes to as its source); going out, it is the tailnet's, to
// the TUN's address (its destination). Without it the pod's conntrack
// cannot tie an error to the flow it answers and drops it. The quoted
// IPv4 header's checksum and the ICMP checksum are computed again; the
// quoted transport checksum, over a datagram the quote may cut, is left.
func translateQuoted(b []byte, q *packet.Parsed, from, to netip.Addr, inbound bool) {
	v4 := q.IPVersion == 4
	hdr := 40
	if v4 {
		hdr = int(b[0]&0x0f) * 4
		if q.IPProto != ipproto.ICMPv4 || len(b) < hdr+8+20 || !icmp4Error(b[hdr]) {
			return
		}
	} else if q.IPProto != ipproto.ICMPv6 || len(b) < hdr+8+40 || b[hdr] < 1 || b[hdr] > 4 {
		return // ICMPv6 errors are types 1 to 4
	}
	inner := b[hdr+8:]
	at := 12 // the quoted source: the pod's own packet, coming in
	if !inbound {
		at = 16 // the quoted destination: the tailnet's packet, going out
	}
	n := 4
	if !v4 {
		at, n = at-4, 16 // IPv6: source at 8, destination at 24
		if !inbound {
			at = 24
		}
	}
	if v4 && inner[0]>>4 != 4 || !v4 && inner[0]>>4 != 6 || netip.AddrFrom16([16]byte(pad16(inner[at:at+n]))).Unmap() != from {
		return
	}
	copy(inner[at:at+n], to.AsSlice())
	if v4 {
		ihl := int(inner[0]&0x0f) * 4
		if ihl < 20 || ihl > len(inner) {
			return
		}
		inner[10], inner[11] = 0, 0
		binary.BigEndian.PutUint16(inner[10:], ^onesSum(inner[:ihl], 0))
	}
	msg := b[hdr:]
	msg[2], msg[3] = 0, 0
	var init uint32
	if !v4 { // the pseudo-header: source, destination, length, next header
		init = uint32(onesSum(b[8:40], 0))
		init += uint32(len(msg)>>16) + uint32(len(msg)&0xffff) + uint32(ipproto.ICMPv6)
	}
	binary.BigEndian.PutUint16(msg[2:], ^onesSum(msg, init))
}

func icmp4Error(typ byte) bool {
	switch typ {
	case 3, 4, 11, 12: // unreachable, source quench, time exceeded, parameter problem
		return true
	}
	return false
}

// pad16 is an address's bytes as 16 (an IPv4 one mapped).
func pad16(b []byte) []byte {
	if len(b) == 4 {
		return append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, b...)
	}
	return b
}

// onesSum is the ones' complement sum of b, folded, from init.
func onesSum(b []byte, init uint32) uint16 {
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
	return uint16(s)
}

// udp4NoChecksum reports whether q is IPv4 UDP sent without a checksum
// (0: VXLAN, SO_NO_CHECK), which an incremental update would corrupt.
func udp4NoChecksum(q *packet.Parsed) bool {
	tr := q.Transport()
	return q.IPVersion == 4 && q.IPProto == ipproto.UDP && len(tr) >= 8 && tr[6] == 0 && tr[7] == 0
}

// keepNoChecksum puts back a UDP checksum of 0 after the address changed.
func keepNoChecksum(q *packet.Parsed, none bool) {
	if none {
		tr := q.Transport()
		tr[6], tr[7] = 0, 0
	}
}

// DisableUDPGRO and DisableTCPGRO pass on to the TUN what the engine
// asks of it (tstun looks for tun.GRODevice; a wrapper would hide it).
func (d *podTUN) DisableUDPGRO() {
	if g, ok := d.Device.(tun.GRODevice); ok {
		g.DisableUDPGRO()
	}
}

func (d *podTUN) DisableTCPGRO() {
	if g, ok := d.Device.(tun.GRODevice); ok {
		g.DisableTCPGRO()
	}
}

const (
	wayOut = iota // to the tailnet
	wayIn         // from the tailnet
)

// tunCounters count the TUN's packets and bytes by protocol and way:
// atomics on the packet path, read by /metrics.
type tunCounters struct {
	packets, bytes [3][2]atomic.Uint64 // [protoIndex][way]
}

var tunProtos = [3]string{"udp", "icmp", "other"}

func protoIndex(p ipproto.Proto) int {
	switch p {
	case ipproto.UDP:
		return 0
	case ipproto.ICMPv4, ipproto.ICMPv6:
		return 1
	}
	return 2
}

func (c *tunCounters) add(p ipproto.Proto, way, n int) {
	i := protoIndex(p)
	c.packets[i][way].Add(1)
	c.bytes[i][way].Add(uint64(n))
}

var (
	tunPacketsDesc = prometheus.NewDesc("tsinject_sidecar_tun_packets_total",
		"Packets carried between the pod's TUN (transparent UDP and ICMP) and the tailnet, by protocol (udp, icmp, other) and way (tx: to the tailnet, rx: from it).",
		[]string{"proto", "way"}, nil)
	tunBytesDesc = prometheus.NewDesc("tsinject_sidecar_tun_bytes_total",
		"Bytes (IP packets) carried between the pod's TUN and the tailnet, by protocol and way.",
		[]string{"proto", "way"}, nil)
)

func (c *tunCounters) Describe(ch chan<- *prometheus.Desc) {
	ch <- tunPacketsDesc
	ch <- tunBytesDesc
}

func (c *tunCounters) Collect(ch chan<- prometheus.Metric) {
	for i, proto := range tunProtos {
		for way, name := range []string{"tx", "rx"} {
			ch <- prometheus.MustNewConstMetric(tunPacketsDesc, prometheus.CounterValue, float64(c.packets[i][way].Load()), proto, name)
			ch <- prometheus.MustNewConstMetric(tunBytesDesc, prometheus.CounterValue, float64(c.bytes[i][way].Load()), proto, name)
		}
	}
}
