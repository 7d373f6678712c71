package apiproxy

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// A recorder that answers is never dead; one that stops (pings hang, or
// fail at once) is dead within deadAfter and a ping's interval; sessions
// share one pinger, which stops with the last of them.
func TestRecorderWatch(t *testing.T) {
	const every, deadAfter = 10 * time.Millisecond, 400 * time.Millisecond
	addr := netip.MustParseAddr("100.64.0.9")
	for _, stops := range []struct {
		name string
		ping func(ctx context.Context) error
	}{
		{"pings hang", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		{"pings fail", func(context.Context) error { return errors.New("no route") }},
	} {
		t.Run(stops.name, func(t *testing.T) {
			var up atomic.Bool
			var pings atomic.Int32
			up.Store(true)
			rw := &recorderWatch{every: every, wait: deadAfter / 4, deadAfter: deadAfter, ping: func(ctx context.Context, a netip.Addr) error {
				pings.Add(1)
				if a != addr {
					t.Errorf("pinged %v, want %v", a, addr)
				}
				if up.Load() {
					return nil
				}
				return stops.ping(ctx)
			}}
			dead1, release1 := rw.watch(addr)
			dead2, release2 := rw.watch(addr)
			if len(rw.pingers) != 1 {
				t.Fatalf("%d pingers for one recorder, want 1", len(rw.pingers))
			}
			select {
			case <-dead1:
				t.Fatal("an answering recorder counted dead")
			case <-time.After(3 * deadAfter):
			}
			release1()
			release1() // twice is once
			up.Store(false)
			stopped := time.Now()
			select {
			case <-dead2:
				if d := time.Since(stopped); d > 2*deadAfter+time.Second { // loose: a busy machine
					t.Errorf("dead %v after the recorder stopped answering, want about %v", d, deadAfter)
				}
			case <-time.After(10 * deadAfter):
				t.Fatal("a recorder that stopped answering never counted dead")
			}
			release2()
			// A session after the death watches afresh.
			dead3, release3 := rw.watch(addr)
			up.Store(true)
			select {
			case <-dead3:
				t.Fatal("a session after the recorder came back saw it dead")
			case <-time.After(3 * deadAfter):
			}
			release3()
			rw.mu.Lock()
			n := len(rw.pingers)
			rw.mu.Unlock()
			if n != 0 {
				t.Errorf("%d pingers left with no session", n)
			}
			before := pings.Load()
			time.Sleep(5 * every)
			if after := pings.Load(); after > before+1 {
				t.Errorf("pinging went on with no session: %d pings after release", after-before)
			}
		})
	}
}

// A lost ping is followed by another: a recorder whose every other ping
// goes unanswered is alive.
func TestRecorderWatchLostPings(t *testing.T) {
	const every, deadAfter = 10 * time.Millisecond, 400 * time.Millisecond
	var n atomic.Int32
	rw := &recorderWatch{every: every, wait: deadAfter / 4, deadAfter: deadAfter, ping: func(ctx context.Context, _ netip.Addr) error {
		if n.Add(1)%2 == 1 {
			<-ctx.Done() // lost: never answered
			return ctx.Err()
		}
		return nil
	}}
	dead, release := rw.watch(netip.MustParseAddr("100.64.0.9"))
	defer release()
	select {
	case <-dead:
		t.Fatalf("a recorder answering every other ping counted dead after %d pings", n.Load())
	case <-time.After(5 * deadAfter):
	}
}
