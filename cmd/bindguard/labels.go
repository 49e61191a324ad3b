package main

import (
	"fmt"
	"strings"
)

// parseLabels turns repeated --node-label k=v flags into a map.
func parseLabels(kvs []string) (map[string]string, error) {
	labels := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--node-label %q: want key=value", kv)
		}
		labels[k] = v
	}
	return labels, nil
}
