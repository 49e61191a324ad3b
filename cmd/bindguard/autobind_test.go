package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/autobind"
)

// check and compile warn of a restricted port inside this node's ephemeral
// range, and still exit 0; a port outside it, or one anyone may bind, is
// not warned about.
func TestWarnAutobind(t *testing.T) {
	lo, hi, err := autobind.PortRange(autobind.PortRangeSysctl)
	if err != nil {
		t.Skipf("no ip_local_port_range here: %v", err)
	}
	inside, outside := int(lo)+7, int(lo)-7
	if hi <= lo+7 || lo < 1024+7 {
		t.Skipf("ephemeral range %d-%d leaves no room for the test ports", lo, hi)
	}
	reg := filepath.Join(t.TempDir(), "r.yaml")
	body := "apiVersion: bindguard.io/v1\nkind: PortRegistry\nmetadata: {name: t}\nentries:\n" +
		"  - {port: " + itoa(inside) + ", process: owned, owners: [{uid: 0}]}\n" +
		"  - {port: " + itoa(outside) + ", process: owned-low, owners: [{uid: 0}]}\n" +
		"  - {port: " + itoa(inside+1) + ", process: anyone}\n"
	if err := os.WriteFile(reg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"check", "compile"} {
		_, stderr, code := runCmd(t, cmd, reg)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", cmd, code, stderr)
		}
		if !strings.Contains(stderr, "port "+itoa(inside)+"/tcp") || !strings.Contains(stderr, "ip_local_port_range") {
			t.Errorf("%s: no warning for %d inside %d-%d:\n%s", cmd, inside, lo, hi, stderr)
		}
		if strings.Contains(stderr, "port "+itoa(outside)+"/") || strings.Contains(stderr, "port "+itoa(inside+1)+"/") {
			t.Errorf("%s: warned of a port outside the range or open to anyone:\n%s", cmd, stderr)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
