package daemon

import (
	"github.com/sirupsen/logrus"

	"github.com/bindguard/bindguard/autobind"
	"github.com/bindguard/bindguard/policy"
)

// reservePorts keeps the restricted ports of the policy in force out of the
// kernel's autobind (net.ipv4.ip_local_reserved_ports) while the node
// enforces; in audit mode it takes back what it added, so auditing changes
// nothing on the host. A failure is logged and counted: explicit binds are
// judged as before, and the post_bind programs still refuse a bind(0) that
// lands on a restricted port.
func (d *Daemon) reservePorts(c *policy.Compiled, mode policy.Mode) {
	if d.reserver == nil {
		return
	}
	var ports []uint16
	if mode == policy.ModeEnforce {
		ports = autobind.Restricted(c)
	}
	if err := d.reserver.Reserve(ports); err != nil {
		d.metrics.reserveFailed.Inc()
		d.log.WithError(err).Warn("restricted ports not kept out of autobind")
		return
	}
	if added, err := d.reserver.Added(); err == nil {
		d.log.WithFields(logrus.Fields{"reserved": len(added), "mode": string(mode)}).Info("restricted ports kept out of autobind (ip_local_reserved_ports)")
	}
}

// releasePorts takes back the reserved ports bindguard added, on detach.
func (d *Daemon) releasePorts() {
	if d.reserver == nil {
		return
	}
	if err := d.reserver.Release(); err != nil {
		d.log.WithError(err).Warn("reserved ports not released")
	}
}
