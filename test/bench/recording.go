package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/proxy/apiproxy"
	"github.com/tsinject/tsinject/proxy/recorder"
	"github.com/tsinject/tsinject/test/poll"
	"github.com/tsinject/tsinject/test/tailnet"
)

// RecordingResult is what recording an exec session costs through the
// API server proxy (a `tsinject-proxy apiserver` process), beside the
// same session unrecorded, in the same run: keystroke-to-echo latency,
// and the proxy's resident memory over a large output.
type RecordingResult struct {
	// Keystrokes per repeat; EchoP50 and EchoP90 are per repeat, in ms.
	Keystrokes                  int
	EchoP50, EchoP90            Sample
	RecordedP50, RecordedP90    Sample
	StreamMiB                   int
	StreamSeconds, RecordedSecs Sample
	// RSS of the proxy, in MiB: once the stream is 64 MiB in (Start), at
	// its largest (Peak), each per repeat.
	RSSStart, RSSPeak                 Sample
	RecordedRSSStart, RecordedRSSPeak Sample
	// Limit is the memory limit the API proxy's pods ship with, in MiB.
	Limit int
}

// The exec subprotocol the API server speaks over WebSocket.
const execProtocol = "v5.channel.k8s.io"

// typingGap is the time between one keystroke's echo and the next
// keystroke.
const typingGap = 20 * time.Millisecond

// execUpstream stands in for the API server's exec endpoint, speaking as
// it does (golang.org/x/net/websocket, each message whole): it echoes
// stdin to stdout, or with command=cat sends size bytes of output in the
// 32 KiB messages the API server relays.
func execUpstream(size int64) *httptest.Server {
	srv := websocket.Server{
		Handshake: func(c *websocket.Config, _ *http.Request) error {
			c.Protocol = []string{execProtocol}
			return nil
		},
		Handler: func(ws *websocket.Conn) {
			defer ws.Close()
			if ws.Request().URL.Query().Get("command") == "cat" {
				// Printable output: the cast holds it as it is (a zero
				// byte would be six in the cast's JSON).
				msg := bytes.Repeat([]byte("x"), 1+32<<10)
				msg[0] = 1
				for sent := int64(0); sent < size; sent += int64(len(msg) - 1) {
					if err := websocket.Message.Send(ws, msg); err != nil {
						return
					}
				}
				return
			}
			for {
				var in []byte
				if err := websocket.Message.Receive(ws, &in); err != nil {
					return
				}
				if len(in) > 1 && in[0] == 0 {
					in[0] = 1
					if err := websocket.Message.Send(ws, in); err != nil {
						return
					}
				}
			}
		},
	}
	return httptest.NewTLSServer(srv)
}

// execSession is a WebSocket exec session through the proxy, as kubectl
// opens one.
type execSession struct {
	conn net.Conn
	r    *bufio.Reader
}

func openExec(ctx context.Context, dial dialer, host, query string) (*execSession, error) {
	c, err := dial(ctx, "tcp", host+":80")
	if err != nil {
		return nil, err
	}
	key := make([]byte, 16)
	rand.Read(key)
	req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/api/v1/namespaces/default/pods/shell/exec?"+query, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key))
	req.Header.Set("Sec-WebSocket-Protocol", execProtocol)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := req.Write(c); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(c, 64<<10)
	res, err := http.ReadResponse(r, req)
	if err != nil {
		c.Close()
		return nil, err
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		c.Close()
		return nil, fmt.Errorf("exec: %s: %s", res.Status, b)
	}
	c.SetDeadline(time.Time{})
	return &execSession{conn: c, r: r}, nil
}

// send writes one message on stream (masked, as a client must).
func (s *execSession) send(stream byte, data []byte) error {
	payload := append([]byte{stream}, data...)
	if len(payload) > 125 {
		return errors.New("bench: keystrokes only")
	}
	frame := []byte{0x82, 0x80 | byte(len(payload)), 1, 2, 3, 4}
	for i, c := range payload {
		frame = append(frame, c^frame[2+i%4])
	}
	_, err := s.conn.Write(frame)
	return err
}

