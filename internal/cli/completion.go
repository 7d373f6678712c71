package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

// CompletionCommand writes a shell completion script for prog's commands
// and their flags: bash, zsh or fish, as kubectl and helm offer.
//
//	source <(tsinject completion bash)
func CompletionCommand(prog string, cmds func() []*Command) *Command {
	return &Command{
		Name:  "completion",
		Short: "print a shell completion script: bash, zsh or fish",
		Usage: "bash|zsh|fish",
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return ErrUsage
			}
			table := completionTable(cmds())
			w := Stdout(ctx)
			switch args[0] {
			case "bash":
				writeBash(w, prog, table)
			case "zsh":
				fmt.Fprintf(w, "#compdef %s\nautoload -U +X bashcompinit && bashcompinit\n", prog)
				writeBash(w, prog, table)
			case "fish":
				writeFish(w, prog, table)
			default:
				return fmt.Errorf("shell %q: allowed: bash, zsh, fish", args[0])
			}
			return nil
		},
	}
}

type completionEntry struct {
	name  string
	flags []string
}

func completionTable(cmds []*Command) []completionEntry {
	var out []completionEntry
	for _, c := range cmds {
		e := completionEntry{name: c.Name}
		if c.Flags != nil {
			fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
			c.Flags(fs)
			fs.VisitAll(func(f *flag.Flag) { e.flags = append(e.flags, f.Name) })
		}
		out = append(out, e)
	}
	return out
}

func writeBash(w io.Writer, prog string, table []completionEntry) {
	fn := "_" + strings.ReplaceAll(prog, "-", "_")
	var names []string
	for _, e := range table {
		names = append(names, e.name)
	}
	fmt.Fprintf(w, "%s() {\n  local cur=${COMP_WORDS[COMP_CWORD]}\n  if [ \"$COMP_CWORD\" -eq 1 ]; then\n    COMPREPLY=($(compgen -W %q -- \"$cur\"))\n    return\n  fi\n  case ${COMP_WORDS[1]} in\n", fn, strings.Join(names, " "))
	for _, e := range table {
		var flags []string
		for _, f := range e.flags {
			flags = append(flags, "--"+f)
		}
		words := strings.Join(flags, " ")
		if e.name == "completion" {
			words = "bash zsh fish"
		}
		fmt.Fprintf(w, "    %s) COMPREPLY=($(compgen -W %q -- \"$cur\")) ;;\n", e.name, words)
	}
	fmt.Fprintf(w, "  esac\n}\ncomplete -o default -F %s %s\n", fn, prog)
}

func writeFish(w io.Writer, prog string, table []completionEntry) {
	for _, e := range table {
		fmt.Fprintf(w, "complete -c %s -f -n __fish_use_subcommand -a %s\n", prog, e.name)
		for _, f := range e.flags {
			fmt.Fprintf(w, "complete -c %s -n '__fish_seen_subcommand_from %s' -l %s\n", prog, e.name, f)
		}
	}
	fmt.Fprintf(w, "complete -c %s -f -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'\n", prog)
}
