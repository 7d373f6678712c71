// Package echoapp is the web app behind tsinject's HTTPS proxy in tests:
// it answers every request with what it received as JSON (path, host,
// headers), echoes WebSocket messages at /ws, and serves gRPC's health
// service (over HTTP/2 without TLS, on a listener of its own).
package echoapp

import (
	"encoding/json"
	"net/http"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Seen is what the app answers with.
type Seen struct {
	Path    string      `json:"path"`
	Host    string      `json:"host"`
	Headers http.Header `json:"headers"`
}

// Handler is the HTTP side.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Seen{Path: r.URL.Path, Host: r.Host, Headers: r.Header})
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	})
	return mux
}

// GRPC is the gRPC side: the health service, answering SERVING.
func GRPC() *grpc.Server {
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	return gs
}
