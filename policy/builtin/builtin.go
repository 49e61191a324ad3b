package builtin

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// Prefix is how a builtin registry is named in places that also accept paths.
const Prefix = "builtin:"

//go:embed registries
var registries embed.FS

// File is one YAML fragment of a builtin registry.
type File struct {
	// Name is "builtin:<registry>/<file>", e.g. "builtin:openshift/10-tcp.yaml".
	Name string
	Data []byte
}

// Names returns the names of the builtin registries, sorted.
func Names() []string {
	dirs, err := fs.ReadDir(registries, "registries")
	if err != nil {
		// The directory is embedded at build time; it cannot be missing.
		panic(fmt.Sprintf("builtin: read embedded registries: %v", err))
	}
	var names []string
	for _, d := range dirs {
		if d.IsDir() {
			names = append(names, d.Name())
		}
	}
	slices.Sort(names)
	return names
}

// Files returns the YAML files of registry name in file-name order. name may
// carry the "builtin:" prefix. An unknown name is an error that lists the
// known registries.
func Files(name string) ([]File, error) {
	name = strings.TrimPrefix(name, Prefix)
	known := Names()
	if !slices.Contains(known, name) {
		return nil, fmt.Errorf("builtin registry %q not found: known registries are %s",
			name, strings.Join(known, ", "))
	}
	dir := path.Join("registries", name)
	ents, err := fs.ReadDir(registries, dir)
	if err != nil {
		return nil, fmt.Errorf("builtin registry %q: %w", name, err)
	}
	var files []File
	for _, e := range ents {
		if e.IsDir() || !isYAML(e.Name()) {
			continue
		}
		data, err := fs.ReadFile(registries, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("builtin registry %q: %w", name, err)
		}
		files = append(files, File{Name: Prefix + name + "/" + e.Name(), Data: data})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("builtin registry %q has no YAML files", name)
	}
	// fs.ReadDir already sorts by name; keep the guarantee explicit.
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	return files, nil
}

func isYAML(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}
