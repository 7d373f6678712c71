package acme_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"tailscale.com/envknob"

	"github.com/tsinject/tsinject/test/acme"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/tier"
)

// A tailnet node gets a certificate for its MagicDNS name from pebble,
// through the control server's DNS-01 flow as from Let's Encrypt; a
// tailnet client verifies it against pebble's root. A node asking for
// another node's name is refused by the control server.
func TestNodeGetsItsNameCertified(t *testing.T) {
	tier.Needs(t, tier.Tailnet)
	ca, err := acme.Start(acme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	// Before this process first verifies a certificate with the system
	// roots: the ACME client must trust the directory's.
	for _, kv := range ca.NodeEnv() {
		k, v, _ := strings.Cut(kv, "=")
		envknob.Setenv(k, v)
		os.Setenv(k, v)
	}
	tn, err := tailnet.Start(tailnet.Options{SetDNS: ca.SetDNS})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	web, err := tn.NewNode(ctx, "web", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	laptop, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()

	lc, err := web.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := lc.CertPair(ctx, web.FQDN)
	if err != nil {
		t.Fatalf("certificate for %s: %v", web.FQDN, err)
	}
	var chain [][]byte
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		chain = append(chain, b.Bytes)
	}
	leaf, err := ca.Verify(chain, web.FQDN)
	if err != nil {
		t.Fatalf("the certificate does not verify against pebble's root: %v", err)
	}
	if ca.TXTSet() == 0 {
		t.Fatal("issued without a DNS-01 record set at the control server")
	}

	// Served over the tailnet, verified by a client.
	ln, err := web.ListenTLS("tcp", ":443")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).HandshakeContext(ctx)
				c.Write([]byte("hello"))
			}()
		}
	}()
	raw, err := laptop.Dial(ctx, "tcp", web.FQDN+":443")
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(raw, &tls.Config{ServerName: web.FQDN, RootCAs: ca.Roots})
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		t.Fatalf("TLS to %s over the tailnet: %v", web.FQDN, err)
	}
	if got := conn.ConnectionState().PeerCertificates[0]; !got.Equal(leaf) {
		t.Errorf("served %s, not the certificate issued", got.Subject)
	}

	// Another node's name: the control server refuses its record.
	if _, _, err := lc.CertPair(ctx, laptop.FQDN); err == nil {
		t.Errorf("web got a certificate for %s", laptop.FQDN)
	}
}
