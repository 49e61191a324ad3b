// Package builtin holds the port registries that ship inside the bindguard
// binary, one per source system (OpenShift, ACOS, Avi, Kubean, ACK Edge).
//
// Each registry is a directory of YAML fragments under registries/<name>/,
// written by hand from the vendor's own port document and embedded in the
// binary. A registry is referred to as "builtin:<name>"; its files are named
// "builtin:<name>/<file>.yaml" so that problems point at the fragment.
//
// The package owns only the embedded bytes and their names. It does not parse,
// validate or merge them: that is package policy's job (policy.Load accepts
// "builtin:<name>"). Owners are deliberately absent from these registries;
// which cgroup, unit or user may bind a port is a site decision.
package builtin
