package cri

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// DefaultSockets are the runtime sockets tried, in order, when no socket is
// given: containerd's, then CRI-O's.
var DefaultSockets = []string{
	"/run/containerd/containerd.sock",
	"/var/run/containerd/containerd.sock",
	"/run/crio/crio.sock",
	"/var/run/crio/crio.sock",
}

// ErrNoSocket: none of the sockets tried exists.
var ErrNoSocket = errors.New("no container runtime socket found")

// Detect returns the first of candidates (DefaultSockets when none are
// given) that is a unix socket.
func Detect(candidates ...string) (string, error) {
	if len(candidates) == 0 {
		candidates = DefaultSockets
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("cri: %w (tried %s)", ErrNoSocket, strings.Join(candidates, ", "))
}

// socketPath accepts kubelet's form of an endpoint, unix:///path, or a path.
func socketPath(s string) (string, error) {
	p := strings.TrimPrefix(s, "unix://")
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("cri: socket %q: want an absolute path or unix:///path", s)
	}
	return p, nil
}
