// Package images builds tsinject's container images without Docker, from
// the binaries `make build` writes, the way ko does (go-containerregistry):
// a static binary on an empty base with the few files the Dockerfile
// copies too. A test keeps the two in step, so the images a real node runs
// in make e2e are the images a release builds.
package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// User is the non-root user both images run as (distroless's nonroot).
const User = "65532:65532"

// File is one file of an image: where it comes from on the build host
// (relative paths are relative to the module root) and where it goes.
type File struct {
	Src, Dst string
	Mode     int64
}

// Spec describes one image.
type Spec struct {
	Name  string // tsinject or tsinject-proxy (the Dockerfile's target)
	Files []File // the binary first: it is the entrypoint
	// User runs the entrypoint; default User.
	User string
	// Env is added to the image's environment (a test rig's own
	// settings; the release images have none).
	Env []string
}

// Entrypoint is the image's entrypoint: its binary.
func (s Spec) Entrypoint() string { return s.Files[0].Dst }

// common are the files every image carries: the users (for tools that map
// UIDs to names) and the CA bundle (TLS to a control server such as
// Tailscale's or a Headscale with a public certificate).
var common = []File{
	{Src: "hack/image/passwd", Dst: "/etc/passwd", Mode: 0o644},
	{Src: "hack/image/group", Dst: "/etc/group", Mode: 0o644},
	{Src: "/etc/ssl/certs/ca-certificates.crt", Dst: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644},
}

// Specs are tsinject's two images; binDir holds the binaries.
func Specs(binDir string) []Spec {
	var out []Spec
	for _, n := range []string{"tsinject", "tsinject-proxy"} {
		files := append([]File{{Src: filepath.Join(binDir, n), Dst: "/usr/local/bin/" + n, Mode: 0o755}}, common...)
		out = append(out, Spec{Name: n, Files: files})
	}
	return out
}

// Build makes the image of spec; root is the module root.
func Build(spec Spec, root string) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		b, err := layerTar(spec.Files, root)
		return io.NopCloser(bytes.NewReader(b)), err
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.User = spec.User
	if cf.Config.User == "" {
		cf.Config.User = User
	}
	cf.Config.Entrypoint = []string{spec.Entrypoint()}
	cf.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, spec.Env...)
	return mutate.ConfigFile(img, cf)
}

// layerTar is the image's one layer: its files with their parent
// directories, owned by root, with a fixed time so builds repeat.
func layerTar(files []File, root string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Dst < sorted[j].Dst })
	for _, f := range sorted {
		for _, d := range parents(f.Dst) {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return nil, err
			}
		}
		src := f.Src
		if !filepath.IsAbs(src) {
			src = filepath.Join(root, src)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("image file %s: %w", f.Dst, err)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.Dst[1:], Mode: f.Mode, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// parents lists the directories above path, outermost first.
func parents(path string) []string {
	var out []string
	for d := filepath.Dir(path); d != "/"; d = filepath.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}

// WriteTarball writes img under ref (e.g. tsinject.local/tsinject:e2e) as
// a tarball that `ctr images import` and `docker load` read.
func WriteTarball(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}
