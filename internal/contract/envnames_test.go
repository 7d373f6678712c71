package contract

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Every TSINJECT_* environment variable crosses a process boundary (the
// injector or a controller sets it, a proxy reads it), so it is named once,
// here: no product package spells one as a literal.
func TestEnvNamesOnlyInContract(t *testing.T) {
	envName := regexp.MustCompile(`^TSINJECT_[A-Z0-9_]+$`)
	// netinit's nftables/iptables chain: a name inside one process.
	allowed := map[string]bool{"TSINJECT_OUTPUT": true}
	root := filepath.Join("..", "..")
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel != "." && (rel == "test" || rel == "hack" || strings.HasPrefix(d.Name(), ".") || rel == filepath.Join("internal", "contract")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if v, err := strconv.Unquote(lit.Value); err == nil && envName.MatchString(v) && !allowed[v] {
				t.Errorf("%s: %q spelled as a literal: name it in package contract", rel, v)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked only %d files: is the walk rooted at the module?", checked)
	}
}
