package debugserver

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/internal/contract"
)

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct{ addr, err string }{
		{"", ""},
		{"0.0.0.0:6060", "want a loopback address"},
		{"198.18.0.1:6060", "want a loopback address"},
		{"localhost:6060", "want a loopback address"}, // names are not resolved
		{"127.0.0.1", "want a loopback address"},
	} {
		t.Setenv(contract.EnvDebugAddr, tc.addr)
		line, err := FromEnv()
		if tc.err == "" {
			if err != nil || line != "" {
				t.Errorf("%q: got %q, %v; want nothing", tc.addr, line, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), contract.EnvDebugAddr) {
			t.Errorf("%q: error %v, want one naming %s and %q", tc.addr, err, contract.EnvDebugAddr, tc.err)
		}
	}
}

func TestServesHeapProfile(t *testing.T) {
	t.Setenv(contract.EnvDebugAddr, "127.0.0.1:0")
	line, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	url := strings.TrimPrefix(line, "profiles: ") + "heap"
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	// A gzipped protobuf profile.
	if res.StatusCode != 200 || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("GET %s: %s, %d bytes", url, res.Status, len(b))
	}
}
