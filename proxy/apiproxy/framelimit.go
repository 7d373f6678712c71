package apiproxy

import (
	"encoding/binary"
	"fmt"
	"net"
)

// MaxClientMessage bounds a WebSocket message a caller sends in a recorded
// session. The recording parser (tailscale.com's) holds a frame until it
// is whole, and a message's fragments until the last: one frame claiming
// a terabyte, or fragments without end, would grow the proxy until it is
// killed, with every session through it. kubectl sends stdin and resizes
// in messages of at most 32 KiB and a byte.
const MaxClientMessage = 1 << 20

// frameLimit is the caller's side of a recorded session: it reads the
// WebSocket frames' headers as they pass and fails the read that would
// take a message past MaxClientMessage.
type frameLimit struct {
	net.Conn
	max int64

	hdr     []byte // the frame header read so far
	size    int64  // the payload of the frame whose header is being read
	left    int64  // payload bytes of the current frame still to pass
	message int64  // data bytes of the current message so far
	open    bool   // the last data frame lacked its final bit
	err     error
}

func (f *frameLimit) Read(b []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := f.Conn.Read(b)
	if ferr := f.scan(b[:n]); ferr != nil {
		f.err = ferr
		return 0, ferr
	}
	return n, err
}

// scan follows the frames through p.
func (f *frameLimit) scan(p []byte) error {
	for len(p) > 0 {
		if f.left > 0 {
			k := min(int64(len(p)), f.left)
			f.left -= k
			p = p[k:]
			continue
		}
		// A header: 2 bytes, then 0, 2 or 8 of length, then 4 of mask.
		// The length is checked as soon as it is known.
		f.hdr = append(f.hdr, p[0])
		p = p[1:]
		if len(f.hdr) < 2 {
			continue
		}
		lenEnd := 2
		switch f.hdr[1] & 0x7f {
		case 126:
			lenEnd += 2
		case 127:
			lenEnd += 8
		}
		if len(f.hdr) == lenEnd {
			if err := f.frame(); err != nil {
				return err
			}
		}
		if len(f.hdr) < lenEnd+4*int(f.hdr[1]>>7) {
			continue
		}
		f.hdr = f.hdr[:0]
		f.left, f.size = f.size, 0
	}
	return nil
}

// frame takes a header up to its length: the frame's size, and its
// message's so far.
func (f *frameLimit) frame() error {
	switch l := f.hdr[1] & 0x7f; l {
	case 126:
		f.size = int64(binary.BigEndian.Uint16(f.hdr[2:]))
	case 127:
		u := binary.BigEndian.Uint64(f.hdr[2:])
		if u > 1<<62 {
			return fmt.Errorf("a WebSocket frame from the caller claims %d bytes", u)
		}
		f.size = int64(u)
	default:
		f.size = int64(l)
	}
	fin, op := f.hdr[0]&0x80 != 0, f.hdr[0]&0x0f
	if op >= 0x8 {
		// Control frames carry at most 125 bytes (RFC 6455 5.5); the
		// parser would hold a larger one whole.
		if f.size > 125 {
			return fmt.Errorf("a WebSocket control frame from the caller of %d bytes (at most 125 are allowed)", f.size)
		}
		return nil
	}
	// Data. The parser adds any data frame to a message still open,
	// whatever its opcode (a new binary frame does not start a new
	// message while the last lacked its final bit), so count it so too.
	if !f.open {
		f.message = 0
	}
	if f.message += f.size; f.message > f.max {
		return fmt.Errorf("a WebSocket message from the caller larger than %d bytes (a recorded session takes no more; kubectl sends at most 32 KiB)", f.max)
	}
	f.open = !fin
	return nil
}
