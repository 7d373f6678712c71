package bench

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/proxy/apiproxy"
	"github.com/tsinject/tsinject/test/netns"
	"github.com/tsinject/tsinject/test/tailnet"
)

// MemoryRow is one data-plane process under one load. Every repeat starts
// a fresh process, so its peak RSS (VmHWM) belongs to that load alone.
type MemoryRow struct {
	Role     string // sidecar, connector, API proxy
	Process  string
	Load     string
	LimitMiB float64 // the container limit it was started with; 0: none
	IdleMiB  Sample
	PeakMiB  Sample
	Gbps     Sample // every stream together; requests/s for small requests
	// CPU time per unit of work (GiB moved; 1,000 small requests): the
	// process's own (none in-process), and the whole path's: this
	// process and the bench's, which holds the far end and the client.
	OwnCPU, PathCPU Sample
	// Baseline says which of the role's ratios compare with this row:
	// BaselineMemory, BaselineRate or both.
	Baseline string
}

// Baselines.
const (
	BaselineMemory = "memory"
	BaselineRate   = "rate"
	BaselineBoth   = "memory, rate"
)

// Loads every role is measured under.
const (
	LoadDownload  = "1 download"
	LoadDownloads = "4 downloads at once"
	LoadUpload    = "1 upload"
	LoadSmall     = "64 clients, small requests"
)

// Loads in the order they are run and reported.
var Loads = []string{LoadDownload, LoadDownloads, LoadUpload, LoadSmall}

// memSubject is a process to start fresh for each repeat.
type memSubject struct {
	role, name string
	limit      int64 // bytes; 0: none
	baseline   string
	// start returns the process's pid (0: in-process), where its profiles
	// are served ("" if nowhere) and how to stop it.
	start func(ctx context.Context, i int, debugAddr string) (pid int, stop func(), err error)
	// fetch downloads size bytes through the subject; send uploads them;
	// small says how a client reaches the small HTTP response.
	fetch, send func(ctx context.Context) (int64, error)
	small       func() (dialer, string)
}

// MemoryOptions for Memory.
type MemoryOptions struct {
	ProxyBin, TailscaledBins string
	Size                     int64
	Repeats                  int
	// ProfileDir, if set, receives a heap profile (live and allocated
	// bytes) of every tsinject process after each load.
	ProfileDir string
	Log        func(format string, args ...any)
	// ProxyEnv is added to every tsinject process's environment: a knob
	// to try (GOGC=100), measured against the same baselines.
	ProxyEnv []string
	// Roles limits the run to some of sidecar, connector and API proxy.
	Roles []string
}

