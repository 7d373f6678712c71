package contract

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// EgressTarget is one entry of an egress list: a tailnet destination, and
// for explicit egress the local port that forwards to it.
type EgressTarget struct {
	LocalPort uint16 // 0: reachable through the proxies (or transparently) only
	Host      string // MagicDNS name (short or FQDN) or IP
	Port      uint16
}

func (t EgressTarget) String() string {
	hp := JoinHostPort(t.Host, t.Port)
	if t.LocalPort != 0 {
		return strconv.Itoa(int(t.LocalPort)) + "=" + hp
	}
	return hp
}

// JoinHostPort is net.JoinHostPort for a numeric port.
func JoinHostPort(host string, port uint16) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(int(port))
	}
	return host + ":" + strconv.Itoa(int(port))
}

// ParseEgress parses "host:port" and "LOCALPORT=host:port" entries separated
// by commas or whitespace. Errors name the bad entry and what is allowed.
func ParseEgress(s string) ([]EgressTarget, error) {
	var out []EgressTarget
	seenLocal := map[uint16]string{}
	for _, f := range fields(s) {
		var t EgressTarget
		spec := f
		if lp, rest, ok := strings.Cut(f, "="); ok {
			p, err := parsePort(lp)
			if err != nil {
				return nil, fmt.Errorf("entry %q: local port: %v", f, err)
			}
			t.LocalPort, spec = p, rest
		}
		host, port, err := SplitHostPort(spec)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %v (want host:port or LOCALPORT=host:port)", f, err)
		}
		if err := ValidateHost(host); err != nil {
			return nil, fmt.Errorf("entry %q: %v", f, err)
		}
		t.Host, t.Port = host, port
		if t.LocalPort != 0 {
			if prev, dup := seenLocal[t.LocalPort]; dup {
				return nil, fmt.Errorf("entry %q: local port %d is already used by %q", f, t.LocalPort, prev)
			}
			seenLocal[t.LocalPort] = f
		}
		out = append(out, t)
	}
	return out, nil
}

// FormatEgress is the inverse of ParseEgress.
func FormatEgress(ts []EgressTarget) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.String()
	}
	return strings.Join(parts, ",")
}

// SplitHostPort splits host:port, [v6]:port.
func SplitHostPort(s string) (string, uint16, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return "", 0, fmt.Errorf("missing port")
	}
	host, ps := s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return "", 0, fmt.Errorf("IPv6 address must be in brackets, as [fd7a:115c:a1e0::1]:80")
	}
	p, err := parsePort(ps)
	if err != nil {
		return "", 0, err
	}
	return host, p, nil
}

// ValidateHost accepts an IP address or a DNS name (MagicDNS short name or
// FQDN, with an optional trailing dot).
func ValidateHost(h string) error {
	if h == "" {
		return fmt.Errorf("empty host")
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	name := strings.TrimSuffix(h, ".")
	if len(name) > 253 {
		return fmt.Errorf("host %q is longer than 253 characters", h)
	}
	for _, label := range strings.Split(name, ".") {
		if !IsDNSLabel(label) {
			return fmt.Errorf("host %q is neither an IP address nor a DNS name (label %q: lowercase letters, digits and '-', 1-63 characters)", h, label)
		}
	}
	return nil
}

// IsDNSLabel reports whether s is an RFC 1123 label (case-insensitive).
func IsDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20 // lower-case letters; digits and '-' are unaffected
		switch {
		case c >= 'a' && c <= 'z', s[i] >= '0' && s[i] <= '9':
		case s[i] == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// Expose maps a port on the node's tailnet addresses to a pod port.
type Expose struct {
	TailnetPort uint16
	PodPort     uint16
}

func (e Expose) String() string {
	if e.TailnetPort == e.PodPort {
		return strconv.Itoa(int(e.PodPort))
	}
	return strconv.Itoa(int(e.TailnetPort)) + ":" + strconv.Itoa(int(e.PodPort))
}

// ParseExpose parses "PORT" and "TAILNETPORT:PODPORT" entries (numeric;
// the injector resolves named container ports before the sidecar sees them).
func ParseExpose(s string) ([]Expose, error) {
	var out []Expose
	seen := map[uint16]bool{}
	for _, f := range fields(s) {
		tp, pp, hasMap := strings.Cut(f, ":")
		if !hasMap {
			pp = tp
		}
		t, err := parsePort(tp)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %v (want PORT or TAILNETPORT:PODPORT)", f, err)
		}
		p, err := parsePort(pp)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %v (want PORT or TAILNETPORT:PODPORT)", f, err)
		}
		if name, ok := sidecarPorts[p]; ok {
			return nil, fmt.Errorf("entry %q: pod port %d is the sidecar's own %s, which must not be offered on the tailnet (expose the app's ports)", f, p, name)
		}
		if seen[t] {
			return nil, fmt.Errorf("entry %q: tailnet port %d is listed twice", f, t)
		}
		seen[t] = true
		out = append(out, Expose{TailnetPort: t, PodPort: p})
	}
	return out, nil
}

