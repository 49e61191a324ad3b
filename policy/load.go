package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bindguard/bindguard/policy/builtin"
)

// BuiltinPrefix marks a path naming a registry built into the binary.
const BuiltinPrefix = "builtin:"

// Load reads and merges registries. Each path is
//   - a file;
//   - a directory: every *.yaml, *.yml and *.json file in it (not in
//     subdirectories), in name order. Names starting with "." are skipped,
//     which skips the ..data and ..2024_… entries of a Kubernetes ConfigMap
//     mount while following its symlinked files. A directory without any
//     registry file is an error, not an empty (deny-all) registry;
//   - builtin:NAME, a registry compiled into the binary (see package builtin).
//
// Files are merged in the order given: entries and removed lists are
// concatenated and each document's metadata is kept in Sources.
//
// Reading errors (a missing file) return a nil Registry and a plain error.
// Registry errors in any file return an ErrorList with every problem in every
// file, together with a non-nil Registry holding the well-formed entries (see
// Parse).
//
// Registry.Digest is the hex SHA-256 of, for each input file in order, its
// name, a NUL byte, its length in decimal, a NUL byte and its content.
func Load(paths ...string) (*Registry, error) {
	if len(paths) == 0 {
		return nil, errors.New("load registry: no registry path given")
	}
	var inputs []input
	for _, p := range paths {
		in, err := readPath(p)
		if err != nil {
			return nil, fmt.Errorf("load registry: %w", err)
		}
		inputs = append(inputs, in...)
	}
	reg := &Registry{}
	for _, in := range inputs {
		r := parseFile(in.name, in.data)
		reg.Sources = append(reg.Sources, r.Sources...)
		reg.Entries = append(reg.Entries, r.Entries...)
		reg.Removed = append(reg.Removed, r.Removed...)
		reg.errs = append(reg.errs, r.errs...)
	}
	reg.errs.Sort()
	reg.Digest = digest(inputs)
	return reg, reg.errs.Err()
}

type input struct {
	name string
	data []byte
}

func digest(inputs []input) string {
	h := sha256.New()
	for _, in := range inputs {
		h.Write([]byte(in.name))
		h.Write([]byte{0})
		h.Write(strconv.AppendInt(nil, int64(len(in.data)), 10))
		h.Write([]byte{0})
		h.Write(in.data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// registryExt reports whether a directory entry is read as a registry.
func registryExt(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

func readPath(p string) ([]input, error) {
	if name, ok := strings.CutPrefix(p, BuiltinPrefix); ok {
		files, err := builtin.Files(name)
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("%s: no registry files", p)
		}
		in := make([]input, len(files))
		for i, f := range files {
			in[i] = input{f.Name, f.Data}
		}
		return in, nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		return []input{{p, data}}, nil
	}
	des, err := os.ReadDir(p) // sorted by name
	if err != nil {
		return nil, err
	}
	var in []input
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".") || !registryExt(name) {
			continue
		}
		full := filepath.Join(p, name)
		fi, err := os.Stat(full) // follows ConfigMap symlinks
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(full)
		if err != nil {
			return nil, err
		}
		in = append(in, input{full, data})
	}
	if len(in) == 0 {
		return nil, fmt.Errorf("%s: directory has no *.yaml, *.yml or *.json registry files", p)
	}
	return in, nil
}
