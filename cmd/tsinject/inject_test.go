package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/injector/offline"
)

// --native-sidecar means in `tsinject inject` what it means in the manager
// (auto, always, never), with the cluster's version given for auto.
func TestOfflineNativeSidecar(t *testing.T) {
	for _, tc := range []struct {
		mode, version string
		want          bool
		wantErr       string
	}{
		{"auto", "", true, ""},
		{"auto", "1.28", false, ""},
		{"auto", "v1.29.3", true, ""},
		{"auto", "1.37", true, ""},
		{"always", "1.20", true, ""},
		{"never", "", false, ""},
		{"true", "", true, ""},
		{"false", "", false, ""},
		{"auto", "latest", false, `--kube-version "latest": want MAJOR.MINOR`},
		{"sometimes", "", false, `--native-sidecar "sometimes": allowed: auto, always, never`},
	} {
		got, err := offlineNativeSidecar(tc.mode, tc.version)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s %s: error %v, want %q", tc.mode, tc.version, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%s %s: %v", tc.mode, tc.version, err)
		case got != tc.want:
			t.Errorf("%s %s: native %v, want %v", tc.mode, tc.version, got, tc.want)
		}
	}
}

// --profiles reads SidecarProfiles and Namespaces, and names the file, the
// document and the field of what it cannot use.
func TestReadObjectFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", `apiVersion: v1
kind: List
items:
- apiVersion: tsinject.dev/v1alpha1
  kind: SidecarProfile
  metadata: {name: default}
  spec: {sidecar: {tags: [tag:cluster]}}
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop, annotations: {tsinject.dev/profile: default}}
`)
	var ns offline.StaticNamespaces
	if err := readObjectFiles([]string{good}, &ns); err != nil {
		t.Fatal(err)
	}
	if ns.Profiles["default"] == nil || ns.Namespaces["shop"] == nil {
		t.Fatalf("read %+v", ns)
	}
	for _, tc := range []struct{ body, want string }{
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", `bad.yaml: document 1: kind "ConfigMap": want SidecarProfile or Namespace`},
		{"apiVersion: tsinject.dev/v1alpha1\nkind: SidecarProfile\nmetadata: {name: x}\nspec: {sidecar: {egresMode: explicit}}\n", `bad.yaml: document 1: SidecarProfile: error unmarshaling JSON: while decoding JSON: json: unknown field "egresMode"`},
		{"apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: tsinject.dev/v1alpha1\nkind: SidecarProfile\nspec: {}\n", "document 2: SidecarProfile without metadata.name"},
	} {
		err := readObjectFiles([]string{write("bad.yaml", tc.body)}, &offline.StaticNamespaces{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.body, err, tc.want)
		}
	}
	if err := readObjectFiles([]string{filepath.Join(dir, "missing.yaml")}, &offline.StaticNamespaces{}); err == nil || !strings.Contains(err.Error(), "--profiles") {
		t.Errorf("missing file: %v", err)
	}
}
