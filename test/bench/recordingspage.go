package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/proxy/recorder"
	"github.com/tsinject/tsinject/test/browser"
)

// RecordingsPageResult is how long the recorder's page takes to list
// many sessions, per repeat, in ms.
type RecordingsPageResult struct {
	Sessions int
	// Cold is the server's answer with nothing indexed yet (the files in
	// the page cache); Warm once indexed; Filtered, a filter matching one
	// session; Browser, chromium's load of the page, index warm.
	Cold, Warm, Filtered, Browser Sample
}

// castEvents is a recording's body: a short interactive session.
var castEvents = func() string {
	var b strings.Builder
	for i := range 20 {
		fmt.Fprintf(&b, "[%d.%03d,\"o\",\"$ ls -la /var/log/app\\r\\n\"]\n", i, i*37%1000)
	}
	return b.String()
}()

// RecordingsPage stores n recordings as the recorder names them and times
// its page listing them: the server's answer, and chromium's load.
func RecordingsPage(ctx context.Context, n, repeats int) (*RecordingsPageResult, error) {
	dir, err := os.MkdirTemp("", "bench-recordings-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	start := time.Now().Add(-time.Duration(n) * time.Minute).UTC()
	for i := range n {
		t := start.Add(time.Duration(i) * time.Minute)
		name := fmt.Sprintf("%s-%012x.cast", t.Format("20060102T150405.000000000Z"), i)
		hdr := fmt.Sprintf(`{"version":2,"width":120,"height":40,"timestamp":%d,"command":"sh","srcNode":"laptop-%d.tail.ts.net","srcNodeID":"n%d","srcNodeUser":"user-%d@example.com","kubernetes":{"PodName":"web-%d","Namespace":"team-%d","Container":"app","SessionType":"exec"}}`,
			t.Unix(), i%50, i%50, i%50, i, i%20)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(hdr+"\n"+castEvents), 0o600); err != nil {
			return nil, err
		}
	}
	var ui *recorder.UI
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ui.ServeHTTP(w, r) }))
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String()).Addr()
	newUI := func() *recorder.UI {
		return &recorder.UI{Dir: dir, Open: func(string) bool { return false }, Logf: func(string, ...any) {},
			Viewer: func(*http.Request) (recorder.Scope, error) {
				return recorder.ViewScope([]tailcfg.RawMessage{`{"namespaces":["*"]}`})
			},
			Hosts: func(*http.Request) ([]string, []netip.Addr, error) { return nil, []netip.Addr{addr}, nil }}
	}
	get := func(path, want string) (float64, error) {
		t0 := time.Now()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			return 0, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ms := float64(time.Since(t0).Microseconds()) / 1000
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			return 0, fmt.Errorf("GET %s: %v %d, want %q", path, err, resp.StatusCode, want)
		}
		return ms, nil
	}
	profile, err := os.MkdirTemp("", "bench-chromium-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(profile)
	b, stop, err := browser.New(ctx, "", profile, func(string, ...any) {})
	if err != nil {
		return nil, err
	}
	defer stop()
	res := &RecordingsPageResult{Sessions: n}
	all := fmt.Sprintf("%d sessions", n)
	for range repeats {
		ui = newUI()
		ms, err := get("/", all)
		if err != nil {
			return nil, err
		}
		res.Cold = append(res.Cold, ms)
		if ms, err = get("/", all); err != nil {
			return nil, err
		}
		res.Warm = append(res.Warm, ms)
		if ms, err = get("/?q=web-4242", "1 of "+all); err != nil {
			return nil, err
		}
		res.Filtered = append(res.Filtered, ms)
		t0 := time.Now()
		if err := chromedp.Do(b.Ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
			return nil, err
		}
		ms = float64(time.Since(t0).Microseconds()) / 1000
		caption, err := chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS("caption")))
		if err != nil || !strings.HasPrefix(caption, all) {
			return nil, fmt.Errorf("the page in chromium: %v: %q", err, caption)
		}
		res.Browser = append(res.Browser, ms)
	}
	if p := b.Problems(); len(p) > 0 {
		return nil, fmt.Errorf("the page logged errors: %q", p)
	}
	return res, nil
}

// writeRecordingsPage is the recorder page's section.
func writeRecordingsPage(p func(string, ...any), r *RecordingsPageResult) {
	p("\n## The recorder's page with %d sessions\n\n", r.Sessions)
	p("The recorder's web page (`recorder.UI`, served on 127.0.0.1: the tailnet hop is the same for any page) over %d recordings of short sessions, %d repeats. ", r.Sessions, len(r.Warm))
	p("It lists the newest 500 with the count of all. Cold: the first list of a new server, which reads each file's header and last event (the files are in the page cache, as on a recorder that has run a while). Warm: the next list, which reads only files that changed. Filtered: a filter that matches one session. Chromium: the page's load in headless chromium, index warm. Target: under 1 s.\n\n")
	p("| List | Time | Under 1 s |\n|---|---|---|\n")
	for _, row := range []struct {
		name string
		s    Sample
	}{{"cold (server)", r.Cold}, {"warm (server)", r.Warm}, {"filtered (server)", r.Filtered}, {"in chromium (load event)", r.Browser}} {
		met := "met"
		if row.s.Median() >= 1000 {
			met = "**not met**"
		}
		p("| %s | %s | %s |\n", row.name, pm(row.s, " ms", 0), met)
	}
}
