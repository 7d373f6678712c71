package apiproxy

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// uploadBuffer is how much of a session's recording may wait for the
// recorder: past it, the session waits too. Output shown is ahead of
// what the upload has taken by at most about twice this (the buffer and
// the piece being sent), besides what the connection to the recorder
// holds.
const uploadBuffer = 1 << 20

// uploadCoalesce is how long output waits to be sent to the recorder
// after it was shown: a keystroke's echo reaches kubectl first, without
// the upload's work beside it, and a burst of output goes in one write.
const uploadCoalesce = 2 * time.Millisecond

// uploadDrain bounds how long closing an upload waits for the recorder
// to take what is buffered.
const uploadDrain = 5 * time.Second

var errUploadClosed = errors.New("the recording's upload is closed")

// asyncUpload writes a recording to the recorder's upload off the
// session's path: tailscale.com's recorder client writes each piece of
// output to the upload before the output goes on to kubectl, so without
// it every keystroke's echo waited on the recorder's connection. Writes
// wait only when max bytes are already waiting; the first error the
// upload returns is every later write's.
type asyncUpload struct {
	w    io.WriteCloser
	max  int
	logf func(string, ...any)

	mu      sync.Mutex
	cond    *sync.Cond
	pending []byte
	since   time.Time // when pending was last empty
	spare   []byte
	closed  bool
	err     error
	done    chan struct{}
	// wClosed closes w once, whichever of Close and Abort comes first.
	wClosed sync.Once
}

func newAsyncUpload(w io.WriteCloser, max int, logf func(string, ...any)) *asyncUpload {
	u := &asyncUpload{w: w, max: max, logf: logf, done: make(chan struct{})}
	u.cond = sync.NewCond(&u.mu)
	go u.run()
	return u
}

func (u *asyncUpload) Write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for len(u.pending) > 0 && len(u.pending)+len(p) > u.max && u.err == nil && !u.closed {
		u.cond.Wait()
	}
	switch {
	case u.err != nil:
		return 0, u.err
	case u.closed:
		return 0, errUploadClosed
	}
	if len(u.pending) == 0 {
		u.since = time.Now()
	}
	u.pending = append(u.pending, p...)
	u.cond.Broadcast()
	return len(p), nil
}

// run sends what is pending, in order, until the upload is closed and
// drained or fails.
func (u *asyncUpload) run() {
	defer close(u.done)
	for {
		u.mu.Lock()
		for len(u.pending) == 0 && !u.closed && u.err == nil {
			u.cond.Wait()
		}
		if u.err != nil || len(u.pending) == 0 {
			u.mu.Unlock()
			return
		}
		if wait := uploadCoalesce - time.Since(u.since); wait > 0 && !u.closed {
			u.mu.Unlock()
			time.Sleep(wait)
			u.mu.Lock()
		}
		chunk := u.pending
		u.pending, u.spare = u.spare[:0], nil
		u.mu.Unlock()

		_, err := u.w.Write(chunk)

		u.mu.Lock()
		if err != nil {
			u.err = err
		}
		u.spare = chunk
		u.cond.Broadcast()
		u.mu.Unlock()
	}
}

// closing says whether the session has closed the upload (its end).
func (u *asyncUpload) closing() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.closed
}

// Close ends the upload once the recorder has taken what is pending, or
// after uploadDrain (a recorder that takes nothing more: the pending rest
// is lost with it).
func (u *asyncUpload) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		<-u.done
		return nil
	}
	u.closed = true
	u.cond.Broadcast()
	u.mu.Unlock()
	var err error
	select {
	case <-u.done:
		u.wClosed.Do(func() { err = u.w.Close() })
	case <-time.After(uploadDrain):
		// The recorder takes nothing more: end the upload as failed (not
		// as a whole recording), which ends the write that waits on it.
		u.mu.Lock()
		lost := len(u.pending)
		u.mu.Unlock()
		err = fmt.Errorf("the recorder took nothing for %v; the last %d bytes or more of the recording are lost", uploadDrain, lost)
		u.logf("recording: %v", err)
		u.closeWithError(err)
	}
	<-u.done
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err != nil {
		return u.err
	}
	return err
}

// Abort fails the upload at once: writes waiting for room return err, as
// every later one does, and the recorder sees the upload fail (not end).
// For a recorder that stopped answering: nothing it would take is left.
func (u *asyncUpload) Abort(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.cond.Broadcast()
	u.mu.Unlock()
	u.closeWithError(err)
}

func (u *asyncUpload) closeWithError(err error) {
	u.wClosed.Do(func() {
		if c, ok := u.w.(interface{ CloseWithError(error) error }); ok {
			_ = c.CloseWithError(err) // always nil for a pipe
			return
		}
		u.w.Close()
	})
}
