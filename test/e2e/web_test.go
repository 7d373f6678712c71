//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/echoapp"
	"github.com/tsinject/tsinject/test/tailnet"
)

// echoApp is a web app (test/echoapp) and its Service: HTTP on port 80,
// gRPC (HTTP/2 without TLS) on 9000.
var echoApp = fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: echo
  labels: {app: echo, tsinject.dev/inject: "false"}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: %s
    imagePullPolicy: Never
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9000, targetPort: 9000, appProtocol: kubernetes.io/h2c}
`, echoImage)

// An Ingress of class tsinject on the real node: a tailnet client gets
// 200 over HTTPS (HTTP/2) with a certificate for the Ingress's tailnet
// name that verifies against Let's Encrypt's test CA, issued through the
// control server's DNS-01 flow; the app sees the caller's identity and
// not the one the client forged; HTTP is redirected; WebSocket and gRPC
// pass through. An Ingress naming a Service that does not exist gets an
// Event naming the field.
func TestHTTPSIngress(t *testing.T) {
	ns := namespace(t, "https")
	start := time.Now()
	apply(t, ns, echoApp+`---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: app}
spec:
  ingressClassName: tsinject
  tls: [{hosts: [https-app]}]
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {name: http}}}}
      - {path: /grpc.health.v1.Health, pathType: Prefix, backend: {service: {name: echo, port: {name: grpc}}}}
`)
	ctx := testCtx(t, podDeadline)
	var host string
	if err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", ns, "get", "ingress", "app", "-o", `jsonpath={.status.loadBalancer.ingress[0].hostname}`)
		if host = strings.TrimSpace(out); err != nil || host == "" {
			return fmt.Errorf("no tailnet name in status.loadBalancer yet (%v): %s", err, out)
		}
		return nil
	}); err != nil {
		out, _ := kubectl(ctx, "-n", system, "describe", "statefulsets,pods", "-l", "app.kubernetes.io/component=web")
		ev, _ := kubectl(ctx, "-n", ns, "describe", "ingress", "app")
		t.Fatalf("%v\n%s\n%s", err, ev, out)
	}
	figure(t, "status.loadBalancer.ingress names %s %.1fs after apply (the certificate fetched first)", host, time.Since(start).Seconds())
	if host != env.tn.FQDN("https-app") {
		t.Errorf("tailnet name %q, want %s (spec.tls[0].hosts[0])", host, env.tn.FQDN("https-app"))
	}
	waitPod(t, ns, "echo", "Ready", ready)

	laptop, err := env.tn.NewNode(ctx, "laptop-https", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()
	servesHTTPS(t, ctx, laptop, host, start)

	// tsinject check reads the certificate the proxy serves.
	if err := waitFor(ctx, func(context.Context) error {
		if r := checkResult(t, "Ingress certificates"); !r.OK || !strings.Contains(r.Detail, "1 of 1 valid; the first to expire: "+ns+"/app") {
			return fmt.Errorf("tsinject check: %+v", r)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// A backend that does not exist: an Event says which field.
	apply(t, ns, `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken}
spec:
  ingressClassName: tsinject
  defaultBackend: {service: {name: nope, port: {number: 80}}}
