package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loadOrHang runs Load and fails the test if it has not returned after a
// generous minute: before the fix, a FIFO blocked it forever.
func loadOrHang(t *testing.T, paths ...string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := Load(paths...)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("Load(%v) has not returned after a minute: it blocks", paths)
		return nil
	}
}

func sparse(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadRegularFilesOnly: a registry path that is not a regular file is
// an error that says what it is, never a read that blocks or never ends.
func TestLoadRegularFilesOnly(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	inDir := filepath.Join(dir, "d")
	if err := os.Mkdir(inDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(inDir, "10-ok.yaml"), []byte("apiVersion: bindguard.io/v1\nkind: PortRegistry\nmetadata: {name: ok}\nentries: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(inDir, "20-fifo.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"fifo", fifo, "fifo.yaml: not a regular file (a FIFO)"},
		{"fifo in a directory", inDir, "20-fifo.yaml: not a regular file (a FIFO)"},
		{"dev zero", "/dev/zero", "/dev/zero: not a regular file (a character device)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadOrHang(t, tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load(%s) = %v, want %q", tc.path, err, tc.want)
			}
		})
	}
}

// TestLoadSizeLimits: files over the limits are refused before they are
// read, with a message that gives the size and the limit.
func TestLoadSizeLimits(t *testing.T) {
	dir := t.TempDir()
	big := sparse(t, filepath.Join(dir, "big.yaml"), 246<<20)
	many := filepath.Join(dir, "many")
	if err := os.Mkdir(many, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		sparse(t, filepath.Join(many, fmt.Sprintf("%d.yaml", i)), MaxFileSize-1<<10)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"one file of 246 MiB", big, "big.yaml: 246.0 MiB is over the 4.0 MiB limit for one registry file"},
		{"five files of almost 4 MiB", many, "4.yaml: 4.0 MiB would take the registry files over 16.0 MiB together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadOrHang(t, tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load(%s) = %v, want %q", tc.path, err, tc.want)
			}
		})
	}
}

// TestLoadHugeFileMemory: refusing a 246 MB registry reads none of it.
// Before, it took 7.7 GB.
func TestLoadHugeFileMemory(t *testing.T) {
	big := sparse(t, filepath.Join(t.TempDir(), "big.yaml"), 246<<20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Load(big)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("a 246 MiB registry was accepted")
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("refusing 246 MiB allocated %d bytes", alloc)
	if alloc > 1<<20 {
		t.Errorf("refusing a 246 MiB registry allocated %d bytes; it should read none of it", alloc)
	}
}
