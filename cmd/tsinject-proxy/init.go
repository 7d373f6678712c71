package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/clusteraddrs"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/sidecar/netinit"
)

func initCommand() *cli.Command {
	var uid, redirect, dns, routes, backend, tunDir string
	var remove bool
	return &cli.Command{
		Name:  "init",
		Short: "program the pod's network namespace for transparent egress (init container, NET_ADMIN)",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&uid, "proxy-uid", cli.EnvDefault(contract.EnvProxyUID, strconv.Itoa(contract.ProxyUID)), "the sidecar's UID, whose traffic is not redirected (env "+contract.EnvProxyUID+")")
			fs.StringVar(&redirect, "redirect-port", cli.EnvDefault(contract.EnvRedirectPort, strconv.Itoa(contract.RedirectPort)), "the sidecar's transparent egress port")
			fs.StringVar(&dns, "dns-port", cli.EnvDefault(contract.EnvDNSPort, strconv.Itoa(contract.DNSPort)), "the sidecar's DNS port")
			fs.StringVar(&routes, "accept-routes", cli.EnvDefault(contract.EnvAcceptRoutes, ""), "subnet routes to redirect besides the tailnet ranges (env "+contract.EnvAcceptRoutes+")")
			fs.StringVar(&tunDir, "tun-dir", cli.EnvDefault(contract.EnvTunDir, ""), "make the TUN that carries UDP and ICMP to the tailnet, with its device node in this directory, for the sidecar (env "+contract.EnvTunDir+"; empty: TCP and DNS only)")
			fs.StringVar(&backend, "backend", "", "nftables or iptables (default: nftables, falling back to iptables-restore)")
			fs.BoolVar(&remove, "remove", false, "remove the nftables rules instead")
		},
		Run: func(ctx context.Context, args []string) error {
			if remove {
				return netinit.Remove()
			}
			r := netinit.Rules{Routes: append([]netip.Prefix{}, netinit.TailnetRanges...)}
			u, err := strconv.ParseUint(uid, 10, 32)
			if err != nil {
				return fmt.Errorf("--proxy-uid %q: want a numeric UID", uid)
			}
			r.ProxyUID = uint32(u)
			for name, p := range map[string]struct {
				v   string
				dst *uint16
			}{"--redirect-port": {redirect, &r.RedirectPort}, "--dns-port": {dns, &r.DNSPort}} {
				n, err := strconv.ParseUint(p.v, 10, 16)
				if err != nil || n == 0 {
					return fmt.Errorf("%s %q: want a port from 1 to 65535", name, p.v)
				}
				*p.dst = uint16(n)
			}
			extra, err := contract.ParsePrefixes(routes)
			if err != nil {
				return fmt.Errorf("--accept-routes: %v", err)
			}
			r.Routes = append(r.Routes, extra...)
			if tunDir != "" {
				r.Tun = &netinit.TUN{Dir: tunDir, UID: r.ProxyUID}
			}
			if os.Getenv(contract.EnvUseExitNode) != "" {
				keep, err := clusteraddrs.FromEnv(os.Getenv)
				if err != nil {
					return fmt.Errorf("exit node: the cluster's addresses: %v", err)
				}
				r.Exit = &netinit.Exit{Keep: append(keep, clusteraddrs.Never...)}
			}
			in, err := netinit.Install(r, netinit.Backend(backend))
			if err != nil {
				if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
					return fmt.Errorf("%v\n%v", err, netinit.ErrNotRoot)
				}
				return err
			}
			fmt.Printf("tsinject-proxy init: %s rules installed: TCP to %v -> :%d, DNS -> :%d, except UID %d\n", in.Backend, r.Routes, r.RedirectPort, r.DNSPort, r.ProxyUID)
			switch {
			case r.Tun == nil:
				fmt.Println("tsinject-proxy init: routes through lo where the pod network needs them; UDP and ICMP to the tailnet not carried (no --tun-dir)")
			case in.TUNErr != nil:
				fmt.Printf("tsinject-proxy init: UDP and ICMP to the tailnet NOT carried: %v; routes through lo where the pod network needs them\n", in.TUNErr)
			default:
				fmt.Printf("tsinject-proxy init: UDP, ICMP and the rest to %v through %s (owned by UID %d)\n", r.Routes, contract.TunName, r.ProxyUID)
			}
			if r.Exit != nil {
				fmt.Printf("tsinject-proxy init: everything else through %s to the exit node %s, but for %v\n", contract.TunName, os.Getenv(contract.EnvUseExitNode), r.Exit.Keep)
			}
			return nil
		},
	}
}
