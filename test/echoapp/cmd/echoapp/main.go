// Command echoapp runs package echoapp in a pod of the real-node tests:
// HTTP on :8080, gRPC on :9000; with arguments, it is a UDP client
// instead (see probe).
package main

import (
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/tsinject/tsinject/test/echoapp"
)

func main() {
	if len(os.Args) > 1 {
		os.Exit(probe(os.Args[1:]))
	}
	gl, err := net.Listen("tcp", ":9000")
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(echoapp.GRPC().Serve(gl)) }()
	srv := &http.Server{Addr: ":8080", Handler: echoapp.Handler(), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
