package main

import (
	"fmt"
	"strings"
)

// parseLabels turns repeated --node-label k=v flags into a map.
func parseLabels(kvs []string) (map[string]string, error) {
	return parseKeyValues("--node-label", kvs)
}

// parseKeyValues turns repeated key=value flags into a map.
func parseKeyValues(flag string, kvs []string) (map[string]string, error) {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want key=value", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}