// Memory measures the data plane's memory and throughput under bulk and
// many small transfers, beside tailscaled and a direct tsnet Dial, each
// tsinject process started with the container limit tsinject ships.
func Memory(ctx context.Context, o MemoryOptions) ([]MemoryRow, error) {
	if err := netns.Check(); err != nil {
		return nil, fmt.Errorf("needs a test subnet in a network namespace: %w", err)
	}
	host, err := netns.New("tsi-bench-mem")
	if err != nil {
		return nil, err
	}
	defer host.Close()
	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-bench"})
	if err != nil {
		return nil, err
	}
	defer tn.Close()
	tn.Grant(tailcfg.PeerCapMap{apiproxy.CapKubernetes: {`{"impersonate":{"groups":["bench"]}}`}})

	// The far end: a tailnet node for egress, a host behind the
	// connectors, a TLS server behind the API proxy. Each serves
	// downloads on 9, uploads on 7 and a small response on 80.
	sinkNode, err := tn.NewNode(ctx, "sink", tailnet.NodeOptions{})
	if err != nil {
		return nil, err
	}
	defer sinkNode.Close()
	s := sink{size: o.Size}
	for port, serve := range map[string]func(net.Listener){"9": s.serveBulk, "7": s.serveDiscard, "80": serveSmall} {
		ln, err := sinkNode.Listen("tcp", ":"+port)
		if err != nil {
			return nil, err
		}
		go serve(ln)
		hl, err := host.Listen("tcp", net.JoinHostPort(host.IP.String(), port))
		if err != nil {
			return nil, err
		}
		defer hl.Close()
		go serve(hl)
	}
	client, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{AcceptRoutes: true})
	if err != nil {
		return nil, err
	}
	defer client.Close()

	dir, _ := os.MkdirTemp("", "bench-memory-")
	defer os.RemoveAll(dir)
	authKey := filepath.Join(dir, "authkey")
	os.WriteFile(authKey, []byte(tn.AuthKey), 0o600)
	sidecarRes, proxyRes := injector.DefaultConfig().Resources, proxyset.DefaultResources()
	sidecarLimit := mustBytes(sidecarRes.Limits.Memory().Value())
	proxyLimit := mustBytes(proxyRes.Limits.Memory().Value())
	sinkIP := sinkNode.IPv4.String()
	hostIP := host.IP.String()
	route := netip.PrefixFrom(host.IP, 30).Masked()

	// tsinject-proxy with the environment its controller gives it.
	startProxy := func(ctx context.Context, args []string, limit int64, debugAddr string, env ...string) (*proc, string, error) {
		health := freeAddr()
		env = append(env, o.ProxyEnv...)
		env = append(env, contract.EnvControlURL+"="+tn.ControlURL(), contract.EnvAuthKeyFile+"="+authKey,
			contract.EnvHealthAddr+"="+health, contract.EnvMemoryLimit+"="+strconv.FormatInt(limit, 10))
		if debugAddr != "" {
			env = append(env, contract.EnvDebugAddr+"="+debugAddr)
		}
		p, err := startProc(o.ProxyBin, args, env)
		if err != nil {
			return nil, "", err
		}
		if err := waitUntil(ctx, 30*time.Second, func() error { return httpOK("http://" + health + "/readyz") }); err != nil {
			p.stop()
			return nil, "", fmt.Errorf("%s: %v\n%s", args[0], err, p.logs.String())
		}
		return p, health, nil
	}
	state := func(name string) string { return filepath.Join(dir, name) }

	// Subnet routers: only the one being measured has its route approved.
	var routerMu sync.Mutex
	var routers []key.NodePublic
	approveOnly := func(ctx context.Context, hostname string) error {
		var k key.NodePublic
		err := waitUntil(ctx, 20*time.Second, func() error {
			for _, n := range tn.Control.AllNodes() {
				if n.Hostinfo.Hostname() == hostname && n.Hostinfo.RoutableIPs().Len() > 0 {
					k = n.Key
					return nil
				}
			}
			return fmt.Errorf("%s has not advertised its routes", hostname)
		})
		if err != nil {
			return err
		}
		routerMu.Lock()
		for _, r := range routers {
			tn.ApproveRoutes(r)
		}
		routers = append(routers, k)
		routerMu.Unlock()
		tn.ApproveRoutes(k, route)
		return waitUntil(ctx, 30*time.Second, func() error {
			_, _, err := latency(client.Dial, net.JoinHostPort(hostIP, "80"), 1)
			return err
		})
	}

	// The API proxy's upstream: TLS, as the API server is.
	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			io.Copy(io.Discard, r.Body)
			return
		}
		if r.URL.Path == "/bulk" {
			w.Header().Set("Content-Length", strconv.FormatInt(o.Size, 10))
			for sent := int64(0); sent < o.Size; {
				n, err := w.Write(zeros[:min(int64(len(zeros)), o.Size-sent)])
				sent += int64(n)
				if err != nil {
					return
				}
			}
			return
		}
		io.WriteString(w, "ok")
	}))
	upstream.EnableHTTP2 = true
	upstream.StartTLS()
	defer upstream.Close()
	caFile, tokenFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upstream.Certificate().Raw}), 0o600)
	os.WriteFile(tokenFile, []byte("bench"), 0o600)
	viaAPIProxy := func(hostname string) (func(context.Context) (int64, error), func(context.Context) (int64, error), func() (dialer, string)) {
		hc := &http.Client{Transport: &http.Transport{DialContext: client.Dial, MaxIdleConnsPerHost: 64}}
		base := "http://" + tn.FQDN(hostname)
		fetch := func(ctx context.Context) (int64, error) {
			return httpTransfer(ctx, hc, http.MethodGet, base+"/bulk", 0)
		}
		send := func(ctx context.Context) (int64, error) {
			return httpTransfer(ctx, hc, http.MethodPost, base+"/upload", o.Size)
		}
		return fetch, send, func() (dialer, string) { return client.Dial, base + "/small" }
	}

	// Through a SOCKS5 proxy whose address each fresh process chooses.
	viaSOCKS := func(sub *memSubject, host string) func(addr string) {
		var proxyAddr atomic.Value
		dial := func() dialer { return socksDialer(proxyAddr.Load().(string)) }
		sub.fetch = func(ctx context.Context) (int64, error) { return rawFetch(dial(), host+":9")(ctx) }
		sub.send = func(ctx context.Context) (int64, error) { return rawSend(dial(), host+":7", o.Size)(ctx) }
		sub.small = func() (dialer, string) { return smallAt(dial(), host+":80")() }
		return func(addr string) { proxyAddr.Store(addr) }
	}
	// Through whichever subnet router is started and approved last.
	viaRoute := func(sub *memSubject) {
		sub.fetch = rawFetch(client.Dial, hostIP+":9")
		sub.send = rawSend(client.Dial, hostIP+":7", o.Size)
		sub.small = smallAt(client.Dial, hostIP+":80")
	}
	// approved passes on a started router once its route is the one
	// approved (or the error that stopped it from starting).
	approved := func(ctx context.Context, name string, pid int, stop func(), err error) (int, func(), error) {
		if err != nil {
			return 0, nil, err
		}
		if err := approveOnly(ctx, name); err != nil {
			stop()
			return 0, nil, err
		}
		return pid, stop, nil
	}

	direct := memSubject{role: "sidecar", name: "direct tsnet Dial between two in-process nodes", baseline: BaselineRate,
		start: func(context.Context, int, string) (int, func(), error) { return 0, func() {}, nil },
		fetch: rawFetch(client.Dial, sinkIP+":9"), send: rawSend(client.Dial, sinkIP+":7", o.Size), small: smallAt(client.Dial, sinkIP+":80")}
	sc := memSubject{role: "sidecar", name: "tsinject-proxy sidecar (SOCKS5)", limit: sidecarLimit}
	scSOCKS := viaSOCKS(&sc, "sink")
	sc.start = func(ctx context.Context, i int, debugAddr string) (int, func(), error) {
		addr := freeAddr()
		p, _, err := startProxy(ctx, []string{"sidecar"}, sidecarLimit, debugAddr,
			contract.EnvStateDir+"="+state(fmt.Sprintf("sidecar-%d", i)), contract.EnvHostname+fmt.Sprintf("=sidecar-%d", i),
			contract.EnvSOCKS5Addr+"="+addr, contract.EnvHTTPProxy+"=")
		if err != nil {
			return 0, nil, err
		}
		scSOCKS(addr)
		return p.pid(), p.stop, nil
	}
	ts := memSubject{role: "sidecar", name: "tailscaled --tun=userspace-networking (SOCKS5)", baseline: BaselineMemory}
	tsSOCKS := viaSOCKS(&ts, sinkIP)
	ts.start = func(ctx context.Context, i int, _ string) (int, func(), error) {
		t, err := startTailscaled(ctx, o.TailscaledBins, tn, fmt.Sprintf("tailscaled-%d", i))
		if err != nil {
			return 0, nil, err
		}
		tsSOCKS(t.socks)
		return t.pid(), t.close, nil
	}
	cn := memSubject{role: "connector", name: "tsinject-proxy connector", limit: proxyLimit,
		start: func(ctx context.Context, i int, debugAddr string) (int, func(), error) {
			name := fmt.Sprintf("connector-%d", i)
			p, _, err := startProxy(ctx, []string{"connector"}, proxyLimit, debugAddr,
				contract.EnvStateDir+"="+state(name), contract.EnvState+"=dir", contract.EnvHostname+"="+name, "TSINJECT_ROUTES="+route.String())
			if err != nil {
				return approved(ctx, name, 0, nil, err)
			}
			return approved(ctx, name, p.pid(), p.stop, nil)
		}}
	viaRoute(&cn)
	tsr := memSubject{role: "connector", name: "tailscaled subnet router (userspace)", baseline: BaselineBoth,
		start: func(ctx context.Context, i int, _ string) (int, func(), error) {
			name := fmt.Sprintf("tailscaled-router-%d", i)
			t, err := startTailscaled(ctx, o.TailscaledBins, tn, name, "--advertise-routes="+route.String())
			if err != nil {
				return approved(ctx, name, 0, nil, err)
			}
			return approved(ctx, name, t.pid(), t.close, nil)
		}}
	viaRoute(&tsr)
	ap := memSubject{role: "API proxy", name: "tsinject-proxy apiserver (auth mode)", limit: proxyLimit}
	var apHost atomic.Value
	ap.start = func(ctx context.Context, i int, debugAddr string) (int, func(), error) {
		name := fmt.Sprintf("k8s-%d", i)
		p, _, err := startProxy(ctx, []string{"apiserver", "--upstream=" + upstream.URL, "--token-file=" + tokenFile,
			"--ca-file=" + caFile, "--tls=http"}, proxyLimit, debugAddr,
			contract.EnvStateDir+"="+state(name), contract.EnvState+"=ephemeral", contract.EnvHostname+"="+name)
		if err != nil {
			return 0, nil, err
		}
		apHost.Store(name)
		return p.pid(), p.stop, nil
	}
	ap.fetch = func(ctx context.Context) (int64, error) {
		f, _, _ := viaAPIProxy(apHost.Load().(string))
		return f(ctx)
	}
	ap.send = func(ctx context.Context) (int64, error) {
		_, s, _ := viaAPIProxy(apHost.Load().(string))
		return s(ctx)
	}
	ap.small = func() (dialer, string) { _, _, s := viaAPIProxy(apHost.Load().(string)); return s() }
	subjects := []memSubject{direct, sc, ts, cn, tsr, ap}

	// Repeats are the outer loop, so that drift in the machine's load hits
	// every process and its baselines alike.
	type cell struct {
		sub  memSubject
		load string
		row  MemoryRow
		err  error
	}
	var cells []*cell
	for _, sub := range subjects {
		if len(o.Roles) > 0 && !slices.Contains(o.Roles, sub.role) {
			continue
		}
		for _, load := range Loads {
			cells = append(cells, &cell{sub: sub, load: load, row: MemoryRow{Role: sub.role, Process: sub.name, Load: load,
				LimitMiB: float64(sub.limit) / (1 << 20), Baseline: sub.baseline}})
		}
	}
	for i := 0; i < o.Repeats; i++ {
		for _, c := range cells {
			if c.err != nil {
				continue
			}
			o.Log("memory: %s, %s (%d of %d)", c.sub.name, c.load, i+1, o.Repeats)
			if c.err = measureMemory(ctx, c.sub, c.load, o, i == 0, &c.row); c.err != nil {
				o.Log("memory: %s, %s: %v", c.sub.name, c.load, c.err)
			}
		}
	}
	var rows []MemoryRow
	var failed []string
	for _, c := range cells {
		if c.err != nil {
			// One failed load is reported; the others still count.
			failed = append(failed, fmt.Sprintf("%s, %s: %v", c.sub.name, c.load, c.err))
			continue
		}
		rows = append(rows, c.row)
	}
	if len(failed) > 0 {
		return rows, errors.New(strings.Join(failed, "; "))
	}
	return rows, nil
}

