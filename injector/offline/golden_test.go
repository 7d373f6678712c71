package offline_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/injectortest"
	"github.com/tsinject/tsinject/injector/offline"
	"github.com/tsinject/tsinject/injector/webhook"
)

var update = flag.Bool("update", false, "rewrite the .injected golden files")

func transformer(cfg injector.Config) *offline.Transformer {
	return transformerWith(cfg, injectortest.Namespaces())
}

func transformerWith(cfg injector.Config, ns offline.StaticNamespaces) *offline.Transformer {
	return &offline.Transformer{
		Handler: &webhook.Handler{
			Injector:   injector.New(cfg),
			Namespaces: ns,
			Log:        logr.Discard(),
		},
		DefaultNamespace: "default",
	}
}

// Render is the golden form: the decisions as comments, then the YAML.
func render(ds []offline.Decision, out []byte) []byte {
	var b bytes.Buffer
	for _, d := range ds {
		fmt.Fprintf(&b, "# %s: %s\n", d.Object, d.Reason)
		for _, w := range d.Warnings {
			fmt.Fprintf(&b, "#   warning: %s\n", w)
		}
		if d.Err != nil {
			fmt.Fprintf(&b, "#   denied: %s\n", d.Err)
		}
	}
	b.Write(out)
	return b.Bytes()
}

func TestGolden(t *testing.T) {
	golden(t, injectortest.Dir(), func([]byte) (offline.StaticNamespaces, error) { return injectortest.Namespaces(), nil })
}

// One case per row of the profiles' precedence table (docs/profiles.md).
func TestProfileGolden(t *testing.T) {
	golden(t, injectortest.ProfileDir(), injectortest.ClusterOf)
}

func golden(t *testing.T, dir string, cluster func([]byte) (offline.StaticNamespaces, error)) {
	cases, err := injectortest.CasesIn(dir)
	if err != nil || len(cases) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, in := range cases {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".yaml"), func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			cfg, _ := injectortest.ConfigFor(src)
			ns, err := cluster(src)
			if err != nil {
				t.Fatal(err)
			}
			transformer := func(cfg injector.Config) *offline.Transformer { return transformerWith(cfg, ns) }
			var out bytes.Buffer
			ds, err := transformer(cfg).Inject(context.Background(), bytes.NewReader(src), &out)
			denied := false
			for _, d := range ds {
				denied = denied || d.Err != nil
			}
			if (err != nil) != denied {
				t.Fatalf("Inject error %v, but denied=%v", err, denied)
			}
			got := render(ds, out.Bytes())
			golden := strings.TrimSuffix(in, ".yaml") + ".injected"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run: go test ./injector/... -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update to accept):\n%s", golden, lineDiff(string(want), string(got)))
			}

			// Injecting again changes nothing; uninjecting gives back the input.
			var again bytes.Buffer
			ds2, _ := transformer(cfg).Inject(context.Background(), bytes.NewReader(out.Bytes()), &again)
			for i, d := range ds2 {
				if d.Reason == injector.ReasonInjected {
					t.Errorf("%s injected twice", d.Object)
				}
				if d.Err != nil && (i >= len(ds) || ds[i].Err == nil) {
					t.Errorf("%s: injecting the injected output is denied: %v", d.Object, d.Err)
				}
			}
			if !sameDocs(t, out.Bytes(), again.Bytes()) {
				t.Errorf("re-injection changed the output")
			}
			var back bytes.Buffer
			if _, err := transformer(cfg).Uninject(bytes.NewReader(out.Bytes()), &back); err != nil {
				t.Fatal(err)
			}
			if !sameDocs(t, src, back.Bytes()) {
				t.Errorf("uninject(inject(x)) != x:\n%s", lineDiff(string(src), back.String()))
			}
		})
	}
}

func sameDocs(t *testing.T, a, b []byte) bool {
	t.Helper()
	da, db := docs(t, a), docs(t, b)
	return equality.Semantic.DeepEqual(da, db)
}

func docs(t *testing.T, b []byte) []any {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufioReader(b))
	var out []any
	for {
		d, err := r.Read()
		if err != nil {
			break
		}
		var v any
		if err := yaml.Unmarshal(d, &v); err != nil {
			t.Fatal(err)
		}
		if v != nil {
			out = append(out, v)
		}
	}
	return out
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want: %s\n  got:  %s\n", i+1, wl, gl)
			if b.Len() > 4000 {
				break
			}
		}
	}
	return b.String()
}
