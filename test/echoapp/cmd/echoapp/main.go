// Command echoapp runs package echoapp in a pod of the real-node tests:
// HTTP on :8080, gRPC on :9000.
package main

import (
	"log"
	"net"
	"net/http"
	"time"

	"github.com/tsinject/tsinject/test/echoapp"
)

func main() {
	gl, err := net.Listen("tcp", ":9000")
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(echoapp.GRPC().Serve(gl)) }()
	srv := &http.Server{Addr: ":8080", Handler: echoapp.Handler(), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