// measureMemory runs one load through a fresh process and adds the
// figures to row; the first repeat also saves profiles when asked.
func measureMemory(ctx context.Context, sub memSubject, load string, o MemoryOptions, first bool, row *MemoryRow) error {
	debugAddr := ""
	if o.ProfileDir != "" && first && sub.limit > 0 {
		debugAddr = freeAddr()
	}
	pid, stop, err := sub.start(ctx, int(time.Now().UnixNano()%1e9), debugAddr)
	if err != nil {
		return err
	}
	defer stop()
	if pid != 0 {
		// Let start-up settle: the idle figure is the steady state.
		time.Sleep(2 * time.Second)
		idle, _ := memKiB(pid, "VmRSS")
		row.IdleMiB = append(row.IdleMiB, float64(idle)/1024)
		anon, _ := memKiB(pid, "RssAnon")
		file, _ := memKiB(pid, "RssFile")
		o.Log("memory: %s idle: %d KiB resident, %d KiB anonymous, %d KiB file-backed (the binary)", sub.name, idle, anon, file)
		if debugAddr != "" && load == LoadDownload {
			name := fmt.Sprintf("%s-idle.heap.pb.gz", fileSafe(sub.role))
			if err := saveProfile("http://"+debugAddr+"/debug/pprof/heap?gc=1", filepath.Join(o.ProfileDir, name)); err != nil {
				o.Log("profile %s: %v", name, err)
			}
		}
	}
	// A CPU profile of the load's first seconds, taken while it runs.
	cpuDone := make(chan struct{})
	if debugAddr != "" {
		name := fmt.Sprintf("%s-%s.cpu.pb.gz", fileSafe(sub.role), fileSafe(load))
		go func() {
			defer close(cpuDone)
			if err := saveProfile("http://"+debugAddr+"/debug/pprof/profile?seconds=2", filepath.Join(o.ProfileDir, name)); err != nil {
				o.Log("profile %s: %v", name, err)
			}
		}()
	} else {
		close(cpuDone)
	}
	before, benchBefore := cpuTime(pid), selfCPU()
	rate, work, err := runLoad(ctx, sub, load, o.Size)
	<-cpuDone
	if err != nil {
		return err
	}
	own, path := 0.0, selfCPU()-benchBefore
	if pid != 0 {
		own = cpuTime(pid) - before
		path += own
		row.OwnCPU = append(row.OwnCPU, own/work)
	}
	row.PathCPU = append(row.PathCPU, path/work)
	row.Gbps = append(row.Gbps, rate)
	if pid != 0 {
		peak, _ := memKiB(pid, "VmHWM")
		row.PeakMiB = append(row.PeakMiB, float64(peak)/1024)
	}
	if debugAddr != "" {
		name := fmt.Sprintf("%s-%s.heap.pb.gz", fileSafe(sub.role), fileSafe(load))
		if err := saveProfile("http://"+debugAddr+"/debug/pprof/heap", filepath.Join(o.ProfileDir, name)); err != nil {
			o.Log("profile %s: %v", name, err)
		}
	}
	return nil
}

