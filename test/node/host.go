package node

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// sysctls the node changes, restored on Close.
var sysctls = []string{
	"net/ipv4/ip_forward",
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
	"net/ipv4/conf/all/route_localnet",
	"net/netfilter/nf_conntrack_max",
}

// HostState is what a node may change on the host and must put back:
// interfaces, addresses, nftables tables, ipsets (kube-router's), mounts,
// network namespaces and sysctls.
type HostState struct {
	Links, Addrs, Tables, IPSets, Mounts, Netns []string
	Sysctls                                     map[string]string
}

// ReadHostState reads the host's state now.
func ReadHostState() (HostState, error) {
	var s HostState
	var err error
	if s.Links, err = lines("ip", "-o", "link", "show"); err != nil {
		return s, err
	}
	for i, l := range s.Links { // "3: name@peer: <...> ..." -> name
		f := strings.Fields(l)
		if len(f) > 1 {
			s.Links[i] = strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
		}
	}
	if s.Addrs, err = lines("ip", "-o", "addr", "show"); err != nil {
		return s, err
	}
	for i, l := range s.Addrs { // "1: lo    inet 127.0.0.1/8 scope host lo ..." -> "lo 127.0.0.1/8"
		if f := strings.Fields(l); len(f) > 3 {
			s.Addrs[i] = f[1] + " " + f[3]
		}
	}
	if s.Tables, err = lines("nft", "list", "tables"); err != nil {
		return s, err
	}
	if s.IPSets, err = ipsets(); err != nil {
		return s, err
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return s, err
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			s.Mounts = append(s.Mounts, f[4])
		}
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			s.Netns = append(s.Netns, e.Name())
		}
	}
	s.Sysctls = map[string]string{}
	for _, k := range sysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			s.Sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	for _, l := range [][]string{s.Links, s.Addrs, s.Tables, s.IPSets, s.Mounts, s.Netns} {
		slices.Sort(l)
	}
	return s, nil
}

// Diff says what differs between before and after, or "" if nothing.
func (before HostState) Diff(after HostState) string {
	var b strings.Builder
	diff := func(what string, x, y []string) {
		for _, v := range y {
			if !slices.Contains(x, v) {
				fmt.Fprintf(&b, "%s left behind: %s\n", what, v)
			}
		}
		for _, v := range x {
			if !slices.Contains(y, v) {
				fmt.Fprintf(&b, "%s gone: %s\n", what, v)
			}
		}
	}
	diff("interface", before.Links, after.Links)
	diff("address", before.Addrs, after.Addrs)
	diff("nftables table", before.Tables, after.Tables)
	diff("ipset", before.IPSets, after.IPSets)
	diff("mount", before.Mounts, after.Mounts)
	diff("network namespace", before.Netns, after.Netns)
	for k, v := range before.Sysctls {
		if after.Sysctls[k] != v {
			fmt.Fprintf(&b, "sysctl %s: was %s, now %s\n", k, v, after.Sysctls[k])
		}
	}
	return b.String()
}

// ipsets are the host's ipsets; none where the ipset tool is missing
// (Start then says to install it).
func ipsets() ([]string, error) {
	if _, err := exec.LookPath("ipset"); err != nil {
		return nil, nil
	}
	return lines("ipset", "list", "-n")
}

func lines(name string, args ...string) ([]string, error) {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	var ls []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			ls = append(ls, t)
		}
	}
	return ls, nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func setSysctl(k, v string) error {
	return os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644)
}
