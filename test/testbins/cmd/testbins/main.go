// Command testbins builds (once) and prints the directory of the etcd and
// kube-apiserver binaries that integration tests and the sandbox run;
// --helm adds helm, --node the binaries of a real node (make e2e).
package main

import (
	"context"
	"fmt"
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
		case "--node": // a real node: kubelet and friends, and CoreDNS
			if _, err = testbins.EnsureNode(ctx, os.Stderr); err == nil {
				var dns string
				dns, err = testbins.EnsureCoreDNS(ctx, os.Stderr)
				fmt.Println(dns)
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
