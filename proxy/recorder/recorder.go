package recorder

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"tailscale.com/tailcfg"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Port is where recorders listen on the tailnet: tsrecorder's, which API
// server proxies dial at each recorder's address.
const Port = 80

// Config configures `tsinject-proxy recorder`.
type Config struct {
	Node     tsnode.Options
	Dir      string
	MaxBytes int64
	// MaxSessions bounds the uploads taken at once.
	MaxSessions int64
	// UploaderTags are the tags a peer needs one of to upload (the API
	// server proxies'; required).
	UploaderTags []string
	// Retention removes recordings older than it (0: kept until removed
	// by hand).
	Retention  time.Duration
	HealthAddr string
}

// Settings is the command's table of flags and TSINJECT_* variables.
func (cfg *Config) Settings() []cli.Setting {
	return append(cfg.Node.ProxySettings(&cfg.HealthAddr),
		cli.Setting{Flag: "dir", Env: contract.EnvRecordingsDir, Help: "directory the recordings are stored in (a PersistentVolume)", Set: cli.String(&cfg.Dir)},
		cli.Setting{Flag: "max-bytes", Env: contract.EnvRecorderMaxBytes, Help: "end a recording that grows past this many bytes with an error (0: no limit)", Default: "0", Set: func(v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("%q is not a number of bytes (allowed: 0 for no limit, or a positive integer)", v)
			}
			cfg.MaxBytes = n
			return nil
		}},
		cli.Setting{Flag: "max-sessions", Env: contract.EnvRecorderMaxSessions, Help: "refuse an upload past this many at once (a session that must be recorded is then refused, not run unrecorded)", Default: "256", Set: func(v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				return fmt.Errorf("%q is not a number of sessions (allowed: a positive integer)", v)
			}
			cfg.MaxSessions = n
			return nil
		}},
		cli.Setting{Flag: "retention", Env: contract.EnvRecorderRetention, Help: "remove recordings last written longer ago than this, such as 2160h for 90 days (0: keep them)", Default: "0", Set: func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || (d > 0 && d < time.Hour) {
				return fmt.Errorf("%q: allowed: 0, or a duration of an hour or more, such as 720h", v)
			}
			cfg.Retention = d
			return nil
		}},
		cli.Setting{Flag: "uploader-tags", Env: contract.EnvRecorderUploaderTags, Help: "comma-separated tags a peer needs one of to upload: the API server proxies' (required; users' devices are always refused)", Set: func(v string) error {
			cfg.UploaderTags = nil
			for _, t := range strings.Split(v, ",") {
				if t = strings.TrimSpace(t); t == "" {
					continue
				}
				if !strings.HasPrefix(t, "tag:") || len(t) == len("tag:") {
					return fmt.Errorf("%q is not a tag (allowed: tag:NAME, comma-separated)", t)
				}
				cfg.UploaderTags = append(cfg.UploaderTags, t)
			}
			return nil
		}},
	)
}

// MayUpload says why node may not upload recordings, given the tags an
// uploader needs one of. Recordings come from API server proxies, which
// are tagged; anyone else able to upload could fill the recorder, so that
// sessions that must be recorded are refused, or store casts that look
// like others' sessions. Any tagged node would not do: a tenant's egress
// proxy, or a subnet router, is tagged and relays for whoever reaches it.
func MayUpload(node *tailcfg.Node, tags []string) error {
	if node == nil {
		return errors.New("the tailnet does not know the peer")
	}
	if !node.IsTagged() {
		return fmt.Errorf("%s is a user's device; recordings are taken from API server proxies (tagged %s) only", node.ComputedName, strings.Join(tags, " or "))
	}
	if slices.ContainsFunc(node.Tags, func(t string) bool { return slices.Contains(tags, t) }) {
		return nil
	}
	return fmt.Errorf("%s is tagged %s; this recorder takes recordings from %s only", node.ComputedName, strings.Join(node.Tags, ","), strings.Join(tags, " or "))
}

// Run serves recordings on the tailnet until ctx ends.
func Run(ctx context.Context, cfg Config, logf logger.Logf) error {
	if cfg.Dir == "" {
		return errors.New("nothing to store recordings in: give --dir")
	}
	if len(cfg.UploaderTags) == 0 {
		return errors.New("give --uploader-tags: the tags of the API server proxies that record here (any tagged node would not do: a tenant's egress proxy is tagged, and relays for its pods)")
	}
	var node atomic.Pointer[tsnode.Node]
	st := &Store{Dir: cfg.Dir, MaxBytes: cfg.MaxBytes, MaxActive: cfg.MaxSessions, Logf: logf,
		Uploader: func(r *http.Request) error {
			n := node.Load()
			if n == nil {
				return errors.New("the recorder is not on the tailnet yet")
			}
			who, err := n.LC.WhoIs(r.Context(), r.RemoteAddr)
			if err != nil {
				return fmt.Errorf("who the peer is: %w", err)
			}
			return MayUpload(who.Node, cfg.UploaderTags)
		}}
	if err := st.writable(); err != nil {
		return err
	}
	if cfg.Retention > 0 {
		go st.keep(ctx, cfg.Retention)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tsinject_recorder_active_recordings", Help: "Recordings being uploaded."},
		func() float64 { return float64(st.Active.Load()) }))
	health, err := tsnode.ServeHealth(cfg.HealthAddr, func(ctx context.Context) error {
		n := node.Load()
		if n == nil {
			return errors.New("not ready: joining the tailnet")
		}
		if err := st.writable(); err != nil {
			return errors.New("cannot store recordings: " + err.Error())
		}
		return n.Ready(ctx)
	}, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if err != nil {
		return err
	}
	defer health.Close()
	n, err := tsnode.Start(ctx, cfg.Node, logf)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Close(closeCtx, logf)
	}()
	// The Recorder's status (its page's URL) comes from what the node
	// reports into its state Secret.
	go n.ReportLoop(ctx, nil, logf)
	ln, err := n.Server.Listen("tcp", ":"+strconv.Itoa(Port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: Handler(st, n.LC), Protocols: Protocols(), ReadHeaderTimeout: 10 * time.Second,
		// An uploader gone without a word (its node lost) would hold its
		// upload's place among --max-sessions until TCP gave up; idle
		// sessions send nothing for hours, so ask with a ping.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second}}
	node.Store(n)
	go func() {
		<-ctx.Done()
		// Uploads in progress end with the replica; their clients end
		// their sessions (fail closed) or go on unrecorded (fail open).
		srv.Close()
	}()
	logf("recorder: storing recordings in %s, on the tailnet at port %d, with its web page there for callers granted %s", cfg.Dir, Port, CapRecordings)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
