package main

import (
	"flag"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Only proxies that fail over may share one name: two Connector or egress
// replicas sharing one would log in as one device at once. Those that may
// share the first replica's state Secret.
func TestOneNameOnlyWhereItFailsOver(t *testing.T) {
	for _, tc := range []struct {
		failsOver bool
		secret    string
		err       string
	}{
		{false, "", "--one-name: this proxy cannot share one name"},
		{true, "ts-ingress-web-1a2b-0", ""},
	} {
		var o tsnode.Options
		fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
		settings := cli.Bind(fs, o.ProxySettings(new(string)))
		if err := fs.Parse([]string{"--one-name", "--pod-name", "ts-ingress-web-1a2b-3", "--state-dir", t.TempDir()}); err != nil {
			t.Fatal(err)
		}
		err := finishNode(settings, &o, tc.failsOver)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("fails over %v: %v", tc.failsOver, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("fails over %v: error %v, want %q", tc.failsOver, err, tc.err)
		case tc.err == "" && o.Secret != tc.secret:
			t.Errorf("state Secret %q, want the first replica's %q", o.Secret, tc.secret)
		}
	}
}
