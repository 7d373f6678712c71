// Package recorder is `tsinject-proxy recorder`: a session recorder on the
// tailnet that speaks tsrecorder's upload protocol, so that tailscale.com's
// own client (package sessionrecording, which API server proxies use for
// kubectl exec and attach) records to it. Each upload is one asciinema
// cast v2 file in a directory (a PersistentVolume in a cluster).
//
// The protocol, as the client speaks it: HEAD /v2/record over HTTP/2
// without TLS (h2c) says the recorder takes v2; POST /v2/record streams the
// cast while the recorder answers with JSON frames acknowledging the bytes
// it has (and at least every AckEvery, so that the client can tell a dead
// recorder from an idle session; it gives up after 30 s without one), and
// an error frame last if storing failed; POST /record (v1) is the same
// stream over HTTP/1.1 with 100-continue and no acknowledgements.
package recorder

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"tailscale.com/types/logger"
)

// Store stores uploaded recordings as files in Dir.
type Store struct {
	Dir string
	// AckEvery is how often an upload is acknowledged, data or not
	// (default 5 s; the client waits 30 s).
	AckEvery time.Duration
	// MaxBytes ends an upload that grows past it with an error (0: no
	// limit).
	MaxBytes int64
	// MinFree is the room the directory's volume must have for a new
	// upload to be taken (default DefaultMinFree; negative: none).
	MinFree int64
	// MaxActive refuses an upload past this many at once (0: no limit).
	MaxActive int64
	// Uploader says why the request's peer may not upload (nil: anyone
	// may).
	Uploader func(r *http.Request) error
	Logf     logger.Logf

	// Active counts uploads in progress.
	Active atomic.Int64
	// writing holds the names of the files uploads are writing (an idle
	// session's file is not touched for hours: retention must not take
	// it).
	writing sync.Map
}

// ackFrame is one frame of a v2 response (sessionrecording's
// v2ResponseFrame).
type ackFrame struct {
	Ack   int64  `json:"ack,omitempty"`
	Error string `json:"error,omitempty"`
}

// DefaultMinFree is the room a new recording needs on the volume.
const DefaultMinFree = 64 << 20

// ErrTooLarge ends an upload past MaxBytes.
var ErrTooLarge = errors.New("the recording is larger than the recorder accepts")