`)
	if err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", ns, "get", "events", "--field-selector", "involvedObject.kind=Ingress,involvedObject.name=broken", "-o", "jsonpath={.items[*].note}{.items[*].message}")
		if err != nil || !strings.Contains(out, "spec.defaultBackend.service.name: Service "+ns+"/nope does not exist") {
			return fmt.Errorf("events of Ingress broken: %v %q", err, out)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// A Gateway of class tsinject and an HTTPRoute on the real node: the
// Gateway gets the tailnet name its listener asks for, its status the
// name and addresses, the route an Accepted entry; a tailnet client gets
// what it gets from an Ingress (servesHTTPS). A route naming a Service
// that does not exist says so in its status, and the Gateway serves on.
func TestHTTPSGateway(t *testing.T) {
	ns := namespace(t, "gateway")
	start := time.Now()
	want := env.tn.FQDN("gateway-portal")
	apply(t, ns, echoApp+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: portal}
spec:
  gatewayClassName: tsinject
  listeners:
  - {name: https, protocol: HTTPS, port: 443, hostname: `+want+`}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app}
spec:
  parentRefs: [{name: portal}]
  hostnames: [`+want+`]
  rules:
  - backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /grpc.health.v1.Health}}]
    backendRefs: [{name: echo, port: 9000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken}
spec:
  parentRefs: [{name: portal}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /broken}}]
    backendRefs: [{name: nope, port: 80}]
`)
	ctx := testCtx(t, podDeadline)
	var host string
	if err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", ns, "get", "gateway", "portal", "-o", `jsonpath={.status.addresses[0].value} {.status.conditions[?(@.type=="Programmed")].status}`)
		if err != nil || !strings.HasSuffix(strings.TrimSpace(out), " True") {
			return fmt.Errorf("Gateway not Programmed yet (%v): %s", err, out)
		}
		host, _, _ = strings.Cut(strings.TrimSpace(out), " ")
		return nil
	}); err != nil {
		dctx := testCtx(t, stepDeadline)
		out, _ := kubectl(dctx, "-n", system, "describe", "statefulsets,pods", "-l", "app.kubernetes.io/component=gateway")
		gw, _ := kubectl(dctx, "-n", ns, "get", "gateway,httproute", "-o", "yaml")
		logs, _ := kubectl(dctx, "-n", system, "logs", "-l", "app.kubernetes.io/component=manager", "--tail=40", "--prefix")
		t.Fatalf("%v\n%s\n%s\n%s", err, gw, out, logs)
	}
	figure(t, "Gateway Programmed at %s %.1fs after apply", host, time.Since(start).Seconds())
	if host != want {
		t.Errorf("tailnet name %q, want %s (the listener's hostname)", host, want)
	}
	for route, cond := range map[string]string{"app": "Accepted=True", "broken": "ResolvedRefs=False"} {
		typ, status, _ := strings.Cut(cond, "=")
		out, err := kubectl(ctx, "-n", ns, "get", "httproute", route, "-o",
			`jsonpath={.status.parents[?(@.controllerName=="tsinject.dev/gateway-controller")].conditions[?(@.type=="`+typ+`")]}`)
		if err != nil || !strings.Contains(out, `"status":"`+status+`"`) {
			t.Errorf("HTTPRoute %s: %s %v, want %s", route, out, err, cond)
		}
		if route == "broken" && !strings.Contains(out, "Service "+ns+"/nope does not exist") {
			t.Errorf("HTTPRoute broken: %s, want the missing Service named", out)
		}
	}
	waitPod(t, ns, "echo", "Ready", ready)
	laptop, err := env.tn.NewNode(ctx, "laptop-gateway", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()
	servesHTTPS(t, ctx, laptop, host, start)
	if err := waitFor(ctx, func(context.Context) error {
		if r := checkResult(t, "Ingress certificates"); !r.OK || !strings.Contains(r.Detail, "1 of 1 valid; the first to expire: Gateway "+ns+"/portal") {
			return fmt.Errorf("tsinject check: %+v", r)
		}
		if r := checkResult(t, "Gateway API"); !r.OK || r.Warning || !strings.Contains(r.Detail, "GatewayClass tsinject accepted; 1 of 1 Gateways programmed") {
			return fmt.Errorf("tsinject check: %+v", r)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// An Ingress serving a custom domain's certificate from the tenant's own
// kubernetes.io/tls Secret: refused, with the grant to give, until the
// tenant lets the manager read that one Secret; then a laptop reaching
// the Ingress's tailnet address under the custom name gets that
// certificate, verified against the tenant's CA.
func TestHTTPSIngressSecretCertificate(t *testing.T) {
	ns := namespace(t, "custom")
	ca, err := certs.NewCA(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := certs.Issue(ca, []string{"grafana.custom.example"}, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	indent := func(b []byte) string { return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n    ") }
	apply(t, ns, echoApp+`---
apiVersion: v1
kind: Secret
metadata: {name: grafana-tls}
type: kubernetes.io/tls
stringData:
  tls.crt: |
    `+indent(kp.CertPEM)+`
  tls.key: |
    `+indent(kp.KeyPEM)+`
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: grafana
  annotations: {tsinject.dev/hostname: custom-grafana}
spec:
  ingressClassName: tsinject
  tls: [{hosts: [grafana.custom.example], secretName: grafana-tls}]
  defaultBackend: {service: {name: echo, port: {name: http}}}
`)
	ctx := testCtx(t, 2*podDeadline)
	// In auth-key copy mode (where make e2e's credential stories leave
	// the manager) it may read every Secret, so it serves none: it says
	// so, and the proxy serves the tailnet's certificate. Then the story
	// goes on with the key broker, as the kustomize story installed it.
	args, err := kubectl(ctx, "-n", system, "get", "deployment", "tsinject-manager", "-o", "jsonpath={.spec.template.spec.containers[0].args}")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(args, "--copy-auth-key") {
		if err := waitFor(ctx, func(ctx context.Context) error {
			out, err := kubectl(ctx, "-n", ns, "get", "events", "--field-selector", "involvedObject.kind=Ingress,involvedObject.name=grafana", "-o", "jsonpath={.items[*].note}{.items[*].message}")
			if err != nil || !strings.Contains(out, "not served in auth-key copy mode") {
				return fmt.Errorf("no Event refusing the Secret in copy mode: %v %q", err, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		switchMode(t, ctx, brokerOAuth)
		// kubectl apply -k prunes nothing: copy mode's rights to every
		// Secret remain, and the manager, asking the API server, must
		// refuse until a cluster admin takes them away.
		if err := waitFor(ctx, func(ctx context.Context) error {
			out, err := kubectl(ctx, "-n", ns, "get", "events", "--field-selector", "involvedObject.kind=Ingress,involvedObject.name=grafana", "-o", "jsonpath={.items[*].note}{.items[*].message}")
			if err != nil || !strings.Contains(out, "tsinject may read every Secret in namespace "+ns) {
				return fmt.Errorf("no Event refusing the Secret for the manager's leftover rights: %v %q", err, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if out, err := kubectl(ctx, "delete", "clusterrolebinding", "tsinject-manager-auth-key"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	var grant string
	if err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", ns, "get", "events", "--field-selector", "involvedObject.kind=Ingress,involvedObject.name=grafana", "-o", "jsonpath={.items[*].note}{.items[*].message}")
		_, after, found := strings.Cut(out, "grant it that one Secret (")
		if err != nil || !found {
			return fmt.Errorf("no Event saying how to grant the Secret: %v %q", err, out)
		}
		grant, _, _ = strings.Cut(after, ")")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The tenant runs what the Event says.
	for _, cmd := range strings.Split(grant, " && ") {
		args := strings.Fields(strings.TrimPrefix(cmd, "kubectl "))
		if out, err := kubectl(ctx, args...); err != nil {
			t.Fatalf("kubectl %s: %v: %s", cmd, err, out)
		}
	}
	var ip string
	if err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", ns, "get", "ingress", "grafana", "-o", `jsonpath={.status.loadBalancer.ingress[1].ip}`)
		if ip = strings.TrimSpace(out); err != nil || ip == "" {
			return fmt.Errorf("no tailnet address in status.loadBalancer yet (%v): %s", err, out)
		}
		return nil
	}); err != nil {
		ev, _ := kubectl(testCtx(t, stepDeadline), "-n", ns, "describe", "ingress", "grafana")
		t.Fatalf("%v\n%s", err, ev)
	}
	waitPod(t, ns, "echo", "Ready", ready)
	laptop, err := env.tn.NewNode(ctx, "laptop-custom", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return laptop.Dial(ctx, "tcp", net.JoinHostPort(ip, "443"))
		},
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "grafana.custom.example"}}}
	if err := waitFor(ctx, func(context.Context) error {
		res, err := hc.Get("https://grafana.custom.example/")
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("%s", res.Status)
		}
		return nil
	}); err != nil {
		t.Fatalf("laptop → https://grafana.custom.example/ at %s: %v", ip, err)
	}
}

// A certificate renewal on the real node, its lifetime forced short
// (certLifetime): a tailnet client asking once a second, each time on a
// new connection, sees the renewed certificate and no failed request.
func TestHTTPSCertificateRenewal(t *testing.T) {
	ns := namespace(t, "renew")
	apply(t, ns, echoApp+`---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: app}
spec:
  ingressClassName: tsinject
  defaultBackend: {service: {name: echo, port: {name: http}}}
`)
	ctx := testCtx(t, podDeadline+2*certLifetime)
	var host string
	if err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", ns, "get", "ingress", "app", "-o", `jsonpath={.status.loadBalancer.ingress[0].hostname}`)
		if host = strings.TrimSpace(out); err != nil || host == "" {
			return fmt.Errorf("no tailnet name in status.loadBalancer yet (%v): %s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ns, "echo", "Ready", ready)
	laptop, err := env.tn.NewNode(ctx, "laptop-renew", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: laptop.Dial,
		TLSClientConfig: &tls.Config{RootCAs: env.acme.Roots}, DisableKeepAlives: true}}
	get := func() (time.Time, error) {
		res, err := hc.Get("https://" + host + "/")
		if err != nil {
			return time.Time{}, err
		}
		defer res.Body.Close()
		io.Copy(io.Discard, res.Body)
		if res.StatusCode != 200 {
			return time.Time{}, fmt.Errorf("%s", res.Status)
		}
		return res.TLS.PeerCertificates[0].NotAfter, nil
	}
	var first time.Time
	if err := waitFor(ctx, func(context.Context) error { var err error; first, err = get(); return err }); err != nil {
		t.Fatal(err)
	}
	// Once a second until a certificate expiring later is served, and a
	// few more: not one request may fail. Bounded by two lifetimes.
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var failed []string
	var renewedAfter time.Duration
	requests, after := 0, 0
	for ; after < 5 && time.Since(start) < 2*certLifetime; <-tick.C {
		requests++
		notAfter, err := get()
		switch {
		case err != nil:
			failed = append(failed, fmt.Sprintf("%.0fs: %v", time.Since(start).Seconds(), err))
		case after > 0:
			after++
		case notAfter.After(first):
			after, renewedAfter = 1, time.Since(start)
		}
	}
	if after == 0 {
		t.Fatalf("no renewed certificate within %s (the first expires %s)", 2*certLifetime, first.Format(time.RFC3339))
	}
	figure(t, "a %s certificate renewed %.0fs into the loop; %d requests once a second, %d failed", certLifetime, renewedAfter.Seconds(), requests, len(failed))
	if len(failed) > 0 {
		t.Errorf("%d of %d requests failed across the renewal: %s", len(failed), requests, strings.Join(failed, "; "))
	}
}

// servesHTTPS checks what a tailnet client gets from the proxy at host:
// 200 over HTTPS/2 with a certificate that verifies against the test CA,
// the caller's identity (not the forged one) at the app, a redirect from
// HTTP, WebSocket and gRPC passed through.
func servesHTTPS(t *testing.T, ctx context.Context, laptop *tailnet.Node, host string, start time.Time) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second,
		Transport:     &http.Transport{DialContext: laptop.Dial, TLSClientConfig: &tls.Config{RootCAs: env.acme.Roots}, ForceAttemptHTTP2: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var seen echoapp.Seen
	if err := waitFor(ctx, func(context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+host+"/hello", nil)
		req.Header.Set(contract.HeaderUserLogin, "admin@example.com")
		req.Header.Set(contract.HeaderCallerTags, "tag:admin")
		res, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if res.StatusCode != 200 || res.ProtoMajor != 2 {
			return fmt.Errorf("%s %s, want 200 over HTTP/2", res.Proto, res.Status)
		}
		var chain [][]byte
		for _, c := range res.TLS.PeerCertificates {
			chain = append(chain, c.Raw)
		}
		if _, err := env.acme.Verify(chain, host); err != nil {
			return fmt.Errorf("certificate: %v", err)
		}
		return json.NewDecoder(res.Body).Decode(&seen)
	}); err != nil {
		t.Fatalf("laptop → https://%s/hello: %v", host, err)
	}
	figure(t, "laptop got 200 over HTTPS/2 from https://%s/ %.1fs after apply", host, time.Since(start).Seconds())
	if seen.Path != "/hello" || seen.Headers.Get(contract.HeaderCallerNode) != laptop.FQDN ||
		!strings.HasPrefix(seen.Headers.Get(contract.HeaderUserLogin), "user-") || seen.Headers.Get(contract.HeaderCallerTags) != "" {
		t.Errorf("the app saw %+v; want the laptop's identity, not the forged one", seen)
	}

	res, err := hc.Get("http://" + host + "/a?b=c")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Location") != "https://"+host+"/a?b=c" {
		t.Errorf("plain HTTP: %s, Location %q; want a redirect to HTTPS", res.Status, res.Header.Get("Location"))
	}

	h1 := &http.Client{Transport: &http.Transport{DialContext: laptop.Dial, TLSClientConfig: &tls.Config{RootCAs: env.acme.Roots}}}
	ws, _, err := websocket.Dial(ctx, "wss://"+host+"/ws", &websocket.DialOptions{HTTPClient: h1})
	if err != nil {
		t.Fatalf("WebSocket: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "echo: hi" {
		t.Errorf("WebSocket echo: %q, %v", msg, err)
	}

	conn, err := grpc.NewClient("passthrough:///"+host+":443",
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return laptop.Dial(ctx, "tcp", addr) }),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: env.acme.Roots, ServerName: host})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health check through the Ingress: %v, %v", hr, err)
	}

}
