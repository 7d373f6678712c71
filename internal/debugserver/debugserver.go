// Package debugserver serves Go's runtime profiles (net/http/pprof) of a
// data-plane process on a loopback address, when asked to by
// contract.EnvDebugAddr. It is off by default: profiles are for
// measuring (make bench -profile) and for support, not for production.
package debugserver

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"

	"github.com/tsinject/tsinject/internal/contract"
)

// FromEnv starts the server if contract.EnvDebugAddr is set. It returns a
// line for the log, or an error naming the variable when the address is
// not a loopback address with a port: a profile reveals the process's
// code paths and goroutines, so it is never offered beyond the pod's
// (or host's) loopback interface.
func FromEnv() (string, error) {
	v := os.Getenv(contract.EnvDebugAddr)
	if v == "" {
		return "", nil
	}
	ap, err := netip.ParseAddrPort(v)
	if err != nil || !ap.Addr().IsLoopback() {
		return "", fmt.Errorf("$%s=%q: want a loopback address and port, such as 127.0.0.1:6060", contract.EnvDebugAddr, v)
	}
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return "", fmt.Errorf("$%s: %w", contract.EnvDebugAddr, err)
	}
	go func() { _ = http.Serve(ln, Handler()) }() // lives as long as the process
	return "profiles: http://" + ln.Addr().String() + "/debug/pprof/", nil
}

// Handler serves /debug/pprof/ on its own mux (never the default one).
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
