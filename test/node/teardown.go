package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/images"
)

// Close stops the cluster and puts the host back as Start found it. It
// returns what it could not undo.
func (c *Cluster) Close() error {
	var errs []error
	// The nodes first (their kubelets restart nothing once stopped); a
	// killed one is cleaned up the same way.
	for i := len(c.Nodes) - 1; i >= 0; i-- {
		if err := c.Nodes[i].close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Nodes[i].Name, err))
		}
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.stop(c.procs[i].name)
	}
	c.killByArg(c.Dir) // a killed run's components, when reclaiming
	if err := c.unmountAll(); err != nil {
		errs = append(errs, err)
	}
	if err := c.removeTables(); err != nil {
		errs = append(errs, err)
	}
	if err := c.removeIPSets(); err != nil {
		errs = append(errs, err)
	}
	if err := run("ip", "link", "del", Bridge); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		errs = append(errs, err)
	}
	for k, v := range c.sysctlSet {
		if v != "" {
			if err := setSysctl(k, v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		os.Remove(recordFile)
	}
	if c.Dir != "" && os.Getenv("TSINJECT_E2E_KEEP") == "" {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stop sends SIGTERM to the component, then SIGKILL after 10 s.
func (c *Cluster) stop(name string) {
	for _, p := range c.procs {
		if p.name != name {
			continue
		}
		select {
		case <-p.done:
			return
		default:
		}
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			killGroup(p)
		}
	}
}

// killGroup kills a component and whatever it started, and waits for it.
func killGroup(p *proc) {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// killCgroup kills every process in the pods' cgroups (a path under each
// hierarchy) and waits up to timeout for them to go.
func killCgroup(path string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		pids := cgroupPids(filepath.Join("/sys/fs/cgroup/pids", path))
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			if timeout > 0 {
				fmt.Fprintf(os.Stderr, "node: processes still running in %s after %s\n", path, timeout)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cgroupPids(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// killByArg kills processes whose command line contains arg.
func (c *Cluster) killByArg(arg string) {
	if arg == "" {
		return
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), arg) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// unmountAll unmounts, innermost first, every mount under the cluster's
// directory, and the network namespaces and containerd run directories
// that appeared while it ran.
func (c *Cluster) unmountAll() error {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mps []string
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		mp := f[4]
		if slices.Contains(c.before.Mounts, mp) {
			continue
		}
		if (c.Dir != "" && strings.HasPrefix(mp, c.Dir+"/")) || strings.HasPrefix(mp, "/run/netns/cni-") || strings.HasPrefix(mp, "/run/containerd/") {
			mps = append(mps, mp)
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	var errs []error
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "cni-") && !slices.Contains(c.before.Netns, e.Name()) {
				os.Remove(filepath.Join("/run/netns", e.Name()))
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the named cgroup tree from every v1 hierarchy.
func removeCgroups(name string) {
	hs, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hs {
		root := filepath.Join("/sys/fs/cgroup", h.Name(), name)
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	}
}

// removeTables deletes the nftables tables that appeared while the node
// ran (its own, kube-proxy's, and the kubelet's iptables-nft ones).
func (c *Cluster) removeTables() error {
	now, err := lines("nft", "list", "tables")
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range now {
		if slices.Contains(c.before.Tables, t) {
			continue
		}
		f := strings.Fields(t) // "table inet name"
		if len(f) == 3 {
			if err := run("nft", "delete", "table", f[1], f[2]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removeIPSets destroys the ipsets that appeared while the node ran
// (kube-router's), once no rule refers to them (removeTables).
func (c *Cluster) removeIPSets() error {
	now, err := ipsets()
	if err != nil {
		return err
	}
	var errs []error
	for _, set := range now {
		if !slices.Contains(c.before.IPSets, set) {
			if err := run("ipset", "destroy", set); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// buildPause builds the sandbox image and returns its tarball.
func buildPause(dir string) (string, error) {
	bin, err := gobuild.Binary("./test/node/pause")
	if err != nil {
		return "", err
	}
	img, err := images.Build(images.Spec{Name: "pause", User: "65535:65535", Files: []images.File{{Src: bin, Dst: "/pause", Mode: 0o755}}}, gobuild.Root())
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "pause.tar")
	return out, images.WriteTarball(out, PauseImage, img)
}
