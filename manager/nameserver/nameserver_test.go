package nameserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/internal/contract"
)

const system = "tsinject-system"

// egress is an egress Service of ns for target, as the manager left it,
// and its proxies' Service at ip.
func egress(ns, name, target, ip string) []runtime.Object {
	proxy := "ts-egress-" + ns + "-" + name
	return []runtime.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{services.AnnotationTailnetFQDN: target}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: proxy + "." + system + ".svc.cluster.local"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: system, Name: proxy, Labels: map[string]string{
			proxyset.LabelManagedBy: proxyset.ManagedBy, proxyset.LabelOwner: name, proxyset.LabelOwnerNamespace: ns}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip}}},
	}
}

func answerer(t *testing.T, objs ...runtime.Object) *Answerer {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	zones := []string{"ts.net.", "example.ts.net."}
	c := fake.NewClientBuilder().WithScheme(scheme).WithRuntimeObjects(objs...).Build()
	return &Answerer{Zones: zones, TTL: 10, Names: &EgressNames{Reader: c, Namespace: system, ClusterDomain: "cluster.local", Zones: zones}}
}

// ask builds a query as the cluster's CoreDNS forwards it: namespace and
// pod in EDNS0 options ("" leaves one out).
func ask(t *testing.T, name string, qtype dnsmessage.Type, namespace, pod string) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	_ = b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	_ = b.StartAdditionals()
	var opts []dnsmessage.Option
	if namespace != "" {
		opts = append(opts, dnsmessage.Option{Code: contract.DNSOptionNamespace, Data: []byte(namespace)})
	}
	if pod != "" {
		opts = append(opts, dnsmessage.Option{Code: contract.DNSOptionPod, Data: []byte(pod)})
	}
	var rh dnsmessage.ResourceHeader
	_ = rh.SetEDNS0(1232, dnsmessage.RCodeSuccess, false)
	if err := b.OPTResource(rh, dnsmessage.OPTResource{Options: opts}); err != nil {
		t.Fatal(err)
	}
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type reply struct {
	rcode dnsmessage.RCode
	addrs []string
	soa   bool
	aa    bool
}

func read(t *testing.T, out []byte) reply {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(out); err != nil {
		t.Fatalf("response does not parse: %v", err)
	}
	r := reply{rcode: m.RCode, aa: m.Authoritative}
	for _, a := range m.Answers {
		switch b := a.Body.(type) {
		case *dnsmessage.AResource:
			r.addrs = append(r.addrs, netip.AddrFrom4(b.A).String())
		case *dnsmessage.AAAAResource:
			r.addrs = append(r.addrs, netip.AddrFrom16(b.AAAA).String())
		}
	}
	for _, a := range m.Authorities {
		_, r.soa = a.Body.(*dnsmessage.SOAResource)
	}
	return r
}

