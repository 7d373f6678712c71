package tsnode

import (
	"slices"
	"testing"
	"time"

	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/key"
)

func TestPeerPaths(t *testing.T) {
	now := time.Now()
	st := &ipnstate.Status{Peer: map[key.NodePublic]*ipnstate.PeerStatus{}}
	for _, ps := range []*ipnstate.PeerStatus{
		{DNSName: "db.tail.ts.net.", Active: true, CurAddr: "198.18.0.7:41641", Relay: "fra"},
		{DNSName: "web.tail.ts.net.", Active: true, Relay: "fra"},
		{DNSName: "cache.tail.ts.net.", LastWrite: now.Add(-time.Minute), PeerRelay: "198.18.0.9:7777:vni:3", Relay: "fra"},
		{DNSName: "idle.tail.ts.net.", LastWrite: now.Add(-time.Hour), CurAddr: "198.18.0.8:41641"},
		{DNSName: "new.tail.ts.net.", Active: true}, // no path yet
	} {
		st.Peer[key.NewNode().Public()] = ps
	}
	want := []PeerPath{
		{Peer: "cache.tail.ts.net", Path: PathPeerRelay, Via: "198.18.0.9:7777:vni:3"},
		{Peer: "db.tail.ts.net", Path: PathDirect, Via: "198.18.0.7:41641"},
		{Peer: "web.tail.ts.net", Path: PathDERP, Via: "fra"},
	}
	if got := peerPaths(st, now); !slices.Equal(got, want) {
		t.Errorf("paths %+v, want %+v", got, want)
	}
}
