package recorder

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	// Header is the cast's, its fields cut to fieldLimit.
	Header sessionrecording.CastHeader
	search string // the fields a filter matches, lower-cased
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

// headLimit bounds how much of a cast is read for its header, tailLimit
// for its last event: a header past it is shown as unreadable.
const (
	headLimit = 1 << 20
	tailLimit = 64 << 10
)

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
			s, ok := readSession(filepath.Join(dir, name), name)
			if !ok {
				continue
			}
			c = indexed{size: info.Size(), mod: info.ModTime(), s: s}
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

// openCast opens a recording, never through a symbolic link: one planted
// on the volume under a recording's name would serve any file the
// recorder can read.
func openCast(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a recording", path)
	}
	return f, info, nil
}

// fieldLimit bounds each header field the page keeps: the index holds
// every session's, and a caller chooses the command (a 60 KiB command per
// session would cost the recorder its memory when the page is opened).
const fieldLimit = 1 << 10

// clip bounds a header field, saying where it was cut.
func clip(s string) string {
	if len(s) <= fieldLimit {
		return s
	}
	return strings.ToValidUTF8(s[:fieldLimit], "") + "…"
}

// readSession reads a cast's header and its last event's time, keeping
// the fields the page shows. A file whose header cannot be read is still
// listed, by its name's time (and only to viewers of every namespace).
func readSession(path, name string) (Session, bool) {
	f, info, err := openCast(path)
	if err != nil {
		return Session{}, false
	}
	defer f.Close()
	s := Session{Name: name, Bytes: info.Size()}
	if t, err := time.Parse("20060102T150405.000000000Z", name[:len("20060102T150405.000000000Z")]); err == nil {
		s.Start = t
	}
	// The header is the first JSON value, read as a stream up to
	// headLimit: a long header still names its session's namespace.
	var h sessionrecording.CastHeader
	if json.NewDecoder(bufio.NewReaderSize(io.LimitReader(f, headLimit), 4<<10)).Decode(&h) == nil {
		if h.Timestamp > 0 {
			s.Start = time.Unix(h.Timestamp, 0).UTC()
		}
		s.Header = sessionrecording.CastHeader{Version: h.Version, Width: h.Width, Height: h.Height, Timestamp: h.Timestamp,
			Command: clip(h.Command), SrcNode: clip(h.SrcNode), SrcNodeID: h.SrcNodeID, SrcNodeUser: clip(h.SrcNodeUser), SrcNodeUserID: h.SrcNodeUserID}
		for i, t := range h.SrcNodeTags {
			if i == 16 {
				break
			}
			s.Header.SrcNodeTags = append(s.Header.SrcNodeTags, clip(t))
		}
		if k := h.Kubernetes; k != nil {
			s.Header.Kubernetes = &sessionrecording.Kubernetes{PodName: clip(k.PodName), Namespace: clip(k.Namespace), Container: clip(k.Container), SessionType: clip(k.SessionType)}
		}
	}
	s.search = searchText(&s)
	for _, size := range []int64{4 << 10, tailLimit} {
		off := max(info.Size()-size, 0)
		tail := make([]byte, info.Size()-off)
		n, _ := f.ReadAt(tail, off)
		if s.Duration = lastEventTime(tail[:n]); s.Duration > 0 || off == 0 {
			break
		}
	}
	return s, true
}

// searchText is what a filter matches against, lower-cased once.
func searchText(s *Session) string {
	fields := []string{s.Who(), s.Header.SrcNode, s.Header.Command, strings.Join(s.Header.SrcNodeTags, " ")}
	if k := s.Header.Kubernetes; k != nil {
		fields = append(fields, k.Namespace, k.PodName, k.Container, k.SessionType)
	}
	return strings.ToLower(strings.Join(fields, "\x00"))
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