// sidecarPorts are the sidecar's own listeners. Exposing one would hand
// tailnet peers the pod's egress proxies (and so the pod's tailnet
// identity) or its redirect and DNS ports.
var sidecarPorts = map[uint16]string{
	SOCKS5Port:    "SOCKS5 proxy",
	HTTPProxyPort: "HTTP proxy",
	RedirectPort:  "transparent-egress redirect port",
	DNSPort:       "transparent-egress DNS port",
	HealthPort:    "health and metrics port",
}

// FormatExpose is the inverse of ParseExpose.
func FormatExpose(es []Expose) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.String()
	}
	return strings.Join(parts, ",")
}

// ParseTags parses a comma- or space-separated list of "tag:name" entries.
func ParseTags(s string) ([]string, error) {
	var out []string
	for _, f := range fields(s) {
		if err := ValidateTag(f); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// ValidateTag checks Tailscale's tag syntax: "tag:" then a letter, then
// letters, digits and dashes.
func ValidateTag(t string) error {
	name, ok := strings.CutPrefix(t, "tag:")
	if !ok {
		return fmt.Errorf("tag %q must start with \"tag:\"", t)
	}
	if name == "" {
		return fmt.Errorf("tag %q has an empty name", t)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '-')) {
			return fmt.Errorf("tag %q: the name must start with a letter and hold only letters, digits and '-'", t)
		}
	}
	return nil
}

// ValidateTemplate checks a name template (hostname, state Secret) for
// unknown placeholders and characters that can never form a DNS label.
func ValidateTemplate(tmpl string) error {
	rest := tmpl
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return fmt.Errorf("%q: unclosed '{'", tmpl)
		}
		ph := rest[i : i+j+1]
		if ph != PlaceholderName && ph != PlaceholderNamespace {
			return fmt.Errorf("%q: unknown placeholder %s (allowed: %s, %s)", tmpl, ph, PlaceholderName, PlaceholderNamespace)
		}
		rest = rest[i+j+1:]
	}
	lit := strings.NewReplacer(PlaceholderName, "", PlaceholderNamespace, "").Replace(tmpl)
	for _, c := range lit {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%q: character %q is not allowed (lowercase letters, digits, '-' and the placeholders %s, %s)", tmpl, c, PlaceholderName, PlaceholderNamespace)
		}
	}
	return nil
}

// RenderName fills in a template and makes the result a DNS label: it
// lowercases, maps other characters to '-', trims dashes and cuts to 63.
func RenderName(tmpl, name, namespace string) string {
	s := strings.NewReplacer(PlaceholderName, name, PlaceholderNamespace, namespace).Replace(tmpl)
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	out := strings.Trim(string(b), "-")
	if len(out) > 63 {
		out = strings.TrimRight(out[:63], "-")
	}
	return out
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
}

// ParsePrefixes parses a comma-separated list of CIDRs (routes, ranges),
// masking each to its network.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range fields(s) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.96.0.0/12", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// PortMap is one port of an egress proxy: it listens on Port for Proto
// and forwards to TargetPort of the tailnet target.
type PortMap struct {
	Proto      string // "tcp" or "udp"
	Port       uint16
	TargetPort uint16
}

func (m PortMap) String() string {
	if m.Port == m.TargetPort {
		return strconv.Itoa(int(m.Port)) + "/" + m.Proto
	}
	return strconv.Itoa(int(m.Port)) + ":" + strconv.Itoa(int(m.TargetPort)) + "/" + m.Proto
}

// ParsePortMaps parses "PORT/PROTO" and "PORT:TARGETPORT/PROTO" entries
// (PROTO tcp or udp), separated by commas.
func ParsePortMaps(s string) ([]PortMap, error) {
	var out []PortMap
	seen := map[string]bool{}
	for _, f := range fields(s) {
		ports, proto, ok := strings.Cut(f, "/")
		if !ok || (proto != "tcp" && proto != "udp") {
			return nil, fmt.Errorf("entry %q: want PORT/PROTO or PORT:TARGETPORT/PROTO with PROTO tcp or udp", f)
		}
		lp, tp, mapped := strings.Cut(ports, ":")
		m := PortMap{Proto: proto}
		var err error
		if m.Port, err = parsePort(lp); err != nil {
			return nil, fmt.Errorf("entry %q: %v", f, err)
		}
		m.TargetPort = m.Port
		if mapped {
			if m.TargetPort, err = parsePort(tp); err != nil {
				return nil, fmt.Errorf("entry %q: target %v", f, err)
			}
		}
		if m.Port == HealthPort {
			return nil, fmt.Errorf("entry %q: port %d is the proxy's health and metrics port", f, HealthPort)
		}
		key := strconv.Itoa(int(m.Port)) + "/" + proto
		if seen[key] {
			return nil, fmt.Errorf("entry %q: port %s is listed twice", f, key)
		}
		seen[key] = true
		out = append(out, m)
	}
	return out, nil
}

// FormatPortMaps is the inverse of ParsePortMaps.
func FormatPortMaps(ms []PortMap) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return strings.Join(parts, ",")
}
