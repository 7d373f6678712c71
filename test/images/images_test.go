package images

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/tsinject/tsinject/test/gobuild"
)

// dockerStage is what a final stage of the Dockerfile puts in its image.
type dockerStage struct {
	files      map[string]int64 // destination -> mode
	user       string
	entrypoint string
	env        []string
}

// parseDockerfile reads the stages named after images (FROM ... AS name).
func parseDockerfile(t *testing.T, path string) map[string]*dockerStage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stages := map[string]*dockerStage{}
	var cur *dockerStage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch fields[0] {
		case "FROM":
			cur = nil
			if len(fields) == 4 && fields[1] == "scratch" && fields[2] == "AS" {
				cur = &dockerStage{files: map[string]int64{}}
				stages[fields[3]] = cur
			}
		case "COPY":
			if cur == nil {
				continue
			}
			mode := int64(-1)
			var args []string
			for _, a := range fields[1:] {
				if m, ok := strings.CutPrefix(a, "--chmod="); ok {
					v, err := strconv.ParseInt(m, 8, 64)
					if err != nil {
						t.Fatalf("Dockerfile: %q: %v", sc.Text(), err)
					}
					mode = v
				} else if !strings.HasPrefix(a, "--") {
					args = append(args, a)
				}
			}
			cur.files[args[len(args)-1]] = mode
		case "USER":
			if cur != nil {
				cur.user = fields[1]
			}
		case "ENV":
			if cur != nil {
				cur.env = append(cur.env, fields[1])
			}
		case "ENTRYPOINT":
			if cur != nil {
				cur.entrypoint = strings.Trim(strings.Join(fields[1:], " "), `[]"`)
			}
		}
	}
	return stages
}

// The images make e2e builds hold exactly what the Dockerfile's stages
// copy, with the same modes, user, environment and entrypoint.
func TestImagesMatchDockerfile(t *testing.T) {
	root := gobuild.Root()
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	binDir := t.TempDir()
	specs := Specs(binDir)
	if len(stages) != len(specs) {
		t.Fatalf("Dockerfile has image stages %v, want one per image (%d)", keys(stages), len(specs))
	}
	for _, spec := range specs {
		t.Run(spec.Name, func(t *testing.T) {
			st := stages[spec.Name]
			if st == nil {
				t.Fatalf("Dockerfile has no stage %q", spec.Name)
			}
			// A stand-in binary: the layout is under test, not the program.
			if err := os.WriteFile(filepath.Join(binDir, spec.Name), []byte("#!/bin/true\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			img, err := Build(spec, root)
			if err != nil {
				t.Fatal(err)
			}
			got, err := imageFiles(img)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(st.files) {
				t.Errorf("files (path:mode):\n image      %v\n Dockerfile %v", octal(got), octal(st.files))
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Config.User != st.user || cf.Config.User != User {
				t.Errorf("user: image %q, Dockerfile %q", cf.Config.User, st.user)
			}
			if ep := strings.Join(cf.Config.Entrypoint, " "); ep != st.entrypoint {
				t.Errorf("entrypoint: image %q, Dockerfile %q", ep, st.entrypoint)
			}
			if !slices.Equal(cf.Config.Env, st.env) {
				t.Errorf("env: image %q, Dockerfile %q", cf.Config.Env, st.env)
			}
		})
	}
}

// imageFiles lists the regular files of img (flattened) with their modes.
func imageFiles(img v1.Image) (map[string]int64, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]int64{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			files["/"+strings.TrimPrefix(h.Name, "/")] = h.Mode
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func octal(m map[string]int64) []string {
	var out []string
	for _, k := range keys(m) {
		out = append(out, fmt.Sprintf("%s:%o", k, m[k]))
	}
	return out
}
