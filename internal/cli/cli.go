// Package cli is the small subcommand dispatcher both binaries use (no
// framework: the data-plane binary must stay small and start fast).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
)

// Command is one subcommand.
type Command struct {
	Name  string
	Short string // one line for the command list
	Usage string // arguments after the flags, for "Usage:" lines
	// Flags registers the command's flags; may be nil.
	Flags func(fs *flag.FlagSet)
	// Run runs with the remaining arguments; ctx ends on SIGINT/SIGTERM.
	Run func(ctx context.Context, args []string) error
}

// ErrUsage makes Main print the command's usage and exit 2.
var ErrUsage = errors.New("usage")

// ExitError makes Main exit with Code after printing Err (if not nil).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

// Main runs the subcommand named by os.Args[1] and exits.
func Main(prog, about string, cmds []*Command) {
	os.Exit(Run(prog, about, cmds, os.Args[1:], os.Stdout, os.Stderr))
}

// Run is Main without the exit, for tests.
func Run(prog, about string, cmds []*Command, args []string, stdout, stderr io.Writer) int {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "%s: %s\n\nUsage: %s COMMAND [flags] [args]\n\nCommands:\n", prog, about, prog)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, c := range cmds {
			fmt.Fprintf(tw, "  %s\t%s\n", c.Name, c.Short)
		}
		tw.Flush()
		fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's flags.\n", prog)
	}
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	}
	var cmd *Command
	for _, c := range cmds {
		if c.Name == args[0] {
			cmd = c
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "%s: unknown command %q\n\n", prog, args[0])
		usage(stderr)
		return 2
	}
	fs := flag.NewFlagSet(prog+" "+cmd.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nUsage: %s %s [flags] %s\n\nFlags:\n", cmd.Short, prog, cmd.Name, cmd.Usage)
		fs.PrintDefaults()
	}
	if cmd.Flags != nil {
		cmd.Flags(fs)
	}
	rest, err := parseInterspersed(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = context.WithValue(ctx, stdioKey{}, [2]io.Writer{stdout, stderr})
	err = cmd.Run(ctx, rest)
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUsage):
		fs.Usage()
		return 2
	case errors.As(err, &ee):
		if ee.Err != nil {
			fmt.Fprintf(stderr, "%s %s: %v\n", prog, cmd.Name, ee.Err)
		}
		return ee.Code
	default:
		fmt.Fprintf(stderr, "%s %s: %v\n", prog, cmd.Name, strings.TrimSpace(err.Error()))
		return 1
	}
}

// parseInterspersed parses flags wherever they stand among the arguments,
// as kubectl, helm and the tailscale CLI do (Go's flag package stops at the
// first argument): `tsinject kubeconfig HOST --context prod`. "--" ends
// the flags; everything after it is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if len(rest) == 0 || consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

type stdioKey struct{}

// Stdout is where a command writes its output (os.Stdout, or a test's buffer).
func Stdout(ctx context.Context) io.Writer {
	if w, ok := ctx.Value(stdioKey{}).([2]io.Writer); ok {
		return w[0]
	}
	return os.Stdout
}

// Stderr is where a command writes diagnostics.
func Stderr(ctx context.Context) io.Writer {
	if w, ok := ctx.Value(stdioKey{}).([2]io.Writer); ok {
		return w[1]
	}
	return os.Stderr
}

// EnvDefault returns the environment variable key if set, else def. Every
// data-plane flag has a matching TSINJECT_* variable read this way.
func EnvDefault(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// VersionCommand prints v, as text or (-o json) as kubectl and helm do.
func VersionCommand(v string) *Command {
	var output string
	return &Command{
		Name:  "version",
		Short: "print the version (-o json for scripts)",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&output, "o", "text", "text or json")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return ErrUsage
			}
			switch output {
			case "text":
				fmt.Fprintln(Stdout(ctx), v)
			case "json":
				b, _ := json.Marshal(struct {
					Version   string `json:"version"`
					GoVersion string `json:"goVersion"`
					Platform  string `json:"platform"`
				}{v, runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH})
				fmt.Fprintln(Stdout(ctx), string(b))
			default:
				return fmt.Errorf("-o %q: allowed: text, json", output)
			}
			return nil
		},
	}
}
