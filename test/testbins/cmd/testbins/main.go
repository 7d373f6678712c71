// Command testbins builds (once) and prints the directory of the etcd and
// kube-apiserver binaries that integration tests and the sandbox run;
// --helm adds helm, --node the binaries of a real node (make e2e).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/tsinject/tsinject/test/testbins"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := testbins.Ensure(ctx, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbins:", err)
		os.Exit(1)
	}
	fmt.Println(dir)
	for _, arg := range os.Args[1:] {
		var err error
		switch arg {
		case "--helm":
			var helm string
			helm, err = testbins.EnsureHelm(ctx, os.Stderr)
			fmt.Println(helm)
		case "--node": // a real node: kubelet and friends, CoreDNS, kube-router
			if _, err = testbins.EnsureNode(ctx, os.Stderr); err != nil {
				break
			}
			for _, ensure := range []func(context.Context, io.Writer) (string, error){testbins.EnsureCoreDNS, testbins.EnsureKubeRouter} {
				var bin string
				if bin, err = ensure(ctx, os.Stderr); err != nil {
					break
				}
				fmt.Println(bin)
			}
		default:
			err = fmt.Errorf("unknown flag %q (allowed: --helm, --node)", arg)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "testbins:", err)
			os.Exit(1)
		}
	}
}
