package connector

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/internal/clusteraddrs"
)

func TestExitDenied(t *testing.T) {
	deny := []netip.Prefix{netip.MustParsePrefix("198.19.16.0/24"), netip.MustParsePrefix("198.19.0.1/32")}
	for _, tc := range []struct {
		dst    string
		routes []string
		want   bool
	}{
		{"198.18.64.9", nil, false},                         // the world: forwarded
		{"169.254.169.254", nil, true},                      // cloud metadata
		{"fd00:ec2::254", nil, true},                        // AWS's metadata over IPv6
		{"fd20:ce::254", nil, true},                         // Google's over IPv6
		{"168.63.129.16", nil, true},                        // Azure's wire server
		{"fe80::1", nil, true},                              // link-local
		{"127.0.0.1", nil, true},                            // the pod itself
		{"::1", nil, true},                                  // the pod itself
		{"0.0.0.0", nil, true},                              // this host
		{"224.0.0.251", nil, true},                          // multicast
		{"198.19.16.1", nil, true},                          // the API server's ClusterIP
		{"198.19.0.1", nil, true},                           // the node: kubelet on 10250
		{"198.19.0.7", nil, false},                          // another host beside the node
		{"198.19.16.10", []string{"198.19.16.0/28"}, false}, // advertised explicitly
		{"169.254.169.254", []string{"169.254.169.254/32"}, false},
	} {
		var routes []netip.Prefix
		for _, r := range tc.routes {
			routes = append(routes, netip.MustParsePrefix(r))
		}
		if got := exitDenied(netip.MustParseAddr(tc.dst), routes, deny); got != tc.want {
			t.Errorf("exitDenied(%s, routes %v) = %v, want %v", tc.dst, tc.routes, got, tc.want)
		}
	}
}

// The manager's deny list reaches a running exit node through its file:
// read at start, re-read when it changes, kept when it breaks.
func TestDenyFileFollowsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deny")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logged []string
	d := &denyFile{path: path, logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }}
	denied := func(ip string) bool { return exitDenied(netip.MustParseAddr(ip), nil, d.current()) }
	d.load()
	if denied("198.18.7.7") || len(logged) != 1 {
		t.Fatalf("no file yet: denied %v, logged %q", denied("198.18.7.7"), logged)
	}
	write("198.18.7.7/32\n198.18.8.0/24\n")
	d.load()
	if !denied("198.18.7.7") || !denied("198.18.8.9") || denied("198.18.9.1") {
		t.Errorf("after the first list: %v", d.current())
	}
	write("198.18.9.0/24")
	d.load()
	if denied("198.18.7.7") || !denied("198.18.9.1") {
		t.Errorf("after a new node: %v", d.current())
	}
	write("not a cidr")
	d.load()
	if !denied("198.18.9.1") || !strings.Contains(logged[len(logged)-1], "keeping the previous one") {
		t.Errorf("a broken list replaced the good one: %v, %q", d.current(), logged)
	}
}

// A deny file that is no deny list (a token, say) is named in the error by
// its first characters only: errors reach logs and the pod's status.
func TestBadDenyFileIsNotEchoed(t *testing.T) {
	secret := "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ." + strings.Repeat("s3cr3t", 20)
	_, err := clusteraddrs.Parse("198.19.0.0/16\n" + secret)
	if err == nil || strings.Contains(err.Error(), strings.Repeat("s3cr3t", 3)) {
		t.Errorf("got %v, want an error without the file's contents", err)
	}
}
