// Command image-oci writes bindguard's container image from the static
// binary alone, pulling nothing: one layer holding /usr/local/bin/bindguard
// on an empty base, with the Dockerfile's entrypoint, command, user and
// labels, saved as an image tarball that `ctr images import`, `docker load`
// and `podman load` read. `make image-oci` runs it (→ bin/bindguard-image.tar).
//
// The image is reproducible: file times and the creation time are fixed, so
// one binary always gives one digest. The Dockerfile stays for builds that
// can pull its base images; the two images run the same way.
package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/spf13/pflag"
)

// binaryPath is where the image holds bindguard, as in the Dockerfile.
const binaryPath = "/usr/local/bin/bindguard"

type flags struct {
	binary, output, tag string
	version, commit     string
}

func (f *flags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.binary, "binary", "bin/bindguard", "the static bindguard binary (CGO_ENABLED=0)")
	fs.StringVar(&f.output, "output", "bin/bindguard-image.tar", "the image tarball to write")
	fs.StringVar(&f.tag, "tag", "", "the image reference in the tarball (default bindguard:VERSION)")
	fs.StringVar(&f.version, "version", "dev", "org.opencontainers.image.version")
	fs.StringVar(&f.commit, "commit", "unknown", "org.opencontainers.image.revision")
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "image-oci:", err)
		os.Exit(1)
	}
}

func run() error {
	var f flags
	fs := pflag.NewFlagSet("image-oci", pflag.ContinueOnError)
	f.register(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if f.tag == "" {
		f.tag = "bindguard:" + f.version
	}
	bin, err := os.ReadFile(f.binary)
	if err != nil {
		return fmt.Errorf("read binary: %w (build it with `make build`)", err)
	}
	img, err := build(bin, f.version, f.commit)
	if err != nil {
		return err
	}
	if err := writeTarball(f.output, f.tag, img); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s %s\n", f.output, f.tag, d)
	return nil
}

// writeTarball saves the image under tag, atomically.
func writeTarball(path, tag string, img v1.Image) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", tag, err)
	}
	tmp := path + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// build makes the image: one layer with the binary, and the Dockerfile's
// configuration.
func build(bin []byte, version, commit string) (v1.Image, error) {
	if !bytes.HasPrefix(bin, []byte("\x7fELF")) {
		return nil, fmt.Errorf("binary: not an ELF executable")
	}
	layer, err := binaryLayer(bin)
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
	if err != nil {
		return nil, fmt.Errorf("add layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config = v1.Config{
		// uid 0: the capabilities Kubernetes adds are in effect only for
		// root (see the Dockerfile).
		User:       "0:0",
		Entrypoint: []string{binaryPath},
		Cmd:        []string{"version"},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "bindguard",
			"org.opencontainers.image.description": "Enforces a host port registry with cgroup bind4/bind6 BPF programs",
			"org.opencontainers.image.source":      "https://github.com/bindguard/bindguard",
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.revision":    commit,
		},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	return img, nil
}

// binaryLayer is a tar layer holding the binary and its directories, root
// owned, with fixed times.
func binaryLayer(bin []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, dir := range []string{"usr/", "usr/local/", "usr/local/bin/", "tmp/"} {
		mode := int64(0o755)
		if dir == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: mode, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: binaryPath[1:], Mode: 0o755, Size: int64(len(bin)), ModTime: epoch, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}
