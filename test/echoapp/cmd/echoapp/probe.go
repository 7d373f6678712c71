package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// probe is an unmodified app's UDP, as the real-node tests check it
// through transparent egress, given as pairs: "udp ADDR" sends a datagram
// and expects it back; "h3 URL" gets URL over HTTP/3, trusting the PEM in
// $ECHOAPP_CA. Each prints "ok KIND TARGET" or the error; the exit code
// says whether all succeeded.
func probe(args []string) int {
	if len(args)%2 != 0 {
		fmt.Println("usage: echoapp [udp ADDR | h3 URL]...")
		return 2
	}
	code := 0
	for i := 0; i < len(args); i += 2 {
		kind, target := args[i], args[i+1]
		var err error
		switch kind {
		case "udp":
			err = udpEcho(target)
		case "h3":
			err = h3Get(target, os.Getenv("ECHOAPP_CA"))
		default:
			err = fmt.Errorf("unknown probe %q", kind)
		}
		if err != nil {
			fmt.Printf("%s %s: %v\n", kind, target, err)
			code = 1
			continue
		}
		fmt.Printf("ok %s %s\n", kind, target)
	}
	return code
}

func udpEcho(addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	want := "hello over udp"
	buf := make([]byte, 64)
	for range 5 { // a datagram may be lost before the path is up
		c.Write([]byte(want))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err == nil {
			if string(buf[:n]) != want {
				return fmt.Errorf("answer %q", buf[:n])
			}
			return nil
		}
	}
	return fmt.Errorf("no answer")
}

func h3Get(url, caPEM string) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return fmt.Errorf("no certificate in $ECHOAPP_CA")
	}
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.Close()
	res, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.ProtoMajor != 3 || res.StatusCode != 200 {
		return fmt.Errorf("%s %s: %q", res.Proto, res.Status, body)
	}
	fmt.Printf("%s %s\n", res.Proto, body)
	return nil
}
