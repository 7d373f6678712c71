// Package clustertest gives a test a live API server in seconds.
package clustertest

import (
	"context"
	"testing"

	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/tier"
)

// Start starts a control plane for t and stops it when t ends. If the
// binaries are not built yet it builds them (minutes, once per machine;
// `make testbins` does the same ahead of time). In the unit tier (go test
// -short) it skips the test (tier.APIServer); otherwise it never skips: a
// failure to build or start fails the test with the reason.
func Start(t testing.TB, opts cluster.Options) *cluster.Cluster {
	t.Helper()
	tier.Needs(t, tier.APIServer)
	if opts.Log == nil {
		opts.Log = testWriter{t}
	}
	c, err := cluster.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("test control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Logf("stopping control plane: %v", err)
		}
	})
	return c
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}
