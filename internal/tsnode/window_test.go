package tsnode

import "testing"

func TestTCPWindow(t *testing.T) {
	const Mi = 1 << 20
	for _, tc := range []struct {
		limit, share int64
		want         int
	}{
		{0, 0, 4 * Mi},          // no limit: tailscale's constrained-platform cap
		{-1, 0, 4 * Mi},         // nonsense: as none
		{32 * Mi, 0, 256 << 10}, // the floor
		{128 * Mi, 0, 512 << 10},
		{256 * Mi, 0, 1 * Mi},                    // the injected sidecar
		{256 * Mi, WindowShareApp, 1 * Mi},       // the same, said
		{512 * Mi, WindowShareShared, 512 << 10}, // connectors and API proxies
		{4096 * Mi, 0, 4 * Mi},
		{4096 * Mi, WindowShareShared, 4 * Mi},
	} {
		if got := TCPWindow(tc.limit, tc.share); got != tc.want {
			t.Errorf("TCPWindow(%d MiB, 1/%d) = %d KiB, want %d KiB", tc.limit/Mi, tc.share, got>>10, tc.want>>10)
		}
	}
}
