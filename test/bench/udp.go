package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/netns"
	"github.com/tsinject/tsinject/test/socks5udp"
	"github.com/tsinject/tsinject/test/tailnet"
)

// UDPPath is one way for an app's UDP to reach a tailnet peer.
type UDPPath struct {
	Name string
	// Mbps and Kpps are what the peer received while the app sent
	// 1,200-byte datagrams as fast as it could for udpBlast.
	Mbps, Kpps Sample
	// RTTP50, RTTP99: sequential echo round trips, milliseconds.
	RTTP50, RTTP99 Sample
	// CPUPerGiB is the data plane process's CPU seconds (user and
	// system) per GiB the peer received.
	CPUPerGiB Sample
	Note      string
}

// UDPResult is the UDP comparison and the crypto floor it is judged by.
type UDPResult struct {
	Paths []UDPPath
	// FloorPerGiB is what ChaCha20-Poly1305 alone costs per GiB of
	// 1,280-byte packets on this machine (seconds, one core, Go's
	// x/crypto): WireGuard's own work, which no data plane avoids.
	FloorPerGiB Sample
	Skipped     []string
}

// Names of the UDP rows.
const (
	PathUDPTransparent = "tsinject sidecar: transparent (TUN)"
	PathUDPSOCKS       = "tsinject sidecar: SOCKS5 UDP"
	PathUDPUserspace   = "tailscaled userspace: SOCKS5 UDP"
	PathUDPKernel      = "tailscaled kernel (TUN)"
)

const (
	udpBlast   = 3 * time.Second
	udpPayload = 1200
	udpEchoes  = 200
)

// udpClient is how one path's app sends and receives.
type udpClient struct {
	send func([]byte) error
	// echo sends p to the echo port and waits for it back.
	echo func(p []byte) error
	// renew, if set, starts afresh before each repeat (a SOCKS5 proxy
	// may drop an association it could not keep up with).
	renew func() error
	pid   int // the data plane process
}

// udpPacedRate is the packets per second of the CPU run: what every path
// carries without loss here, so that the CPU is per GiB carried, not
// spent on datagrams dropped later.
const udpPacedRate = 5000