func (s *Store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.Uploader != nil {
		if err := s.Uploader(r); err != nil {
			s.Logf("recorder: refused an upload from %s: %v", r.RemoteAddr, err)
			http.Error(w, "the recorder refuses your upload: "+err.Error(), http.StatusForbidden)
			return
		}
	}
	switch {
	case r.URL.Path == "/v2/record" && r.Method == http.MethodHead:
		// The client asks this first. Saying no when nothing can be stored,
		// or no more taken, makes it try v1, which takes a refusal at once
		// (100-continue); a refused v2 upload would hold the session up
		// for 30 s.
		if err := s.writable(); err != nil {
			s.Logf("recorder: cannot store recordings: %v", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if s.MaxActive > 0 && s.Active.Load() >= s.MaxActive {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/v2/record" && r.Method == http.MethodPost:
		s.recordV2(w, r)
	case r.URL.Path == "/record" && r.Method == http.MethodPost:
		s.recordV1(w, r)
	default:
		http.NotFound(w, r)
	}
}

// create opens a new recording's file: the time it started and a random
// suffix, never an existing file.
func (s *Store) create() (*os.File, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	name := time.Now().UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(b[:]) + ".cast"
	return os.OpenFile(filepath.Join(s.Dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
}

// writable reports whether a recording could be stored now.
func (s *Store) writable() error {
	f, err := os.CreateTemp(s.Dir, ".probe-*")
	if err != nil {
		return err
	}
	f.Close()
	if err := os.Remove(f.Name()); err != nil {
		return err
	}
	// A volume about to fill takes no new session: one that started
	// would end when the volume is full (an enforced one with it), and
	// the recorder would take none after. Not ready, the proxies send
	// sessions to other recorders, or refuse those that must be recorded.
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.Dir, &st); err != nil {
		return err
	}
	floor := s.MinFree
	if floor == 0 {
		floor = DefaultMinFree
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < floor {
		return fmt.Errorf("%s has %d MiB free, under the %d MiB a new recording needs: remove recordings, set a retention, or give the volume more room", s.Dir, free>>20, floor>>20)
	}
	return nil
}

// receive copies body into f, counting into n, until EOF or MaxBytes;
// then makes the file durable.
func (s *Store) receive(f *os.File, body io.Reader, n *atomic.Int64) error {
	if s.MaxBytes > 0 {
		body = io.LimitReader(body, s.MaxBytes+1)
	}
	buf := make([]byte, 32<<10)
	for {
		m, rerr := body.Read(buf)
		if m > 0 {
			if s.MaxBytes > 0 && n.Load()+int64(m) > s.MaxBytes {
				return ErrTooLarge
			}
			if _, err := f.Write(buf[:m]); err != nil {
				return err
			}
			n.Add(int64(m))
		}
		if rerr == io.EOF {
			return f.Sync()
		}
		if rerr != nil {
			return rerr
		}
	}
}

// begin opens an upload's file and counts it active, or refuses the
// upload before its response starts (the client tries its next recorder,
// or refuses the session).
func (s *Store) begin(w http.ResponseWriter) (*os.File, bool) {
	if n := s.Active.Add(1); s.MaxActive > 0 && n > s.MaxActive {
		s.Active.Add(-1)
		s.Logf("recorder: refused an upload: %d in progress, the most it takes", s.MaxActive)
		http.Error(w, fmt.Sprintf("the recorder is taking the most recordings it takes at once (%d)", s.MaxActive), http.StatusServiceUnavailable)
		return nil, false
	}
	f, err := s.create()
	if err != nil {
		s.Active.Add(-1)
		s.Logf("recorder: cannot store a recording: %v", err)
		http.Error(w, "the recorder cannot store recordings: "+err.Error(), http.StatusServiceUnavailable)
		return nil, false
	}
	s.writing.Store(filepath.Base(f.Name()), true)
	return f, true
}

// open says whether an upload is writing the file name.
func (s *Store) open(name string) bool {
	_, ok := s.writing.Load(name)
	return ok
}

// end counts an upload begun by begin finished.
func (s *Store) end(f *os.File) {
	s.writing.Delete(filepath.Base(f.Name()))
	s.Active.Add(-1)
}

func (s *Store) recordV2(w http.ResponseWriter, r *http.Request) {
	f, ok := s.begin(w)
	if !ok {
		return
	}
	defer s.end(f)
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		// The client is gone before the upload began: nothing to keep.
		f.Close()
		_ = os.Remove(f.Name())
		return
	}
	var n atomic.Int64
	done := make(chan error, 1)
	go func() { done <- s.receive(f, r.Body, &n) }()
	every := s.AckEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	enc := json.NewEncoder(w)
	send := func(fr ackFrame) bool { return enc.Encode(fr) == nil && rc.Flush() == nil }
	for {
		select {
		case <-tick.C:
			if !send(ackFrame{Ack: n.Load()}) {
				// The client is gone; the upload ends with its body.
				err := <-done
				f.Close()
				s.Logf("recorder: recording %s ended with its client after %d bytes: %v", filepath.Base(f.Name()), n.Load(), err)
				return
			}
		case err := <-done:
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				s.Logf("recorder: recording %s failed after %d bytes: %v", filepath.Base(f.Name()), n.Load(), err)
				send(ackFrame{Error: fmt.Sprintf("storing the recording: %v", err)})
				return
			}
			send(ackFrame{Ack: n.Load()})
			s.done(f, n.Load())
			return
		}
	}
}

func (s *Store) recordV1(w http.ResponseWriter, r *http.Request) {
	f, ok := s.begin(w)
	if !ok {
		return
	}
	defer s.end(f)
	var n atomic.Int64
	err := s.receive(f, r.Body, &n)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.Logf("recorder: recording %s failed after %d bytes: %v", filepath.Base(f.Name()), n.Load(), err)
		http.Error(w, "storing the recording: "+err.Error(), http.StatusInternalServerError)
		return
	}
	s.done(f, n.Load())
}

// done logs a finished recording, or removes it if it is empty: a session
// the API server refused after the recorder was asked (the proxy asks
// first) has nothing to keep.
func (s *Store) done(f *os.File, n int64) {
	if n == 0 {
		_ = os.Remove(f.Name())
		s.Logf("recorder: nothing was recorded (the session did not start)")
		return
	}
	s.Logf("recorder: recorded %s (%d bytes)", filepath.Base(f.Name()), n)
}

// Protocols are what a recorder's server speaks: HTTP/1.1 (v1) and HTTP/2
// without TLS (v2; the tailnet encrypts).
func Protocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}
