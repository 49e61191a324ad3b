package policy

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/policy/builtin"
)

func TestLoadDirectory(t *testing.T) {
	// testdata/dir holds, besides 10-a.yaml, 20-b.yml, 30-c.json and a
	// ConfigMap-style 40-d.yaml -> ..data/40-d.yaml symlink: a broken
	// .hidden.yaml, broken files under ..data, sub/ and zz.yaml/, and a
	// README.md. Only the four registries may be read.
	reg, err := Load("testdata/dir")
	if err != nil {
		t.Fatal(err)
	}
	var files, names []string
	for _, s := range reg.Sources {
		files = append(files, s.File)
		names = append(names, s.Name)
	}
	wantFiles := []string{"testdata/dir/10-a.yaml", "testdata/dir/20-b.yml", "testdata/dir/30-c.json", "testdata/dir/40-d.yaml"}
	if !slices.Equal(files, wantFiles) || !slices.Equal(names, []string{"a", "b", "c", "d"}) {
		t.Errorf("sources %v %v, want %v", files, names, wantFiles)
	}
	var ports []uint16
	for _, e := range reg.Entries {
		ports = append(ports, e.Ports.Lo)
	}
	if !slices.Equal(ports, []uint16{1, 2, 3, 4}) {
		t.Errorf("entries in order %v", ports)
	}
}

func TestLoadMerge(t *testing.T) {
	reg, err := Load("testdata/valid.json", "testdata/dir", "testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Sources) != 6 || reg.Sources[0].Name != "json" || reg.Sources[5].Name != "example" {
		t.Errorf("sources %+v", reg.Sources)
	}
	if len(reg.Entries) != 2+4+4 || len(reg.Removed) != 2 {
		t.Errorf("%d entries, %d removed", len(reg.Entries), len(reg.Removed))
	}
	if e := reg.Entries[1]; e.Pos != (Pos{"testdata/valid.json", 7, 3}) || e.Ports != (PortRange{30000, 30010}) || len(e.Protocols) != 2 {
		t.Errorf("JSON entry %+v", e)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.yaml", header+"  - {port: 0, process: a}\n")
	b := write("b.yaml", header+"  - {port: 1, protocol: sctp, process: b}\n")
	reg, err := Load(a, b)
	if reg == nil {
		t.Fatal("no registry returned with registry errors")
	}
	want := a + ":4:12: port 0 is not allowed"
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "\n"+b+":4:25: protocol \"sctp\"") {
		t.Errorf("Load: %v", err)
	}

	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, paths := range [][]string{{}, {filepath.Join(dir, "missing.yaml")}, {filepath.Join(dir, "empty")}, {"builtin:no-such-registry"}} {
		reg, err := Load(paths...)
		var list ErrorList
		if reg != nil || err == nil || errors.As(err, &list) {
			t.Errorf("Load(%q) = %v, %v; want a plain error", paths, reg, err)
		}
	}
}

func TestLoadDigest(t *testing.T) {
	data, err := os.ReadFile("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := Load("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := Parse("testdata/valid.yaml", data)
	renamed, _ := Parse("other.yaml", data)
	changed, _ := Parse("testdata/valid.yaml", append(data, '\n'))
	if loaded.Digest != parsed.Digest || len(loaded.Digest) != 64 {
		t.Errorf("Load digest %s, Parse digest %s", loaded.Digest, parsed.Digest)
	}
	if renamed.Digest == parsed.Digest || changed.Digest == parsed.Digest {
		t.Error("digest ignores the file name or content")
	}
	two, _ := Load("testdata/valid.yaml", "testdata/valid.json")
	swapped, _ := Load("testdata/valid.json", "testdata/valid.yaml")
	if two.Digest == swapped.Digest || two.Digest == loaded.Digest {
		t.Error("digest ignores the order or number of files")
	}
}

// TestLoadBuiltin only checks that every builtin registry parses; whether
// its ports conflict is the builtin package's concern.
func TestLoadBuiltin(t *testing.T) {
	for _, name := range builtin.Names() {
		t.Run(name, func(t *testing.T) {
			reg, err := Load(BuiltinPrefix + name)
			if err != nil {
				t.Fatal(err)
			}
			if len(reg.Sources) == 0 || !strings.HasPrefix(reg.Sources[0].File, BuiltinPrefix+name+"/") {
				t.Errorf("sources %+v", reg.Sources)
			}
		})
	}
}