// UDP compares the sidecar's UDP paths (transparent through the pod's TUN,
// explicit through SOCKS5) with tailscaled's, userspace (SOCKS5) and
// kernel (TUN in a network namespace), in the same run, against one tsnet
// peer that counts what arrives and echoes.
func UDP(ctx context.Context, proxyBin, tsBins string, repeats int) (*UDPResult, error) {
	res := &UDPResult{}
	for i := 0; i < repeats; i++ {
		res.FloorPerGiB = append(res.FloorPerGiB, cryptoFloor())
	}
	if err := netns.Check(); err != nil {
		return nil, fmt.Errorf("needs network namespaces (root): %v", err)
	}
	pod, err := netns.New("tsi-bench-udp")
	if err != nil {
		return nil, err
	}
	defer pod.Close()
	tn, err := tailnet.Start(tailnet.Options{Addr: pod.HostIP, AuthKey: "tskey-auth-bench"})
	if err != nil {
		return nil, err
	}
	defer tn.Close()
	sink, err := tn.NewNode(ctx, "sink", tailnet.NodeOptions{})
	if err != nil {
		return nil, err
	}
	defer sink.Close()
	var got atomic.Int64
	discard, err := sink.ListenPacket("udp", netip.AddrPortFrom(sink.IPv4, 9).String())
	if err != nil {
		return nil, err
	}
	defer discard.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := discard.ReadFrom(buf)
			if err != nil {
				return
			}
			got.Add(int64(n))
		}
	}()
	echo, err := sink.ListenPacket("udp", netip.AddrPortFrom(sink.IPv4, 7).String())
	if err != nil {
		return nil, err
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], from)
		}
	}()
	bulk, ping := netip.AddrPortFrom(sink.IPv4, 9).String(), netip.AddrPortFrom(sink.IPv4, 7).String()

	measure := func(name, note string, c udpClient) {
		r := UDPPath{Name: name, Note: note}
		payload := make([]byte, udpPayload)
		for i := 0; i < repeats; i++ {
			if c.renew != nil {
				if err := c.renew(); err != nil {
					res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %v", name, err))
					return
				}
			}
			if err := c.echo(payload[:64]); err != nil { // the path is up
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %v", name, err))
				return
			}
			// CPU, paced: every 2 ms a burst, udpPacedRate a second.
			cpu0, _ := cpuSeconds(c.pid)
			got.Store(0)
			start := time.Now()
			tick := time.NewTicker(2 * time.Millisecond)
			for sent := 0; time.Since(start) < udpBlast; <-tick.C {
				for due := int(time.Since(start).Seconds() * udpPacedRate); sent < due; sent++ {
					c.send(payload)
				}
			}
			tick.Stop()
			time.Sleep(300 * time.Millisecond) // what is in flight arrives
			cpu1, _ := cpuSeconds(c.pid)
			if n := got.Load(); n > 0 {
				r.CPUPerGiB = append(r.CPUPerGiB, (cpu1-cpu0)/(float64(n)/(1<<30)))
			}
			// Throughput: as fast as the app can.
			got.Store(0)
			start = time.Now()
			for time.Since(start) < udpBlast {
				c.send(payload) // a full buffer drops, as it would for the app
			}
			time.Sleep(300 * time.Millisecond)
			n := got.Load()
			secs := udpBlast.Seconds()
			r.Mbps = append(r.Mbps, float64(n)*8/secs/1e6)
			r.Kpps = append(r.Kpps, float64(n)/udpPayload/secs/1e3)
			if c.renew != nil {
				if err := c.renew(); err != nil {
					res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %v", name, err))
					return
				}
			}
			var rtts []time.Duration
			for j := 0; j < udpEchoes; j++ {
				t := time.Now()
				if err := c.echo(payload[:64]); err != nil {
					res.Skipped = append(res.Skipped, fmt.Sprintf("%s: echo: %v", name, err))
					return
				}
				rtts = append(rtts, time.Since(t))
			}
			r.RTTP50 = append(r.RTTP50, float64(Percentile(rtts, 50))/1e6)
			r.RTTP99 = append(r.RTTP99, float64(Percentile(rtts, 99))/1e6)
		}
		res.Paths = append(res.Paths, r)
	}

	dir, err := os.MkdirTemp("", "bench-udp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	keyFile := filepath.Join(dir, "authkey")
	os.WriteFile(keyFile, []byte(tn.AuthKey), 0o644)

	// The sidecar, transparent, in the pod's namespace with its TUN.
	if err := func() error {
		tunDir := filepath.Join(dir, "tun")
		os.Mkdir(tunDir, 0o755)
		if out, err := pod.Command(proxyBin, "init", "--tun-dir", tunDir).CombinedOutput(); err != nil || !strings.Contains(string(out), "through "+contract.TunName) {
			return fmt.Errorf("init: %v: %s", err, out)
		}
		state := filepath.Join(dir, "tstate")
		os.MkdirAll(state, 0o700)
		os.Chown(state, contract.ProxyUID, contract.ProxyUID)
		health := netip.AddrPortFrom(pod.IP, contract.HealthPort).String()
		cmd := pod.AsUser(contract.ProxyUID, proxyBin, "sidecar")
		cmd.Env = append(append(os.Environ(), tailnet.NodeEnv()...),
			contract.EnvControlURL+"="+tn.ControlURL(), contract.EnvAuthKeyFile+"="+keyFile,
			contract.EnvStateDir+"="+state, contract.EnvHostname+"=transparent", contract.EnvEgressMode+"=transparent",
			contract.EnvTunDir+"="+tunDir, contract.EnvHealthAddr+"="+health, "HOME="+state)
		logs := &lockedBuf{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			return err
		}
		p := &proc{cmd: cmd, logs: logs}
		defer p.stop()
		if err := waitUntil(ctx, 30*time.Second, func() error { return httpOK("http://" + health + "/readyz") }); err != nil {
			return fmt.Errorf("%v\n%s", err, logs.String())
		}
		c, err := connectedUDP(pod, bulk, ping, p.pid())
		if err != nil {
			return err
		}
		measure(PathUDPTransparent, "unmodified client in the pod; WireGuard reads the TUN, no netstack", c)
		return nil
	}(); err != nil {
		res.Skipped = append(res.Skipped, PathUDPTransparent+": "+err.Error())
	}

	// The sidecar, explicit: SOCKS5 UDP ASSOCIATE on the host.
	if err := func() error {
		socks, health := freeAddr(), freeAddr()
		sc, err := startProc(proxyBin, []string{"sidecar"}, []string{
			contract.EnvControlURL + "=" + tn.ControlURL(), contract.EnvAuthKeyFile + "=" + keyFile,
			contract.EnvStateDir + "=" + filepath.Join(dir, "sstate"), contract.EnvHostname + "=explicit",
			contract.EnvHealthAddr + "=" + health, contract.EnvSOCKS5Addr + "=" + socks, contract.EnvHTTPProxy + "=",
		})
		if err != nil {
			return err
		}
		defer sc.stop()
		if err := waitUntil(ctx, 30*time.Second, func() error { return httpOK("http://" + health + "/readyz") }); err != nil {
			return fmt.Errorf("%v\n%s", err, sc.logs.String())
		}
		c, closeFn, err := socksUDP(socks, bulk, ping, sc.pid())
		if err != nil {
			return err
		}
		defer closeFn()
		measure(PathUDPSOCKS, "explicit egress: each destination a UDP flow through netstack", c)
		return nil
	}(); err != nil {
		res.Skipped = append(res.Skipped, PathUDPSOCKS+": "+err.Error())
	}

	// tailscaled in userspace mode: its SOCKS5 proxy.
	if err := func() error {
		ts, err := startTailscaled(ctx, tsBins, tn, "tailscaled-udp")
		if err != nil {
			return err
		}
		defer ts.close()
		c, closeFn, err := socksUDP(ts.socks, bulk, ping, ts.pid())
		if err != nil {
			return err
		}
		defer closeFn()
		measure(PathUDPUserspace, "--tun=userspace-networking (the baseline)", c)
		return nil
	}(); err != nil {
		res.Skipped = append(res.Skipped, PathUDPUserspace+": "+err.Error())
	}

	// tailscaled in kernel mode, in a namespace of its own.
	if err := func() error {
		kns, err := netns.New("tsi-bench-k")
		if err != nil {
			return err
		}
		defer kns.Close()
		if err := kns.RouteOut(netip.PrefixFrom(pod.HostIP, 32)); err != nil {
			return err
		}
		kdir := filepath.Join(dir, "kernel")
		os.MkdirAll(kdir, 0o700)
		sock := filepath.Join(kdir, "sock")
		cmd := kns.Command(filepath.Join(tsBins, "tailscaled"), "--tun=tsbench0", "--statedir="+kdir, "--socket="+sock, "--port=0")
		cmd.Env = append(append(os.Environ(), tailnet.NodeEnv()...), "STATE_DIRECTORY="+kdir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		logs := &lockedBuf{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			return err
		}
		p := &proc{cmd: cmd, logs: logs}
		defer p.stop()
		if err := waitUntil(ctx, 10*time.Second, func() error { _, err := os.Stat(sock); return err }); err != nil {
			return fmt.Errorf("tailscaled socket: %v\n%s", err, logs.String())
		}
		cli := filepath.Join(tsBins, "tailscale")
		upCtx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(upCtx, cli, "--socket="+sock, "up", "--login-server="+tn.ControlURL(),
			"--authkey="+tn.AuthKey, "--hostname=tailscaled-kernel", "--accept-dns=false").CombinedOutput(); err != nil {
			return fmt.Errorf("tailscale up: %v: %s\n%s", err, out, logs.String())
		}
		c, err := connectedUDP(kns, bulk, ping, p.pid())
		if err != nil {
			return err
		}
		measure(PathUDPKernel, "--tun in its own namespace: the kernel's UDP, WireGuard in userspace", c)
		return nil
	}(); err != nil {
		res.Skipped = append(res.Skipped, PathUDPKernel+": "+err.Error())
	}
	return res, nil
}

// connectedUDP is an app in ns with a UDP socket to each port.
func connectedUDP(ns *netns.NS, bulk, ping string, pid int) (udpClient, error) {
	b, err := ns.Dial("udp", bulk)
	if err != nil {
		return udpClient{}, err
	}
	e, err := ns.Dial("udp", ping)
	if err != nil {
		return udpClient{}, err
	}
	buf := make([]byte, 2048)
	return udpClient{pid: pid,
		send: func(p []byte) error { _, err := b.Write(p); return err },
		echo: func(p []byte) error {
			for try := 0; try < 50; try++ { // a path may not be up yet
				e.Write(p)
				e.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := e.Read(buf); err == nil {
					return nil
				}
			}
			return errors.New("no echo")
		},
	}, nil
}

// socksUDP is an app speaking SOCKS5 UDP ASSOCIATE to the proxy at addr:
// one association for the bulk, one for the echoes, both renewed before
// each repeat and after each blast.
func socksUDP(addr, bulk, ping string, pid int) (udpClient, func(), error) {
	var a, e *socks5udp.Assoc
	closeAll := func() {
		if a != nil {
			a.Close()
		}
		if e != nil {
			e.Close()
		}
		a, e = nil, nil
	}
	renew := func() (err error) {
		closeAll()
		if a, err = socks5udp.Associate(addr, 10*time.Second); err != nil {
			return err
		}
		e, err = socks5udp.Associate(addr, 10*time.Second)
		return err
	}
	if err := renew(); err != nil {
		closeAll()
		return udpClient{}, nil, err
	}
	bh, _ := socks5udp.Header(bulk)
	eh, _ := socks5udp.Header(ping)
	buf := make([]byte, 2048)
	return udpClient{pid: pid, renew: renew,
		send: func(p []byte) error { return a.Send(bh, p) },
		echo: func(p []byte) error {
			for try := 0; try < 50; try++ {
				e.Send(eh, p)
				if _, err := e.Receive(buf, time.Now().Add(200*time.Millisecond)); err == nil {
					return nil
				}
			}
			return errors.New("no echo")
		},
	}, closeAll, nil
}

// cpuSeconds is a process's user and system CPU time so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command's closing parenthesis; utime and stime
	// are the 14th and 15th of the line.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100, nil // USER_HZ
}

// cryptoFloor is the seconds ChaCha20-Poly1305 takes to seal a GiB of
// 1,280-byte packets here (measured on 256 MiB).
func cryptoFloor() float64 {
	key := make([]byte, chacha20poly1305.KeySize)
	rand.Read(key)
	aead, _ := chacha20poly1305.New(key)
	pkt := make([]byte, 1280)
	dst := make([]byte, 0, 1280+aead.Overhead())
	nonce := make([]byte, aead.NonceSize())
	const total = 256 << 20
	start := time.Now()
	for done := 0; done < total; done += len(pkt) {
		nonce[0]++
		dst = aead.Seal(dst[:0], nonce, pkt, nil)
	}
	return time.Since(start).Seconds() * (1 << 30) / total
}
