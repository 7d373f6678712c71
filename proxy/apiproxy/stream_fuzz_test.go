package apiproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"tailscale.com/k8s-operator/sessionrecording/tsrecorder"
	"tailscale.com/k8s-operator/sessionrecording/ws"
	"tailscale.com/sessionrecording"
	"tailscale.com/tstime"
)

// wsFrame is one WebSocket frame from the API server (unmasked) or from
// kubectl (masked).
func wsFrame(fin bool, op byte, payload []byte, mask []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var m byte
	if mask != nil {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, m|byte(n))
	case n < 1<<16:
		out = append(out, m|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if mask == nil {
		return append(out, payload...)
	}
	out = append(out, mask...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

// session turns fuzz bytes into what the API server sends on an exec
// stream (channel.k8s.io: binary messages whose first byte is the
// stream), each in one frame, with control frames between. The API
// server writes them with golang.org/x/net/websocket, which sends each
// message whole: tailscale.com's parser reads a continuation frame as
// starting with its stream's byte, as no sender of RFC 6455 fragments
// does, so a fragmenting upstream would end sessions (or lose a byte of
// the recording per fragment). Payloads are ASCII: the cast is JSON text,
// which coerces other bytes anyway.
func session(data []byte) []byte {
	var raw []byte
	for len(data) >= 2 {
		ctl, n := data[0], int(data[1])
		data = data[2:]
		n = min(n, len(data))
		payload := []byte{ctl % 5} // streams 0-4
		for _, c := range data[:n] {
			payload = append(payload, c&0x7f)
		}
		data = data[n:]
		if ctl&0x40 != 0 {
			raw = append(raw, wsFrame(true, 0x9, []byte("ping"), nil)...)
		}
		raw = append(raw, wsFrame(true, 0x2, payload, nil)...)
	}
	return raw
}

// shown is what kubectl shows of the frames in raw (unmasked, from the
// API server), reading them as RFC 6455 says: the stdout and stderr of
// each whole message.
func shown(t *testing.T, raw []byte) string {
	var out strings.Builder
	var msg []byte
	inMsg := false
	for len(raw) >= 2 {
		fin, op, n, off := raw[0]&0x80 != 0, raw[0]&0xf, int(raw[1]&0x7f), 2
		switch n {
		case 126:
			n, off = int(binary.BigEndian.Uint16(raw[2:])), 4
		case 127:
			n, off = int(binary.BigEndian.Uint64(raw[2:])), 10
		}
		if len(raw) < off+n {
			break // an incomplete frame: not shown
		}
		payload := raw[off : off+n]
		raw = raw[off+n:]
		if op >= 0x8 {
			continue
		}
		if op != 0 {
			msg, inMsg = nil, true
		}
		if !inMsg {
			t.Fatalf("a continuation with no message: the fuzz input is not a session")
		}
		msg = append(msg, payload...)
		if fin {
			if len(msg) > 1 && (msg[0] == 1 || msg[0] == 2) {
				out.Write(msg[1:])
			}
			inMsg = false
		}
	}
	return out.String()
}

type castBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (c *castBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Buffer.Write(p)
}
func (c *castBuffer) Close() error { return nil }

// recordedConn is the stream wrapper the proxy records sessions with (and
// its limit on the caller's messages), on one end of a pipe: the client's
// end is returned.
func recordedConn(t *testing.T) (net.Conn, net.Conn, *castBuffer) {
	proxySide, client := net.Pipe()
	cast := &castBuffer{}
	rec := tsrecorder.New(cast, tstime.DefaultClock{}, time.Now(), false, zap.NewNop().Sugar())
	lc, err := ws.New(context.Background(), &frameLimit{Conn: proxySide, max: MaxClientMessage}, rec, sessionrecording.CastHeader{Version: 2}, false, zap.NewNop().Sugar())
	if err != nil {
		t.Fatal(err)
	}
	return lc, client, cast
}

// The recorded stream's parser, fed any session the API server could send
// in any cuts: what reaches kubectl is what the API server sent, in order
// (all of it, or a prefix where the parser gives up and the session ends),
// and the cast holds exactly the output kubectl shows of it (or more, when
// the session ended on a write the parser refused part of: never less),
// whatever the writes' boundaries.
func FuzzRecordedStream(f *testing.F) {
	f.Add([]byte("\x01\x05hello\x02\x03err"), []byte{1, 2, 3})
	f.Add([]byte("\x41\x02hi\x03\x04stdn\x01\x03end"), []byte{7})
	f.Add(bytes.Repeat([]byte("\x01\xffx"), 200), []byte{255, 1})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		raw := session(data)
		lc, client, cast := recordedConn(t)
		got := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(client); got <- b }()
		ended := false
		for rest, i := raw, 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(cuts) > 0 {
				n = min(n, int(cuts[i%len(cuts)])+1)
			}
			if w, err := lc.Write(rest[:n]); err != nil || w != n {
				ended = true // the session ends
				break
			}
			rest = rest[n:]
		}
		lc.Close()
		b := <-got
		if !bytes.HasPrefix(raw, b) {
			t.Fatalf("kubectl got %d bytes that are not what the API server sent", len(b))
		}
		sc := bufio.NewScanner(strings.NewReader(cast.String()))
		sc.Buffer(nil, 1<<20)
		var recorded strings.Builder
		for i := 0; sc.Scan(); i++ {
			if i == 0 {
				continue // the header
			}
			var ev []any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 || ev[1] != "o" {
				t.Fatalf("cast line %d: %q (%v)", i, sc.Text(), err)
			}
			recorded.WriteString(ev[2].(string))
		}
		want := shown(t, b)
		if rec := recorded.String(); rec != want && (!ended || !strings.HasPrefix(rec, want)) {
			t.Fatalf("recorded %q; kubectl shows %q (the session ended early: %v)", rec, want, ended)
		}
	})
}

// What kubectl sends (stdin, resizes, closes: masked frames, or any
// bytes) reaches the API server unchanged, whatever the parser makes of
// it.
func FuzzRecordedStreamFromClient(f *testing.F) {
	f.Add([]byte("\x82\x86abcd\x61\x0b\x0c\x00\x0e\x0d"), uint8(3))
	f.Add(wsFrame(true, 0x2, []byte("\x00echo hi\n"), []byte("mask")), uint8(0))
	f.Add(wsFrame(false, 0x2, []byte("\x00ec"), []byte("mask")), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		lc, client, _ := recordedConn(t)
		go func() {
			for rest := data; len(rest) > 0; {
				n := min(len(rest), int(cut)+1)
				if _, err := client.Write(rest[:n]); err != nil {
					return
				}
				rest = rest[n:]
			}
			client.Close()
		}()
		var got []byte
		buf := make([]byte, 64)
		for {
			n, err := lc.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		lc.Close()
		// A frame the parser refuses ends the read early; what was
		// read is what was sent.
		if !bytes.HasPrefix(data, got) {
			t.Fatalf("the API server got %q, not a prefix of %q", got, data)
		}
	})
}
