package netinit

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jsimonetti/rtnetlink"
	"golang.org/x/sys/unix"

	"github.com/tsinject/tsinject/internal/contract"
)

// tunMTU is the TUN's MTU: the tailnet's (WireGuard over 1,280-byte
// paths), as tailscaled's own TUN has.
const tunMTU = 1280

// TUN is the device that carries the pod's UDP and ICMP to the tailnet.
// Init makes it persistent and gives it to the sidecar's UID, makes its
// device node in Dir (a volume the sidecar mounts too: a container has no
// /dev/net/tun of its own), gives it the TUN addresses and routes the
// redirected prefixes through it.
type TUN struct {
	Dir string
	UID uint32
}

// createTUN makes the device and its node; it is idempotent.
func createTUN(t TUN) error {
	node := filepath.Join(t.Dir, contract.TunDevice)
	if err := os.Remove(node); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// /dev/net/tun: character device 10:200. Open to every user, as
	// /dev/net/tun is on a host: init has no CAP_CHOWN to give it to the
	// sidecar, and opening it grants nothing. Attaching to tsi0 needs the
	// TUN owner's UID (the sidecar's) or CAP_NET_ADMIN, and only init and
	// the sidecar mount the volume.
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		return fmt.Errorf("making %s: %w (init needs CAP_MKNOD)", node, err)
	}
	if err := os.Chmod(node, 0o666); err != nil { // past the umask
		return err
	}
	if owner, err := os.ReadFile(filepath.Join("/sys/class/net", contract.TunName, "owner")); err == nil {
		// Made by an earlier run, and maybe attached by the sidecar now
		// (attaching again would be refused): keep it if it is the
		// sidecar's.
		if strings.TrimSpace(string(owner)) != strconv.Itoa(int(t.UID)) {
			return fmt.Errorf("%s exists, owned by UID %s, not the sidecar's %d", contract.TunName, strings.TrimSpace(string(owner)), t.UID)
		}
		return nil
	}
	fd, err := unix.Open(node, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", node, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(contract.TunName)
	if err != nil {
		return err
	}
	// The flags the sidecar attaches with (wireguard-go's: offloads
	// through the virtio header).
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("creating %s: %w", contract.TunName, err)
	}
	for _, op := range []struct {
		req  uint
		val  int
		what string
	}{
		// The owner alone: a group would let any container of the pod
		// with that GID (runAsGroup, fsGroup) attach too.
		{unix.TUNSETOWNER, int(t.UID), "owner"},
		{unix.TUNSETPERSIST, 1, "persistence"},
	} {
		if err := unix.IoctlSetInt(fd, op.req, op.val); err != nil {
			return fmt.Errorf("setting %s's %s: %w", contract.TunName, op.what, err)
		}
	}
	return nil
}

// configureTUN brings the TUN up with its addresses and routes prefixes
// through it, from the TUN's address (so that the sidecar can translate
// it). IPv6 only where the pod has it.
func configureTUN(prefixes []netip.Prefix) error {
	ifc, v6, c, err := tunLink()
	if err != nil {
		return err
	}
	defer c.Close()
	idx := uint32(ifc.Index)
	if err := c.Link.Set(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC, Index: idx, Flags: unix.IFF_UP, Change: unix.IFF_UP,
		Attributes: &rtnetlink.LinkAttributes{MTU: tunMTU},
	}); err != nil {
		return fmt.Errorf("bringing %s up: %w", contract.TunName, err)
	}
	local4 := netip.MustParseAddr(contract.TunLocal4)
	local6 := netip.MustParseAddr(contract.TunLocal6)
	locals := []netip.Addr{local4}
	if v6 {
		locals = append(locals, local6)
	}
	for _, a := range locals {
		family, bits, flags := uint8(unix.AF_INET), uint8(32), uint32(0)
		if a.Is6() {
			// No duplicate detection: the route below needs the address
			// at once, and nothing else is on the link.
			family, bits, flags = unix.AF_INET6, 128, unix.IFA_F_NODAD
		}
		ip := net.IP(a.AsSlice())
		err := c.Address.New(&rtnetlink.AddressMessage{
			Family: family, PrefixLength: bits, Scope: unix.RT_SCOPE_UNIVERSE, Index: idx,
			Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip, Flags: flags},
		})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("address %s on %s: %w", a, contract.TunName, err)
		}
	}
	for _, p := range prefixes {
		src := local4
		if p.Addr().Is6() {
			if !v6 {
				continue
			}
			src = local6
		}
		if err := c.Route.Replace(tunRoute(p, idx, src)); err != nil {
			return fmt.Errorf("route %s dev %s: %w", p, contract.TunName, err)
		}
	}
	return nil
}

// tunLink is the TUN, whether the pod has IPv6, and a route socket to
// program them with (the caller closes it).
func tunLink() (*net.Interface, bool, *rtnetlink.Conn, error) {
	ifc, err := net.InterfaceByName(contract.TunName)
	if err != nil {
		return nil, false, nil, fmt.Errorf("%s: %w", contract.TunName, err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, false, nil, err
	}
	v6, err := hasIPv6(lo)
	if err != nil {
		return nil, false, nil, err
	}
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, false, nil, fmt.Errorf("%s: %w", contract.TunName, err)
	}
	return ifc, v6, c, nil
}

func tunRoute(p netip.Prefix, idx uint32, src netip.Addr) *rtnetlink.RouteMessage {
	family := uint8(unix.AF_INET6)
	if p.Addr().Is4() {
		family = unix.AF_INET
	}
	return &rtnetlink.RouteMessage{
		Family:    family,
		DstLength: uint8(p.Bits()),
		Table:     unix.RT_TABLE_MAIN,
		Protocol:  unix.RTPROT_STATIC,
		Scope:     unix.RT_SCOPE_UNIVERSE,
		Type:      unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{
			Dst:      net.IP(p.Masked().Addr().AsSlice()),
			Src:      net.IP(src.AsSlice()),
			OutIface: idx,
			// Metric 0: in transparent mode the tailnet's ranges are the
			// tailnet's, whatever the protocol (TCP to them is redirected
			// before any route), over a pod's own route for the same prefix.
		},
	}
}

// removeTUN deletes the TUN (its routes and addresses go with it), if any.
func removeTUN() error {
	ifc, err := net.InterfaceByName(contract.TunName)
	if err != nil {
		return nil // none
	}
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Link.Delete(uint32(ifc.Index))
}
