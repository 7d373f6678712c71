package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tsinject/tsinject/test/poll"
	"github.com/tsinject/tsinject/test/tailnet"
)

// memKiB reads a /proc/PID/status field (VmRSS, VmHWM) in KiB.
func memKiB(pid int, field string) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.Atoi(strings.Fields(rest)[0])
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", field, pid)
}

// cpuTime is a process's CPU time so far, user and system, in seconds,
// from /proc/PID/stat (0 if it cannot be read).
func cpuTime(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces and parentheses itself: state is field 3, utime 14,
	// stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return float64(utime+stime) / ticks
}

// selfCPU is this process's CPU time so far, user and system, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// proc is a process under test.
type proc struct {
	cmd  *exec.Cmd
	logs *lockedBuf
}

func startProc(name string, args []string, env []string) (*proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(append(os.Environ(), tailnet.NodeEnv()...), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logs := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proc{cmd: cmd, logs: logs}, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop ends the process and its group (the process alone if it has
// none of its own).
func (p *proc) stop() {
	pid := p.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	syscall.Kill(pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
		<-done
	}
}

// tailscaled runs tailscaled in userspace-networking mode (as the
// Tailscale operator's userspace proxies do) joined to tn.
type tailscaled struct {
	*proc
	dir, cli         string
	socks, httpProxy string
	readyAfter       time.Duration
}

func startTailscaled(ctx context.Context, bins string, tn *tailnet.Tailnet, hostname string, extraUp ...string) (*tailscaled, error) {
	return startTailscaledEnv(ctx, bins, tn, hostname, nil, extraUp...)
}

// startTailscaledEnv is startTailscaled with env added to tailscaled's
// environment.
func startTailscaledEnv(ctx context.Context, bins string, tn *tailnet.Tailnet, hostname string, env []string, extraUp ...string) (*tailscaled, error) {
	dir, err := os.MkdirTemp("", "bench-tailscaled-")
	if err != nil {
		return nil, err
	}
	t := &tailscaled{dir: dir, cli: filepath.Join(bins, "tailscale"), socks: freeAddr(), httpProxy: freeAddr()}
	start := time.Now()
	t.proc, err = startProc(filepath.Join(bins, "tailscaled"), []string{
		"--tun=userspace-networking", "--statedir=" + dir, "--socket=" + filepath.Join(dir, "sock"), "--port=0",
		"--socks5-server=" + t.socks, "--outbound-http-proxy-listen=" + t.httpProxy,
	}, append([]string{"STATE_DIRECTORY=" + dir}, env...))
	if err != nil {
		return nil, err
	}
	if err := waitUntil(ctx, 10*time.Second, func() error { _, err := os.Stat(filepath.Join(dir, "sock")); return err }); err != nil {
		t.stop()
		return nil, fmt.Errorf("tailscaled socket: %w\n%s", err, t.logs.String())
	}
	up := append([]string{"--socket=" + filepath.Join(dir, "sock"), "up", "--login-server=" + tn.ControlURL(),
		"--authkey=" + tn.AuthKey, "--hostname=" + hostname, "--accept-dns=false"}, extraUp...)
	if out, err := exec.CommandContext(ctx, t.cli, up...).CombinedOutput(); err != nil {
		t.stop()
		return nil, fmt.Errorf("tailscale up: %v: %s", err, out)
	}
	if err := waitUntil(ctx, 20*time.Second, func() error {
		out, err := exec.Command(t.cli, "--socket="+filepath.Join(dir, "sock"), "status", "--json").Output()
		if err != nil {
			return err
		}
		var st struct{ BackendState string }
		json.Unmarshal(out, &st)
		if st.BackendState != "Running" {
			return errors.New(st.BackendState)
		}
		return nil
	}); err != nil {
		t.stop()
		return nil, err
	}
	t.readyAfter = time.Since(start)
	return t, nil
}

func (t *tailscaled) close() { t.stop(); os.RemoveAll(t.dir) }

func waitUntil(ctx context.Context, d time.Duration, f func() error) error {
	return poll.Until(ctx, d, 10*time.Millisecond, f)
}

var (
	httpOK   = poll.HTTPOK
	freeAddr = poll.FreeAddr
)

type lockedBuf = poll.Buffer

// sink serves bulk data (size bytes per connection) and a tiny HTTP
// response, on listeners it is given.
type sink struct{ size int64 }

var zeros = make([]byte, 256<<10)

func (s sink) serveBulk(ln net.Listener) {
	serveEach(ln, func(c net.Conn) {
		for sent := int64(0); sent < s.size; {
			w, err := c.Write(zeros[:min(int64(len(zeros)), s.size-sent)])
			sent += int64(w)
			if err != nil {
				return
			}
		}
	})
}

// serveEach handles each connection ln accepts in its own goroutine, and
// closes it after; it returns when ln is closed.
func serveEach(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

func serveSmall(ln net.Listener) {
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
}
