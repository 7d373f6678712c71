// Command bench runs tsinject's benchmarks and writes docs/benchmarks.md
// (make bench).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/tsinject/tsinject/internal/version"
	"github.com/tsinject/tsinject/test/bench"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/testbins"
)

func main() {
	out := flag.String("o", "docs/benchmarks.md", "where to write the report (its chart goes beside it)")
	repeats := flag.Int("repeats", 3, "repetitions of each figure")
	dur := flag.Duration("duration", 2*time.Second, "length of each load run")
	sizeMiB := flag.Int("size", 128, "MiB per throughput run")
	only := flag.String("only", "", "comma-separated subset to run: admission, burst, sidecar, udp, connector, services, web, api, failover, recording, recordings-page, memory, manager (default all)")
	managerBaseline := flag.String("manager-baseline", "ec04815", "manager: the git revision measured beside this tree (the last before the manager's caches were trimmed)")
	roles := flag.String("roles", "", "memory: comma-separated subset of sidecar, connector, API proxy (default all)")
	profile := flag.String("profile", "", "directory for heap and CPU profiles of tsinject's processes under each memory load")
	proxyEnv := flag.String("proxy-env", "", "memory: comma-separated KEY=VALUE added to tsinject's processes' environment, to try a setting")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the bench process (which runs the admission handlers and the API proxy in-process) to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	want = func(part string) bool { return *only == "" || strings.Contains(","+*only+",", ","+part+",") }
	ctrl.SetLogger(logr.Discard()) // a real manager sets one; the default delegating logger is slower
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	profileDir = *profile
	if *proxyEnv != "" {
		memoryProxyEnv = strings.Split(*proxyEnv, ",")
	}
	if *roles != "" {
		memoryRoles = strings.Split(*roles, ",")
	}
	managerBaselineRev = *managerBaseline
	if err := run(ctx, *out, *repeats, *dur, int64(*sizeMiB)<<20); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var (
	want               func(string) bool
	profileDir         string
	memoryRoles        []string
	memoryProxyEnv     []string
	managerBaselineRev string
)

func step(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

func run(ctx context.Context, out string, repeats int, dur time.Duration, size int64) error {
	r := &bench.Report{
		Command: "make bench", Started: time.Now(),
		Versions: map[string]string{"go": runtime.Version(), "tailscale": testbins.TailscaleVersion,
			"kubernetes": testbins.KubernetesVersion, "tsinject": version.Version},
	}
	step("building what the run needs (cached after the first time)")
	proxyBin, err := gobuild.Binary("./cmd/tsinject-proxy")
	if err != nil {
		return err
	}
	tsBins, err := testbins.EnsureTailscaled(ctx, os.Stderr)
	if err != nil {
		return err
	}

	if want("admission") {
		step("admission: injector vs no-op over HTTPS")
		// Admission runs are short and noisy on 2 cores: more of them.
		if r.Admission, err = bench.Admission(ctx, dur, repeats+2, []int{1, 16, 64}); err != nil {
			return err
		}
		step("admission: the 50-container, 1,500-env-var pod")
		r.LargePod = bench.MeasureLargePod()
	}
	if want("burst") {
		step("pod-creation bursts: labelled vs unlabelled namespace")
		if r.Burst, err = bench.Burst(ctx, [][2]int{{1000, 8}, {1000, 32}, {10000, 8}}, repeats, step); err != nil {
			r.Errors = append(r.Errors, "pod-creation bursts: "+err.Error())
		}
	}
	if want("sidecar") {
		step("sidecar vs tailscaled")
		if r.Sidecar, err = bench.Sidecar(ctx, proxyBin, tsBins, size, repeats); err != nil {
			r.Errors = append(r.Errors, "sidecar vs tailscaled: "+err.Error())
		}
	}
	if want("udp") {
		step("UDP: sidecar vs tailscaled, userspace and kernel")
		if r.UDP, err = bench.UDP(ctx, proxyBin, tsBins, repeats); err != nil {
			r.Errors = append(r.Errors, "UDP: "+err.Error())
		}
	}
	if want("connector") {
		step("connector vs tailscaled subnet router")
		if r.Connector, err = bench.Connector(ctx, proxyBin, tsBins, size, repeats); err != nil {
			r.Errors = append(r.Errors, "connector vs tailscaled: "+err.Error())
		}
	}
	if want("services") {
		step("egress and ingress Services vs tailscaled")
		if r.Services, r.ServicesSkipped, err = bench.Services(ctx, proxyBin, tsBins, size, repeats); err != nil {
			r.Errors = append(r.Errors, "Services vs tailscaled: "+err.Error())
		}
	}
	if want("web") {
		step("HTTPS ingress vs tailscale serve --https")
		if r.Web, r.WebSkipped, err = bench.Web(ctx, proxyBin, tsBins, size, repeats); err != nil {
			r.Errors = append(r.Errors, "HTTPS ingress vs tailscale serve: "+err.Error())
		}
	}
	if want("memory") {
		step("memory under load (256 MiB per transfer)")
		if profileDir != "" {
			if err := os.MkdirAll(profileDir, 0o755); err != nil {
				return err
			}
		}
		r.Memory, err = bench.Memory(ctx, bench.MemoryOptions{ProxyBin: proxyBin, TailscaledBins: tsBins, Size: 256 << 20,
			Repeats: repeats, ProfileDir: profileDir, Log: step, Roles: memoryRoles, ProxyEnv: memoryProxyEnv})
		if err != nil {
			r.Errors = append(r.Errors, "memory under load: "+err.Error())
		}
	}
	if want("manager") {
		step("the manager among hostile objects")
		o := bench.ManagerMemoryOptions{Services: 1000, ServiceAnnotation: 200 << 10, Pods: 10000, PodAnnotation: 16 << 10,
			BaselineRev: managerBaselineRev, Repeats: repeats, Log: step}
		r.ManagerLoad = fmt.Sprintf("%d Services with %d KiB of annotations each, %d opted-in pods with %d KiB of annotations each (half of it in tsinject's status annotation)",
			o.Services, o.ServiceAnnotation>>10, o.Pods, o.PodAnnotation>>10)
		if r.Manager, err = bench.ManagerMemory(ctx, o); err != nil {
			r.Errors = append(r.Errors, "the manager among hostile objects: "+err.Error())
		}
	}
	if want("api") {
		step("API proxy vs direct")
		c, err := cluster.Start(ctx, cluster.Options{Log: os.Stderr})
		if err != nil {
			return err
		}
		r.API, err = bench.APIProxy(ctx, c, dur, repeats)
		c.Stop()
		if err != nil {
			r.Errors = append(r.Errors, "API proxy: "+err.Error())
		}
	}
	if want("failover") {
		step("API server proxy failover (5 kills or more)")
		c, err := cluster.Start(ctx, cluster.Options{Log: os.Stderr})
		if err != nil {
			return err
		}
		r.Failover, err = bench.Failover(ctx, c, proxyBin, max(repeats, 5))
		c.Stop()
		if err != nil {
			r.Errors = append(r.Errors, "API server proxy failover: "+err.Error())
		}
	}
	if want("recording") {
		step("session recording through the API server proxy")
		if r.Recording, err = bench.Recording(ctx, proxyBin, 300, 1024, repeats); err != nil {
			r.Errors = append(r.Errors, "session recording: "+err.Error())
		}
	}
	if want("recordings-page") {
		step("the recorder's page with 10,000 sessions")
		if r.RecordingsPage, err = bench.RecordingsPage(ctx, 10000, repeats); err != nil {
			r.Errors = append(r.Errors, "the recorder's page: "+err.Error())
		}
	}
	r.Took = time.Since(r.Started)
	r.Conclusion = bench.Conclude(r)

	var md, svg bytes.Buffer
	r.Write(&md)
	r.EgressSVG(&svg)
	if err := os.WriteFile(out, md.Bytes(), 0o644); err != nil {
		return err
	}
	if svg.Len() > 0 {
		if err := os.WriteFile(filepath.Join(filepath.Dir(out), "benchmarks-egress.svg"), svg.Bytes(), 0o644); err != nil {
			return err
		}
	}
	step("wrote %s in %s", out, r.Took.Round(time.Second))
	for _, c := range r.Conclusion {
		fmt.Fprintln(os.Stderr, "  "+strings.TrimSpace(c))
	}
	return nil
}
