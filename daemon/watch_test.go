package daemon

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sirupsen/logrus"
)

// waitReload waits for a reload request; a minute is a generous bound for
// an inotify event, not a measurement.
func waitReload(t *testing.T, reload <-chan string, what string) string {
	t.Helper()
	select {
	case why := <-reload:
		return why
	case <-time.After(time.Minute):
		t.Fatalf("no reload after %s", what)
		return ""
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestWatchReplacedDirectory: configuration management replaces the
// registry directory as a whole; later changes in the new directory must
// still reload. Before, the watch followed the old directory to dir.bak.
func TestWatchReplacedDirectory(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "registry.d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "a.yaml"), "a")
	log := logrus.New()
	log.SetOutput(io.Discard)
	reload := make(chan string, 1)
	stop, err := watch([]string{dir}, nil, reload, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	writeFile(t, filepath.Join(dir, "a.yaml"), "a2")
	waitReload(t, reload, "a change in the directory")

	if err := os.Rename(dir, dir+".bak"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "a.yaml"), "b")
	waitReload(t, reload, "the directory was replaced")

	// The new directory is watched: a change in it reloads again, while
	// one in the old directory does not matter any more.
	writeFile(t, filepath.Join(dir+".bak", "a.yaml"), "old")
	writeFile(t, filepath.Join(dir, "b.yaml"), "c")
	if why := waitReload(t, reload, "a change in the new directory"); why != "registry changed" {
		t.Errorf("reload because %q, want %q", why, "registry changed")
	}
}

// TestWatchIgnoresOwnFiles: the daemon rewrites its state file after each
// reload; in the registry's directory, that must not call for another
// reload, nor must the temporary files it writes on the way.
func TestWatchIgnoresOwnFiles(t *testing.T) {
	dir := t.TempDir()
	d := &Daemon{cfg: Config{Node: NodeConfig{StateFile: filepath.Join(dir, "node.json")}, ReadyFile: filepath.Join(dir, "ready"), ReserveState: "none"}}
	rw := &registryWatch{dirs: map[string]bool{dir: true}, ignore: d.ownFile}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"state file", "node.json", ""},
		{"its temporary file", ".node.json.123456.tmp", ""},
		{"ready file", "ready", ""},
		{"a registry file", "registry.yaml", "registry changed"},
		{"a look-alike", "node.json.yaml", "registry changed"},
		{"ConfigMap swap", "..data", "registry changed"},
		{"another dot file", ".node.jsonx.1.tmp", "registry changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rw.event(fsnotify.Event{Name: filepath.Join(dir, tc.file), Op: fsnotify.Create}); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
