package recorder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Expire removes the recordings in s.Dir that were last written before
// cutoff, and says how many it removed. Only finished cast files are
// touched (not one an upload is writing, idle for hours as its session
// may be; nothing else in the volume is the recorder's to remove).
func (s *Store) Expire(cutoff time.Time) (int, error) {
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".cast") {
			continue
		}
		if _, busy := s.writing.Load(e.Name()); busy {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(s.Dir, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}

// keep removes recordings older than retention now and every
// retention/24 (at most hourly) until ctx ends.
func (s *Store) keep(ctx context.Context, retention time.Duration) {
	every := min(retention/24, time.Hour)
	for {
		if n, err := s.Expire(time.Now().Add(-retention)); err != nil {
			s.Logf("recorder: removing recordings older than %v: %v", retention, err)
		} else if n > 0 {
			s.Logf("recorder: removed %d recordings older than %v", n, retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}
