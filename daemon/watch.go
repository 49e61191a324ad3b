package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sirupsen/logrus"

	"github.com/bindguard/bindguard/policy"
)

// settle is how long the registry must be quiet before a reload: bursts of
// changes are folded into one.
const settle = 200 * time.Millisecond

// registryWatch follows the directories that hold the registry.
type registryWatch struct {
	w   *fsnotify.Watcher
	log logrus.FieldLogger
	// dirs are the directories watched for registry changes: each registry
	// directory, or the directory of each registry file.
	dirs map[string]bool
	// ignore names the daemon's own files (the state file it rewrites after
	// each reload): a change to them is no registry change, or each reload
	// would call for the next.
	ignore func(name string) bool
}

// watch sends on reload when a registry file or directory changes. It
// watches directories, not files, so a Kubernetes ConfigMap update (an atomic
// swap of the ..data symlink) and editors that replace files are seen. It
// also watches each directory's parent: a directory replaced as a whole
// (mv dir dir.bak; mkdir dir; cp ...) is watched again once it reappears,
// and reloaded. Bursts are folded into one reload. Names for which ignore
// (if not nil) is true never reload.
func watch(paths []string, ignore func(string) bool, reload chan<- string, log logrus.FieldLogger) (stop func(), err error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	rw := &registryWatch{w: w, log: log, dirs: map[string]bool{}, ignore: ignore}
	watched := map[string]bool{}
	for _, p := range paths {
		if strings.HasPrefix(p, policy.BuiltinPrefix) {
			continue
		}
		dir := filepath.Clean(p)
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			dir = filepath.Dir(dir)
		}
		rw.dirs[dir] = true
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if watched[d] {
				continue
			}
			if err := w.Add(d); err != nil {
				w.Close()
				return nil, err
			}
			watched[d] = true
		}
	}
	done := make(chan struct{})
	go rw.run(done, reload)
	return func() { close(done); w.Close() }, nil
}

func (rw *registryWatch) run(done <-chan struct{}, reload chan<- string) {
	var timer <-chan time.Time
	why := ""
	for {
		select {
		case <-done:
			return
		case ev, ok := <-rw.w.Events:
			if !ok {
				return
			}
			if w := rw.event(ev); w != "" {
				why = w
				timer = time.After(settle)
			}
		case err, ok := <-rw.w.Errors:
			if !ok {
				return
			}
			rw.log.WithError(err).Warn("registry watch")
		case <-timer:
			timer = nil
			select {
			case reload <- why:
			default:
			}
		}
	}
}

// event says why ev calls for a reload, or "" when it does not. An event in
// a parent directory matters only when it names a registry directory: that
// directory was replaced, removed or created, and is watched anew.
func (rw *registryWatch) event(ev fsnotify.Event) string {
	if ev.Op == fsnotify.Chmod {
		return ""
	}
	name := filepath.Clean(ev.Name)
	if rw.ignore != nil && rw.ignore(name) {
		return ""
	}
	if rw.dirs[filepath.Dir(name)] {
		return "registry changed"
	}
	if !rw.dirs[name] {
		return "" // something else in a parent directory
	}
	// The old directory's watch went with it (or follows it to its new
	// name): drop it, and watch what now has the name.
	_ = rw.w.Remove(name)
	if st, err := os.Stat(name); err == nil && st.IsDir() {
		if err := rw.w.Add(name); err != nil {
			rw.log.WithError(err).WithField("dir", name).Error("registry directory replaced and cannot be watched; reload with SIGHUP")
		}
	}
	return "registry directory replaced"
}
