package bench

import (
	"fmt"
	"slices"
)

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

// Conclude checks the targets and says what limits the missed ones.
func Conclude(r *Report) []string {
	var out []string
	missedThroughput := false
	for i := 0; i+1 < len(r.Admission); i += 2 {
		noop, inj := r.Admission[i], r.Admission[i+1]
		rt := inj.RPS.Median() / noop.RPS.Median()
		line := fmt.Sprintf("Admission throughput at concurrency %d: %.2fx the no-op handler (target >= 0.8x): %s.", inj.Concurrency, rt, verdict(rt >= 0.8))
		missedThroughput = missedThroughput || rt < 0.8
		if inj.Concurrency == 16 {
			p99 := inj.P99.Median()
			line += fmt.Sprintf(" p99 %.2f ms (target <= 2 ms at concurrency 16): %s.", p99, verdict(p99 <= 2))
			if p99 > 2 {
				line += fmt.Sprintf(" The no-op handler's own p99 is %.2f ms here: with 16 clients and the server on 2 cores, queueing for CPU dominates the tail, not injection.", noop.P99.Median())
			}
		}
		out = append(out, line)
	}
	if missedThroughput {
		out = append(out, "  The no-op handler does no per-pod work: its round trip is TLS, HTTP and decoding and encoding the review, about 33 us in process (go test -bench Admission ./injector/webhook/). The injector's is about twice that: decoding the pod the review carries costs about a quarter of it, building the sidecar, init container and patch most of the rest (their JSON is already cached per option set). 0.8x would leave the injection's own work under a quarter of the no-op's; a handler that must read the pod does not get there on 2 cores. Admission latency stays well under a millisecond at low concurrency.")
	}
	for _, b := range r.Burst {
		rt := b.Labelled.Median() / b.Unlabelled.Median()
		calls := b.CallsPerPod.Median()
		line := fmt.Sprintf("Pod-creation burst, %d pods from %d clients: labelled %.2fx unlabelled", b.Pods, b.Clients, rt)
		if b.Pods == 1000 && b.Clients == 8 {
			line += fmt.Sprintf(" (target <= 1.2x at 1,000 pods and 8 clients): %s", verdict(rt <= 1.2))
		}
		line += fmt.Sprintf("; webhook calls per pod %.2f (target 1.0): %s.", calls, verdict(calls == 1))
		if len(b.HeapAfter) > 0 {
			growth := b.HeapAfter.Median() / b.HeapBefore.Median()
			line += fmt.Sprintf(" The manager's live heap after %d pods it does not own: %.1f MiB, %.2fx before (target within 10%%): %s.", b.Pods, b.HeapAfter.Median(), growth, verdict(growth <= 1.1))
		}
		if len(b.Noop) > 0 && len(b.Fixed) > 0 {
			u := b.Unlabelled.Median()
			line += fmt.Sprintf(" Where the time goes: calling a webhook that changes nothing costs %.2fx unlabelled (the API server reports %.1f ms per call to it); a webhook answering tsinject's patch, computed once, %.2fx (applying it, admitting and storing the bigger pod); tsinject %.2fx, so its own share is %.2fx the fixed-patch webhook (the API server reports %.1f ms per call to tsinject; its handler takes about 0.2 ms in process).",
				b.Noop.Median()/u, b.NoopMs.Median(), b.Fixed.Median()/u, b.Labelled.Median()/u, b.Labelled.Median()/b.Fixed.Median(), b.WebhookMs.Median())
		}
		out = append(out, line)
	}
	lp := r.LargePod.HandlerNs / 1e6
	if lp > 0 {
		out = append(out, fmt.Sprintf("50 containers, 1,500 env vars: %.2f ms through the whole handler, %d allocations (target <= 20 ms): %s.", lp, r.LargePod.HandlerAllocs, verdict(lp <= 20)))
	}
	if s := r.Sidecar; s != nil && len(s.Footprints) == 2 {
		sc, ts := s.Footprints[0], s.Footprints[1]
		ready := sc.ReadyMs.Median()
		out = append(out, fmt.Sprintf("Sidecar start to ready: %.0f ms (target <= 1 s on the local control server): %s. (tailscaled: %.0f ms.)", ready, verdict(ready <= 1000), ts.ReadyMs.Median()))
		base := findPath(s.Paths, "tailscaled: SOCKS5")
		for _, p := range s.Paths {
			if len(p.Name) > 8 && p.Name[:8] == "tsinject" && base > 0 {
				rt := p.Gbps.Median() / base
				out = append(out, fmt.Sprintf("%s throughput: %.2fx tailscaled's SOCKS5 (target >= 1.0x): %s.", p.Name, rt, verdict(rt >= 1.0)))
			}
		}
	}
	out = append(out, concludeMemory(r.Memory)...)
	for _, m := range r.Manager {
		if m.Manager == "this tree" {
			f := m.PeakMiB.Median() / (ManagerLimit >> 20)
			out = append(out, fmt.Sprintf("The manager among hostile objects (%s): peak %.0f MiB, %.2f of its %d MiB limit (target < 0.8): %s.", r.ManagerLoad, m.PeakMiB.Median(), f, ManagerLimit>>20, verdict(f < 0.8)))
		}
	}
	if e, b := findPath(r.Services, PathEgressProxy), findPath(r.Services, PathEgressBaseline); e > 0 && b > 0 {
		out = append(out, fmt.Sprintf("Egress Service proxy throughput: %.2fx tailscaled's SOCKS5 proxy (no target; the issue asks for the figure beside it).", e/b))
	}
	if i, b := findPath(r.Services, PathIngressProxy), findPath(r.Services, PathIngressBase); i > 0 && b > 0 {
		out = append(out, fmt.Sprintf("Ingress Service proxy throughput: %.2fx tailscaled's `serve --tcp` (no target).", i/b))
	}
	if w, b := findPathResult(r.Web, PathWebProxy), findPathResult(r.Web, PathWebBaseline); len(w.Gbps) > 0 && len(b.Gbps) > 0 {
		tp, p50 := w.Gbps.Median()/b.Gbps.Median(), w.P50.Median()/b.P50.Median()
		out = append(out, fmt.Sprintf("HTTPS ingress throughput: %.2fx `tailscale serve --https` (target >= 1.0): %s; request p50 %.2fx (target <= 1.1): %s.", tp, verdict(tp >= 1.0), p50, verdict(p50 <= 1.1)))
	}
	if len(r.Connector) == 2 {
		rt := r.Connector[0].Gbps.Median() / r.Connector[1].Gbps.Median()
		out = append(out, fmt.Sprintf("Connector subnet throughput: %.2fx tailscaled's userspace subnet router (no target; same netstack forwarder).", rt))
	}
	for _, g := range apiGroups(r.API) {
		d, t, x, imp, bare := g[PathDirect], g[PathForward], g[PathProxy], g[PathImpersonating], g[PathBareProxy]
		if len(x.P50) == 0 || len(d.P50) == 0 || len(t.P50) == 0 {
			continue
		}
		rt := PairedRatio(x.P50, d.P50)
		own := PairedRatio(x.P50, t.P50)
		line := fmt.Sprintf("API proxy, %s at concurrency %d: p50 %.2fx direct (target <= 1.25x): %s; %.2fx the same TLS connection carried over the tailnet (target <= 1.1x): %s.", x.Request, x.Concurrency, rt, verdict(rt <= 1.25), own, verdict(own <= 1.1))
		if len(bare.P50) > 0 {
			line += fmt.Sprintf(" A bare reverse proxy on the tailnet, with no identity work, costs %.2fx that forward; tsinject's proxy costs %.2fx the bare proxy.", PairedRatio(bare.P50, t.P50), PairedRatio(x.P50, bare.P50))
		}
		if len(imp.P50) > 0 {
			line += fmt.Sprintf(" The API server's own impersonation check costs %.2fx direct here.", PairedRatio(imp.P50, d.P50))
		}
		if rt > 1.25 {
			line += " The direct path is one loopback TLS hop to a local API server that answers in well under a millisecond; the tailnet's userspace WireGuard and netstack on both nodes add a fixed cost that such a baseline magnifies (compare the TCP-forward row), and the proxy adds impersonation and a second TLS hop."
		}
		out = append(out, line)
	}
	if f := r.Failover; f != nil && len(f.Standby) > 0 {
		worst := slices.Max(f.Standby)
		out = append(out, fmt.Sprintf("API server proxy failover, the serving replica killed: first request served again after %.1f s (median of %d), %.1f s at worst (target <= 10 s): %s; %.2fx a single replica restarted at once.",
			f.Standby.Median(), len(f.Standby), worst, verdict(worst <= 10), f.Standby.Median()/f.Restart.Median()))
	}
	if rec := r.Recording; rec != nil && len(rec.RecordedP50) > 0 {
		lat := PairedRatio(rec.RecordedP50, rec.EchoP50)
		growth := slices.Max(rec.RecordedRSSPeak) - rec.RecordedRSSStart.Median()
		out = append(out, fmt.Sprintf("Session recording: keystroke-to-echo p50 %.2fx unrecorded (target <= 1.1x): %s; over a %d MiB output the recording proxy's resident set grew %.0f MiB past where it was 64 MiB in, peaking at %.0f MiB of its %d MiB limit (target: flat, under 32 MiB of growth): %s.",
			lat, verdict(lat <= 1.1), rec.StreamMiB, growth, slices.Max(rec.RecordedRSSPeak), rec.Limit, verdict(growth < 32)))
	}
	if pg := r.RecordingsPage; pg != nil && len(pg.Warm) > 0 {
		out = append(out, fmt.Sprintf("The recorder's page with %d sessions: listed in %.0f ms with nothing indexed, %.0f ms indexed; %.0f ms to load in chromium (target < 1 s): %s.",
			pg.Sessions, pg.Cold.Median(), pg.Warm.Median(), pg.Browser.Median(), verdict(max(pg.Cold.Median(), pg.Browser.Median()) < 1000)))
	}
	return out
}
