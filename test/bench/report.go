package bench

import (
	"fmt"
	"html"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Report is everything one run measured.
type Report struct {
	Command   string
	Started   time.Time
	Took      time.Duration
	Versions  map[string]string
	Admission []AdmissionResult
	LargePod  LargePod
	Sidecar   *SidecarResult
	Connector []PathResult
	Services  []PathResult
	// ServicesSkipped says which Services rows were not measured, and why.
	ServicesSkipped []string
	// Web is the HTTPS ingress proxy beside `tailscale serve --https`;
	// WebSkipped says which rows were not measured, and why.
	Web        []PathResult
	WebSkipped []string
	// UDP is the sidecar's UDP beside tailscaled's, userspace and kernel.
	UDP      *UDPResult
	API      []APIResult
	Failover *FailoverResult
	// Recording is what recording an exec session costs the API proxy.
	Recording *RecordingResult
	// RecordingsPage is how fast the recorder's page lists sessions.
	RecordingsPage *RecordingsPageResult
	Memory         []MemoryRow
	// Manager is the manager's peak RSS among hostile objects, and what
	// they were.
	Manager     []ManagerMemoryRow
	ManagerLoad string
	Burst       []BurstResult
	Errors      []string
	Conclusion  []string // targets, met or missed, with what limits them
}

// Machine describes where the run happened.
func Machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/1024/1024)
	}
	return fmt.Sprintf("%s, %d cores%s, %s/%s", model, runtime.NumCPU(), mem, runtime.GOOS, runtime.GOARCH)
}

