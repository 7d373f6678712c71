package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/go-logr/logr"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/offline"
	"github.com/tsinject/tsinject/injector/webhook"
	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/manager"
)

// labelFlag collects repeated KEY=VALUE flags.
type labelFlag map[string]string

func (l labelFlag) String() string { return fmt.Sprint(map[string]string(l)) }
func (l labelFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", s)
	}
	l[k] = v
	return nil
}

func injectCommand() *cli.Command {
	cfg := injector.DefaultConfig()
	var file, namespace, tags, images, native, kubeVersion string
	var creds credential.Flags
	nsLabels, nsAnnotations := labelFlag{}, labelFlag{}
	var profiles fileList
	return &cli.Command{
		Name:  "inject",
		Short: "inject manifests offline, through the webhook's own code path",
		Usage: "-f FILE|-",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&file, "f", "-", "multi-document YAML to inject (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, List); - is stdin")
			fs.StringVar(&namespace, "namespace", "default", "namespace of objects that name none")
			fs.Var(nsAnnotations, "namespace-annotation", "an annotation of the namespace, KEY=VALUE, repeatable: its policy (tsinject.dev/default-tags, allowed-tags, allow-untagged, allowed-hostnames)")
			fs.Var(&profiles, "profiles", "a file of SidecarProfiles and Namespaces as the cluster has them (kubectl get sidecarprofiles,namespaces -o yaml), repeatable: pods get what the webhook would give them there")
			fs.Var(nsLabels, "namespace-label", "a label of the namespace, KEY=VALUE, repeatable (default "+injector.LabelInjection+"=enabled)")
			fs.StringVar(&cfg.ProxyImage, "proxy-image", cfg.ProxyImage, "tsinject-proxy image")
			fs.StringVar(&cfg.ControlURL, "control-url", "", "tailnet control server URL (default Tailscale's)")
			fs.StringVar(&tags, "default-tags", "", "comma-separated tags for pods without a tags annotation")
			fs.BoolVar(&cfg.PrometheusAnnotations, "prometheus-annotations", false, "advertise each sidecar's /metrics with prometheus.io annotations (pods with their own keep theirs)")
			fs.StringVar(&images, "allowed-proxy-images", "", "comma-separated images pods may choose with tsinject.dev/proxy-image besides --proxy-image (a trailing * matches a prefix)")
			fs.StringVar(&cfg.SystemNamespace, "system-namespace", cfg.SystemNamespace, "tsinject's namespace (never injected)")
			creds.BindOffline(fs)
			fs.StringVar(&native, "native-sidecar", manager.NativeAuto, "auto (from --kube-version: >= 1.29), always or never (a regular container with a postStart hook), as the manager's flag")
			fs.StringVar(&kubeVersion, "kube-version", "", "the target cluster's Kubernetes version, MAJOR.MINOR, for --native-sidecar=auto (default: a current one, with native sidecars)")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			if len(nsLabels) == 0 {
				nsLabels[injector.LabelInjection] = "enabled"
			}
			var err error
			if cfg.NativeSidecar, err = offlineNativeSidecar(native, kubeVersion); err != nil {
				return err
			}
			cfg.DefaultTags = splitList(tags)
			cfg.AllowedProxyImages = splitList(images)
			if cfg.Credential, err = creds.OfflineConfig(); err != nil {
				return err
			}
			namespaces := offline.StaticNamespaces{Labels: nsLabels, Annotations: nsAnnotations}
			if err := readObjectFiles(profiles, &namespaces); err != nil {
				return err
			}
			t := &offline.Transformer{
				Handler: &webhook.Handler{
					Injector:   injector.New(cfg),
					Namespaces: namespaces,
					Log:        logr.Discard(),
				},
				DefaultNamespace: namespace,
			}
			return transform(file, func(r io.Reader, w io.Writer) ([]offline.Decision, error) {
				return t.Inject(ctx, r, w)
			})
		},
	}
}

// fileList collects a repeated file flag.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(s string) error { *f = append(*f, s); return nil }

// readObjectFiles loads the SidecarProfiles and Namespaces of files.
func readObjectFiles(files []string, into *offline.StaticNamespaces) error {
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("--profiles: %w", err)
		}
		err = into.ReadObjects(f, "--profiles "+name)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// offlineNativeSidecar is --native-sidecar as the manager reads it, with
// the cluster's version given instead of asked for.
func offlineNativeSidecar(mode, kubeVersion string) (bool, error) {
	switch mode {
	case manager.NativeAlways, "true":
		return true, nil
	case manager.NativeNever, "false":
		return false, nil
	case manager.NativeAuto:
		if kubeVersion == "" {
			return true, nil
		}
		major, minor, ok := strings.Cut(strings.TrimPrefix(kubeVersion, "v"), ".")
		minor, _, _ = strings.Cut(minor, ".")
		if !ok || !validVersion(major, minor) {
			return false, fmt.Errorf("--kube-version %q: want MAJOR.MINOR, such as 1.28", kubeVersion)
		}
		return manager.SupportsNativeSidecars(major, minor), nil
	}
	return false, fmt.Errorf("--native-sidecar %q: allowed: %s, %s, %s", mode, manager.NativeAuto, manager.NativeAlways, manager.NativeNever)
}

func validVersion(major, minor string) bool {
	_, err1 := strconv.Atoi(major)
	_, err2 := strconv.Atoi(minor)
	return err1 == nil && err2 == nil
}

func uninjectCommand() *cli.Command {
	var file string
	return &cli.Command{
		Name:  "uninject",
		Short: "remove what inject (or the webhook) added to manifests",
		Usage: "-f FILE|-",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&file, "f", "-", "multi-document YAML; - is stdin")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			t := &offline.Transformer{}
			return transform(file, t.Uninject)
		},
	}
}

// transform runs fn over file, writes the result to stdout and the
// decisions to stderr; a denial exits 1 after printing the whole stream.
func transform(file string, fn func(io.Reader, io.Writer) ([]offline.Decision, error)) error {
	in, err := openInput(file)
	if err != nil {
		return err
	}
	defer in.Close()
	ds, err := fn(in, os.Stdout)
	for _, d := range ds {
		fmt.Fprintf(os.Stderr, "%s: %s\n", d.Object, d.Reason)
		for _, w := range d.Warnings {
			fmt.Fprintf(os.Stderr, "  warning: %s\n", w)
		}
		if d.Err != nil {
			fmt.Fprintf(os.Stderr, "  denied: %s\n", d.Err)
		}
	}
	if err != nil {
		var denied bool
		for _, d := range ds {
			denied = denied || d.Err != nil
		}
		if denied {
			return &cli.ExitError{Code: 1, Err: errors.New("some pods were denied; see above")}
		}
		return err
	}
	return nil
}

// openInput opens file, or stdin for "-".
func openInput(file string) (io.ReadCloser, error) {
	if file == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	return os.Open(file)
}
