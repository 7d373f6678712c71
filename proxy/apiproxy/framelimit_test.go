package apiproxy

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
)

// What kubectl sends passes whole; a caller's frame, or message of
// fragments, past the limit fails the read before the parser holds it.
func TestFrameLimit(t *testing.T) {
	mask := []byte("mask")
	const max = 64 << 10
	big := bytes.Repeat([]byte("x"), 32<<10)
	for _, tc := range []struct {
		name   string
		stream []byte
		says   string
	}{
		{"kubectl's stdin, resizes, pings and a close", bytes.Join([][]byte{
			wsFrame(true, 0x2, append([]byte{0}, big...), mask),
			wsFrame(true, 0x2, []byte("\x04{\"Width\":80,\"Height\":24}"), mask),
			wsFrame(true, 0x9, []byte("ping"), mask),
			wsFrame(true, 0x2, append([]byte{0}, big...), mask),
			wsFrame(true, 0x8, nil, mask),
		}, nil), ""},
		{"fragments within the limit", bytes.Join([][]byte{
			wsFrame(false, 0x2, append([]byte{0}, big...), mask),
			wsFrame(true, 0xA, nil, mask),
			wsFrame(true, 0x0, big[:1000], mask),
		}, nil), ""},
		{"one frame past the limit", append([]byte{0x82, 0x80 | 127}, binary.BigEndian.AppendUint64(nil, 1<<40)...), "larger than 65536 bytes"},
		{"a frame claiming more than can be", append([]byte{0x82, 0x80 | 127}, binary.BigEndian.AppendUint64(nil, 1<<63)...), "claims"},
		{"binary frames without their final bit", bytes.Join([][]byte{
			// The API server takes each as a message; the recording parser
			// holds them as one.
			wsFrame(false, 0x2, append([]byte{0}, big...), mask),
			wsFrame(false, 0x2, append([]byte{0}, big...), mask),
			wsFrame(false, 0x2, append([]byte{0}, big...), mask),
		}, nil), "larger than 65536 bytes"},
		{"a control frame past 125 bytes", wsFrame(true, 0x9, big[:126], mask), "control frame"},
		{"fragments without end", bytes.Join([][]byte{
			wsFrame(false, 0x2, append([]byte{0}, big...), mask),
			wsFrame(false, 0x0, big, mask),
			wsFrame(false, 0x0, big, mask),
		}, nil), "larger than 65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cut := range []int{1, 7, 4096, len(tc.stream)} {
				proxySide, client := net.Pipe()
				go func() {
					for rest := tc.stream; len(rest) > 0; rest = rest[min(cut, len(rest)):] {
						if _, err := client.Write(rest[:min(cut, len(rest))]); err != nil {
							return
						}
					}
					client.Close()
				}()
				got, err := io.ReadAll(&frameLimit{Conn: proxySide, max: max})
				proxySide.Close()
				switch {
				case tc.says == "" && (err != nil || !bytes.Equal(got, tc.stream)):
					t.Errorf("cut %d: read %d of %d bytes: %v", cut, len(got), len(tc.stream), err)
				case tc.says != "" && (err == nil || !strings.Contains(err.Error(), tc.says)):
					t.Errorf("cut %d: %v, want an error saying %q", cut, err, tc.says)
				}
			}
		})
	}
}
