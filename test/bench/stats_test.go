package bench

import (
	"math"
	"testing"
)

func TestPairedRatio(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b Sample
		want float64
	}{
		// Load drifts between repeats; each repeat's ratio is 1.1.
		{"drift cancels", Sample{1.1, 2.2, 4.4}, Sample{1, 2, 4}, 1.1},
		// The ratio of medians would be 2.2/2 = 1.1; the paired median is 1.5.
		{"pairs, not medians", Sample{1.5, 2.2, 9}, Sample{1, 2, 3}, 1.5},
		{"unequal lengths: ratio of medians", Sample{2, 4}, Sample{1, 2, 3}, 1.5},
	} {
		if got := PairedRatio(tc.a, tc.b); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: PairedRatio(%v, %v) = %v, want %v", tc.name, tc.a, tc.b, got, tc.want)
		}
	}
}
