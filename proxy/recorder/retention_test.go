package recorder

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Recordings last written before the cutoff go; newer ones, and anything
// that is not a finished cast, stay.
func TestExpire(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	files := map[string]time.Time{
		"old.cast":      now.Add(-100 * 24 * time.Hour),
		"recent.cast":   now.Add(-time.Hour),
		"old-notes.txt": now.Add(-100 * 24 * time.Hour),
	}
	for name, mt := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "old-dir.cast"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(dir, "old-dir.cast"), now.Add(-100*24*time.Hour), now.Add(-100*24*time.Hour))
	// One being written, by an upload whose session has been idle.
	busy := filepath.Join(dir, "idle-session.cast")
	if err := os.WriteFile(busy, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(busy, now.Add(-100*24*time.Hour), now.Add(-100*24*time.Hour))
	st := &Store{Dir: dir, Logf: t.Logf}
	st.writing.Store("idle-session.cast", true)
	n, err := st.Expire(now.Add(-90 * 24 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	slices.Sort(left)
	if want := []string{"idle-session.cast", "old-dir.cast", "old-notes.txt", "recent.cast"}; n != 1 || !slices.Equal(left, want) {
		t.Errorf("removed %d, left %v; want 1 removed, %v left", n, left, want)
	}
}
