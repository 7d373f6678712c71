// Package bench measures tsinject beside what users would otherwise run,
// in one run on one machine, and writes docs/benchmarks.md (make bench).
// Every figure is repeated to give a median and spread, and reported as a
// ratio against a baseline measured in the same run.
package bench

import (
	"math"
	"sort"
	"time"
)

// Sample is repeated measurements of one figure.
type Sample []float64

// Median of the sample.
func (s Sample) Median() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := append(Sample(nil), s...)
	sort.Float64s(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// PairedRatio is the median of a[i]/b[i], for figures measured side by
// side in each repeat: drift in the machine's load between repeats then
// cancels instead of adding to the ratio's noise. Samples of different
// lengths fall back to the ratio of medians.
func PairedRatio(a, b Sample) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return a.Median() / b.Median()
	}
	r := make(Sample, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	return r.Median()
}

// Spread is min–max as a ± percentage of the median.
func (s Sample) Spread() float64 {
	if len(s) < 2 {
		return 0
	}
	lo, hi := s[0], s[0]
	for _, v := range s {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	m := s.Median()
	if m == 0 {
		return 0
	}
	return (hi - lo) / 2 / m * 100
}

// Percentile of durations (p in 0..100).
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	c := append([]time.Duration(nil), ds...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	i := int(math.Ceil(p/100*float64(len(c)))) - 1
	if i < 0 {
		i = 0
	}
	return c[i]
}
