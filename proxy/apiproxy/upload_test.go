package apiproxy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// slowUpload takes writes only when let.
type slowUpload struct {
	mu     sync.Mutex
	got    bytes.Buffer
	let    chan struct{}
	err    error
	closed chan struct{}
}

func (s *slowUpload) Write(p []byte) (int, error) {
	select {
	case <-s.let:
	case <-s.closed:
		return 0, io.ErrClosedPipe
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	return s.got.Write(p)
}

func (s *slowUpload) Close() error { close(s.closed); return nil }

// A session's output does not wait on the recorder until max bytes are
// waiting; what is written arrives whole and in order; the upload's error
// is the session's; closing waits for the recorder, within bounds.
func TestAsyncUpload(t *testing.T) {
	t.Run("writes wait only past max", func(t *testing.T) {
		s := &slowUpload{let: make(chan struct{}), closed: make(chan struct{})}
		u := newAsyncUpload(s, 10, t.Logf)
		for range 10 {
			u.Write([]byte("x")) // the recorder takes nothing: these must not wait
		}
		wrote := make(chan struct{})
		go func() { u.Write([]byte("y")); close(wrote) }()
		select {
		case <-wrote:
			// The run goroutine may hold the first byte already: one
			// more fits then. Let nothing more through and check again.
			done := make(chan struct{})
			go func() { u.Write([]byte("zzzzzzzzzz")); close(done) }()
			select {
			case <-done:
				t.Fatal("writes went on with the recorder taking nothing and max bytes waiting")
			case <-time.After(100 * time.Millisecond):
			}
			close(s.let)
			<-done
		case <-time.After(100 * time.Millisecond):
			close(s.let)
			<-wrote
		}
		if err := u.Close(); err != nil {
			t.Fatal(err)
		}
		if got := s.got.String(); got != "xxxxxxxxxxy" && got != "xxxxxxxxxxyzzzzzzzzzz" {
			t.Errorf("the recorder got %q", got)
		}
	})
	t.Run("in order", func(t *testing.T) {
		s := &slowUpload{let: make(chan struct{}), closed: make(chan struct{})}
		close(s.let)
		u := newAsyncUpload(s, 64, t.Logf)
		var want bytes.Buffer
		for i := range 1000 {
			p := []byte{byte(i), byte(i >> 8)}
			want.Write(p)
			u.Write(p)
		}
		u.Close()
		if !bytes.Equal(s.got.Bytes(), want.Bytes()) {
			t.Errorf("the recorder got %d bytes out of order or short, want %d", s.got.Len(), want.Len())
		}
	})
	t.Run("the upload's error", func(t *testing.T) {
		s := &slowUpload{let: make(chan struct{}), closed: make(chan struct{}), err: errors.New("recorder gone")}
		close(s.let)
		u := newAsyncUpload(s, 64, t.Logf)
		u.Write([]byte("a"))
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := u.Write([]byte("b")); err != nil {
				if err.Error() != "recorder gone" {
					t.Errorf("write after the upload failed: %v", err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("writes went on after the upload failed")
			}
			time.Sleep(time.Millisecond)
		}
		if err := u.Close(); err == nil {
			t.Error("Close after the upload failed: no error")
		}
	})
	t.Run("aborted while a write waits for room", func(t *testing.T) {
		s := &slowUpload{let: make(chan struct{}), closed: make(chan struct{})}
		u := newAsyncUpload(s, 4, t.Logf)
		// Write until a write waits for room (the recorder takes nothing).
		var wrote atomic.Int32
		waiting := make(chan error, 1)
		go func() {
			for {
				if _, err := u.Write([]byte("x")); err != nil {
					waiting <- err
					return
				}
				wrote.Add(1)
			}
		}()
		for deadline := time.Now().Add(10 * time.Second); wrote.Load() < 4; {
			if time.Now().After(deadline) {
				t.Fatal("writes did not fill the buffer")
			}
			time.Sleep(time.Millisecond)
		}
		u.Abort(errors.New("recorder dead"))
		select {
		case err := <-waiting:
			if err == nil || err.Error() != "recorder dead" {
				t.Errorf("the waiting write returned %v, want the abort's error", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a write waiting for room was not freed by Abort")
		}
		if err := u.Close(); err == nil {
			t.Error("Close after Abort: no error")
		}
	})
	t.Run("a recorder taking nothing", func(t *testing.T) {
		s := &slowUpload{let: make(chan struct{}), closed: make(chan struct{})}
		u := newAsyncUpload(s, 64, t.Logf)
		u.Write([]byte("stuck"))
		start := time.Now()
		u.Close()
		if d := time.Since(start); d > uploadDrain+5*time.Second {
			t.Errorf("Close took %v with the recorder taking nothing, want about %v", d, uploadDrain)
		}
	})
}

// An upload the recorder ends as if whole (its response over, no error)
// while the session goes on fails the recording, so that an enforced
// session ends rather than go on unrecorded; the same end after the
// session closed its upload is the recording's normal end.
func TestRecorderEndsUploadEarly(t *testing.T) {
	for _, tc := range []struct {
		name        string
		sessionDone bool
		says        string
	}{
		{"the session ended first", true, ""},
		{"the recorder ended it mid-session", false, "the recorder ended the upload before the session ended"},
	} {
		up := newAsyncUpload(&slowUpload{let: make(chan struct{}), closed: make(chan struct{})}, 1<<10, t.Logf)
		errc := make(chan error)
		s := &sessionWriter{ctx: t.Context(), upload: up, errc: errc}
		if tc.sessionDone {
			up.Close()
		}
		close(errc)
		err := s.recorderFailure()
		if (err == nil) != (tc.says == "") || (err != nil && err.Error() != tc.says) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.says)
		}
		up.Abort(errors.New("test over"))
	}
}

// A caller's command reaches the cast's header cut to a bound, saying so.
func TestHeaderCommand(t *testing.T) {
	if got := headerCommand([]string{"sh", "-c", "echo hi"}); got != "sh -c echo hi" {
		t.Errorf("a short command: %q", got)
	}
	got := headerCommand([]string{"sh", "-c", strings.Repeat("é", 60<<10)})
	if len(got) > maxHeaderCommand+64 || !strings.HasSuffix(got, "(cut: the command was 122886 bytes)") || !utf8.ValidString(got) {
		t.Errorf("a 120 KiB command: %d bytes, ends %q", len(got), got[len(got)-48:])
	}
}
