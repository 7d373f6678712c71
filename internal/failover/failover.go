// Package failover lets the replicas of a proxy set share one tailnet
// identity and so one name: one replica serves it, the others stand by,
// and when the serving one stops renewing its hold (its pod deleted, its
// container killed, its node gone) a standby takes the name over, starting
// from the state the serving one left in the shared Secret.
//
// The hold is a record on that Secret (contract.AnnotationServing),
// written only with the resourceVersion it was read at, so of two
// replicas writing at once one wins. A standby takes the name when the
// record is empty (the serving replica let go of it) or has not changed
// for LeaseDuration by the standby's own clock; the serving replica stops
// serving when it could not renew for RenewDeadline, which is shorter, so
// two replicas never serve one name at once while their clocks run at
// the same rate. Nothing but the Secret its Role already names is needed:
// no Lease, no new rights.
package failover

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Store holds the serving record.
type Store interface {
	// Get reads the record and the version it was read at.
	Get(ctx context.Context) (contract.ServingRecord, string, error)
	// Put writes rec if the store is still at version, else ErrConflict.
	Put(ctx context.Context, rec contract.ServingRecord, version string) error
}

// ErrConflict is Put's answer when the record changed since it was read.
var ErrConflict = errors.New("the serving record changed since it was read")

// ErrLost ends serving: another replica holds the name, or the hold could
// not be renewed in time.
var ErrLost = errors.New("lost the name")

// Timings of a replica. LeaseDuration > RenewDeadline > Retry.
type Timings struct {
	// LeaseDuration: a standby takes the name over when the record has
	// not changed for this long.
	LeaseDuration time.Duration
	// RenewDeadline: the serving replica stops when it could not renew
	// for this long.
	RenewDeadline time.Duration
	// Retry is how often a standby reads and the serving replica renews.
	Retry time.Duration
}

// DefaultTimings take a dead replica's name over within about 5 s and
// cost each replica one read (and the serving one a write) per second.
var DefaultTimings = Timings{LeaseDuration: 5 * time.Second, RenewDeadline: 3 * time.Second, Retry: time.Second}

// Replica is one replica of a one-name set.
type Replica struct {
	Self  string // its pod's name
	Store Store
	Timings
	Logf logger.Logf

	serving  atomic.Bool
	lastRead atomic.Int64 // unix nanoseconds of the last successful read
	// tookOver: the last acquire took the name from a silent holder (its
	// node lost, most likely), not one that let go.
	tookOver bool
}

// Serving says whether this replica holds the name.
func (r *Replica) Serving() bool { return r.serving.Load() }

// Standby says whether this replica, not serving, could take the name
// over: it read the record recently. (A serving replica's readiness is
// its node's.)
func (r *Replica) Standby() error {
	at := r.lastRead.Load()
	if at == 0 {
		return errors.New("standing by: the serving record has not been read yet")
	}
	if age := time.Since(time.Unix(0, at)); age > r.LeaseDuration {
		return fmt.Errorf("standing by: the serving record was last read %s ago", age.Round(time.Second))
	}
	return nil
}

