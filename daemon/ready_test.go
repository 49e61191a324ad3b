package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteReady: the ready file is created without following anything an
// attacker planted in a world-writable directory, replaces a stale one, and
// names this pid.
func TestWriteReady(t *testing.T) {
	want := fmt.Sprintf("pid=%d generation=7\n", os.Getpid())
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir, ready, victim string)
	}{
		{"nothing there", func(*testing.T, string, string, string) {}},
		{"stale file of a killed daemon", func(t *testing.T, _, ready, _ string) {
			writeFile(t, ready, "pid=999999 generation=3\n")
		}},
		{"symlink at the old temporary name", func(t *testing.T, dir, _, victim string) {
			if err := os.Symlink(victim, filepath.Join(dir, ".ready.tmp")); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink at the ready file", func(t *testing.T, _, ready, victim string) {
			if err := os.Symlink(victim, ready); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Chmod(dir, 0o1777); err != nil {
				t.Fatal(err)
			}
			ready := filepath.Join(dir, "ready")
			victim := filepath.Join(t.TempDir(), "victim")
			writeFile(t, victim, "precious\n")
			tc.plant(t, dir, ready, victim)

			if err := writeReady(ready, 7); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
				t.Errorf("a planted symlink was followed: the victim now holds %q", b)
			}
			st, err := os.Lstat(ready)
			if err != nil || !st.Mode().IsRegular() {
				t.Fatalf("ready file: %v %v, want a regular file", st, err)
			}
			if b, _ := os.ReadFile(ready); string(b) != want {
				t.Errorf("ready file holds %q, want %q", b, want)
			}
			removeReady(ready)
			if _, err := os.Lstat(ready); !os.IsNotExist(err) {
				t.Errorf("our ready file not removed: %v", err)
			}
		})
	}
}

// TestRemoveReadyLeavesOthers: a ready file that names another pid is not
// ours to remove.
func TestRemoveReadyLeavesOthers(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	writeFile(t, ready, "pid=1 generation=1\n")
	removeReady(ready)
	if _, err := os.Stat(ready); err != nil {
		t.Errorf("another daemon's ready file was removed: %v", err)
	}
}
