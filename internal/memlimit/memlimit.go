// Package memlimit points the Go runtime's soft memory limit at the
// container's memory limit. Without it the heap may double between
// collections (GOGC) whatever the limit, and a burst of garbage gets the
// container OOM-killed although little of it is live; with it the
// collector runs harder as the limit nears instead.
package memlimit

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/tsinject/tsinject/internal/contract"
)

// Fraction of the container's limit the runtime aims to stay under. The
// rest is for what the runtime's limit does not count or cannot act on at
// once: the binary's text, thread stacks outside the heap, and growth
// between a collection's start and end.
const Fraction = 0.8

// Apply sets the soft limit to Fraction of the limit in the environment
// variable contract.EnvMemoryLimit (bytes, from the downward API), unless
// GOMEMLIMIT is set, which the runtime has applied already and which
// wins. It returns a line for the log saying what it did.
func Apply() string {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		return "memory limit: GOMEMLIMIT=" + v
	}
	v := strings.TrimSpace(os.Getenv(contract.EnvMemoryLimit))
	if v == "" {
		return "memory limit: none (no " + contract.EnvMemoryLimit + ")"
	}
	limit, ok := Container()
	if !ok {
		return fmt.Sprintf("memory limit: ignoring %s=%q: want a positive number of bytes", contract.EnvMemoryLimit, v)
	}
	soft := int64(float64(limit) * Fraction)
	debug.SetMemoryLimit(soft)
	return fmt.Sprintf("memory limit: container %d MiB, Go heap aims under %d MiB", limit>>20, soft>>20)
}

// Container is the container's memory limit from contract.EnvMemoryLimit,
// if it is set to a positive number of bytes.
func Container() (int64, bool) {
	limit, err := strconv.ParseInt(strings.TrimSpace(os.Getenv(contract.EnvMemoryLimit)), 10, 64)
	return limit, err == nil && limit > 0
}
