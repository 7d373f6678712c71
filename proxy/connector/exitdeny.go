package connector

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tsinject/tsinject/internal/clusteraddrs"
)

// exitDenied reports whether an exit node must refuse dst: it is in one of
// the never ranges or in deny (the cluster's own addresses: the node's,
// the pod's, the API server's, the Service and pod ranges), and in no
// route the Connector advertises explicitly.
func exitDenied(dst netip.Addr, routes, deny []netip.Prefix) bool {
	in := func(p netip.Prefix) bool { return p.Contains(dst) }
	if slices.ContainsFunc(routes, in) {
		return false
	}
	return slices.ContainsFunc(clusteraddrs.Never, in) || slices.ContainsFunc(deny, in)
}

// denyFile keeps an exit node's deny list from a file the manager updates
// while the node runs (a mounted Secret the kubelet refreshes): the node
// addresses of a cluster change as it scales, and a restart for each would
// drop every flow through the exit node.
type denyFile struct {
	path string
	logf func(format string, args ...any)
	list atomic.Pointer[[]netip.Prefix]
	last string
}

// load reads the file; on an error the previous list stays.
func (d *denyFile) load() {
	b, err := os.ReadFile(d.path)
	if err != nil {
		if d.last != "\x00missing" {
			d.logf("exit node: deny list %s: %v (keeping the previous one)", d.path, err)
			d.last = "\x00missing"
		}
		return
	}
	if string(b) == d.last {
		return
	}
	list, err := clusteraddrs.Parse(string(b))
	if err != nil {
		d.logf("exit node: deny list %s: %v (keeping the previous one)", d.path, err)
		return
	}
	d.last = string(b)
	d.list.Store(&list)
	d.logf("exit node: refusing %d more ranges from %s", len(list), d.path)
}

// run re-reads the file every interval until ctx ends.
func (d *denyFile) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.load()
		}
	}
}

// current is the list as last read (nil before the first read).
func (d *denyFile) current() []netip.Prefix {
	if d == nil {
		return nil
	}
	if p := d.list.Load(); p != nil {
		return *p
	}
	return nil
}