func TestAnswers(t *testing.T) {
	objs := append(egress("shop", "db-tailnet", "db.example.ts.net", "198.19.16.40"), egress("shop", "cache", "cache", "198.19.16.41")...)
	objs = append(objs, egress("blog", "db-tailnet", "DB.example.ts.net.", "198.19.16.50")...)
	a := answerer(t, objs...)
	for _, tc := range []struct {
		name       string
		query      string
		qtype      dnsmessage.Type
		ns         string
		want       dnsmessage.RCode
		addrs      string
		result     string
		miss, soa  bool
		authorized bool
	}{
		{"the namespace's own egress Service", "db.example.ts.net.", dnsmessage.TypeA, "shop", dnsmessage.RCodeSuccess, "198.19.16.40", ResultAnswered, false, false, true},
		{"case does not matter", "DB.Example.TS.net.", dnsmessage.TypeA, "shop", dnsmessage.RCodeSuccess, "198.19.16.40", ResultAnswered, false, false, true},
		{"another namespace's Service for the same name", "db.example.ts.net.", dnsmessage.TypeA, "blog", dnsmessage.RCodeSuccess, "198.19.16.50", ResultAnswered, false, false, true},
		{"a short name is in every zone", "cache.example.ts.net.", dnsmessage.TypeA, "shop", dnsmessage.RCodeSuccess, "198.19.16.41", ResultAnswered, false, false, true},
		{"a namespace without an egress Service for it", "cache.example.ts.net.", dnsmessage.TypeA, "blog", dnsmessage.RCodeNameError, "", ResultNXDomain, true, true, true},
		{"a namespace with none at all", "db.example.ts.net.", dnsmessage.TypeA, "other", dnsmessage.RCodeNameError, "", ResultNXDomain, true, true, true},
		{"IPv6 of an IPv4-only Service", "db.example.ts.net.", dnsmessage.TypeAAAA, "shop", dnsmessage.RCodeSuccess, "", ResultNoData, false, true, true},
		{"another type", "db.example.ts.net.", dnsmessage.TypeMX, "shop", dnsmessage.RCodeSuccess, "", ResultNoData, false, true, true},
		{"the apex", "example.ts.net.", dnsmessage.TypeSOA, "shop", dnsmessage.RCodeSuccess, "", ResultNoData, false, true, true},
		{"no namespace: not through CoreDNS's snippet, or before it knows the pod", "db.example.ts.net.", dnsmessage.TypeA, "", dnsmessage.RCodeServerFailure, "", ResultNoClient, false, false, false},
		{"a namespace that is no namespace name", "db.example.ts.net.", dnsmessage.TypeA, "Shop/../x", dnsmessage.RCodeServerFailure, "", ResultNoClient, false, false, false},
		{"outside the zones", "db.example.com.", dnsmessage.TypeA, "shop", dnsmessage.RCodeRefused, "", ResultOutside, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, result, miss := a.Answer(context.Background(), ask(t, tc.query, tc.qtype, tc.ns, "app-1"), true)
			r := read(t, out)
			if r.rcode != tc.want || strings.Join(r.addrs, ",") != tc.addrs || result != tc.result || (miss != nil) != tc.miss || r.soa != tc.soa || r.aa != tc.authorized {
				t.Errorf("got %v %v %s miss=%v soa=%v aa=%v, want %v %s %s miss=%v soa=%v aa=%v", r.rcode, r.addrs, result, miss, r.soa, r.aa, tc.want, tc.addrs, tc.result, tc.miss, tc.soa, tc.authorized)
			}
			if miss != nil && (miss.Pod != "app-1" || miss.Namespace != tc.ns || !strings.Contains(miss.Why, "no egress Service in namespace "+tc.ns)) {
				t.Errorf("miss %+v", miss)
			}
		})
	}
}

// A Service that only looks like an egress Service gets no answer: the
// proxies' Service must be the manager's for it, and not refused.
func TestAnswersOnlyTheManagersProxies(t *testing.T) {
	forged := egress("shop", "db-tailnet", "db.example.ts.net", "198.19.16.40")
	// shop points its Service at another namespace's proxies.
	forged[0].(*corev1.Service).Spec.ExternalName = "ts-egress-blog-other." + system + ".svc.cluster.local"
	other := egress("blog", "other", "x.example.ts.net", "198.19.16.60")
	// other's proxies are ts-egress-blog-other
	outside := egress("web", "api", "api.example.ts.net", "198.19.16.70")
	outside[0].(*corev1.Service).Spec.ExternalName = "kubernetes.default.svc.cluster.local"
	refused := egress("ops", "db-tailnet", "db.example.ts.net", "198.19.16.80")
	refused[0].(*corev1.Service).Status.Conditions = []metav1.Condition{{Type: services.EgressReady, Status: metav1.ConditionFalse, Reason: services.ReasonInvalidEgress, Message: "annotation tsinject.dev/tags: not allowed"}}
	a := answerer(t, append(append(append(forged, other...), outside...), refused...)...)
	for _, tc := range []struct{ ns, name, why string }{
		{"shop", "db.example.ts.net.", "not its proxies'"},
		{"web", "api.example.ts.net.", "has not given it proxies"},
		{"ops", "db.example.ts.net.", "tsinject refused it: annotation tsinject.dev/tags"},
	} {
		out, _, miss := a.Answer(context.Background(), ask(t, tc.name, dnsmessage.TypeA, tc.ns, "p"), true)
		if r := read(t, out); r.rcode != dnsmessage.RCodeNameError || miss == nil || !strings.Contains(miss.Why, tc.why) {
			t.Errorf("%s in %s: %v %+v, want NXDOMAIN because %q", tc.name, tc.ns, r, miss, tc.why)
		}
	}
}

func TestMalformed(t *testing.T) {
	a := answerer(t)
	if out, _, _ := a.Answer(context.Background(), []byte{1, 2, 3}, true); out != nil {
		t.Errorf("garbage answered: %x", out)
	}
	q := ask(t, "db.example.ts.net.", dnsmessage.TypeA, "shop", "")
	q[5] = 2 // two questions, one present
	if out, result, _ := a.Answer(context.Background(), q, true); read(t, out).rcode != dnsmessage.RCodeFormatError || result != ResultMalformed {
		t.Errorf("two questions: %v %s", read(t, out), result)
	}
}

