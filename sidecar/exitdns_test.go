package sidecar

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// The cluster's zones come from the search list Kubernetes writes; the
// node's own search domains are not the cluster's. Without a
// "svc.<domain>" entry, every search domain is kept.
func TestZonesFromResolvConf(t *testing.T) {
	for _, tc := range []struct {
		conf string
		want clusterZones
	}{
		{"search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n",
			clusterZones{"cluster.local", "in-addr.arpa", "ip6.arpa"}},
		{"search shop.svc.Prod.Internal. svc.prod.internal. prod.internal.\n", clusterZones{"prod.internal", "in-addr.arpa", "ip6.arpa"}},
		{"search corp.example lab.example\n", clusterZones{"in-addr.arpa", "ip6.arpa", "corp.example", "lab.example"}},
		{"nameserver 10.96.0.10\n", clusterZones{"in-addr.arpa", "ip6.arpa"}},
	} {
		if got := zonesFromResolvConf(strings.NewReader(tc.conf)); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v, want %v", tc.conf, got, tc.want)
		}
	}
	z := zonesFromResolvConf(strings.NewReader("search shop.svc.cluster.local svc.cluster.local cluster.local\n"))
	for name, want := range map[string]bool{
		"db.shop.svc.cluster.local.": true, "CLUSTER.LOCAL": true, "10.0.96.10.in-addr.arpa.": true,
		"example.com.": false, "notcluster.local": false, "cluster.local.example.com": false, "far.test": false,
	} {
		if got := z.covers(name); got != want {
			t.Errorf("covers(%q) = %v, want %v", name, got, want)
		}
	}
}

// The addresses of the asked type in an answer, past a CNAME and records
// of the other family; an error code is an error.
func TestAnswers(t *testing.T) {
	name := dnsmessage.MustNewName("far.test.")
	build := func(rcode dnsmessage.RCode, add func(b *dnsmessage.Builder)) []byte {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1, Response: true, RCode: rcode})
		b.StartQuestions()
		b.Question(dnsmessage.Question{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
		b.StartAnswers()
		if add != nil {
			add(&b)
		}
		msg, err := b.Finish()
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	rh := dnsmessage.ResourceHeader{Name: name, Class: dnsmessage.ClassINET, TTL: 60}
	resp := build(dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) {
		b.CNAMEResource(rh, dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("edge.far.test.")})
		b.AResource(rh, dnsmessage.AResource{A: [4]byte{198, 19, 200, 10}})
		b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("fd00::1").As16()})
	})
	got, err := answers(resp, dnsmessage.TypeA)
	if err != nil || !slices.Equal(got, []netip.Addr{netip.MustParseAddr("198.19.200.10")}) {
		t.Errorf("A: %v, %v", got, err)
	}
	got, err = answers(resp, dnsmessage.TypeAAAA)
	if err != nil || !slices.Equal(got, []netip.Addr{netip.MustParseAddr("fd00::1")}) {
		t.Errorf("AAAA: %v, %v", got, err)
	}
	if got, err := answers(build(dnsmessage.RCodeNameError, nil), dnsmessage.TypeA); err == nil {
		t.Errorf("NXDOMAIN gave %v and no error", got)
	}
}
