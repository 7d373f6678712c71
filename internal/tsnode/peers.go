package tsnode

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
)

// How a node reaches a peer.
const (
	PathDirect    = "direct"     // UDP between the two nodes, through NAT if need be
	PathDERP      = "derp"       // relayed by a DERP server
	PathPeerRelay = "peer-relay" // relayed by another tailnet node
)

// PeerPath is how this node reaches one peer it talks to.
type PeerPath struct {
	Peer string // the peer's MagicDNS name
	Path string // PathDirect, PathDERP or PathPeerRelay
	Via  string // the peer's endpoint, peer relay or DERP region
}

// activeWithin: peers with traffic this recent count as talked to.
const activeWithin = 2 * time.Minute

// PathCounts counts the peers talked to recently by path, from a status
// the caller already has.
func PathCounts(st *ipnstate.Status) map[string]int {
	out := map[string]int{}
	for _, p := range peerPaths(st, time.Now()) {
		out[p.Path]++
	}
	return out
}

func peerPaths(st *ipnstate.Status, now time.Time) []PeerPath {
	var out []PeerPath
	for _, ps := range st.Peer {
		if !ps.Active && now.Sub(ps.LastWrite) > activeWithin {
			continue
		}
		p := PeerPath{Peer: strings.TrimSuffix(ps.DNSName, ".")}
		if p.Peer == "" {
			p.Peer = ps.HostName
		}
		switch {
		case ps.CurAddr != "":
			p.Path, p.Via = PathDirect, ps.CurAddr
		case ps.PeerRelay != "":
			p.Path, p.Via = PathPeerRelay, ps.PeerRelay
		case ps.Relay != "":
			p.Path, p.Via = PathDERP, ps.Relay
		default:
			continue // no path yet
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b PeerPath) int { return strings.Compare(a.Peer, b.Peer) })
	return out
}

// maxPinged bounds the peers whose round trip each scrape measures.
const maxPinged = 16

// PeerCollector exports, for each peer the node talks to, whether the
// path is direct or relayed (tsinject_peer_path) and its round trip
// (tsinject_peer_rtt_seconds, from a disco ping, which takes the path the
// traffic takes). Pings are made at most every pingEvery.
type PeerCollector struct {
	node *Node

	mu       sync.Mutex
	pingedAt time.Time
	rtt      map[string]float64 // peer -> seconds
}

const pingEvery = 30 * time.Second

var (
	peerPathDesc = prometheus.NewDesc("tsinject_peer_path",
		"1 for each tailnet peer talked to in the last two minutes, labelled with how it is reached: direct (UDP between the nodes), derp (relayed by a DERP server) or peer-relay.",
		[]string{"peer", "path"}, nil)
	peerRTTDesc = prometheus.NewDesc("tsinject_peer_rtt_seconds",
		"Round trip to each tailnet peer talked to, by its current path, from the latest disco ping (at most every 30 s).",
		[]string{"peer", "path"}, nil)
)

// NewPeerCollector collects n's peer paths.
func NewPeerCollector(n *Node) *PeerCollector { return &PeerCollector{node: n} }

func (c *PeerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerPathDesc
	ch <- peerRTTDesc
}

func (c *PeerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := c.node.LC.Status(ctx)
	if err != nil {
		return
	}
	paths := peerPaths(st, time.Now())
	rtt := c.pings(ctx, st, paths)
	for _, p := range paths {
		ch <- prometheus.MustNewConstMetric(peerPathDesc, prometheus.GaugeValue, 1, p.Peer, p.Path)
		if v, ok := rtt[p.Peer]; ok {
			ch <- prometheus.MustNewConstMetric(peerRTTDesc, prometheus.GaugeValue, v, p.Peer, p.Path)
		}
	}
}

// pings refreshes the round trips when they are older than pingEvery.
func (c *PeerCollector) pings(ctx context.Context, st *ipnstate.Status, paths []PeerPath) map[string]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.pingedAt) < pingEvery && c.rtt != nil {
		return c.rtt
	}
	ips := map[string]*ipnstate.PeerStatus{}
	for _, ps := range st.Peer {
		ips[strings.TrimSuffix(ps.DNSName, ".")] = ps
	}
	rtt := map[string]float64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, p := range paths {
		ps := ips[p.Peer]
		if i >= maxPinged || ps == nil || len(ps.TailscaleIPs) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.node.LC.Ping(ctx, ps.TailscaleIPs[0], tailcfg.PingDisco)
			if err != nil || res.Err != "" {
				return
			}
			mu.Lock()
			rtt[p.Peer] = res.LatencySeconds
			mu.Unlock()
		}()
	}
	wg.Wait()
	c.rtt, c.pingedAt = rtt, time.Now()
	return rtt
}
