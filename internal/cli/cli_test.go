package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Flags stand anywhere among the arguments, as in kubectl and helm; "--"
// ends them.
func TestInterspersedFlags(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		pos         string
		context, ns string
		verbose     bool
	}{
		{[]string{"k8s.example.ts.net", "--context", "prod"}, "k8s.example.ts.net", "prod", "", false},
		{[]string{"--context=prod", "host"}, "host", "prod", "", false},
		{[]string{"a", "-v", "b", "--namespace", "x"}, "a b", "", "x", true},
		{[]string{"a", "--", "--context", "b"}, "a --context b", "", "", false},
		{[]string{"--", "-v"}, "-v", "", "", false},
		{nil, "", "", "", false},
	} {
		var got []string
		var ctxName, ns string
		var verbose bool
		cmd := &Command{Name: "kubeconfig", Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&ctxName, "context", "", "")
			fs.StringVar(&ns, "namespace", "", "")
			fs.BoolVar(&verbose, "v", false, "")
		}, Run: func(_ context.Context, args []string) error { got = args; return nil }}
		var out, errOut bytes.Buffer
		if code := Run("tsinject", "", []*Command{cmd}, append([]string{"kubeconfig"}, tc.args...), &out, &errOut); code != 0 {
			t.Fatalf("%q: exit %d: %s", tc.args, code, errOut.String())
		}
		if strings.Join(got, " ") != tc.pos || ctxName != tc.context || ns != tc.ns || verbose != tc.verbose {
			t.Errorf("%q: args %q context %q namespace %q v %v; want %q %q %q %v", tc.args, got, ctxName, ns, verbose, tc.pos, tc.context, tc.ns, tc.verbose)
		}
	}
}

func TestVersionJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Run("tsinject", "", []*Command{VersionCommand("v1.2.3")}, []string{"version", "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var v struct{ Version, GoVersion, Platform string }
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.Version != "v1.2.3" || v.GoVersion == "" || v.Platform == "" {
		t.Errorf("version -o json: %q (%v)", out.String(), err)
	}
	if code := Run("tsinject", "", []*Command{VersionCommand("v1.2.3")}, []string{"version", "-o", "yaml"}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "allowed: text, json") {
		t.Errorf("-o yaml: exit %d, %q", code, errOut.String())
	}
}

// The bash script completes command names and a command's flags in a
// real bash.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash: %v", err)
	}
	var cmds func() []*Command
	cmds = func() []*Command {
		return []*Command{
			{Name: "kubeconfig", Flags: func(fs *flag.FlagSet) { fs.String("context", "", ""); fs.String("kubeconfig", "", "") }},
			{Name: "check"},
			CompletionCommand("tsinject", cmds),
		}
	}
	var script, errOut bytes.Buffer
	if code := Run("tsinject", "", cmds(), []string{"completion", "bash"}, &script, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for words, want := range map[string]string{
		"tsinject kub":              "kubeconfig",
		"tsinject kubeconfig --con": "--context",
		"tsinject completion f":     "fish",
		"tsinject c":                "check completion",
	} {
		w := strings.Fields(words)
		probe := script.String() + "\nCOMP_WORDS=(" + words + "); COMP_CWORD=" + strconv.Itoa(len(w)-1) + "; _tsinject; echo \"${COMPREPLY[*]}\"\n"
		out, err := exec.Command(bash, "-c", probe).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("completing %q: %q (%v), want %q", words, out, err, want)
		}
	}
}
