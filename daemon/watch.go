package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sirupsen/logrus"
)

// watch sends on reload when a registry file or directory changes. It
// watches directories, not files, so a Kubernetes ConfigMap update (an atomic
// swap of the ..data symlink) and editors that replace files are seen.
// Bursts are folded into one reload.
func watch(paths []string, reload chan<- string, log logrus.FieldLogger) (stop func(), err error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	dirs := map[string]bool{}
	for _, p := range paths {
		if strings.HasPrefix(p, "builtin:") {
			continue
		}
		dir := p
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			dir = filepath.Dir(p)
		}
		if !dirs[dir] {
			if err := w.Add(dir); err != nil {
				w.Close()
				return nil, err
			}
			dirs[dir] = true
		}
	}
	done := make(chan struct{})
	go func() {
		var timer <-chan time.Time
		for {
			select {
			case <-done:
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Op == fsnotify.Chmod {
					continue
				}
				timer = time.After(200 * time.Millisecond)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.WithError(err).Warn("registry watch")
			case <-timer:
				timer = nil
				select {
				case reload <- "registry changed":
				default:
				}
			}
		}
	}()
	return func() { close(done); w.Close() }, nil
}