// Run waits until this replica holds the name, then runs serve with a
// context that ends when the hold is lost or ctx ends, and lets go of the
// name when serve has returned, so a standby takes over at once. It
// returns serve's error, ErrLost (wrapped) if the hold was lost, or ctx's.
func (r *Replica) Run(ctx context.Context, serve func(context.Context) error) error {
	if r.LeaseDuration <= r.RenewDeadline || r.RenewDeadline <= r.Retry || r.Retry <= 0 {
		return fmt.Errorf("failover timings %+v: want lease duration > renew deadline > retry > 0", r.Timings)
	}
	if err := r.acquire(ctx); err != nil {
		return err
	}
	r.serving.Store(true)
	defer r.serving.Store(false)
	if r.tookOver {
		// Its clients still send to the lost holder: the new one meets
		// them (tsnode.WithWakePeers). After a handover they come by
		// themselves, sooner than when met.
		ctx = tsnode.WithWakePeers(ctx)
	}
	sctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	done := make(chan error, 1)
	go func() { done <- serve(sctx) }()
	gone := r.keep(sctx, stop)
	var err error
	select {
	case err = <-done:
		stop(nil)
		<-gone // no renewal may follow the release
	case <-gone:
		err = <-done // serve returns once sctx ends
	}
	if cause := context.Cause(sctx); errors.Is(cause, ErrLost) {
		return cause // not ours to let go of
	}
	r.release()
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// acquire waits for the name to be free, or its holder silent for
// LeaseDuration, and takes it.
func (r *Replica) acquire(ctx context.Context) error {
	var seen string
	var seenAt time.Time
	logged := ""
	for {
		rec, version, err := r.Store.Get(ctx)
		now := time.Now()
		if err == nil {
			r.lastRead.Store(now.UnixNano())
			if key := rec.Pod + "@" + rec.Renewed.String(); key != seen {
				seen, seenAt = key, now
			}
			free := rec.Pod == "" || rec.Pod == r.Self || now.Sub(seenAt) >= r.LeaseDuration
			if free {
				err = r.Store.Put(ctx, contract.ServingRecord{Pod: r.Self, Renewed: now}, version)
				if err == nil {
					r.tookOver = rec.Pod != "" && rec.Pod != r.Self
					switch rec.Pod {
					case "", r.Self:
						r.Logf("failover: serving the name")
					default:
						r.Logf("failover: serving the name, taken over from %s (silent for %s)", rec.Pod, now.Sub(seenAt).Round(100*time.Millisecond))
					}
					return nil
				}
			} else if msg := "failover: standing by; " + rec.Pod + " serves the name"; msg != logged {
				r.Logf("%s", msg)
				logged = msg
			}
		}
		if err != nil && !errors.Is(err, ErrConflict) && !errors.Is(err, context.Canceled) {
			if msg := "failover: " + err.Error(); msg != logged {
				r.Logf("%s", msg)
				logged = msg
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.Retry):
		}
	}
}

// keep renews the hold every Retry until ctx ends; when another replica
// holds the name, or no renewal succeeded for RenewDeadline, it stops
// serving with ErrLost. The returned channel closes when it gives up.
func (r *Replica) keep(ctx context.Context, stop context.CancelCauseFunc) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		renewed := time.Now()
		t := time.NewTicker(r.Retry)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rctx, cancel := context.WithTimeout(ctx, r.RenewDeadline)
			holder, err := r.renew(rctx)
			cancel()
			switch {
			case err == nil:
				renewed = time.Now()
			case holder != "":
				stop(fmt.Errorf("%w: %s holds it", ErrLost, holder))
				return
			default:
				r.Logf("failover: renewing: %v", err)
			}
			if since := time.Since(renewed); since > r.RenewDeadline {
				stop(fmt.Errorf("%w: no renewal for %s", ErrLost, since.Round(100*time.Millisecond)))
				return
			}
		}
	}()
	return gone
}

// renew writes a fresh record, once more if a write of another kind (the
// node's state, its device report) came between the read and the write.
// holder is set when another replica holds the name.
func (r *Replica) renew(ctx context.Context) (holder string, err error) {
	for range 2 {
		rec, version, err := r.Store.Get(ctx)
		if err != nil {
			return "", err
		}
		r.lastRead.Store(time.Now().UnixNano())
		if rec.Pod != r.Self {
			return rec.Pod, errors.New("another replica holds the name")
		}
		if err = r.Store.Put(ctx, contract.ServingRecord{Pod: r.Self, Renewed: time.Now()}, version); !errors.Is(err, ErrConflict) {
			return "", err
		}
	}
	return "", ErrConflict
}

// release empties the record if this replica still holds it.
func (r *Replica) release() {
	ctx, cancel := context.WithTimeout(context.Background(), r.RenewDeadline)
	defer cancel()
	for range 3 {
		rec, version, err := r.Store.Get(ctx)
		if err != nil || rec.Pod != r.Self {
			return
		}
		if err := r.Store.Put(ctx, contract.ServingRecord{Renewed: time.Now()}, version); err == nil {
			r.Logf("failover: let go of the name")
			return
		}
	}
}