// next reads the next data message's stream and payload length, its
// payload discarded.
func (s *execSession) next() (stream byte, n int64, err error) {
	for {
		var h [2]byte
		if _, err := io.ReadFull(s.r, h[:]); err != nil {
			return 0, 0, err
		}
		size := int64(h[1] & 0x7f)
		switch size {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(s.r, b[:]); err != nil {
				return 0, 0, err
			}
			size = int64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(s.r, b[:]); err != nil {
				return 0, 0, err
			}
			size = int64(binary.BigEndian.Uint64(b[:]))
		}
		if op := h[0] & 0xf; op == 0x8 {
			return 0, 0, io.EOF
		} else if op >= 0x8 || size == 0 {
			if _, err := s.r.Discard(int(size)); err != nil {
				return 0, 0, err
			}
			continue
		}
		st, err := s.r.ReadByte()
		if err != nil {
			return 0, 0, err
		}
		if _, err := s.r.Discard(int(size - 1)); err != nil {
			return 0, 0, err
		}
		return st, size - 1, nil
	}
}

// Recording measures RecordingResult: a `tsinject-proxy apiserver`
// process (proxyBin) before an exec endpoint, a recorder on the tailnet,
// and a laptop typing into sessions under a grant that requires
// recording and under one that records nothing, interleaved.
func Recording(ctx context.Context, proxyBin string, keystrokes int, streamMiB int, repeats int) (*RecordingResult, error) {
	res := &RecordingResult{Keystrokes: keystrokes, StreamMiB: streamMiB, Limit: 512}
	up := execUpstream(int64(streamMiB) << 20)
	defer up.Close()
	dir, err := os.MkdirTemp("", "bench-recording-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw})
	for name, b := range map[string][]byte{"ca.crt": ca, "token": []byte("bench"), "authkey": []byte("tskey-auth-bench")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-bench"})
	if err != nil {
		return nil, err
	}
	defer tn.Close()
	casts := filepath.Join(dir, "casts")
	os.MkdirAll(casts, 0o700)
	rn, err := tn.NewNode(ctx, "recorder", tailnet.NodeOptions{Tags: []string{"tag:recorder"}})
	if err != nil {
		return nil, err
	}
	defer rn.Close()
	ln, err := rn.Listen("tcp", fmt.Sprintf(":%d", recorder.Port))
	if err != nil {
		return nil, err
	}
	rsrv := &http.Server{Handler: &recorder.Store{Dir: casts, Logf: func(string, ...any) {}}, Protocols: recorder.Protocols(), ReadHeaderTimeout: 10 * time.Second}
	go rsrv.Serve(ln)
	defer rsrv.Close()
	laptop, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{})
	if err != nil {
		return nil, err
	}
	defer laptop.Close()

	health := poll.FreeAddr()
	p, err := startProc(proxyBin, []string{"apiserver", "--upstream", up.URL, "--token-file", filepath.Join(dir, "token"), "--ca-file", filepath.Join(dir, "ca.crt")},
		[]string{contract.EnvControlURL + "=" + tn.ControlURL(), contract.EnvAuthKeyFile + "=" + filepath.Join(dir, "authkey"),
			contract.EnvHostname + "=k8s-rec", contract.EnvState + "=ephemeral", contract.EnvStateDir + "=" + filepath.Join(dir, "state"),
			contract.EnvHealthAddr + "=" + health, contract.EnvAPIProxyMode + "=" + apiproxy.ModeAuth, contract.EnvAPIProxyTLS + "=http",
			// As its pods ship: the limit, which the proxy's GC works to.
			contract.EnvMemoryLimit + "=" + strconv.Itoa(res.Limit<<20)})
	if err != nil {
		return nil, err
	}
	defer p.stop()
	if err := waitUntil(ctx, 2*time.Minute, func() error {
		if p.cmd.ProcessState != nil {
			return errors.New("exited: " + p.logs.String())
		}
		return poll.HTTPOK("http://" + health + "/readyz")
	}); err != nil {
		return nil, fmt.Errorf("the API proxy: %w\n%s", err, p.logs.String())
	}
	host := tn.FQDN("k8s-rec")

	// grant switches the tailnet's grant and waits until the proxy's
	// sessions show it in its log: recorded, or unrecorded for want of a
	// recorder (the baseline names one that does not exist, so that the
	// proxy says so).
	grant := func(recorded bool) error {
		caps, mark := `{"impersonate":{"groups":["system:masters"]},"recorder":["tag:none"]}`, "no recorder tagged tag:none"
		if recorded {
			caps, mark = `{"impersonate":{"groups":["system:masters"]},"recorder":["tag:recorder"],"enforceRecorder":true}`, "session by"
		}
		tn.Grant(tailcfg.PeerCapMap{apiproxy.CapKubernetes: {tailcfg.RawMessage(caps)}})
		return waitUntil(ctx, time.Minute, func() error {
			before := strings.Count(p.logs.String(), mark)
			s, err := openExec(ctx, laptop.Dial, host, "command=sh&stdin=true&stdout=true")
			if err != nil {
				return err
			}
			s.conn.Close()
			if strings.Count(p.logs.String(), mark) == before {
				return fmt.Errorf("the proxy has not taken the grant yet (recorded: %v)", recorded)
			}
			return nil
		})
	}
	typing := func() (p50, p90 float64, err error) {
		s, err := openExec(ctx, laptop.Dial, host, "command=sh&stdin=true&stdout=true&tty=false")
		if err != nil {
			return 0, 0, err
		}
		defer s.conn.Close()
		var ds []time.Duration
		for i := range keystrokes + 10 {
			// Typed fast (50 a second), not back to back: a keystroke
			// follows the last's echo by a typist's gap, as in a session.
			time.Sleep(typingGap)
			t0 := time.Now()
			if err := s.send(0, []byte{'a' + byte(i%26)}); err != nil {
				return 0, 0, err
			}
			for {
				st, _, err := s.next()
				if err != nil {
					return 0, 0, err
				}
				if st == 1 {
					break
				}
			}
			if i >= 10 { // the first few warm the path
				ds = append(ds, time.Since(t0))
			}
		}
		return ms(Percentile(ds, 50)), ms(Percentile(ds, 90)), nil
	}
	stream := func() (secs, start, peak float64, err error) {
		s, err := openExec(ctx, laptop.Dial, host, "command=cat&stdout=true")
		if err != nil {
			return 0, 0, 0, err
		}
		defer s.conn.Close()
		var got atomic.Int64
		var startKiB, peakKiB int
		done := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				kib, err := memKiB(p.pid(), "VmRSS")
				if err != nil {
					continue
				}
				if startKiB == 0 && got.Load() >= 64<<20 {
					startKiB = kib
				}
				peakKiB = max(peakKiB, kib)
			}
		}()
		t0 := time.Now()
		for got.Load() < int64(streamMiB)<<20 {
			st, n, err := s.next()
			if err != nil {
				close(done)
				<-sampled
				return 0, 0, 0, fmt.Errorf("after %d bytes: %w", got.Load(), err)
			}
			if st == 1 {
				got.Add(n)
			}
		}
		secs = time.Since(t0).Seconds()
		close(done)
		<-sampled
		return secs, float64(startKiB) / 1024, float64(peakKiB) / 1024, nil
	}

	for range repeats {
		for _, recorded := range []bool{false, true} {
			if err := grant(recorded); err != nil {
				return nil, err
			}
			p50, p90, err := typing()
			if err != nil {
				return nil, fmt.Errorf("typing (recorded: %v): %w", recorded, err)
			}
			secs, start, peak, err := stream()
			if err != nil {
				return nil, fmt.Errorf("a %d MiB output (recorded: %v): %w", streamMiB, recorded, err)
			}
			if recorded {
				res.RecordedP50, res.RecordedP90 = append(res.RecordedP50, p50), append(res.RecordedP90, p90)
				res.RecordedSecs, res.RecordedRSSStart, res.RecordedRSSPeak = append(res.RecordedSecs, secs), append(res.RecordedRSSStart, start), append(res.RecordedRSSPeak, peak)
			} else {
				res.EchoP50, res.EchoP90 = append(res.EchoP50, p50), append(res.EchoP90, p90)
				res.StreamSeconds, res.RSSStart, res.RSSPeak = append(res.StreamSeconds, secs), append(res.RSSStart, start), append(res.RSSPeak, peak)
			}
			// The casts of a large output take the disk's room.
			if ents, err := os.ReadDir(casts); err == nil {
				for _, e := range ents {
					os.Remove(filepath.Join(casts, e.Name()))
				}
			}
		}
	}
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
