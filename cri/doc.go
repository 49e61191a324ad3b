// Package cri asks the node's container runtime (containerd or CRI-O, over
// the CRI v1 gRPC API on its unix socket) who a pod and a container are:
// namespace, name, UID and labels from the pod sandbox, the container's name
// and the ports the pod's containers declare from what kubelet wrote into
// their labels and annotations. It needs no API server and no RBAC.
//
// It owns the connection to the runtime (detection of the socket,
// reconnection with backoff, one log line per outage and one when the
// runtime is back) and a cache of identities keyed by pod UID and container
// id, kept across runtime outages and refreshed periodically.
//
// It does not read cgroup paths (package cgroups does: a cgroup path only
// claims a pod UID and container id, and Lookup confirms the claim with the
// runtime) and it does not decide verdicts (package policy does).
//
// A static pod's UID, as the runtime reports it, is kubelet's config hash,
// not the UID of its mirror pod in the API; the cgroup path carries the same
// hash, so the lookup on the node matches.
package cri
