package recorder

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/tsnode"
)

// The asciinema web player, vendored from its npm package (make
// vendor-player fetches and checks it; TestVendoredPlayer checks the files
// against these).
const (
	PlayerVersion      = "3.18.0"
	playerJSSHA256     = "752c9b528b664f5b16f27c68ba22fc7973d1d6063a1c3e4795a4c8015943acf6"
	playerCSSSHA256    = "981fe7bc6042048b2a373b6da297f747e324e90a8b6264e833e3a92cec22dfb9"
	sessionsPerPage    = 500
	maxFilterLen       = 200
	contentSecurityPol = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

//go:embed ui/*.html ui/static
var uiFiles embed.FS

// staticFiles are the files under /static/.
var staticFiles = func() fs.FS {
	sub, err := fs.Sub(uiFiles, "ui/static")
	if err != nil {
		panic(err)
	}
	return sub
}()

// crossSite refuses what another site's page makes a viewer's browser
// ask (the viewer's tailnet identity goes with it): reads whose timing
// could tell what a filter matches, loads of a recording. A link
// followed to the page itself (a navigation) is let through.
func crossSite(r *http.Request) error {
	site := r.Header.Get("Sec-Fetch-Site")
	if site == "" || site == "same-origin" || site == "none" {
		return nil // not a browser, or the page's own
	}
	if r.Header.Get("Sec-Fetch-Mode") == "navigate" && r.Header.Get("Sec-Fetch-Dest") == "document" {
		return nil
	}
	return fmt.Errorf("the recorder's page answers no %s request from another site's page", site)
}

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"since": func(d time.Duration) string {
		if d < time.Minute {
			return d.Round(100 * time.Millisecond).String()
		}
		return d.Round(time.Second).String()
	},
	"bytes": func(n int64) string {
		switch {
		case n >= 1<<20:
			return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
		case n >= 1<<10:
			return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
		}
		return strconv.FormatInt(n, 10) + " B"
	},
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
}).ParseFS(uiFiles, "ui/*.html"))

// UI is the recorder's web page: the list of sessions, a filter, and a
// player for each. It serves only callers whose grants give
// CapRecordings, and each only the namespaces the grants name.
type UI struct {
	Dir string
	// Open says whether a recording is still being written.
	Open func(name string) bool
	// Viewer is what the request's caller may see, or why nothing.
	Viewer func(r *http.Request) (Scope, error)
	// Hosts are the names the page is served under (the recorder's
	// tailnet names and addresses). A request for any other host is
	// refused: a web page that rebinds its own name to the recorder's
	// address would otherwise read recordings with its visitor's grants.
	Hosts func(r *http.Request) (names []string, addrs []netip.Addr, err error)
	Logf  logger.Logf

	ix index
}

func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPol)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "the recorder's page is read-only: allowed methods are GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	if err := u.hostAllowed(r); err != nil {
		http.Error(w, err.Error(), http.StatusMisdirectedRequest)
		return
	}
	if err := crossSite(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if name, ok := strings.CutPrefix(r.URL.Path, "/static/"); ok {
		// The player and the style sheet: public files, shown to a
		// caller refused too. Files only: no listing, nothing above.
		if !fs.ValidPath(name) || strings.Contains(name, "/") {
			http.NotFound(w, r)
			return
		}
		b, err := fs.ReadFile(staticFiles, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		h.Set("Cache-Control", "private, max-age=3600")
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
		return
	}
	scope, err := u.Viewer(r)
	if err != nil {
		u.page(w, http.StatusForbidden, "refused.html", map[string]any{"Reason": err.Error()})
		return
	}
	switch p := r.URL.Path; {
	case p == "/":
		u.list(w, r, scope)
	case strings.HasPrefix(p, "/sessions/"):
		u.play(w, r, scope, strings.TrimPrefix(p, "/sessions/"))
	case strings.HasPrefix(p, "/casts/"):
		u.cast(w, r, scope, strings.TrimPrefix(p, "/casts/"))
	default:
		http.NotFound(w, r)
	}
}

func (u *UI) hostAllowed(r *http.Request) error {
	names, addrs, err := u.Hosts(r)
	if err != nil {
		return fmt.Errorf("the recorder cannot tell its own names: %v", err)
	}
	if tsnode.HostAllowed(r.Host, names, addrs) {
		return nil
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	// Not which names: a rebinding page reads this answer.
	return fmt.Errorf("this recorder is not %q: open it by its tailnet name", host)
}

func (u *UI) page(w http.ResponseWriter, code int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		u.Logf("recorder: page %s: %v", name, err)
	}
}

// visible lists the sessions scope covers.
func (u *UI) visible(scope Scope) ([]Session, error) {
	all, err := u.ix.sessions(u.Dir, u.Open)
	if err != nil {
		return nil, err
	}
	out := all[:0:0]
	for i := range all {
		if scope.Allows(&all[i]) {
			out = append(out, all[i])
		}
	}
	return out, nil
}

// matches says whether s has every word of the filter in one of its
// fields.
func matches(s *Session, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s.search, w) {
			return false
		}
	}
	return true
}

