package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	corev1 "k8s.io/api/core/v1"
)

// maxNodesFile bounds a --nodes file: a 5,000-node cluster's
// `kubectl get nodes -o json` is about 50 MB.
const maxNodesFile = 256 << 20

// readNodesFile reads a --nodes file ("-" for stdin): a regular file or a
// pipe, never a FIFO that blocks or a device that never ends.
func readNodesFile(path string) ([]corev1.Node, error) {
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
			return nil, fmt.Errorf("%s: not a regular file: want the output of kubectl get nodes -o json", path)
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
	return readNodes(data, path)
}

// readNodes decodes what `kubectl get nodes -o json` prints: a List or
// NodeList of Nodes, or one Node. Every bad item is reported with its index,
// its name when it has one, and the field. Unknown fields are ignored, so
// that newer servers' output decodes.
func readNodes(data []byte, name string) ([]corev1.Node, error) {
	var top struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := lineCol(data, se.Offset-1) // the offset is past the bad byte
			return nil, fmt.Errorf("%s:%d:%d: invalid JSON: %v", name, line, col, se)
		}
		return nil, fmt.Errorf("%s: %w", name, jsonError(err))
	}
	raws := top.Items
	switch top.Kind {
	case "Node":
		raws = []json.RawMessage{data}
	case "List", "NodeList":
	default:
		return nil, fmt.Errorf("%s: kind %q: want List, NodeList or Node (the output of kubectl get nodes -o json)", name, top.Kind)
	}
	nodes := make([]corev1.Node, len(raws))
	seen := map[string]int{}
	var errs []error
	for i, raw := range raws {
		err := decodeNode(raw, &nodes[i])
		if first, dup := seen[nodes[i].Name]; err == nil && dup {
			err = fmt.Errorf("node %s is also items[%d]", nodes[i].Name, first)
		}
		seen[nodes[i].Name] = i
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: items[%d]%s: %w", name, i, nodeName(raw), err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nodes, nil
}

func decodeNode(raw json.RawMessage, n *corev1.Node) error {
	if err := json.Unmarshal(raw, n); err != nil {
		return jsonError(err)
	}
	switch {
	case n.Kind != "" && n.Kind != "Node":
		return fmt.Errorf("kind %q: want Node", n.Kind)
	case n.Name == "":
		return errors.New("field metadata.name: empty")
	}
	return nil
}

// nodeName returns ` (node NAME)` for an item whose name decodes, else "".
func nodeName(raw json.RawMessage) string {
	var hdr struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if json.Unmarshal(raw, &hdr) != nil || hdr.Metadata.Name == "" {
		return ""
	}
	return " (node " + hdr.Metadata.Name + ")"
}

// jsonError names the field of a type error.
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("field %s: got a JSON %s, want %s", te.Field, te.Value, te.Type)
	}
	return err
}

// lineCol converts a byte offset into a 1-based line and column.
func lineCol(data []byte, off int64) (int, int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	return bytes.Count(before, []byte("\n")) + 1, int(off) - bytes.LastIndexByte(before, '\n')
}
