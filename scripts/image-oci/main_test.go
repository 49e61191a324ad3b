package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestBuild checks the image against what the Dockerfile sets, its one
// layer's contents, and that one binary always gives one digest.
func TestBuild(t *testing.T) {
	bin, err := os.ReadFile("/proc/self/exe") // any static-enough ELF will do
	if err != nil {
		t.Fatal(err)
	}
	img, err := build(bin, "v1.2.3", "abc1234")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	for _, tc := range []struct{ what, got, want string }{
		{"user", c.User, "0:0"},
		{"entrypoint", join(c.Entrypoint), binaryPath},
		{"cmd", join(c.Cmd), "version"},
		{"os", cf.OS, "linux"},
		{"version label", c.Labels["org.opencontainers.image.version"], "v1.2.3"},
		{"revision label", c.Labels["org.opencontainers.image.revision"], "abc1234"},
		{"title label", c.Labels["org.opencontainers.image.title"], "bindguard"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("%s = %q, want %q", tc.what, tc.got, tc.want)
			}
		})
	}

	// Write and read back through the tarball, as ctr import would.
	out := filepath.Join(t.TempDir(), "image.tar")
	if err := writeTarball(out, "bindguard:test", img); err != nil {
		t.Fatal(err)
	}
	back, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := back.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if "/"+h.Name == binaryPath {
			found = true
			if h.Mode != 0o755 || h.Uid != 0 || h.Size != int64(len(bin)) {
				t.Errorf("%s: mode %o uid %d size %d", h.Name, h.Mode, h.Uid, h.Size)
			}
		}
	}
	if !found {
		t.Errorf("no %s in the layer", binaryPath)
	}

	again, err := build(bin, "v1.2.3", "abc1234")
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("digests differ: %s, rebuilt %s", d1, d2)
	}
	// The tarball keeps the config (image id) and the layer as written.
	c1, _ := img.ConfigName()
	c3, _ := back.ConfigName()
	if c1 != c3 {
		t.Errorf("image id %s, read back %s", c1, c3)
	}
}

func TestBuildRejects(t *testing.T) {
	if _, err := build([]byte("#!/bin/sh\n"), "v", "c"); err == nil {
		t.Error("a script was accepted as the binary")
	}
}

func join(s []string) string {
	if len(s) != 1 {
		return ""
	}
	return s[0]
}