// runLoad returns Gbit/s for transfers, requests/s for small requests,
// and the work done: GiB moved, or thousands of requests.
func runLoad(ctx context.Context, sub memSubject, load string, size int64) (rate, work float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	streams, do := 1, sub.fetch
	switch load {
	case LoadDownloads:
		streams = 4
	case LoadUpload:
		do = sub.send
	case LoadSmall:
		// Each client keeps its connection, as HTTP clients do.
		const clients, each = 64, 50
		start := time.Now()
		err := parallel(clients, func() error {
			dial, url := sub.small()
			tr := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			for j := 0; j < each; j++ {
				if _, err := httpTransfer(ctx, hc, http.MethodGet, url, 0); err != nil {
					return err
				}
			}
			return nil
		})
		return clients * each / time.Since(start).Seconds(), clients * each / 1000.0, err
	}
	var total atomic.Int64
	start := time.Now()
	err = parallel(streams, func() error {
		n, err := do(ctx)
		total.Add(n)
		if err == nil && n < size {
			err = fmt.Errorf("transferred %d of %d bytes", n, size)
		}
		return err
	})
	moved := float64(total.Load())
	return moved * 8 / time.Since(start).Seconds() / 1e9, moved / (1 << 30), err
}

func parallel(n int, f func() error) error {
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() { errs <- f() }()
	}
	var first error
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func rawFetch(dial dialer, addr string) func(context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		c, err := dial(ctx, "tcp", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		stopOnDone(ctx, c)
		return io.Copy(io.Discard, c)
	}
}

