package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// recordFile notes, while a node runs, what Close needs to undo it, so the
// next Start can undo a node whose test process was killed (a CI timeout,
// a machine restart) instead of refusing to run.
const recordFile = "/run/tsinject-e2e-node.json"

type record struct {
	Pid    int
	Dir    string
	Before HostState
}

func (c *Cluster) writeRecord() error {
	b, err := json.Marshal(record{Pid: os.Getpid(), Dir: c.Dir, Before: c.before})
	if err != nil {
		return err
	}
	return os.WriteFile(recordFile, b, 0o600)
}

// Reclaim undoes a node left behind by a killed process, if there is one.
// It refuses while that process lives, and when nothing says what the
// leftovers are. Start calls it; call it first to read the host's state
// as it was before that node.
func Reclaim(log io.Writer) error {
	if _, err := net.InterfaceByName(Bridge); err != nil {
		return nil // no node here
	}
	b, err := os.ReadFile(recordFile)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("interface %s exists but no node recorded it: remove what another tool left (ip link del %s)", Bridge, Bridge)
	}
	if err != nil {
		return err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", recordFile, err)
	}
	if alive(r.Pid) {
		return fmt.Errorf("another node is running (process %d, files in %s)", r.Pid, r.Dir)
	}
	if !strings.HasPrefix(r.Dir, "/var/lib/tsinject-e2e-") {
		return fmt.Errorf("%s names %q, not a node directory", recordFile, r.Dir)
	}
	fmt.Fprintf(log, "node: undoing a node whose process %d died before it could (%s)\n", r.Pid, r.Dir)
	old := &Cluster{Dir: r.Dir, log: log, before: r.Before, sysctlSet: r.Before.Sysctls}
	for _, s := range nodeSpecs {
		old.Nodes = append(old.Nodes, old.newNode(s))
	}
	return old.Close()
}

// alive says whether pid is a running test binary (pids are reused).
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return err == nil && strings.Contains(string(b), ".test")
}
