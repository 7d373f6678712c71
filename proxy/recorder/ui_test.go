package recorder

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tailscale.com/tailcfg"
)

// writeCast stores a recording as the recorder would name it, of a
// session in ns/pod that printed out.
func writeCast(t testing.TB, dir string, start time.Time, ns, pod, user, out string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%012x.cast", start.UTC().Format("20060102T150405.000000000Z"), start.UnixNano()&0xffffffffffff)
	body := fmt.Sprintf(`{"version":2,"width":80,"height":24,"timestamp":%d,"command":"sh","srcNode":"laptop.tail.ts.net","srcNodeID":"n1","srcNodeUser":%q,"kubernetes":{"PodName":%q,"Namespace":%q,"Container":"app","SessionType":"exec"}}`+"\n"+
		`[0.1,"o",%q]`+"\n"+`[2.5,"o","bye\r\n"]`+"\n", start.Unix(), user, pod, ns, out)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

// testUI serves dir to callers granted rules, under the host recorder.ts.net.
func testUI(dir string, rules ...string) *UI {
	return &UI{Dir: dir, Open: func(string) bool { return false }, Logf: func(string, ...any) {},
		Viewer: func(r *http.Request) (Scope, error) {
			var raw []tailcfg.RawMessage
			for _, r := range rules {
				raw = append(raw, tailcfg.RawMessage(r))
			}
			return ViewScope(raw)
		},
		Hosts: func(*http.Request) ([]string, []netip.Addr, error) {
			return []string{"recorder.tail.ts.net", "recorder"}, []netip.Addr{netip.MustParseAddr("100.64.0.9")}, nil
		}}
}

func get(t *testing.T, h http.Handler, method, host, path string) (int, string, http.Header) {
	t.Helper()
	r := httptest.NewRequest(method, "http://"+host+path, nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b), w.Result().Header
}

// The page shows each caller the namespaces its grants name, and nothing
// of others': not in the list, not by a recording's name.
func TestUIScope(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	a := writeCast(t, dir, now.Add(-time.Hour), "team-a", "web-0", "alice@example.com", "hello from team a")
	b := writeCast(t, dir, now, "team-b", "db-0", "bob@example.com", "team b's secret")
	ui := testUI(dir, `{"namespaces":["team-a"]}`)
	code, body, hdr := get(t, ui, "GET", "recorder.tail.ts.net", "/")
	if code != 200 || !strings.Contains(body, "web-0") || strings.Contains(body, "db-0") || !strings.Contains(body, "1 sessions") {
		t.Errorf("list for team-a: %d %s", code, body)
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if code, body, _ := get(t, ui, "GET", "recorder", "/casts/"+a); code != 200 || !strings.Contains(body, "hello from team a") {
		t.Errorf("team-a's cast: %d %s", code, body)
	}
	for _, p := range []string{"/casts/" + b, "/sessions/" + b, "/casts/../" + a, "/casts/%2e%2e%2fetc%2fpasswd", "/casts/" + a + "/", "/casts/x.cast"} {
		if code, body, _ := get(t, ui, "GET", "recorder", p); code != 404 || strings.Contains(body, "secret") {
			t.Errorf("%s as team-a: %d %s, want 404", p, code, body)
		}
	}
	all := testUI(dir, `{"namespaces":["team-a"]}`, `{"namespaces":["*"]}`)
	if code, body, _ := get(t, all, "GET", "100.64.0.9", "/"); code != 200 || !strings.Contains(body, "web-0") || !strings.Contains(body, "db-0") {
		t.Errorf("list for *: %d %s", code, body)
	}
	if code, body, _ := get(t, all, "GET", "recorder", "/?q=DB-0"); code != 200 || strings.Contains(body, "web-0") || !strings.Contains(body, "1 of 2 sessions") {
		t.Errorf("filtered: %d %s", code, body)
	}
	if code, body, _ := get(t, all, "GET", "recorder", "/sessions/"+b); code != 200 || !strings.Contains(body, `data-cast="/casts/`+b+`"`) || !strings.Contains(body, "bob@example.com") || !strings.Contains(body, "2.5s, 295 B") {
		t.Errorf("player page: %d %s", code, body)
	}
}

// Who may not see: no grant, a grant the page cannot read, a web page
// under another name (DNS rebinding), and anything but reading.
func TestUIRefuses(t *testing.T) {
	dir := t.TempDir()
	writeCast(t, dir, time.Now(), "team-a", "web-0", "alice@example.com", "hello")
	for _, tc := range []struct {
		name         string
		ui           *UI
		method, host string
		code         int
		says         string
	}{
		{"no grant", testUI(dir), "GET", "recorder", 403, "no grant gives you tsinject.dev/cap/recordings"},
		{"mistyped rule", testUI(dir, `{"namespace":["team-a"]}`), "GET", "recorder", 403, "unknown field &#34;namespace&#34;"},
		{"empty rule", testUI(dir, `{"namespaces":[]}`), "GET", "recorder", 403, "has no namespaces"},
		{"rebound name", testUI(dir, `{"namespaces":["*"]}`), "GET", "evil.example", 421, `this recorder is not "evil.example"`},
		{"rebound name, port", testUI(dir, `{"namespaces":["*"]}`), "GET", "evil.example:80", 421, "open it by its tailnet name"},
		{"a write", testUI(dir, `{"namespaces":["*"]}`), "POST", "recorder", 405, "allowed methods are GET and HEAD"},
	} {
		code, body, _ := get(t, tc.ui, tc.method, tc.host, "/")
		if code != tc.code || !strings.Contains(body, tc.says) || strings.Contains(body, "web-0") {
			t.Errorf("%s: %d %s, want %d saying %s", tc.name, code, body, tc.code, tc.says)
		}
	}
	if code, body, _ := get(t, testUI(dir, `{"namespaces":["*"]}`), "GET", "recorder", "/?page=x"); code != 400 || !strings.Contains(body, "page:") {
		t.Errorf("a bad page number: %d %s", code, body)
	}
	if code, body, _ := get(t, testUI(dir, `{"namespaces":["*"]}`), "GET", "recorder", "/?q="+strings.Repeat("a", 201)); code != 400 || !strings.Contains(body, "q:") {
		t.Errorf("a long filter: %d %s", code, body)
	}
}

// Pages of 500, newest first, and the index reads a file again only when
// it changed.
func TestUIPagesAndIndex(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var first string
	for i := range 1001 {
		name := writeCast(t, dir, start.Add(time.Duration(i)*time.Second), "team-a", fmt.Sprintf("pod-%04d", i), "alice@example.com", "x")
		if i == 0 {
			first = name
		}
	}
	ui := testUI(dir, `{"namespaces":["*"]}`)
	_, body, _ := get(t, ui, "GET", "recorder", "/")
	if !strings.Contains(body, "pod-1000") || strings.Contains(body, "pod-0500") || !strings.Contains(body, "page 1 of 3") || !strings.Contains(body, `href="/?page=2"`) {
		t.Errorf("page 1 is not the newest 500")
	}
	_, body, _ = get(t, ui, "GET", "recorder", "/?page=3")
	if !strings.Contains(body, "pod-0000") || strings.Contains(body, "pod-0001<") || !strings.Contains(body, `href="/?page=2"`) {
		t.Errorf("page 3 is not the oldest one")
	}
	// A recording that grew is read again.
	f, err := os.OpenFile(filepath.Join(dir, first), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "[99.5,\"o\",\"more\"]\n")
	f.Close()
	ss, err := ui.ix.sessions(dir, ui.Open)
	if err != nil || len(ss) != 1001 {
		t.Fatalf("sessions: %d %v", len(ss), err)
	}
	if got := ss[len(ss)-1]; got.Name != first || got.Duration != 99500*time.Millisecond {
		t.Errorf("the grown recording: %s lasts %v, want 1m39.5s", got.Name, got.Duration)
	}
}

func TestLastEventTime(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"{}\n[0.5,\"o\",\"a\"]\n[12.25,\"o\",\"b\"]\n": 12250 * time.Millisecond,
		"{}\n[0.5,\"o\",\"a\"]\n[12.2":                 500 * time.Millisecond, // cut mid-event: still being written
		"{}\n":                                         0,
		"":                                             0,
		"[-1,\"o\",\"a\"]\n":                           0,
	} {
		if got := lastEventTime([]byte(in)); got != want {
			t.Errorf("lastEventTime(%q) = %v, want %v", in, got, want)
		}
	}
}

// The vendored player is the pinned release's files, unchanged.
func TestVendoredPlayer(t *testing.T) {
	for file, want := range map[string]string{"ui/static/asciinema-player.min.js": playerJSSHA256, "ui/static/asciinema-player.css": playerCSSSHA256} {
		b, err := uiFiles.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != want {
			t.Errorf("%s is not asciinema-player %s's (sha256 %x): make vendor-player", file, PlayerVersion, sum)
		}
	}
}

// What the review of the page found, each refused: a link planted under
// a recording's name, a header long enough to hide its namespace (a
// caller's command), files outside /static/, another site's page reading
// through its visitor's browser.
func TestUIHostileInput(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("the recorder's own secret"), 0o600)
	link := fmt.Sprintf("%s-%012x.cast", time.Now().UTC().Format("20060102T150405.000000000Z"), 1)
	if err := os.Symlink(secret, filepath.Join(dir, link)); err != nil {
		t.Fatal(err)
	}
	long := writeCast(t, dir, time.Now().Add(-time.Minute), "team-a", "web-0", "alice@example.com", "x")
	b, _ := os.ReadFile(filepath.Join(dir, long))
	os.WriteFile(filepath.Join(dir, long), []byte(strings.Replace(string(b), `"command":"sh"`, `"command":"`+strings.Repeat("A", 100<<10)+`"`, 1)), 0o600)

	all, teamA := testUI(dir, `{"namespaces":["*"]}`), testUI(dir, `{"namespaces":["team-a"]}`)
	for _, p := range []string{"/casts/" + link, "/sessions/" + link} {
		if code, body, _ := get(t, all, "GET", "recorder", p); code != 404 || strings.Contains(body, "secret") {
			t.Errorf("%s, a link: %d %q", p, code, body)
		}
	}
	code, body, _ := get(t, teamA, "GET", "recorder", "/")
	if code != 200 || !strings.Contains(body, "web-0") || !strings.Contains(body, "1 sessions") || len(body) > 16<<10 {
		t.Errorf("a session with a 100 KiB command, to its namespace's viewer: %d, %d bytes", code, len(body))
	}
	if code, _, _ := get(t, teamA, "GET", "recorder", "/casts/"+long); code != 200 {
		t.Errorf("its cast: %d", code)
	}
	for _, p := range []string{"/static/../list.html", "/static/", "/static/..%2flist.html", "/static/x/../../list.html"} {
		if code, body, _ := get(t, all, "GET", "recorder", p); code == 200 || strings.Contains(body, "{{") {
			t.Errorf("%s: %d %.80q", p, code, body)
		}
	}
	if code, _, hdr := get(t, all, "GET", "recorder", "/static/asciinema-player.min.js"); code != 200 || !strings.Contains(hdr.Get("Content-Type"), "javascript") {
		t.Errorf("the player: %d %s", code, hdr.Get("Content-Type"))
	}
	ui := testUI(dir, `{"namespaces":["*"]}`)
	ui.Hosts = func(*http.Request) ([]string, []netip.Addr, error) {
		return nil, []netip.Addr{netip.MustParseAddr("fd7a:115c:a1e0::9")}, nil
	}
	if code, _, _ := get(t, ui, "GET", "[fd7a:115c:a1e0::9]", "/"); code != 200 {
		t.Errorf("by its IPv6 address: %d", code)
	}
	for _, tc := range []struct {
		site, mode, dest string
		code             int
	}{
		{"cross-site", "no-cors", "empty", 403},     // a timed fetch of /?q=...
		{"same-site", "no-cors", "image", 403},      // another tailnet page
		{"cross-site", "navigate", "document", 200}, // a link followed
		{"same-origin", "cors", "empty", 200},       // the player's fetch
		{"none", "navigate", "document", 200},       // typed in the address bar
	} {
		r := httptest.NewRequest("GET", "http://recorder/?q=web", nil)
		r.Header.Set("Sec-Fetch-Site", tc.site)
		r.Header.Set("Sec-Fetch-Mode", tc.mode)
		r.Header.Set("Sec-Fetch-Dest", tc.dest)
		w := httptest.NewRecorder()
		all.ServeHTTP(w, r)
		if w.Code != tc.code {
			t.Errorf("%s %s %s: %d, want %d", tc.site, tc.mode, tc.dest, w.Code, tc.code)
		}
	}
}
