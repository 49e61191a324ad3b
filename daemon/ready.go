package daemon

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// readyContent is what the ready file holds: readiness is "the file exists
// and names this pid".
func readyContent(gen uint32) string {
	return fmt.Sprintf("pid=%d generation=%d\n", os.Getpid(), gen)
}

// writeReady writes the ready file atomically and safely in a directory
// others may write to: the temporary file is created with O_EXCL under a
// random name (os.CreateTemp), so a planted file or symlink is never
// followed, and the rename replaces whatever is at path, a stale ready file
// of a killed daemon included, without following a symlink there either.
func writeReady(path string, gen uint32) (err error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("ready file %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err := f.WriteString(readyContent(gen)); err != nil {
		f.Close()
		return fmt.Errorf("ready file %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("ready file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ready file %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("ready file %s: %w", path, err)
	}
	return nil
}

// removeReady removes the ready file if it is still ours. It reads at most
// a line, from a regular file, without following a symlink or blocking on a
// FIFO put there since.
func removeReady(path string) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return
	}
	b := make([]byte, 64)
	n, _ := io.ReadFull(f, b)
	if strings.HasPrefix(string(b[:n]), fmt.Sprintf("pid=%d ", os.Getpid())) {
		os.Remove(path)
	}
}
