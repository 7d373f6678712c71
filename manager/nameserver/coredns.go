package nameserver

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/tsinject/tsinject/internal/contract"
)

// CoreDNSSnippet is the server block the cluster's CoreDNS needs to send
// the tailnet's zones to the nameserver at ip, naming the asking pod.
//
// The kubernetes plugin here (pods verified) only supplies the asker's
// namespace and name, as metadata; it serves no names in this block. The
// unset rules first remove options a pod sent itself, which would
// otherwise pass when CoreDNS does not know the asker. No cache: CoreDNS's
// is keyed by name alone and would give one namespace's answer to another.
func CoreDNSSnippet(zones []string, ip, clusterDomain string) string {
	var keys []string
	for _, z := range zones {
		keys = append(keys, strings.TrimSuffix(z, ".")+":53")
	}
	return fmt.Sprintf(`%s {
    errors
    metadata
    kubernetes %s {
        pods verified
    }
    rewrite continue edns0 local unset %#x
    rewrite continue edns0 local unset %#x
    rewrite continue edns0 local set %#x {kubernetes/client-namespace}
    rewrite continue edns0 local set %#x {kubernetes/client-pod-name}
    forward . %s
}
`, strings.Join(keys, " "), strings.TrimSuffix(clusterDomain, "."),
		contract.DNSOptionNamespace, contract.DNSOptionPod, contract.DNSOptionNamespace, contract.DNSOptionPod, ip)
}

// serverBlock is one server block of a Corefile: its zones and the lines
// of its body, each trimmed, comments removed.
type serverBlock struct {
	zones []string
	lines []string
}

// parseCorefile reads the server blocks of a Corefile, enough to check
// them: a block opens on a line ending in "{" at depth 0.
func parseCorefile(s string) []serverBlock {
	var out []serverBlock
	depth := 0
	for _, raw := range strings.Split(s, "\n") {
		line := raw
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		opens, closes := strings.Count(line, "{"), strings.Count(line, "}")
		if depth == 0 && opens > 0 {
			var zones []string
			for _, k := range strings.Fields(strings.TrimSuffix(line, "{")) {
				k = strings.TrimPrefix(k, "dns://")
				k, _, _ = strings.Cut(k, ":")
				zones = append(zones, strings.TrimSuffix(strings.ToLower(k), ".")+".")
			}
			out = append(out, serverBlock{zones: zones})
		} else if depth > 0 && len(out) > 0 {
			out[len(out)-1].lines = append(out[len(out)-1].lines, strings.Join(strings.Fields(line), " "))
		}
		depth += opens - closes
		if depth < 0 {
			depth = 0
		}
	}
	return out
}

var forwardTo = regexp.MustCompile(`^forward \. (.+)$`)

// CheckCorefile says what the Corefile lacks for each zone to reach the
// nameserver at ip naming the asker; none: it is set up.
func CheckCorefile(corefile string, zones []string, ip string) []string {
	blocks := parseCorefile(corefile)
	var problems []string
	for _, z := range zones {
		var b *serverBlock
		for i := range blocks {
			for _, bz := range blocks[i].zones {
				if bz == z {
					b = &blocks[i]
				}
			}
		}
		name := strings.TrimSuffix(z, ".")
		if b == nil {
			problems = append(problems, fmt.Sprintf("no server block for %s", name))
			continue
		}
		has := func(want string) bool {
			for _, l := range b.lines {
				if l == want {
					return true
				}
			}
			return false
		}
		var miss []string
		forwards, cached := false, false
		for _, l := range b.lines {
			if m := forwardTo.FindStringSubmatch(l); m != nil {
				for _, to := range strings.Fields(m[1]) {
					to = strings.TrimPrefix(to, "dns://")
					if to == ip || to == ip+":53" {
						forwards = true
					}
				}
			}
			if l == "cache" || strings.HasPrefix(l, "cache ") {
				cached = true
			}
		}
		if !forwards {
			miss = append(miss, "forward . "+ip)
		}
		for _, want := range []string{"metadata", "pods verified",
			fmt.Sprintf("rewrite continue edns0 local unset %#x", contract.DNSOptionNamespace),
			fmt.Sprintf("rewrite continue edns0 local unset %#x", contract.DNSOptionPod),
			fmt.Sprintf("rewrite continue edns0 local set %#x {kubernetes/client-namespace}", contract.DNSOptionNamespace),
			fmt.Sprintf("rewrite continue edns0 local set %#x {kubernetes/client-pod-name}", contract.DNSOptionPod)} {
			if !has(want) {
				miss = append(miss, want)
			}
		}
		if len(miss) > 0 {
			problems = append(problems, fmt.Sprintf("the %s block lacks: %s", name, strings.Join(miss, "; ")))
		}
		if cached {
			problems = append(problems, fmt.Sprintf("the %s block caches: remove cache (CoreDNS's cache is keyed by name alone and would give one namespace's answers to another)", name))
		}
	}
	return problems
}
