package tsnode

import "testing"

func TestTCPWindow(t *testing.T) {
	const Mi = 1 << 20
	for _, tc := range []struct {
		limit int64
		want  int
	}{
		{0, 4 * Mi},          // no limit: tailscale's constrained-platform cap
		{-1, 4 * Mi},         // nonsense: as none
		{32 * Mi, 256 << 10}, // the floor
		{128 * Mi, 512 << 10},
		{256 * Mi, 1 * Mi}, // the injected default
		{512 * Mi, 2 * Mi}, // connectors and API proxies
		{4096 * Mi, 4 * Mi},
	} {
		if got := TCPWindow(tc.limit); got != tc.want {
			t.Errorf("TCPWindow(%d MiB) = %d KiB, want %d KiB", tc.limit/Mi, got>>10, tc.want>>10)
		}
	}
}
