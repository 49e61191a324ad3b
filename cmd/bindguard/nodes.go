package main

import (
	"fmt"
	"io"
	"os"
	"syscall"

	corev1 "k8s.io/api/core/v1"

	"github.com/bindguard/bindguard/podcheck"
)

// maxNodesFile bounds a --nodes or --pods file: a 5,000-node cluster's
// `kubectl get nodes -o json` is about 50 MB; 256 MiB of pods is about
// 50,000 of them.
const maxNodesFile = 256 << 20

// readNodesFile reads a --nodes file ("-" for stdin) and decodes it with
// podcheck.ReadNodes, the one decoder of kubectl's nodes JSON.
func readNodesFile(path string) ([]corev1.Node, error) {
	data, err := readInputFile(path, "kubectl get nodes -o json")
	if err != nil {
		return nil, err
	}
	return podcheck.ReadNodes(data, path)
}

// readInputFile reads a JSON input file ("-" for stdin) of at most
// maxNodesFile bytes: a regular file or a pipe, never a FIFO that blocks or
// a device that never ends. what says what the file should hold.
func readInputFile(path, what string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: not a regular file: want the output of %s", path, what)
		}
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxNodesFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxNodesFile {
		return nil, fmt.Errorf("%s: larger than %d MiB", path, maxNodesFile>>20)
	}
	return data, nil
}
