package bench

import (
	"os"
	"testing"
	"time"
)

// The CPU columns of the memory table read a process's CPU time from
// /proc and the bench's own from getrusage: both must see CPU this
// process burns, or those columns would silently read zero.
func TestCPUTimeSeesWork(t *testing.T) {
	pid := os.Getpid()
	procBefore, selfBefore := cpuTime(pid), selfCPU()
	deadline := time.Now().Add(time.Minute) // a busy machine gives us less CPU per second
	x := 0
	for selfCPU()-selfBefore < 0.3 {
		if time.Now().After(deadline) {
			t.Fatalf("burned no measurable CPU in a minute (getrusage: %.2f s)", selfCPU()-selfBefore)
		}
		for i := 0; i < 1e6; i++ {
			x += i
		}
	}
	_ = x
	if got := cpuTime(pid) - procBefore; got < 0.2 {
		t.Errorf("/proc/%d/stat saw %.2f CPU seconds, getrusage at least 0.3", pid, got)
	}
	if cpuTime(-1) != 0 {
		t.Errorf("a process that does not exist has CPU time")
	}
}
