// Package deploy holds no code. Its directories ship how bindguard is
// deployed: the systemd unit (systemd/), an example registry fragment
// (registry.d/) and the Kubernetes manifests (kubernetes/). Its tests check
// them against the real thing: the unit with systemd-analyze verify, the
// manifests with the Kubernetes API types in strict mode, every bindguard
// flag against the flags `bindguard run` has, and the shipped registries with
// package policy.
//
// It does not own the image (the Dockerfile at the repository root) or the
// rollout procedure (docs/rollout.md).
package deploy