func pm(s Sample, unit string, prec int) string {
	if len(s) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.*f%s ±%.0f%%", prec, s.Median(), unit, s.Spread())
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// Write renders the report as Markdown.
func (r *Report) Write(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("# Benchmarks\n\nMeasured by `%s` on %s, %s, in %s. Every figure is the median of repeated runs with its spread (± half the min–max range, as %% of the median); ratios compare with a baseline measured in the same run.\n\n",
		r.Command, Machine(), r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Took.Round(time.Second))
	p("Versions: ")
	first := true
	for _, k := range []string{"go", "tailscale", "kubernetes", "tsinject"} {
		if v, ok := r.Versions[k]; ok {
			if !first {
				p(", ")
			}
			p("%s %s", k, v)
			first = false
		}
	}
	p(".\n\nThe load generators run on the same cores as the systems they measure; the baselines share that handicap.\n")

	p("\n## Targets\n\n")
	for _, c := range r.Conclusion {
		p("- %s\n", c)
	}
	if len(r.Errors) > 0 {
		p("\nNot measured in this run:\n\n")
		for _, e := range r.Errors {
			p("- %s\n", e)
		}
	}

	if len(r.Admission) > 0 {
		r.writeAdmission(p)
	}
	if len(r.Burst) > 0 {
		r.writeBurst(p)
	}
	if s := r.Sidecar; s != nil {
		p("\n## Sidecar versus tailscaled\n\n`tsinject-proxy sidecar` and `tailscaled --tun=userspace-networking` (built from tailscale.com at the same version), both joined to the in-process tailnet on this host. Start-up is from exec to ready (sidecar: `/readyz`, which includes a home DERP connection; tailscaled: `tailscale up` done and `BackendState` Running).\n\n")
		p("| Process | Start to ready | Idle RSS | Peak RSS (after the throughput runs) |\n|---|---|---|---|\n")
		for _, f := range s.Footprints {
			p("| %s | %s | %.1f MiB | %.1f MiB |\n", f.Name, pm(f.ReadyMs, " ms", 0), f.IdleRSSMiB, f.PeakRSSMiB)
		}
		p("\n![Egress throughput](benchmarks-egress.svg)\n\n")
		base := findPath(s.Paths, "tailscaled: SOCKS5")
		ceil := findPath(s.Paths, "loopback TCP (ceiling)")
		p("| Path | Throughput | vs tailscaled SOCKS5 | vs loopback | Request p50 | p99 | Notes |\n|---|---|---|---|---|---|---|\n")
		for _, pr := range s.Paths {
			p("| %s | %s | %s | %s | %s | %s | %s |\n", pr.Name, pm(pr.Gbps, " Gbit/s", 2), ratio(pr.Gbps.Median(), base), ratio(pr.Gbps.Median(), ceil), pm(pr.P50, " ms", 3), pm(pr.P99, " ms", 3), pr.Note)
		}
		for _, sk := range s.Skipped {
			p("\nNot measured: %s\n", sk)
		}
	}
	if len(r.Memory) > 0 {
		writeMemory(p, r.Memory)
	}
	if len(r.Manager) > 0 {
		p("\n## The manager among hostile objects\n\nWhat tenants can write into objects the manager caches: %s. The manager runs as a process against a real API server, with the %d MiB limit the manifests ship in its environment (the runtime's soft limit follows it); peak RSS is the kernel's VmHWM from start until its controllers have synced their caches and a tenth of the Services have been edited twice while it watches. Beside it, in the same run, the manager as it was before its caches were trimmed.\n\n", r.ManagerLoad, ManagerLimit>>20)
		p("| Manager | Peak RSS | Of its limit |\n|---|---|---|\n")
		for _, m := range r.Manager {
			p("| %s | %s | %.2f |\n", m.Manager, pm(m.PeakMiB, " MiB", 0), m.PeakMiB.Median()/(ManagerLimit>>20))
		}
	}
	if len(r.Connector) > 0 {
		p("\n## Connector versus tailscaled as a subnet router\n\nA test host in a network namespace; a tailnet peer with routes accepted downloads from it through the approved router.\n\n")
		base := findPath(r.Connector, "tailscaled subnet router")
		p("| Router | Throughput | vs tailscaled | Request p50 | p99 | Notes |\n|---|---|---|---|---|---|\n")
		for _, pr := range r.Connector {
			p("| %s | %s | %s | %s | %s | %s |\n", pr.Name, pm(pr.Gbps, " Gbit/s", 2), ratio(pr.Gbps.Median(), base), pm(pr.P50, " ms", 3), pm(pr.P99, " ms", 3), pr.Note)
		}
	}
	if len(r.Services) > 0 || len(r.ServicesSkipped) > 0 {
		p("\n## Services on the tailnet versus tailscaled\n\nEgress: a client with no tailnet of its own downloads from a tailnet server through `tsinject-proxy egress` (at its port on loopback: in a cluster kube-proxy adds its hop to both) and through tailscaled's SOCKS5 proxy. Ingress: a tailnet peer downloads from a server on the proxy's host through `tsinject-proxy ingress` and through `tailscale serve --tcp` on tailscaled in userspace mode.\n\n")
		p("| Path | Throughput | vs tailscaled | Request p50 | p99 | Notes |\n|---|---|---|---|---|---|\n")
		for _, pr := range r.Services {
			base := findPath(r.Services, PathEgressBaseline)
			if pr.Name == PathIngressProxy || pr.Name == PathIngressBase {
				base = findPath(r.Services, PathIngressBase)
			}
			p("| %s | %s | %s | %s | %s | %s |\n", pr.Name, pm(pr.Gbps, " Gbit/s", 2), ratio(pr.Gbps.Median(), base), pm(pr.P50, " ms", 3), pm(pr.P99, " ms", 3), pr.Note)
		}
		for _, sk := range r.ServicesSkipped {
			p("\nNot measured: %s\n", sk)
		}
	}
	if len(r.Web) > 0 || len(r.WebSkipped) > 0 {
		p("\n## HTTPS ingress versus tailscale serve\n\nA tailnet peer fetches over HTTPS, from an HTTP server on the proxy's host, through `tsinject-proxy web` (what an Ingress or a Gateway of class tsinject runs) and through `tailscale serve --https` on tailscaled in userspace mode. Each terminates TLS with a certificate for its tailnet name from Let's Encrypt's test CA (pebble), fetched through the control server's DNS-01 flow before the timing starts. Throughput: one download of the run's size on a fresh connection; latency: 300 small requests one after another on one connection.\n\n")
		p("| Path | Throughput | vs serve | Request p50 | vs serve | p99 | Notes |\n|---|---|---|---|---|---|---|\n")
		base := findPathResult(r.Web, PathWebBaseline)
		for _, pr := range r.Web {
			p("| %s | %s | %s | %s | %s | %s | %s |\n", pr.Name, pm(pr.Gbps, " Gbit/s", 2), ratio(pr.Gbps.Median(), base.Gbps.Median()),
				pm(pr.P50, " ms", 3), ratio(pr.P50.Median(), base.P50.Median()), pm(pr.P99, " ms", 3), pr.Note)
		}
		for _, sk := range r.WebSkipped {
			p("\nNot measured: %s\n", sk)
		}
	}
	if u := r.UDP; u != nil {
		writeUDP(p, u)
	}
	if r.Failover != nil && len(r.Failover.Standby) > 0 {
		writeFailover(p, r.Failover)
	}
	if r.Recording != nil && len(r.Recording.RecordedP50) > 0 {
		writeRecording(p, r.Recording)
	}
	if r.RecordingsPage != nil && len(r.RecordingsPage.Warm) > 0 {
		writeRecordingsPage(p, r.RecordingsPage)
	}
	if len(r.API) > 0 {
		p("\n## API server proxy\n\nkubectl-style requests to the test API server, directly (client certificate, loopback TLS) and through the API proxy from a tailnet peer (WireGuard in userspace both ends, WhoIs, impersonation, then TLS to the API server).\n\n")
		p("The impersonating row is the direct client sending the proxy's impersonation headers: the API server's own cost of checking them. The TCP-forward row carries the direct TLS connection over the tailnet through a plain TCP forwarder: the difference between it and the proxy is the proxy's own cost (WhoIs once per connection, impersonation, HTTP parsed and written again, a second TLS connection). The bare-proxy row is the floor of any HTTP-level proxy, which impersonation needs: Go's stock reverse proxy on its own tailnet node, reached as the API proxy is, calling the API server with the admin's client certificate, with no identity work; the API proxy over it is tsinject's own share.\n\n")
		p("Ratios are medians of per-repeat ratios: the paths run interleaved, so each repeat compares them under the same load.\n\n")
		p("| Request | Concurrency | Path | Requests/s | p50 | p99 | p50 vs direct | p50 vs tailnet TCP forward | p50 vs bare proxy |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, g := range apiGroups(r.API) {
			d, t, b := g[PathDirect], g[PathForward], g[PathBareProxy]
			for _, name := range []string{PathDirect, PathImpersonating, PathForward, PathBareProxy, PathProxy} {
				a, ok := g[name]
				if !ok {
					continue
				}
				rd, rt, rb := "", "", ""
				if name != PathDirect {
					rd = fmt.Sprintf("%.2fx", PairedRatio(a.P50, d.P50))
				}
				if name == PathProxy || name == PathBareProxy {
					rt = fmt.Sprintf("%.2fx", PairedRatio(a.P50, t.P50))
				}
				if name == PathProxy && len(b.P50) > 0 {
					rb = fmt.Sprintf("%.2fx", PairedRatio(a.P50, b.P50))
				}
				p("| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", a.Request, a.Concurrency, a.Name, pm(a.RPS, "", 0), pm(a.P50, " ms", 3), pm(a.P99, " ms", 3), rd, rt, rb)
			}
		}
	}
}

// writeFailover is the failover section.
func writeFailover(p func(string, ...any), f *FailoverResult) {
	p("\n## One name: failover of the API server proxy\n\n")
	p("Two `tsinject-proxy apiserver` processes share one tailnet name (one serves, one stands by, docs/apiserver-proxy.md); a tailnet peer requests a Secret through the name, starting a request on a new connection every 100 ms, each allowed 2 s. The serving process is killed (SIGKILL: no handover, as when its node is lost) and the time to the first request served again is measured; the killed one is started again to stand by for the next round. ")
	p("The baseline is one process, killed and started again at once with the same state, as a container restart would give it without a standby (a lost node's pod is not restarted for minutes). The standby waits %s without a word from the serving replica before taking over.\n\n", f.Lease)
	p("| Replicas | Runs | Median | Worst | Spread | vs restart (median) |\n|---|---|---|---|---|---|\n")
	worst := func(s Sample) float64 { return slices.Max(s) }
	p("| serving + standby (takeover) | %d | %.1f s | %.1f s | ±%.0f%% | %s |\n", len(f.Standby), f.Standby.Median(), worst(f.Standby), f.Standby.Spread(), ratio(f.Standby.Median(), f.Restart.Median()))
	p("| one, restarted at once | %d | %.1f s | %.1f s | ±%.0f%% | |\n", len(f.Restart), f.Restart.Median(), worst(f.Restart), f.Restart.Spread())
	if len(f.Takeover) > 0 {
		p("\nOf the takeover, the standby took the name %.1f s after the kill (median; worst %.1f s); the rest is its node starting from the shared state and the client's peer reaching it there.\n", f.Takeover.Median(), worst(f.Takeover))
	}
	p("\nOn the two-node cluster, e2e `TestAPIServerProxySurvivesNodeLoss` kills a whole node instead (kubelet, containerd and its pods) while kubectl watches through the name, and `TestNodeDrain` drains one.\n")
}

// writeRecording is the session recording section.
func writeRecording(p func(string, ...any), r *RecordingResult) {
	p("\n## Session recording through the API server proxy\n\n")
	p("A tailnet peer opens WebSocket exec sessions (as kubectl does) through a `tsinject-proxy apiserver` process to an endpoint that speaks as the API server does (golang.org/x/net/websocket, each message whole): it echoes stdin to stdout, or sends %d MiB of output in 32 KiB messages. ", r.StreamMiB)
	p("Recorded, the proxy sends the session to `tsinject-proxy recorder`'s store on another tailnet node (under `enforceRecorder`, pinging it twice a second); the baseline is the same session under a grant whose recorder is not on the tailnet, so it goes unrecorded. The two alternate, %d repeats each. ", len(r.RecordedP50))
	p("Latency: %d keystrokes typed one at a time, %v after the last one's echo, each timed from its write to its echo. The stand-in's echo is far quicker than a container's through an API server and a kubelet, so the ratio is the recording's cost against the floor of a session's latency. Memory: the proxy's resident set once the output is 64 MiB in, and its largest over the whole output, against the %d MiB limit the API proxy's pods ship with (the proxy runs with that limit, as they do).\n\n", r.Keystrokes, typingGap, r.Limit)
	p("| Session | Echo p50 | p90 | p50 vs unrecorded | %d MiB output | RSS at 64 MiB | RSS peak |\n|---|---|---|---|---|---|---|\n", r.StreamMiB)
	p("| unrecorded | %s | %s | | %s | %s | %s |\n", pm(r.EchoP50, " ms", 2), pm(r.EchoP90, " ms", 2), pm(r.StreamSeconds, " s", 1), pm(r.RSSStart, " MiB", 0), pm(r.RSSPeak, " MiB", 0))
	p("| recorded | %s | %s | %.2fx | %s | %s | %s |\n", pm(r.RecordedP50, " ms", 2), pm(r.RecordedP90, " ms", 2), PairedRatio(r.RecordedP50, r.EchoP50), pm(r.RecordedSecs, " s", 1), pm(r.RecordedRSSStart, " MiB", 0), pm(r.RecordedRSSPeak, " MiB", 0))
}

// findPathResult is the row called name (empty if none).
func findPathResult(ps []PathResult, name string) PathResult {
	for _, p := range ps {
		if p.Name == name {
			return p
		}
	}
	return PathResult{}
}

func findPath(ps []PathResult, name string) float64 {
	for _, p := range ps {
		if p.Name == name {
			return p.Gbps.Median()
		}
	}
	return 0
}

// EgressSVG draws the egress throughput as horizontal bars.
func (r *Report) EgressSVG(w io.Writer) {
	if r.Sidecar == nil || len(r.Sidecar.Paths) == 0 {
		return
	}
	paths := r.Sidecar.Paths
	max := 0.0
	for _, p := range paths {
		if m := p.Gbps.Median(); m > max {
			max = m
		}
	}
	const left, width, bar, gap = 290, 420, 22, 10
	h := len(paths)*(bar+gap) + 40
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="13">`+"\n", left+width+90, h)
	fmt.Fprintf(w, `<text x="10" y="18" font-weight="bold">Single-stream TCP throughput (Gbit/s, median)</text>`+"\n")
	for i, p := range paths {
		y := 30 + i*(bar+gap)
		m := p.Gbps.Median()
		bw := int(m / max * width)
		color := "#5b8def"
		switch {
		case strings.HasPrefix(p.Name, "tsinject"):
			color = "#2e9d57"
		case strings.HasPrefix(p.Name, "tailscaled"):
			color = "#d9822b"
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+16, html.EscapeString(p.Name))
		fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", left, y, max1(bw), bar, color)
		fmt.Fprintf(w, `<text x="%d" y="%d">%.2f</text>`+"\n", left+max1(bw)+6, y+16, m)
	}
	fmt.Fprintln(w, "</svg>")
}

func max1(v int) int {
	if v < 1 {
		return 1
	}
	return v
}

func (r *Report) writeBurst(p func(string, ...any)) {
	p("\n## Pod-creation bursts\n\nPods that never schedule, created by parallel clients (client-go, no client-side throttling) against a real kube-apiserver with the ServiceAccount admission plugin on, as in a cluster; tsinject's manager serves the webhook over TLS on the same host. Four namespaces per repeat, interleaved: one no webhook selects (unlabelled); one a webhook selects that admits every pod unchanged (the API server's own cost of calling any webhook); one a webhook selects that answers every pod with the patch tsinject's injector made for the first (the cost of the injected pod itself: applying the patch, admitting and storing a pod three times the size); and one tsinject injects (labelled). The two baseline webhooks are served over TLS on the same host and registered with tsinject's policies. Calls per pod and the webhooks' mean latency are the API server's own figures (`apiserver_admission_webhook_admission_duration_seconds`).\n\n")
	p("| Pods | Clients | Unlabelled | No-op webhook | Fixed-patch webhook | Labelled | Labelled / unlabelled | Labelled / fixed patch | Webhook calls per pod | API server's latency: tsinject / no-op (mean) | Manager's live heap before / after the unlabelled pods |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, b := range r.Burst {
		p("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s |\n", b.Pods, b.Clients, pm(b.Unlabelled, " s", 2), pm(b.Noop, " s", 2), pm(b.Fixed, " s", 2), pm(b.Labelled, " s", 2),
			ratio(b.Labelled.Median(), b.Unlabelled.Median()), ratio(b.Labelled.Median(), b.Fixed.Median()),
			pm(b.CallsPerPod, "", 2), pm(b.WebhookMs, " ms", 2), pm(b.NoopMs, " ms", 2), pm(b.HeapBefore, " MiB", 1), pm(b.HeapAfter, " MiB", 1))
	}
}

func (r *Report) writeAdmission(p func(string, ...any)) {
	p("\n## Admission\n\nAdmissionReviews over HTTPS (keep-alive, one connection per client) to the injector's handler and to a no-op handler in the same server (the ceiling: it still decodes and encodes the review). Pod: one container.\n\n")
	p("| Concurrency | Handler | Reviews/s | p50 | p99 | Throughput vs no-op |\n|---|---|---|---|---|---|\n")
	for i := 0; i+1 < len(r.Admission); i += 2 {
		noop, inj := r.Admission[i], r.Admission[i+1]
		for _, a := range []AdmissionResult{noop, inj} {
			rt := ""
			if a.Handler == "inject" {
				rt = ratio(inj.RPS.Median(), noop.RPS.Median())
			}
			p("| %d | %s | %s | %s | %s | %s |\n", a.Concurrency, a.Handler, pm(a.RPS, "", 0), pm(a.P50, " ms", 3), pm(a.P99, " ms", 3), rt)
		}
	}
	lp := r.LargePod
	p("\n### A pod with 50 containers and 1,500 env vars\n\nIstio took 15 s on such a pod before its fix (jsonpatch diffing was quadratic).\n\n")
	p("| What | Time/op | Allocations/op | Bytes/op |\n|---|---|---|---|\n")
	p("| Inject + patch (%d operations) | %.3f ms | %d | %d |\n", lp.PatchOps, lp.InjectNs/1e6, lp.InjectAllocs, lp.InjectBytes)
	p("| Whole handler (decode, inject, patch) | %.3f ms | %d | %d |\n", lp.HandlerNs/1e6, lp.HandlerAllocs, lp.HandlerBytes)

}

func writeUDP(p func(string, ...any), u *UDPResult) {
	p("\n## UDP to the tailnet\n\nAn app sends 1,200-byte datagrams to a tailnet peer (a tsnet node in the bench process that counts what arrives) as fast as it can for %s, then times %d echo round trips one after another. Throughput and packets per second are what the peer received. CPU per GiB is the data plane process's own (user and system) per GiB received in a separate run paced at %d datagrams a second, which every path carries without loss; the floor is ChaCha20-Poly1305 sealing a GiB of 1,280-byte packets on one core here (Go's x/crypto), WireGuard's own work: %s per GiB.\n\n", udpBlast, udpEchoes, udpPacedRate, pm(u.FloorPerGiB, " s", 2))
	p("| Path | Received | vs userspace tailscaled | Packets/s | RTT p50 | p99 | CPU per GiB | vs floor | Notes |\n|---|---|---|---|---|---|---|---|---|\n")
	var base UDPPath
	for _, pr := range u.Paths {
		if pr.Name == PathUDPUserspace {
			base = pr
		}
	}
	for _, pr := range u.Paths {
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", pr.Name, pm(pr.Mbps, " Mbit/s", 0), ratio(pr.Mbps.Median(), base.Mbps.Median()),
			pm(pr.Kpps, "k", 1), pm(pr.RTTP50, " ms", 3), pm(pr.RTTP99, " ms", 3), pm(pr.CPUPerGiB, " s", 2), ratio(pr.CPUPerGiB.Median(), u.FloorPerGiB.Median()), pr.Note)
	}
	for _, sk := range u.Skipped {
		p("\nNot measured: %s\n", sk)
	}
}
