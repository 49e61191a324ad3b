// Package apiserver runs a real kube-apiserver backed by a real etcd for one
// test: on loopback, on free ports, with its data and certificates in the
// test's temporary directory, stopped in t.Cleanup. It hands back an admin
// rest.Config and kubeconfig file, and can stop and restart the API server
// alone (etcd keeps the data) so tests can exercise an outage.
//
// It owns starting, probing and stopping those two processes. It does not
// build them: scripts/testbed/build-k8s.sh does, once per machine, into
// ${BINDGUARD_TESTBED_DIR:-/var/cache/bindguard/testbed}/bin. Without the
// binaries a test skips, or fails when BINDGUARD_REQUIRE_PRIVILEGED=1 (CI),
// naming the script; BINDGUARD_SKIP_TESTBED=1 skips even then (the kernel
// VMs of scripts/vmtest.sh set it: they carry no API server). It does not run a controller manager, a scheduler or a
// kubelet: pods stay Pending, and no default ServiceAccount is made, so the
// ServiceAccount admission plugin is off.
package apiserver
