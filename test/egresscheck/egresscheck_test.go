package egresscheck

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestParseAndDisallowed(t *testing.T) {
	trace := []byte(`123 connect(3, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("127.0.0.1")}, 16) = 0
124 sendto(4, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("192.0.2.2")}, 16) = 1
125 connect(5, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0
126 connect(6, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1
127 connect(7, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("198.18.0.2")}, 16) = 0
128 connect(8, {sa_family=AF_INET, sin_port=htons(0), sin_addr=inet_addr("0.0.0.0")}, 16) = 0
`)
	got := Parse(trace)
	if fmt.Sprint(got) != "[0.0.0.0 127.0.0.1 192.0.2.2 198.18.0.2 ::1 2001:db8::1]" {
		t.Fatalf("Parse = %v", got)
	}
	bad := Disallowed(got)
	want := []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")}
	if fmt.Sprint(bad) != fmt.Sprint(want) {
		t.Fatalf("Disallowed = %v, want %v", bad, want)
	}
}
