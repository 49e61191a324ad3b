package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/policy"
)

const importTestdata = "../../policy/importer/testdata/"

func TestImport(t *testing.T) {
	dir := t.TempDir()
	md := filepath.Join(dir, "Vendor Ports.md")
	err := os.WriteFile(md, []byte("# Vendor ports\n\n| Port | Process |\n|---|---|\n| 22 | sshd |\n| ? | lost |\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		stdout []string // substrings
		stderr string
		code   int
	}{
		{
			name:   "name from the file",
			args:   []string{md},
			stdout: []string{"name: vendor-ports\n", "source: Vendor ports\n", "- port: 22\n", "# line 6: not imported"},
			stderr: md + ":6: row not imported: unparsed port cell: ?: | ? | lost |\n",
		},
		{
			name:   "name and source flags",
			args:   []string{"--format", "markdown", "--name", "vendor-1.0", "--source", "https://example.com/ports", md},
			stdout: []string{"name: vendor-1.0\n", "source: https://example.com/ports\n"},
			stderr: md + ":6:",
		},
		{name: "no file", args: nil, stderr: "want exactly one FILE", code: 2},
		{name: "two files", args: []string{md, md}, stderr: "want exactly one FILE", code: 2},
		{name: "bad format", args: []string{"--format", "csv", md}, stderr: `--format "csv": want markdown`, code: 2},
		{name: "stdin without name", args: []string{"-"}, stderr: "--name is required when reading stdin", code: 2},
		{name: "missing file", args: []string{filepath.Join(dir, "nope.md")}, stderr: "no such file or directory", code: 1},
		{name: "not a port document", args: []string{"main.go"}, stderr: "no pipe table with a Port column", code: 1},
		{name: "help", args: []string{"--help"}, stdout: []string{"usage: bindguard import [flags] FILE (- for stdin)\n", "--format string"}, code: 0},
		{name: "no file usage", args: nil, stderr: "usage: bindguard import [flags] FILE (- for stdin)\n", code: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runCmd(t, append([]string{"import"}, tt.args...)...)
			if code != tt.code || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("import %q: exit %d, stderr %q; want exit %d, stderr containing %q", tt.args, code, stderr, tt.code, tt.stderr)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("import %q: stdout lacks %q:\n%s", tt.args, s, stdout)
				}
			}
		})
	}
}

// TestImportOpenShift imports the OpenShift registry document; its output
// parses, and check finds only the clash in the document itself (10256/tcp
// both active and removed).
func TestImportOpenShift(t *testing.T) {
	stdout, stderr, code := runCmd(t, "import", importTestdata+"openshift.md")
	if code != 0 || stderr != "" {
		t.Fatalf("import: exit %d, stderr %q", code, stderr)
	}
	reg, err := policy.Parse("openshift.yaml", []byte(stdout))
	if err != nil {
		t.Fatal(err)
	}
	errs := reg.Validate(nil)
	if len(errs) != 1 || !strings.Contains(errs[0].Msg, "removed port 10256/tcp") {
		t.Errorf("Validate: want only the 10256 conflict, got:\n%v", errs)
	}
}

func TestNameFromPath(t *testing.T) {
	for in, want := range map[string]string{
		"openshift.md":              "openshift",
		"/x/Host Port Registry.md":  "host-port-registry",
		"ACOS_6.1.1 ports.markdown": "acos-6.1.1-ports",
		"___.md":                    "imported",
	} {
		if got := nameFromPath(in); got != want {
			t.Errorf("nameFromPath(%q) = %q, want %q", in, got, want)
		}
	}
}
