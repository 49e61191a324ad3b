package importer_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/bindguard/bindguard/policy"
	"github.com/bindguard/bindguard/policy/importer"
)

// FuzzMarkdown checks that no input panics or hangs the importer, and that
// whatever it imports is a registry that parses.
func FuzzMarkdown(f *testing.F) {
	if data, err := os.ReadFile("testdata/openshift.md"); err == nil {
		f.Add(data)
	}
	for _, s := range []string{
		"| Port | Process |\n|---|---|\n| 1 | a |",
		"## UDP\n| Port | Protocol | Service | Control-plane only |\n|-|-|-|-|\n| 53, 9200–9219 | TCP/UDP | dns | yes |",
		"## Previously allocated\n| Port | Process | Removed |\n|-|-|-|\n| 10256 | sdn | 4.17 |",
		"Protocol | Port | Description\n--- | --- | ---\nICMP | - | x\nTCP | 22 (SSH), UDP 123 | y",
		"---\ntitle: t\n---\n```\n| Port |\n|-|\n| 1 |\n```\n| Port | a \\| b |\n|:-:|--:|\n| `1` | <br>x |",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := importer.Markdown("fuzz", bytes.NewReader(data))
		if err != nil {
			return
		}
		out, err := res.YAML()
		if err != nil {
			t.Fatalf("YAML: %v", err)
		}
		if _, err := policy.Parse("fuzz.yaml", out); err != nil {
			t.Fatalf("output does not parse:\n%v\n%s", err, out)
		}
	})
}
