package main

import (
	"strings"
	"testing"
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