func FuzzAnswer(f *testing.F) {
	a := &Answerer{Zones: []string{"ts.net."}, TTL: 10, Names: fixedNames{}}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("db.ts.net."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	seed, _ := b.Finish()
	f.Add(seed)
	f.Fuzz(func(t *testing.T, req []byte) {
		for _, udp := range []bool{true, false} {
			out, _, _ := a.Answer(context.Background(), req, udp)
			if out == nil {
				continue
			}
			var m dnsmessage.Message
			if err := m.Unpack(out); err != nil {
				t.Fatalf("a response that does not parse: %v", err)
			}
			if udp && len(out) > ednsUDP {
				t.Fatalf("a UDP response of %d bytes", len(out))
			}
		}
	})
}

type fixedNames struct{}

func (fixedNames) Resolve(_ context.Context, ns, name string) ([]netip.Addr, string) {
	if name == "db.ts.net" {
		return []netip.Addr{netip.MustParseAddr("198.19.16.40"), netip.MustParseAddr("fd00::40")}, ""
	}
	return nil, "none"
}

type events struct {
	mu    sync.Mutex
	notes []string
}

func (e *events) Eventf(regarding, _ runtime.Object, _, reason, _, note string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	pod := regarding.(*corev1.Pod)
	e.notes = append(e.notes, pod.Namespace+"/"+pod.Name+" "+reason+" "+strings.ReplaceAll(note, "%s", "")+strings.Join(func() []string {
		var s []string
		for _, a := range args {
			s = append(s, a.(string))
		}
		return s
	}(), " "))
}

// The server over real sockets: UDP and TCP, an Event per miss.
func TestServer(t *testing.T) {
	ev := &events{}
	srv := &Server{Answerer: answerer(t, egress("shop", "db-tailnet", "db.example.ts.net", "198.19.16.40")...), Events: ev, Log: logr.Discard()}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc, l) }()
	defer func() { cancel(); <-done }()

	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(ask(t, "db.example.ts.net.", dnsmessage.TypeA, "shop", "app-1")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if r := read(t, buf[:n]); strings.Join(r.addrs, ",") != "198.19.16.40" {
		t.Errorf("UDP: %+v", r)
	}

	tc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	for range 2 { // two queries on one connection
		q := ask(t, "web.example.ts.net.", dnsmessage.TypeA, "shop", "app-1")
		if _, err := tc.Write(append([]byte{byte(len(q) >> 8), byte(len(q))}, q...)); err != nil {
			t.Fatal(err)
		}
		var lb [2]byte
		if _, err := tc.Read(lb[:]); err != nil {
			t.Fatal(err)
		}
		resp := make([]byte, int(lb[0])<<8|int(lb[1]))
		if _, err := readFull(tc, resp); err != nil {
			t.Fatal(err)
		}
		if r := read(t, resp); r.rcode != dnsmessage.RCodeNameError {
			t.Errorf("TCP: %+v", r)
		}
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.notes) != 2 || !strings.HasPrefix(ev.notes[0], "shop/app-1 "+ReasonNoEgressPath) || !strings.Contains(ev.notes[0], "web.example.ts.net") {
		t.Errorf("Events: %q", ev.notes)
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// One namespace asking for random names uses up its own Events, not the
// others'.
func TestMissEventsPerNamespace(t *testing.T) {
	ev := &events{}
	srv := &Server{Events: ev, Log: logr.Discard(), misses: rate.NewLimiter(missEvents, missBurst)}
	for i := range 50 {
		srv.missed(Miss{Namespace: "noisy", Pod: "p", Name: fmt.Sprintf("r%d.example.ts.net", i), Why: "none"})
	}
	srv.missed(Miss{Namespace: "quiet", Pod: "p", Name: "db.example.ts.net", Why: "none"})
	ev.mu.Lock()
	defer ev.mu.Unlock()
	noisy, quiet := 0, 0
	for _, n := range ev.notes {
		switch {
		case strings.HasPrefix(n, "noisy/"):
			noisy++
		case strings.HasPrefix(n, "quiet/"):
			quiet++
		}
	}
	if noisy > nsMissBurst+1 || quiet != 1 {
		t.Errorf("Events: %d for the noisy namespace (at most %d), %d for the quiet one (want 1)", noisy, nsMissBurst+1, quiet)
	}
}
