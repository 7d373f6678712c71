// Package egresscheck runs a command under strace and reports every network
// destination it sent to, so tests can prove that nothing they start talks
// to an address outside loopback and the test's own network namespaces.
package egresscheck

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"sort"
)

// Allowed are the destinations tests may use: loopback and the benchmark
// range (RFC 2544) that test hosts in test-made network namespaces use.
var Allowed = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("198.18.0.0/15"),
}

var (
	v4 = regexp.MustCompile(`inet_addr\("([0-9.]+)"\)`)
	v6 = regexp.MustCompile(`inet_pton\(AF_INET6, "([0-9a-fA-F:.]+)"`)
)

// Run runs cmd under `strace -f` (tracing connect, sendto and sendmsg) and
// returns the distinct IP destinations it used, sorted. The command's
// stdout and stderr are returned too. strace must be installed (.ci/run
// installs it); its absence is an error, never a silent pass.
func Run(ctx context.Context, cmd *exec.Cmd) (dests []netip.Addr, output []byte, err error) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		return nil, nil, fmt.Errorf("strace is required to check egress (apt-get install strace): %w", err)
	}
	trace, err := os.CreateTemp("", "egress-*.trace")
	if err != nil {
		return nil, nil, err
	}
	trace.Close()
	defer os.Remove(trace.Name())

	args := append([]string{"-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", trace.Name(), cmd.Path}, cmd.Args[1:]...)
	wrapped := exec.CommandContext(ctx, strace, args...)
	wrapped.Env, wrapped.Dir, wrapped.Stdin = cmd.Env, cmd.Dir, cmd.Stdin
	output, runErr := wrapped.CombinedOutput()

	data, err := os.ReadFile(trace.Name())
	if err != nil {
		return nil, output, err
	}
	dests = Parse(data)
	if runErr != nil {
		return dests, output, fmt.Errorf("%s: %w", cmd.Path, runErr)
	}
	return dests, output, nil
}

// Parse extracts IP destinations from strace output.
func Parse(trace []byte) []netip.Addr {
	seen := map[netip.Addr]bool{}
	sc := bufio.NewScanner(bytes.NewReader(trace))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		for _, re := range []*regexp.Regexp{v4, v6} {
			for _, m := range re.FindAllSubmatch(line, -1) {
				if a, err := netip.ParseAddr(string(m[1])); err == nil {
					seen[a.Unmap()] = true
				}
			}
		}
	}
	out := make([]netip.Addr, 0, len(seen))
	for a := range seen {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// Disallowed returns the destinations outside Allowed. The unspecified
// address (a connect to 0.0.0.0 used to probe routes) never leaves the host.
func Disallowed(dests []netip.Addr) []netip.Addr {
	var bad []netip.Addr
outer:
	for _, d := range dests {
		if d.IsUnspecified() {
			continue
		}
		for _, p := range Allowed {
			if p.Contains(d) {
				continue outer
			}
		}
		bad = append(bad, d)
	}
	return bad
}
