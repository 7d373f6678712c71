package contract

import (
	"strings"
	"testing"
)

func TestParseEgress(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "db:5432", want: "db:5432"},
		{in: "5432=db.tail-x.ts.net:5432, 100.64.0.7:80\n[fd7a:115c:a1e0::7]:443", want: "5432=db.tail-x.ts.net:5432,100.64.0.7:80,[fd7a:115c:a1e0::7]:443"},
		{in: "db.tail-x.ts.net.:80", want: "db.tail-x.ts.net.:80"},
		{in: "", want: ""},
		{in: "db", err: "missing port"},
		{in: "db:0", err: "not a number from 1 to 65535"},
		{in: "db:http", err: "not a number"},
		{in: "x=db:80", err: "local port: port \"x\""},
		{in: "fd7a::1:80", err: "in brackets"},
		{in: "bad_host:80", err: "neither an IP address nor a DNS name"},
		{in: "80=a:1,80=b:2", err: "already used"},
	}
	for _, tt := range tests {
		got, err := ParseEgress(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseEgress(%q) err = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseEgress(%q): %v", tt.in, err)
			continue
		}
		if s := FormatEgress(got); s != tt.want {
			t.Errorf("ParseEgress(%q) = %q, want %q", tt.in, s, tt.want)
		}
	}
}

func TestParseExpose(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "80", want: "80"},
		{in: "80, 443:8443", want: "80,443:8443"},
		{in: "http", err: "not a number"},
		{in: "80,80:81", err: "listed twice"},
		// The sidecar's own listeners stay off the tailnet.
		{in: "1080:1055", err: "sidecar's own SOCKS5 proxy"},
		{in: "1056", err: "sidecar's own HTTP proxy"},
		{in: "80:15001", err: "redirect port"},
		{in: "53:15053", err: "DNS port"},
		{in: "9002", err: "health and metrics"},
		{in: "1055:8080", want: "1055:8080"}, // a tailnet port may be any
	}
	for _, tt := range tests {
		got, err := ParseExpose(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseExpose(%q) err = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || FormatExpose(got) != tt.want {
			t.Errorf("ParseExpose(%q) = %q, %v; want %q", tt.in, FormatExpose(got), err, tt.want)
		}
	}
}

func TestTags(t *testing.T) {
	for _, ok := range []string{"tag:k8s", "tag:web-1", "tag:A1"} {
		if err := ValidateTag(ok); err != nil {
			t.Errorf("ValidateTag(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"k8s", "tag:", "tag:1web", "tag:web_1", "tag:-x"} {
		if err := ValidateTag(bad); err == nil {
			t.Errorf("ValidateTag(%q) = nil", bad)
		}
	}
}

func TestTemplates(t *testing.T) {
	for _, ok := range []string{DefaultHostname, "web", "web-{name}", DefaultStateSecret} {
		if err := ValidateTemplate(ok); err != nil {
			t.Errorf("ValidateTemplate(%q): %v", ok, err)
		}
	}
	for tmpl, want := range map[string]string{"{pod}": "unknown placeholder {pod}", "web_{name}": "character '_'", "{name": "unclosed"} {
		if err := ValidateTemplate(tmpl); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateTemplate(%q) = %v, want %q", tmpl, err, want)
		}
	}
	if got := RenderName(DefaultHostname, "Web.1", "prod"); got != "prod-web-1" {
		t.Errorf("RenderName = %q", got)
	}
	long := RenderName("{name}", strings.Repeat("a", 62)+"-b", "x")
	if len(long) > 63 || strings.HasSuffix(long, "-") {
		t.Errorf("RenderName long = %q", long)
	}
}

func TestParsePortMaps(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "5432/tcp", want: "5432/tcp"},
		{in: "53/udp, 53/tcp,80:8080/tcp", want: "53/udp,53/tcp,80:8080/tcp"},
		{in: "80:80/tcp", want: "80/tcp"},
		{in: "80", err: "want PORT/PROTO"},
		{in: "80/sctp", err: "tcp or udp"},
		{in: "0/tcp", err: "from 1 to 65535"},
		{in: "80:x/tcp", err: "target port"},
		{in: "80/tcp,80:81/tcp", err: "listed twice"},
		{in: "9002/tcp", err: "health and metrics"},
	}
	for _, tt := range tests {
		got, err := ParsePortMaps(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParsePortMaps(%q) err = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || FormatPortMaps(got) != tt.want {
			t.Errorf("ParsePortMaps(%q) = %q, %v; want %q", tt.in, FormatPortMaps(got), err, tt.want)
		}
	}
}

