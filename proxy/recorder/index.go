package recorder

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"tailscale.com/sessionrecording"
)

// Session is what the web page shows of one recording: its cast's header
// (written by the API server proxy that recorded it) and its file.
type Session struct {
	Name      string
	Start     time.Time
	Duration  time.Duration
	Bytes     int64
	Recording bool // still being written
	Header    sessionrecording.CastHeader
}

// Who is the session's caller: the user's login, or the tagged node.
func (s *Session) Who() string {
	if s.Header.SrcNodeUser != "" {
		return s.Header.SrcNodeUser
	}
	return s.Header.SrcNode
}

// Namespace is the session's pod's namespace ("" for a recording that
// is not of a pod).
func (s *Session) Namespace() string {
	if s.Header.Kubernetes == nil {
		return ""
	}
	return s.Header.Kubernetes.Namespace
}

// castName is the form of the names create gives: nothing else in the
// directory is a recording, and no name reaching a path may hold a slash
// or a dot-dot.
var castName = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{9}Z-[0-9a-f]{12}\.cast$`)

// headLimit bounds how much of a cast is read for its header, and tail
// for its last event: a header past it is shown as unreadable.
const headLimit = 64 << 10

// index keeps what was read of each recording, so that listing 10,000
// sessions reads only the files that changed since the last list.
type index struct {
	mu   sync.Mutex
	seen map[string]indexed
}

type indexed struct {
	size int64
	mod  time.Time
	s    Session
}

// sessions lists the recordings in dir, newest first. open says whether
// a file is still being written.
func (ix *index) sessions(dir string, open func(name string) bool) ([]Session, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.seen == nil {
		ix.seen = map[string]indexed{}
	}
	out := make([]Session, 0, len(ents))
	keep := make(map[string]indexed, len(ents))
	for _, e := range ents {
		name := e.Name()
		if !castName.MatchString(name) || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed since the directory was read
		}
		c, ok := ix.seen[name]
		if !ok || c.size != info.Size() || !c.mod.Equal(info.ModTime()) {
			c = indexed{size: info.Size(), mod: info.ModTime(), s: readSession(filepath.Join(dir, name), name, info)}
		}
		keep[name] = c
		s := c.s
		s.Recording = open(name)
		out = append(out, s)
	}
	ix.seen = keep
	slices.SortFunc(out, func(a, b Session) int { return b.Start.Compare(a.Start) })
	return out, nil
}

// readSession reads a cast's header and its last event's time. A file
// whose header cannot be read is still listed, by its name's time.
func readSession(path, name string, info os.FileInfo) Session {
	s := Session{Name: name, Bytes: info.Size()}
	if t, err := time.Parse("20060102T150405.000000000Z", name[:len("20060102T150405.000000000Z")]); err == nil {
		s.Start = t
	}
	f, err := os.Open(path)
	if err != nil {
		return s
	}
	defer f.Close()
	// Most headers and last events fit in a page: read that much first.
	if line, err := bufio.NewReaderSize(io.LimitReader(f, headLimit), 4<<10).ReadBytes('\n'); err == nil {
		if json.Unmarshal(line, &s.Header) == nil && s.Header.Timestamp > 0 {
			s.Start = time.Unix(s.Header.Timestamp, 0).UTC()
		}
	}
	for _, size := range []int64{4 << 10, headLimit} {
		off := max(info.Size()-size, 0)
		tail := make([]byte, info.Size()-off)
		n, _ := f.ReadAt(tail, off)
		if s.Duration = lastEventTime(tail[:n]); s.Duration > 0 || off == 0 {
			break
		}
	}
	return s
}

// lastEventTime is the time of the last whole event line in b, the end of
// a cast v2 file: [seconds, "o", "data"].
func lastEventTime(b []byte) time.Duration {
	b = bytes.TrimRight(b, "\n")
	for len(b) > 0 {
		i := bytes.LastIndexByte(b, '\n')
		line := b[i+1:]
		if len(line) > 1 && line[0] == '[' {
			if j := bytes.IndexByte(line, ','); j > 1 {
				if sec, err := strconv.ParseFloat(string(bytes.TrimSpace(line[1:j])), 64); err == nil && sec >= 0 {
					return time.Duration(sec * float64(time.Second))
				}
			}
		}
		if i < 0 {
			break
		}
		b = b[:i]
	}
	return 0
}
