package memlimit

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/internal/contract"
)

func TestApply(t *testing.T) {
	defer debug.SetMemoryLimit(math.MaxInt64)
	for _, tc := range []struct {
		name, gomemlimit, limit string
		want                    int64 // the runtime's limit after Apply; -1: unchanged
		log                     string
	}{
		{"container limit", "", "268435456", 214748364, "container 256 MiB, Go heap aims under 204 MiB"},
		{"GOMEMLIMIT wins", "100MiB", "268435456", -1, "GOMEMLIMIT=100MiB"},
		{"no limit", "", "", -1, "none"},
		{"garbage", "", "256Mi", -1, `ignoring TSINJECT_MEMORY_LIMIT="256Mi"`},
		{"zero", "", "0", -1, "ignoring"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			t.Setenv("GOMEMLIMIT", tc.gomemlimit)
			t.Setenv(contract.EnvMemoryLimit, tc.limit)
			log := Apply()
			if !strings.Contains(log, tc.log) {
				t.Errorf("log %q lacks %q", log, tc.log)
			}
			got := debug.SetMemoryLimit(-1)
			want := tc.want
			if want == -1 {
				want = math.MaxInt64
			}
			if got != want {
				t.Errorf("runtime limit %d, want %d", got, want)
			}
		})
	}
}