func TestParsePoolServices(t *testing.T) {
	good := `[{"service":"a/db","target":"db","ports":"10000:5432/tcp,10001:53/udp"},{"service":"b/db","target":"100.64.0.5","ports":"10002:5432/tcp"}]`
	list, err := ParsePoolServices([]byte(good))
	if err != nil || len(list) != 2 || list[1].Target != "100.64.0.5" {
		t.Fatalf("ParsePoolServices(good) = %v, %v", list, err)
	}
	for _, bad := range []string{
		`[{"service":"a/db","target":"db","ports":"10000/tcp"},{"service":"b/db","target":"db","ports":"10000/tcp"}]`, // one port, two Services
		`[{"service":"db","target":"db","ports":"10000/tcp"}]`,
		`[{"service":"a/db","target":"","ports":"10000/tcp"}]`,
		`[{"service":"a/db","target":"db","ports":"80/tcp"}]`, // outside the pool's range
		`[{"service":"a/db","target":"db","ports":""}]`,
		`{`,
	} {
		if _, err := ParsePoolServices([]byte(bad)); err == nil {
			t.Errorf("ParsePoolServices(%s) accepted", bad)
		}
	}
}

// Web routes the proxy could not serve as written are refused, naming the
// route and field.
func TestParseWebRoutes(t *testing.T) {
	good := `[{"path":"/","backends":[{"addr":"10.0.0.1:80","weight":1}]},{"host":"*.apps.example.com","path":"/api","exact":true,"backends":[{"addr":"api.shop.svc:8080","h2c":true,"weight":3},{"addr":"[fd00::1]:80","weight":0}]}]`
	if routes, err := ParseWebRoutes(`[]`); err != nil || routes == nil {
		t.Errorf("[]: %v, %v; want no routes (a Gateway with no route attached yet)", routes, err)
	}
	routes, err := ParseWebRoutes(good)
	if err != nil || len(routes) != 2 || !routes[1].Backends[0].H2C || routes[1].Host != "*.apps.example.com" {
		t.Fatalf("%+v, %v", routes, err)
	}
	for _, tc := range []struct{ in, want string }{
		{`null`, "none given"},
		{"[" + strings.Repeat(`{"path":"/","backends":[{"addr":"a:80","weight":1}]},`, 256) + `{"path":"/","backends":[{"addr":"a:80","weight":1}]}]`, "257 routes; allowed: at most 256"},
		{`{`, "web routes:"},
		{`[{"path":"api","backends":[{"addr":"a:80","weight":1}]}]`, `web routes[0]: path "api" must start with /`},
		{`[{"path":"/","backends":[]}]`, "web routes[0]: no backends"},
		{`[{"path":"/","backends":[{"addr":"a","weight":1}]}]`, `web routes[0].backends[0]: addr "a"`},
		{`[{"path":"/","backends":[{"addr":"a:0","weight":1}]}]`, `port "0": allowed 1 to 65535`},
		{`[{"path":"/","backends":[{"addr":"A_B:80","weight":1}]}]`, `web routes[0].backends[0]: addr "A_B:80"`},
		{`[{"path":"/","backends":[{"addr":"a:80","weight":-1}]}]`, "weight -1: allowed 0 or more"},
		{`[{"path":"/","backends":[{"addr":"a:80","weight":0}]}]`, "every backend has weight 0"},
		{`[{"host":"bad_host","path":"/","backends":[{"addr":"a:80","weight":1}]}]`, "web routes[0]: host:"},
	} {
		if _, err := ParseWebRoutes(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}