func rawSend(dial dialer, addr string, size int64) func(context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		c, err := dial(ctx, "tcp", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		stopOnDone(ctx, c)
		n, err := io.Copy(c, io.LimitReader(zeroReader{}, size))
		if err != nil {
			return n, err
		}
		// The far end acknowledges once it has read everything.
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			return n, fmt.Errorf("no acknowledgement of the upload: %w", err)
		}
		return n, nil
	}
}

// smallAt is where a client gets the small HTTP response.
func smallAt(dial dialer, addr string) func() (dialer, string) {
	return func() (dialer, string) { return dial, "http://" + addr + "/" }
}

func httpTransfer(ctx context.Context, hc *http.Client, method, url string, size int64) (int64, error) {
	var body io.Reader
	if size > 0 {
		body = io.LimitReader(zeroReader{}, size)
	}
	req, _ := http.NewRequestWithContext(ctx, method, url, body)
	if size > 0 {
		req.ContentLength = size
	}
	res, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s %s: %s", method, url, res.Status)
	}
	if size > 0 {
		n = size
	}
	return n, err
}

func stopOnDone(ctx context.Context, c net.Conn) {
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// serveDiscard reads size bytes from each connection, then acknowledges
// them with one byte.
func (s sink) serveDiscard(ln net.Listener) {
	serveEach(ln, func(c net.Conn) {
		if n, _ := io.CopyN(io.Discard, c, s.size); n == s.size {
			c.Write([]byte{1})
		}
	})
}

func saveProfile(url, path string) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, res.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fileSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	return string(b)
}

