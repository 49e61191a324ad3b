package daemon

import (
	"github.com/sirupsen/logrus"
)

// selfCheck asks the kernel whether the links are still attached. A lost
// attachment (bindguard detach, the cgroup removed, another daemon's
// takeover) is logged and counted on every check until it is back, and
// /healthz fails meanwhile. The daemon does not re-attach on its own: an
// operator who detached meant it, and a supervisor that restarts the daemon
// on a failed health check attaches again through the normal start.
func (d *Daemon) selfCheck() {
	err := d.ld.CheckAttached()
	lost := err != nil
	if lost {
		d.metrics.attachLost.Inc()
		d.log.WithError(err).WithFields(logrus.Fields{"cgroup": d.cfg.Cgroup, "pin_path": d.cfg.PinPath}).
			Error("bind programs are no longer attached: binds are not judged; restart bindguard to attach again")
	} else if d.wasLost {
		d.log.Info("bind programs are attached again")
	}
	d.wasLost = lost
}
