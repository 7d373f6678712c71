package recorder

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tailscale.com/sessionrecording"

	"github.com/tsinject/tsinject/test/poll"
)

// serve runs h on loopback as a recorder's server and returns its address.
func serve(t *testing.T, h http.Handler) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: Protocols(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

func recordings(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

const cast = `{"version":2,"timestamp":1765000000,"srcNode":"laptop.tail-test.ts.net","kubernetes":{"podName":"web","namespace":"default","container":"app","sessionType":"exec"}}
[0.1,"o","$ "]
[0.5,"o","hello\r\n"]
`

// tailscale.com's own client (what API server proxies upload with)
// records to the store: v2 when offered, v1 when not, and a store that
// cannot write refuses before the session starts.
func TestTailscaleClientRecords(t *testing.T) {
	dial := (&net.Dialer{}).DialContext
	for _, tc := range []struct {
		name string
		v1   bool
	}{{"v2", false}, {"v1", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st := &Store{Dir: dir, AckEvery: 50 * time.Millisecond, Logf: t.Logf}
			var h http.Handler = st
			if tc.v1 { // a recorder that predates v2
				h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if strings.HasPrefix(r.URL.Path, "/v2/") {
						http.NotFound(w, r)
						return
					}
					st.ServeHTTP(w, r)
				})
			}
			ap := serve(t, h)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			wc, attempts, errc, err := sessionrecording.ConnectToRecorder(ctx, []netip.AddrPort{ap}, dial)
			if err != nil {
				t.Fatalf("connecting: %v (%+v)", err, attempts)
			}
			// Longer than a few acknowledgements: an idle session stays up.
			for _, line := range strings.SplitAfter(cast, "\n") {
				if _, err := wc.Write([]byte(line)); err != nil {
					t.Fatal(err)
				}
				time.Sleep(60 * time.Millisecond)
			}
			if err := wc.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if err != nil {
					t.Fatalf("the upload ended with %v", err)
				}
			case <-ctx.Done():
				t.Fatal("the upload did not end")
			}
			if got := recordings(t, dir); len(got) != 1 || got[0] != cast {
				t.Errorf("stored %q, want the cast", got)
			}
		})
	}
	t.Run("cannot store", func(t *testing.T) {
		ap := serve(t, &Store{Dir: filepath.Join(t.TempDir(), "missing"), Logf: t.Logf})
		// Refused by the recorder, not by the client giving up (its own
		// 30 s, which this deadline comes before): the session waits for
		// this answer.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, _, _, err := sessionrecording.ConnectToRecorder(ctx, []netip.AddrPort{ap}, dial); err == nil || !strings.Contains(err.Error(), "503") {
			t.Errorf("a recorder that cannot store: %v, want the session refused (503)", err)
		}
	})
	t.Run("at its most sessions", func(t *testing.T) {
		st := &Store{Dir: t.TempDir(), MaxActive: 1, AckEvery: 50 * time.Millisecond, Logf: t.Logf}
		ap := serve(t, st)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		first, _, _, err := sessionrecording.ConnectToRecorder(ctx, []netip.AddrPort{ap}, dial)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := sessionrecording.ConnectToRecorder(ctx, []netip.AddrPort{ap}, dial); err == nil || !strings.Contains(err.Error(), "503") {
			t.Errorf("a second upload to a recorder taking one: %v, want it refused (503)", err)
		}
		first.Close()
		if err := poll.Until(ctx, 10*time.Second, 20*time.Millisecond, func() error {
			wc, _, _, err := sessionrecording.ConnectToRecorder(ctx, []netip.AddrPort{ap}, dial)
			if err == nil {
				wc.Close()
			}
			return err
		}); err != nil {
			t.Errorf("once the first upload ended, another was still refused: %v", err)
		}
	})
	t.Run("refused uploader", func(t *testing.T) {
		ap := serve(t, &Store{Dir: t.TempDir(), Uploader: func(*http.Request) error { return errors.New("a user's device") }, Logf: t.Logf})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, _, _, err := sessionrecording.ConnectToRecorder(ctx, []netip.AddrPort{ap}, dial); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("an uploader the recorder refuses: %v, want the upload refused (403)", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		dir := t.TempDir()
		ap := serve(t, &Store{Dir: dir, MaxBytes: 100, AckEvery: 50 * time.Millisecond, Logf: t.Logf})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		wc, _, errc, err := sessionrecording.ConnectToRecorder(ctx, []netip.AddrPort{ap}, dial)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range 100 {
				if _, err := wc.Write([]byte(cast)); err != nil {
					return
				}
			}
			wc.Close()
		}()
		select {
		case err := <-errc:
			if err == nil || !strings.Contains(err.Error(), "larger than the recorder accepts") {
				t.Errorf("an upload past MaxBytes ended with %v, want the recorder's error", err)
			}
		case <-ctx.Done():
			t.Fatal("the upload did not end")
		}
	})
}

// A volume without room for a new recording takes none, saying why.
func TestWritableNeedsRoom(t *testing.T) {
	s := &Store{Dir: t.TempDir(), MinFree: 1 << 62}
	if err := s.writable(); err == nil || !strings.Contains(err.Error(), "MiB free, under the") {
		t.Errorf("writable with no room: %v", err)
	}
	s.MinFree = 1
	if err := s.writable(); err != nil {
		t.Errorf("writable with room: %v", err)
	}
}
