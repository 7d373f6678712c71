package failover

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// memStore is a Secret's record with the API server's optimistic
// concurrency: a write at a stale version is refused. down makes it
// unreachable, as a partitioned replica's API server is.
type memStore struct {
	mu      sync.Mutex
	rec     contract.ServingRecord
	version int
	freed   []string // holders that let go of the name
}

func (m *memStore) Get(context.Context) (contract.ServingRecord, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rec, strconv.Itoa(m.version), nil
}

func (m *memStore) Put(_ context.Context, rec contract.ServingRecord, version string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if version != strconv.Itoa(m.version) {
		return ErrConflict
	}
	if rec.Pod == "" && m.rec.Pod != "" {
		m.freed = append(m.freed, m.rec.Pod)
	}
	m.rec, m.version = rec, m.version+1
	return nil
}

func (m *memStore) writes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.version
}

func (m *memStore) holder() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rec.Pod
}

// view is one replica's store: shared record, its own reachability.
type view struct {
	*memStore
	down atomic.Bool
}

func (v *view) Get(ctx context.Context) (contract.ServingRecord, string, error) {
	if v.down.Load() {
		return contract.ServingRecord{}, "", errors.New("API server unreachable")
	}
	return v.memStore.Get(ctx)
}

func (v *view) Put(ctx context.Context, rec contract.ServingRecord, version string) error {
	if v.down.Load() {
		return errors.New("API server unreachable")
	}
	return v.memStore.Put(ctx, rec, version)
}

var fast = Timings{LeaseDuration: 400 * time.Millisecond, RenewDeadline: 250 * time.Millisecond, Retry: 50 * time.Millisecond}

// replica runs one replica; serving counts how many serve at once.
type replica struct {
	r      *Replica
	view   *view
	cancel context.CancelFunc
	done   chan error
	// woke: serve's context asked the node to meet its peers; started:
	// serve has looked (Serving is true a moment before).
	woke, started atomic.Bool
}

func start(t *testing.T, st *memStore, name string, serving *atomic.Int32, maxServing *atomic.Int32) *replica {
	v := &view{memStore: st}
	r := &Replica{Self: name, Store: v, Timings: fast, Logf: t.Logf}
	ctx, cancel := context.WithCancel(context.Background())
	rp := &replica{r: r, view: v, cancel: cancel, done: make(chan error, 1)}
	go func() {
		rp.done <- r.Run(ctx, func(ctx context.Context) error {
			rp.woke.Store(tsnode.WakesPeers(ctx))
			rp.started.Store(true)
			n := serving.Add(1)
			for {
				m := maxServing.Load()
				if n <= m || maxServing.CompareAndSwap(m, n) {
					break
				}
			}
			<-ctx.Done()
			serving.Add(-1)
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-rp.done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop", name)
		}
	})
	return rp
}

// servingAndStandby starts p-0, serving, then p-1, standing by.
func servingAndStandby(t *testing.T, st *memStore, serving, most *atomic.Int32) (*replica, *replica) {
	t.Helper()
	a := start(t, st, "p-0", serving, most)
	waitUntil(t, "p-0 serving", func() bool { return a.r.Serving() })
	b := start(t, st, "p-1", serving, most)
	waitUntil(t, "p-1 standing by", func() bool { return b.r.Standby() == nil })
	return a, b
}

// result is what a replica's Run returned.
func result(t *testing.T, rp *replica) error {
	t.Helper()
	select {
	case err := <-rp.done:
		rp.done <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the replica kept running")
		return nil
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
	return 0
}

// One replica serves; the others stand by ready.
func TestOneServes(t *testing.T) {
	st := &memStore{}
	var serving, most atomic.Int32
	rs := []*replica{start(t, st, "p-0", &serving, &most), start(t, st, "p-1", &serving, &most), start(t, st, "p-2", &serving, &most)}
	waitUntil(t, "a replica serving", func() bool { return serving.Load() == 1 })
	waitUntil(t, "the standbys ready", func() bool {
		n := 0
		for _, r := range rs {
			if !r.r.Serving() && r.r.Standby() == nil {
				n++
			}
		}
		return n == 2
	})
	// Many renewals (three leases' worth) keep the standbys out.
	w := st.writes()
	waitUntil(t, "renewals", func() bool { return st.writes() >= w+int(3*fast.LeaseDuration/fast.Retry) })
	if most.Load() != 1 {
		t.Errorf("%d replicas served at once", most.Load())
	}
}

// A replica that stops (its pod deleted) lets go of the name, so a standby
// serves at once rather than after the lease.
func TestStopHandsOver(t *testing.T) {
	st := &memStore{}
	var serving, most atomic.Int32
	a, b := servingAndStandby(t, st, &serving, &most)
	a.cancel()
	if err := result(t, a); !errors.Is(err, context.Canceled) {
		t.Errorf("stopped replica returned %v", err)
	}
	waitUntil(t, "p-1 serving", func() bool { return b.r.Serving() && b.started.Load() })
	if b.woke.Load() {
		t.Error("a replica handed the name meets its peers: they come by themselves, sooner")
	}
	st.mu.Lock()
	if len(st.freed) != 1 || st.freed[0] != "p-0" {
		t.Errorf("let go of by %v, want p-0: a stopping replica must free the name, not make its standby wait out the lease", st.freed)
	}
	st.mu.Unlock()
	if most.Load() != 1 {
		t.Errorf("%d replicas served at once", most.Load())
	}
}

// A replica that goes silent (its node dies: no release, no renewals) is
// replaced after the lease; a partitioned one stops serving before a
// standby may start, so the name is never served twice.
func TestSilentReplicaIsReplaced(t *testing.T) {
	st := &memStore{}
	var serving, most atomic.Int32
	a, b := servingAndStandby(t, st, &serving, &most)
	a.view.down.Store(true) // p-0 cannot reach the API server
	if err := result(t, a); !errors.Is(err, ErrLost) {
		t.Errorf("partitioned replica returned %v, want ErrLost", err)
	}
	waitUntil(t, "p-1 serving", func() bool { return b.r.Serving() && st.holder() == "p-1" && b.started.Load() })
	if !b.woke.Load() {
		t.Error("a replica that took the name from a silent one does not meet its peers")
	}
	if most.Load() != 1 {
		t.Errorf("%d replicas served at once", most.Load())
	}
}

// A replica that finds another holding the name stops serving.
func TestTakenNameStopsServing(t *testing.T) {
	st := &memStore{}
	var serving, most atomic.Int32
	a := start(t, st, "p-0", &serving, &most)
	waitUntil(t, "p-0 serving", func() bool { return a.r.Serving() })
	// Someone (an admin, a replica with a stale view) writes another holder.
	_, v, _ := st.Get(context.Background())
	if err := st.Put(context.Background(), contract.ServingRecord{Pod: "p-9", Renewed: time.Now()}, v); err != nil {
		t.Fatal(err)
	}
	if err := result(t, a); !errors.Is(err, ErrLost) {
		t.Errorf("returned %v, want ErrLost", err)
	}
}

func TestBadTimingsRefused(t *testing.T) {
	r := &Replica{Self: "p-0", Store: &memStore{}, Timings: Timings{LeaseDuration: time.Second, RenewDeadline: time.Second, Retry: time.Second}, Logf: t.Logf}
	if err := r.Run(context.Background(), func(context.Context) error { return nil }); err == nil {
		t.Error("equal timings accepted")
	}
}
