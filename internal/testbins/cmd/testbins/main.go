// Command testbins builds (once) and prints the directory of the etcd and
// kube-apiserver binaries that integration tests and the sandbox run.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/tsinject/tsinject/internal/testbins"
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
	if len(os.Args) > 1 && os.Args[1] == "--helm" {
		helm, err := testbins.EnsureHelm(ctx, os.Stderr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testbins:", err)
			os.Exit(1)
		}
		fmt.Println(helm)
	}
}
