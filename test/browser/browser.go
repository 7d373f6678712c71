// Package browser drives Debian's chromium, headless, for tests of the
// project's web pages: what a user's browser runs, scripts, Content
// Security Policy and all.
package browser

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

// Path is Debian's chromium, which .ci/run installs.
const Path = "/usr/bin/chromium"

// Browser is one headless chromium with a fresh profile; Ctx is its tab.
type Browser struct {
	Ctx context.Context

	mu       sync.Mutex
	problems []string
}

// Start starts chromium for t, sending every request through the SOCKS5
// proxy at socks (host:port; "" for none), as a user's browser on a
// tailnet device reaches the tailnet through tailscaled's. It stops with
// t, or when ctx ends.
func Start(t testing.TB, ctx context.Context, socks string) *Browser {
	t.Helper()
	b, stop, err := New(ctx, socks, t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return b
}

// New starts chromium with its profile in dir (a fresh directory), as
// Start does, for callers without a test (make bench); stop ends it.
func New(ctx context.Context, socks, dir string, logf func(string, ...any)) (_ *Browser, stop func(), err error) {
	if _, err := os.Stat(Path); err != nil {
		return nil, nil, fmt.Errorf("no browser: %v (install Debian's chromium: apt-get install chromium; .ci/run does)", err)
	}
	// The flags keep chromium to the pages it is sent to: this machine's
	// network is closed, and its own background requests would be refused.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(dir),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true))
	if socks != "" {
		opts = append(opts, chromedp.ProxyServer("socks5://"+socks))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(logf))
	stop = func() {
		cancel()
		cancelAlloc()
	}
	if err := chromedp.Do(bctx); err != nil {
		stop()
		return nil, nil, fmt.Errorf("starting chromium: %w", err)
	}
	b := &Browser{Ctx: bctx}
	messages := chromedp.Console(bctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// Exceptions, console errors, refused loads and Content
			// Security Policy violations.
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.problems = append(b.problems, m.String()+" ("+m.URL+")")
				b.mu.Unlock()
			}
		}
	}()
	return b, stop, nil
}

// Problems are the errors the pages logged since the last call: script
// exceptions, console errors, refused loads and policy violations.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}
