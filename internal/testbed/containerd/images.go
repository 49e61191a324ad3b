package containerd

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The images the test bed imports into every containerd it starts.
const (
	PauseImage  = "bindguard.test/pause:1"
	BinderImage = "bindguard.test/binder:1"
)

const pkgPath = "github.com/bindguard/bindguard/internal/testbed/containerd"

// imageTars builds the static pause and binder binaries (the go build
// cache makes this quick after the first time) and their single-layer
// images into dir, and returns the image tar files by reference.
func imageTars(dir string) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := buildImages(dir); err != nil {
		return nil, err
	}
	return map[string]string{
		PauseImage:  filepath.Join(dir, "pause.tar"),
		BinderImage: filepath.Join(dir, "binder.tar"),
	}, nil
}

func buildImages(dir string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("testbed: the go command builds the image binaries: %w", err)
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", dir+"/", pkgPath+"/pause", pkgPath+"/binder")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: build image binaries: %w\n%s", err, out)
	}
	for ref, bin := range map[string]string{PauseImage: "pause", BinderImage: "binder"} {
		if err := writeImage(filepath.Join(dir, bin+".tar"), ref, filepath.Join(dir, bin), "/bin/"+bin); err != nil {
			return err
		}
	}
	return nil
}

// writeImage writes a one-layer image holding the static binary at dst,
// its entrypoint, as a docker-archive tar that ctr imports.
func writeImage(out, ref, binary, dst string) error {
	data, err := os.ReadFile(binary)
	if err != nil {
		return fmt.Errorf("testbed: image %s: %w", ref, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdrs := []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: dst[1:], Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))},
	}
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	})
	if err != nil {
		return fmt.Errorf("testbed: image %s layer: %w", ref, err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return fmt.Errorf("testbed: image %s: %w", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Entrypoint: []string{dst}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		return fmt.Errorf("testbed: write image %s: %w", ref, err)
	}
	return nil
}

// importImages imports the test bed's images into the k8s.io namespace,
// the only one CRI sees.
func (c *Containerd) importImages() error {
	tars, err := imageTars(filepath.Join(c.Dir, "images"))
	if err != nil {
		return err
	}
	for ref, tarPath := range tars {
		out, err := exec.Command("ctr", "-a", c.Socket, "-n", "k8s.io", "images", "import", tarPath).CombinedOutput()
		if err != nil {
			return fmt.Errorf("testbed: import %s: %w\n%s", ref, err, out)
		}
	}
	return nil
}
