//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/test/dnsstub"
	"github.com/tsinject/tsinject/test/echoapp"
)

// Transparent egress carries UDP and ICMP, from unmodified apps, on the
// real node: the sidecar (no capabilities) attaches to the TUN init made,
// and the app pings the tailnet peer, asks a nameserver on the tailnet,
// does a UDP echo round trip (IPv4 and IPv6) and an HTTP/3 request by
// MagicDNS name; the pod completes.
func TestTransparentUDPAndICMP(t *testing.T) {
	ns := namespace(t, "udp")
	db := env.db
	for _, ip := range []netip.Addr{db.IPv4, db.IPv6} {
		echo, err := db.ListenPacket("udp", netip.AddrPortFrom(ip, 7).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { echo.Close() })
		go echoapp.UDPEcho(echo)
		dns, err := db.ListenPacket("udp", netip.AddrPortFrom(ip, 53).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dns.Close() })
		go dnsstub.Serve(dns, func(name string) (netip.Addr, bool) {
			return netip.MustParseAddr("198.18.7.7"), name == "printer.office.example."
		})
	}
	quic, err := db.ListenPacket("udp", netip.AddrPortFrom(db.IPv4, 443).String())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, h3, err := echoapp.ServeHTTP3(quic, db.FQDN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h3.Close() })

	var ping strings.Builder
	for _, ip := range []netip.Addr{db.IPv4, db.IPv6} {
		fmt.Fprintf(&ping, "$B ping -c 3 -W 5 %s | $B grep -q '3 packets received' && echo 'ok ping %s'\n", ip, ip)
		fmt.Fprintf(&ping, "$B nslookup printer.office.example %s | $B grep -q 198.18.7.7 && echo 'ok dns %s'\n", ip, ip)
	}
	probes := []string{"udp", netip.AddrPortFrom(db.IPv4, 7).String(), "udp", netip.AddrPortFrom(db.IPv6, 7).String(), "h3", "https://" + db.FQDN + "/"}
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: udp
  annotations: {tsinject.dev/egress-mode: transparent}
spec:
  restartPolicy: Never
  containers:
  - name: ping # root: busybox pings through a raw socket
    image: %s
    imagePullPolicy: Never
    securityContext: {runAsUser: 0}
    command: ["/bin/busybox", "sh", "-c", %q]
  - name: probe
    image: %s
    imagePullPolicy: Never
    env: [{name: ECHOAPP_CA, value: %q}]
    command: [%s]
`, appImage, "set -e\nB=/bin/busybox\n"+ping.String(), echoImage, certPEM, quoteArgs(append([]string{"/usr/local/bin/echoapp"}, probes...))))
	_, took := waitPod(t, ns, "udp", "Succeeded", succeeded)
	out := logs(t, ns, "udp", "ping") + logs(t, ns, "udp", "probe")
	for _, ip := range []netip.Addr{db.IPv4, db.IPv6} {
		for _, want := range []string{"ok ping " + ip.String(), "ok dns " + ip.String(), "ok udp " + netip.AddrPortFrom(ip, 7).String()} {
			if !strings.Contains(out, want) {
				t.Errorf("app logs lack %q:\n%s", want, out)
			}
		}
	}
	if !strings.Contains(out, "HTTP/3.0 "+echoapp.HTTP3Greeting) {
		t.Errorf("no HTTP/3 answer:\n%s", out)
	}
	figure(t, "pod Succeeded %.1fs after creation: ping, DNS and UDP echo over IPv4 and IPv6, HTTP/3", took.Seconds())
}

// quoteArgs is a YAML flow list of args.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, ", ")
}