func mustBytes(v int64) int64 {
	if v <= 0 {
		panic("bench: a shipped memory limit is not set")
	}
	return v
}

// memoryRow finds role's row for load: the baseline of kind if kind is
// set, else the tsinject process.
func memoryRow(rows []MemoryRow, role, load, kind string) (MemoryRow, bool) {
	for _, r := range rows {
		if r.Role != role || r.Load != load {
			continue
		}
		if kind == "" && r.LimitMiB > 0 || kind != "" && strings.Contains(r.Baseline, kind) {
			return r, true
		}
	}
	return MemoryRow{}, false
}

// LimitMargin is the fraction of its container limit a process's peak
// must stay under: the rest is the margin for a busier node.
const LimitMargin = 0.8

// concludeMemory checks issue 12's targets.
func concludeMemory(rows []MemoryRow) []string {
	var out []string
	for _, role := range []string{"sidecar", "connector", "API proxy"} {
		one, ok := memoryRow(rows, role, LoadDownload, "")
		if !ok {
			continue
		}
		if mb, ok := memoryRow(rows, role, LoadDownload, BaselineMemory); ok {
			peak := one.PeakMiB.Median() / mb.PeakMiB.Median()
			idle := one.IdleMiB.Median() / mb.IdleMiB.Median()
			out = append(out, fmt.Sprintf("%s peak RSS during one download: %.2fx %s's (target <= 0.3x): %s; idle %.2fx (target <= 0.6x): %s.",
				role, peak, mb.Process, verdict(peak <= 0.3), idle, verdict(idle <= 0.6)))
		}
		if rb, ok := memoryRow(rows, role, LoadDownload, BaselineRate); ok {
			rt := one.Gbps.Median() / rb.Gbps.Median()
			line := fmt.Sprintf("%s throughput of one download: %.2fx %s's (target >= 0.9x): %s", role, rt, rb.Process, verdict(rt >= 0.9))
			if len(one.PathCPU) > 0 && len(rb.PathCPU) > 0 {
				line += fmt.Sprintf("; CPU per GiB moved, whole path: %.2fx", one.PathCPU.Median()/rb.PathCPU.Median())
			}
			out = append(out, line+".")
		}
		if mb, ok := memoryRow(rows, role, LoadDownload, BaselineMemory); ok && len(one.OwnCPU) > 0 && len(mb.OwnCPU) > 0 {
			out = append(out, fmt.Sprintf("%s CPU per GiB of one download, its own: %.2fx %s's.", role, one.OwnCPU.Median()/mb.OwnCPU.Median(), mb.Process))
		}
		for _, load := range Loads {
			r, ok := memoryRow(rows, role, load, "")
			if !ok {
				continue
			}
			frac := r.PeakMiB.Median() / r.LimitMiB
			line := fmt.Sprintf("%s, %s: peak %.2f of its %.0f MiB limit (target < %.1f): %s", role, load, frac, r.LimitMiB, LimitMargin, verdict(frac < LimitMargin))
			if load == LoadDownloads {
				line += fmt.Sprintf("; %.2f Gbit/s together, %.2fx one download's", r.Gbps.Median(), r.Gbps.Median()/one.Gbps.Median())
			}
			out = append(out, line+".")
		}
	}
	return out
}

