// Package netns makes test hosts: network namespaces joined to the host by
// a veth pair with addresses from 198.18.0.0/15 (RFC 2544, benchmarking).
// A namespace gets no default route: it can reach its own addresses and the
// host end of its veth and nothing else, so whatever runs inside provably
// contacts nothing outside the test.
package netns

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NS is a network namespace with a veth link to the host.
type NS struct {
	Name   string
	HostIP netip.Addr // host end of the veth
	IP     netip.Addr // namespace end
	hostIf string
	inIf   string
}

// Check reports why namespaces cannot be made here (not root, no ip).
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the ip command (iproute2) is missing; .ci/run installs it")
	}
	return nil
}

// New creates a namespace named prefix-XXXX on a free /30 of
// 198.18.128.0/17 (the lower half is left for the namespaces' own test
// subnets).
func New(prefix string) (*NS, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	unlock, err := lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	used, err := usedAddrs()
	if err != nil {
		return nil, err
	}
	var host, inner netip.Addr
	for try := 0; ; try++ {
		if try == 100 {
			return nil, errors.New("no free /30 in 198.18.128.0/17")
		}
		var b [2]byte
		rand.Read(b[:])
		n := uint32(binary.BigEndian.Uint16(b[:])) &^ 3 // /30 boundary within a /17 (15 bits: mask below)
		n &= 0x7ffc
		base := netip.AddrFrom4([4]byte{198, 18, 128 | byte(n>>8), byte(n)})
		host, inner = base.Next(), base.Next().Next()
		if !used[host] && !used[inner] {
			break
		}
	}
	suffix := strings.ReplaceAll(inner.String(), ".", "")[len("19818"):]
	inIf := "tsin" + suffix
	ns := &NS{Name: prefix + "-" + suffix, HostIP: host, IP: inner, hostIf: "tsih" + suffix, inIf: inIf}
	steps := [][]string{
		{"netns", "add", ns.Name},
		{"link", "add", ns.hostIf, "type", "veth", "peer", "name", inIf},
		{"link", "set", inIf, "netns", ns.Name},
		{"addr", "add", host.String() + "/30", "dev", ns.hostIf},
		{"link", "set", ns.hostIf, "up"},
		{"-n", ns.Name, "addr", "add", inner.String() + "/30", "dev", inIf},
		{"-n", ns.Name, "link", "set", inIf, "up"},
		{"-n", ns.Name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			ns.Close()
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return ns, nil
}

// AddAddr adds an address (e.g. a test host on a subnet a connector
// advertises) to the namespace's loopback.
func (n *NS) AddAddr(p netip.Prefix) error {
	out, err := exec.Command("ip", "-n", n.Name, "addr", "add", p.String(), "dev", "lo").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip addr add %s: %v: %s", p, err, out)
	}
	return nil
}

// Route adds a route on the host side towards the namespace.
func (n *NS) Route(p netip.Prefix) error {
	out, err := exec.Command("ip", "route", "add", p.String(), "via", n.IP.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip route add %s: %v: %s", p, err, out)
	}
	return nil
}

// RouteOut routes p from inside the namespace out through its veth, as a
// pod's default route would (without giving it one). Traffic that
// netfilter redirects needs a route before the redirect applies.
func (n *NS) RouteOut(p netip.Prefix) error {
	out, err := exec.Command("ip", "-n", n.Name, "route", "add", p.String(), "dev", n.inIf).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip route add %s in %s: %v: %s", p, n.Name, err, out)
	}
	return nil
}

// Interface is the namespace's end of its veth (its eth0).
func (n *NS) Interface() string { return n.inIf }

// SetResolvConf gives commands run by Command their own /etc/resolv.conf
// (ip netns exec bind-mounts /etc/netns/NAME/resolv.conf).
func (n *NS) SetResolvConf(content string) error {
	dir := filepath.Join("/etc/netns", n.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(content), 0o644)
}

// Command runs name inside the namespace.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// AsUser runs name inside the namespace as uid:gid with no capabilities,
// as a container runtime would run a non-root container.
func (n *NS) AsUser(uid int, name string, args ...string) *exec.Cmd {
	a := []string{"netns", "exec", n.Name, "setpriv",
		fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", name}
	cmd := exec.Command("ip", append(a, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// Close deletes the namespace, its veth and resolv.conf.
func (n *NS) Close() error {
	exec.Command("ip", "link", "del", n.hostIf).Run()
	os.RemoveAll(filepath.Join("/etc/netns", n.Name))
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
	}
	return nil
}

func usedAddrs() (map[netip.Addr]bool, error) {
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		return nil, err
	}
	used := map[netip.Addr]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := range f {
			if f[i] == "inet" && i+1 < len(f) {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil {
					used[p.Addr()] = true
				}
			}
		}
	}
	return used, nil
}

// lock serialises allocation between test processes.
func lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "tsinject-netns.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// Listen opens a listener inside the namespace from this process: the
// socket is created on a thread switched into the namespace and keeps
// belonging to it afterwards.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.do(func() (err error) { ln, err = net.Listen(network, addr); return err })
	return ln, err
}

// Dial connects from inside the namespace.
func (n *NS) Dial(network, addr string) (net.Conn, error) {
	return n.DialTimeout(network, addr, 0)
}

// DialTimeout is Dial that gives up after d (never, with 0).
func (n *NS) DialTimeout(network, addr string, d time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() (err error) { c, err = net.DialTimeout(network, addr, d); return err })
	return c, err
}

// WaitIPv6Settled waits until the namespace has no tentative IPv6 address:
// until the kernel's duplicate address detection of the veth's link-local
// address ends, a connection cannot use it as its source.
func (n *NS) WaitIPv6Settled() error {
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := exec.Command("ip", "-n", n.Name, "-6", "addr", "show", "tentative").CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip -6 addr show tentative: %v: %s", err, out)
		}
		if len(strings.TrimSpace(string(out))) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("IPv6 addresses still tentative after a minute:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ListenPacket is Listen for packet sockets.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.do(func() (err error) { pc, err = net.ListenPacket(network, addr); return err })
	return pc, err
}

func (n *NS) do(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/var/run/netns", n.Name))
	if err != nil {
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("entering %s: %w", n.Name, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is in the wrong namespace: never unlock it, so the
		// runtime retires it instead of reusing it.
		runtime.LockOSThread()
		return fmt.Errorf("leaving %s: %w", n.Name, err)
	}
	return ferr
}