func (u *UI) list(w http.ResponseWriter, r *http.Request, scope Scope) {
	sessions, err := u.visible(scope)
	if err != nil {
		u.Logf("recorder: listing recordings: %v", err)
		http.Error(w, "the recorder cannot list its recordings", http.StatusInternalServerError)
		return
	}
	q := r.URL.Query().Get("q")
	if len(q) > maxFilterLen {
		http.Error(w, fmt.Sprintf("q: the filter is %d bytes long; allowed: at most %d", len(q), maxFilterLen), http.StatusBadRequest)
		return
	}
	total := len(sessions)
	if words := strings.Fields(strings.ToLower(q)); len(words) > 0 {
		kept := sessions[:0]
		for i := range sessions {
			if matches(&sessions[i], words) {
				kept = append(kept, sessions[i])
			}
		}
		sessions = kept
	}
	page := 1
	if p := r.URL.Query().Get("page"); p != "" {
		if page, err = strconv.Atoi(p); err != nil || page < 1 {
			http.Error(w, fmt.Sprintf("page: %q is not a page number; allowed: 1 or more", p), http.StatusBadRequest)
			return
		}
	}
	pages := max((len(sessions)+sessionsPerPage-1)/sessionsPerPage, 1)
	page = min(page, pages)
	matched := len(sessions)
	shown := sessions[min((page-1)*sessionsPerPage, matched):min(page*sessionsPerPage, matched)]
	link := func(p int) string {
		v := url.Values{}
		if q != "" {
			v.Set("q", q)
		}
		if p > 1 {
			v.Set("page", strconv.Itoa(p))
		}
		if len(v) == 0 {
			return "/"
		}
		return "/?" + v.Encode()
	}
	data := map[string]any{"Sessions": shown, "Filter": q, "Total": total, "Matched": matched, "Page": page, "Pages": pages}
	if page > 1 {
		data["Prev"] = link(page - 1)
	}
	if page < pages {
		data["Next"] = link(page + 1)
	}
	u.page(w, http.StatusOK, "list.html", data)
}

// session finds the recording name names, if scope covers it. Names not
// of create's form are never looked for: they could reach other paths.
func (u *UI) session(scope Scope, name string) (*Session, bool) {
	if !castName.MatchString(name) {
		return nil, false
	}
	s, ok := readSession(filepath.Join(u.Dir, name), name)
	if !ok {
		return nil, false
	}
	if !scope.Allows(&s) {
		// As if it were not there: the name must not tell whose it is.
		return nil, false
	}
	s.Recording = u.Open(name)
	return &s, true
}

func (u *UI) play(w http.ResponseWriter, r *http.Request, scope Scope, name string) {
	s, ok := u.session(scope, name)
	if !ok {
		u.page(w, http.StatusNotFound, "refused.html", map[string]any{"Reason": "No recording of that name is yours to see."})
		return
	}
	u.page(w, http.StatusOK, "play.html", map[string]any{"S": s, "Cast": "/casts/" + s.Name})
}

func (u *UI) cast(w http.ResponseWriter, r *http.Request, scope Scope, name string) {
	s, ok := u.session(scope, name)
	if !ok {
		http.NotFound(w, r)
		return
	}
	f, _, err := openCast(filepath.Join(u.Dir, s.Name))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	u.Logf("recorder: %s (%s) viewed %s (%s/%s)", scope.Who, r.RemoteAddr, s.Name, s.Namespace(), podName(s))
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("Content-Disposition", `attachment; filename="`+s.Name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	http.ServeContent(w, r, "", time.Time{}, f)
}

func podName(s *Session) string {
	if s.Header.Kubernetes == nil {
		return ""
	}
	return s.Header.Kubernetes.PodName
}

// Handler serves st's uploads and the web page on one listener, as the
// recorder does on the tailnet; lc is the recorder node's, which tells
// who calls and under which names the recorder is reached.
func Handler(st *Store, lc *local.Client) http.Handler {
	ui := &UI{Dir: st.Dir, Open: st.open, Logf: st.Logf,
		Viewer: func(r *http.Request) (Scope, error) {
			who, err := lc.WhoIs(r.Context(), r.RemoteAddr)
			if err != nil {
				return Scope{}, fmt.Errorf("the recorder cannot tell who you are: %v", err)
			}
			sc, err := ViewScope(who.CapMap[CapRecordings])
			sc.Who = who.Node.ComputedName
			if who.UserProfile != nil && !who.Node.IsTagged() {
				sc.Who = who.UserProfile.LoginName
			}
			return sc, err
		},
		Hosts: func(r *http.Request) ([]string, []netip.Addr, error) {
			self, err := lc.StatusWithoutPeers(r.Context())
			if err != nil {
				return nil, nil, err
			}
			if self.Self == nil {
				return nil, nil, errors.New("not on the tailnet")
			}
			return tsnode.HostNames(self.Self.DNSName), self.Self.TailscaleIPs, nil
		}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/record" || r.URL.Path == "/v2/record" {
			st.ServeHTTP(w, r)
			return
		}
		ui.ServeHTTP(w, r)
	})
}
