// Package containerd is a test bed: a real containerd with runc, started by
// the test with its own config, root, state and socket in a temporary
// directory, images built locally from static Go binaries and imported into
// the k8s.io namespace, and pods run through CRI the way kubelet runs them
// (metadata, the io.kubernetes.* labels and annotations, cgroup_parent in
// kubelet's cgroupfs layout below the test's own cgroup, host network).
//
// It owns that containerd's life and everything it leaves behind: pods,
// shims, mounts, and the pod<UID> parents runc leaves in every cgroup
// hierarchy. It does not create the test's cgroup (testutils.Cgroup does)
// and knows nothing of bindguard's policy.
//
// The shim and runc use fixed paths (/run/containerd/s,
// /run/containerd/runc/k8s.io), so one test containerd runs at a time on a
// machine: Start holds a file lock until the test ends. Facts about what
// works here are in shared/testbeds.md: restrict_oom_score_adj is required
// (root lacks CAP_SYS_RESOURCE), crun does not work in hybrid mode.
package containerd
