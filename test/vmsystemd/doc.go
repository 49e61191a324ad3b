// Package vmsystemd is the guest half of `make vmtest-systemd`
// (scripts/vmtest-systemd.sh): tests that run inside a Debian VM booted with
// systemd as PID 1, against the shipped deploy/systemd/bindguard.service
// installed as documented. They drive systemctl and read the journal, and
// make real bind() calls to check the verdicts across start, reload,
// restart, stop, kill -9 and a unit that binds an undeclared port.
//
// Outside that VM (BINDGUARD_SYSTEMD_VM unset) every test skips: they start
// and stop the host's services. It owns no code used elsewhere.
package vmsystemd
