package tsnode

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ServeHealth serves /healthz (the process is alive), /readyz (ready
// returns nil) and /metrics on addr, from the start, so probes get answers
// (503 until ready) while the node joins. An empty addr serves nothing.
func ServeHealth(addr string, ready func(context.Context) error, metrics http.Handler) (io.Closer, error) {
	if addr == "" {
		return io.NopCloser(nil), nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	mux.Handle("/metrics", metrics)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	// If it stops, the probes fail: that is how it is noticed.
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}
