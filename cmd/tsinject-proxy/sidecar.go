package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"time"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/sidecar"
)

func sidecarCommand() *cli.Command {
	var cfg sidecar.Config
	var binder *sidecar.Binder
	return &cli.Command{
		Name:  "sidecar",
		Short: "run the pod's tailnet node: egress, DNS, exposed ports, health",
		Flags: func(fs *flag.FlagSet) { binder = cfg.BindFlags(fs) },
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			if err := binder.Finish(); err != nil {
				return err
			}
			logf, err := startProcess()
			if err != nil {
				return err
			}
			return sidecar.Run(ctx, &cfg, logf)
		},
	}
}

func waitCommand() *cli.Command {
	addr := cli.EnvDefault(contract.EnvHealthAddr, fmt.Sprintf("127.0.0.1:%d", contract.HealthPort))
	var timeout time.Duration
	return &cli.Command{
		Name:  "wait",
		Short: "block until the sidecar is ready (postStart hook of the non-native sidecar)",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&addr, "health-addr", addr, "the sidecar's health address (env "+contract.EnvHealthAddr+")")
			fs.DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
		},
		Run: func(ctx context.Context, args []string) error {
			url := "http://" + hostPortForDial(addr) + "/readyz"
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			hc := &http.Client{Timeout: 2 * time.Second}
			var last string
			for {
				if res, err := hc.Get(url); err == nil {
					res.Body.Close()
					if res.StatusCode == http.StatusOK {
						return nil
					}
					last = res.Status
				} else {
					last = err.Error()
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("sidecar not ready after %s: %s", timeout, last)
				case <-time.After(250 * time.Millisecond):
				}
			}
		},
	}
}

// hostPortForDial turns a listen address such as ":9002" into one to dial.
func hostPortForDial(addr string) string {
	if len(addr) > 0 && addr[0] == ':' {
		return "127.0.0.1" + addr
	}
	return addr
}
