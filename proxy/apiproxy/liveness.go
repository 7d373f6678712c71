package apiproxy

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// A recorder that dies mid-session (its pod killed, its node lost) sends
// nothing more: no reset, no error frame. The upload's client notices
// only when acknowledgements stop for 30 s, and a session that must be
// recorded would run unrecorded that long. So the proxy pings each
// recorder it uploads to over the tailnet (TSMP: answered by the
// recorder's node itself, whatever recorder software it runs) and ends
// its sessions once no ping has been answered for RecorderDeadAfter.
const (
	RecorderDeadAfter = 3 * time.Second
	recorderPingEvery = 500 * time.Millisecond
	// recorderPingWait bounds each ping: a ping or its answer lost (it is
	// one datagram each way) is followed by another, not waited on until
	// the recorder counts as dead (a healthy recorder's sessions ended so,
	// once, on a busy machine).
	recorderPingWait = time.Second
)

// recorderWatch pings the recorders sessions upload to, one pinger per
// recorder however many sessions it takes.
type recorderWatch struct {
	// ping returns once addr answers, or with why not.
	ping      func(ctx context.Context, addr netip.Addr) error
	every     time.Duration
	wait      time.Duration // each ping's (0: until dead)
	deadAfter time.Duration

	mu      sync.Mutex
	pingers map[netip.Addr]*pinger
}

type pinger struct {
	sessions int
	dead     chan struct{}
	stop     context.CancelFunc
}

// watch returns a channel closed once addr has not answered for
// deadAfter, and release, which a session calls when it ends.
func (rw *recorderWatch) watch(addr netip.Addr) (dead <-chan struct{}, release func()) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	p := rw.pingers[addr]
	if p == nil {
		ctx, stop := context.WithCancel(context.Background())
		p = &pinger{dead: make(chan struct{}), stop: stop}
		if rw.pingers == nil {
			rw.pingers = map[netip.Addr]*pinger{}
		}
		rw.pingers[addr] = p
		go rw.run(ctx, addr, p)
	}
	p.sessions++
	var once sync.Once
	return p.dead, func() {
		once.Do(func() {
			rw.mu.Lock()
			defer rw.mu.Unlock()
			if p.sessions--; p.sessions == 0 {
				p.stop()
				if rw.pingers[addr] == p {
					delete(rw.pingers, addr)
				}
			}
		})
	}
}

// run pings addr every rw.every, each ping bounded by rw.wait and by the
// time left before addr counts as dead, until no session watches it or
// it is dead.
// A dead pinger leaves the map at once: a session starting later watches
// afresh (it connected, so the recorder is back).
func (rw *recorderWatch) run(ctx context.Context, addr netip.Addr, p *pinger) {
	answered := time.Now()
	tick := time.NewTicker(rw.every)
	defer tick.Stop()
	for {
		left := rw.deadAfter - time.Since(answered)
		if left <= 0 {
			rw.mu.Lock()
			if rw.pingers[addr] == p {
				delete(rw.pingers, addr)
			}
			rw.mu.Unlock()
			close(p.dead)
			return
		}
		if rw.wait > 0 {
			left = min(left, rw.wait)
		}
		pctx, cancel := context.WithTimeout(ctx, left)
		err := rw.ping(pctx, addr)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			answered = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
