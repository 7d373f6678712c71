package recorder

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	Node       tsnode.Options
	Dir        string
	MaxBytes   int64
	HealthAddr string
}

// Settings is the command's table of flags and TSINJECT_* variables.
func (cfg *Config) Settings() []cli.Setting {
	return append(cfg.Node.ProxySettings(&cfg.HealthAddr),
		cli.Setting{Flag: "dir", Env: contract.EnvRecordingsDir, Help: "directory the recordings are stored in (a PersistentVolume)", Set: cli.String(&cfg.Dir)},
		cli.Setting{Flag: "max-bytes", Help: "end a recording that grows past this many bytes with an error (0: no limit)", Default: "0", Set: func(v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("%q is not a number of bytes (allowed: 0 for no limit, or a positive integer)", v)
			}
			cfg.MaxBytes = n
			return nil
		}},
	)
}

// Run serves recordings on the tailnet until ctx ends.
func Run(ctx context.Context, cfg Config, logf logger.Logf) error {
	if cfg.Dir == "" {
		return errors.New("nothing to store recordings in: give --dir")
	}
	st := &Store{Dir: cfg.Dir, MaxBytes: cfg.MaxBytes, Logf: logf}
	if err := st.writable(); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tsinject_recorder_active_recordings", Help: "Recordings being uploaded."},
		func() float64 { return float64(st.Active.Load()) }))
	var node atomic.Pointer[tsnode.Node]
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
	ln, err := n.Server.Listen("tcp", ":"+strconv.Itoa(Port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: st, Protocols: Protocols(), ReadHeaderTimeout: 10 * time.Second}
	node.Store(n)
	go func() {
		<-ctx.Done()
		// Uploads in progress end with the replica; their clients end
		// their sessions (fail closed) or go on unrecorded (fail open).
		srv.Close()
	}()
	logf("recorder: storing recordings in %s, on the tailnet at port %d", cfg.Dir, Port)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
