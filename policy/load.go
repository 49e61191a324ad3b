package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/bindguard/bindguard/policy/builtin"
)

// BuiltinPrefix marks a path naming a registry built into the binary.
const BuiltinPrefix = "builtin:"

// Size limits on registry input, checked before a file is read: the largest
// registry a node can load (262,144 map entries) fits in well under a
// megabyte of YAML, and the parser needs many times its input in memory.
const (
	// MaxFileSize is the largest registry file read.
	MaxFileSize = 4 << 20
	// MaxTotalSize is the most read over all the files of one Load.
	MaxTotalSize = 16 << 20
)

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
// Only regular files are read (a symlink to one is followed): a FIFO, a
// device or a socket is an error, never a read that blocks or does not end.
// A file over MaxFileSize, or files over MaxTotalSize together, are refused
// before they are read.
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
	budget := int64(MaxTotalSize)
	for _, p := range paths {
		in, err := readPath(p, &budget)
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

func readPath(p string, budget *int64) ([]input, error) {
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
		data, err := readRegular(p, budget)
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
		if fi.IsDir() {
			continue
		}
		data, err := readRegular(full, budget)
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

// readRegular reads a regular file of at most MaxFileSize bytes, and at most
// what is left of the budget of the Load. It opens without blocking (a FIFO
// put in the file's place opens at once), checks what it opened with fstat,
// and reads no more than the limit even if the file grows meanwhile.
func readRegular(p string, budget *int64) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s); a registry is a file or a directory of files", p, fileKind(fi.Mode()))
	}
	limit := min(int64(MaxFileSize), *budget)
	if fi.Size() > limit {
		return nil, sizeError(p, fi.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, sizeError(p, int64(len(data)))
	}
	*budget -= int64(len(data))
	return data, nil
}

func sizeError(p string, size int64) error {
	if size <= MaxFileSize {
		return fmt.Errorf("%s: %s would take the registry files over %s together, the limit of one load", p, sizeText(size), sizeText(MaxTotalSize))
	}
	return fmt.Errorf("%s: %s is over the %s limit for one registry file", p, sizeText(size), sizeText(MaxFileSize))
}

func sizeText(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m.IsDir():
		return "a directory"
	}
	return "not regular"
}