// writeMemory renders the memory section.
func writeMemory(p func(string, ...any), rows []MemoryRow) {
	p("\n## Memory under load\n\nEach figure comes from fresh processes (peak RSS is the kernel's VmHWM of that process and load alone). tsinject's processes run with the memory limit tsinject ships for them in `%s` (the runtime's soft limit follows it); tailscaled runs as its users run it. Downloads and uploads move 256 MiB each; small requests are 64 clients making 50 requests each over a kept connection.\n\n"+
		"CPU is user and system time per GiB moved (per 1,000 small requests): the process's own, and the whole path's, which adds the bench process holding the far end, the client and the in-process nodes. On 2 shared cores throughput follows the whole path's CPU.\n\n", contract.EnvMemoryLimit)
	p("| Role | Process | Load | Limit | Idle RSS | Peak RSS | Peak / limit | Throughput | CPU, own | CPU, whole path |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		limit, frac, idle, peak := "none", "", "–", "–"
		if r.LimitMiB > 0 {
			limit = fmt.Sprintf("%.0f MiB", r.LimitMiB)
			frac = fmt.Sprintf("%.2f", r.PeakMiB.Median()/r.LimitMiB)
		}
		if len(r.PeakMiB) > 0 {
			idle, peak = pm(r.IdleMiB, " MiB", 1), pm(r.PeakMiB, " MiB", 1)
		} else {
			limit = "in-process"
		}
		rate, unit := pm(r.Gbps, " Gbit/s", 2), " s/GiB"
		if r.Load == LoadSmall {
			rate, unit = pm(r.Gbps, " req/s", 0), " s/1k req"
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Role, r.Process, r.Load, limit, idle, peak, frac, rate, pm(r.OwnCPU, unit, 2), pm(r.PathCPU, unit, 2))
	}
}
