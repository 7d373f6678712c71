package injector

import (
	"os"
	"strings"
	"testing"
)

// docs/injection.md lists every reason code and annotation.
func TestDocsCoverTables(t *testing.T) {
	b, err := os.ReadFile("../docs/injection.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, r := range Reasons {
		if !strings.Contains(doc, "`"+string(r.Reason)+"`") {
			t.Errorf("docs/injection.md lacks reason %s", r.Reason)
		}
	}
	for _, a := range append(Annotations, NamespacePolicies...) {
		if !strings.Contains(doc, "`"+a.Key+"`") {
			t.Errorf("docs/injection.md lacks annotation %s", a.Key)
		}
	}
}
