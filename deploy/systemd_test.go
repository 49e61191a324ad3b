package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/internal/testutils"
)

const unitFile = "systemd/bindguard.service"

// unitSettings reads a unit file into section -> key -> values, joining
// continuation lines and skipping comments.
func unitSettings(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	s := bufio.NewScanner(f)
	var cont string
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if cont != "" {
			line = cont + " " + line
			cont = ""
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cont = strings.TrimSuffix(line, `\`)
			continue
		}
		if line[0] == '[' {
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s: cannot parse %q", path, line)
		}
		out[section][k] = append(out[section][k], v)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSystemdVerify runs systemd-analyze verify on the unit, with ExecStart
// pointed at a freshly built binary (verify checks that it exists). verify
// exits 0 on unknown keys and bad values and only warns, so any message
// about the unit fails the test.
func TestSystemdVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testutils.Need(t, "systemd-analyze not installed (Debian: apt-get install systemd; scripts/ci-setup.sh does): bindguard.service not verified")
	}
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	const installed = "ExecStart=/usr/local/bin/bindguard "
	if !strings.Contains(string(unit), installed) {
		t.Fatalf("%s: want %q", unitFile, installed)
	}
	dir := t.TempDir()
	tmp := filepath.Join(dir, "bindguard.service")
	rewritten := strings.Replace(string(unit), installed, "ExecStart="+bindguard(t)+" ", 1)
	if err := os.WriteFile(tmp, []byte(rewritten), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", tmp)
	out, err := cmd.CombinedOutput()
	var ours []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, tmp) || strings.Contains(line, "bindguard.service") {
			ours = append(ours, line)
		} else if line != "" {
			t.Logf("systemd-analyze (not about bindguard.service): %s", line)
		}
	}
	if err != nil {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unitFile, err, strings.Join(ours, "\n"))
	}
	if len(ours) > 0 {
		t.Fatalf("systemd-analyze verify %s warns (it exits 0, systemd would ignore these lines):\n%s", unitFile, strings.Join(ours, "\n"))
	}
}

// TestSystemdUnit checks what verify cannot: that ExecStart and the example
// environment file use flags `bindguard run` has, that the ready file is
// where ExecStartPost waits, and that the metrics port is declared in the
// shipped registry fragment, for the unit that binds it.
func TestSystemdUnit(t *testing.T) {
	u := unitSettings(t, unitFile)
	unit, svc := u["Unit"], u["Service"]
	if svc == nil || unit == nil || u["Install"] == nil {
		t.Fatalf("%s: want [Unit], [Service] and [Install]", unitFile)
	}
	for k, want := range map[string]string{"DefaultDependencies": "no"} {
		if got := unit[k]; !slices.Equal(got, []string{want}) {
			t.Errorf("[Unit] %s=%q, want %q", k, got, want)
		}
	}
	for k, want := range map[string]string{
		"Type": "exec", "Restart": "always", "LimitMEMLOCK": "infinity", "ExecReload": "/bin/kill -HUP $MAINPID",
		"RuntimeDirectory": "bindguard", "ConfigurationDirectory": "bindguard", "ProtectSystem": "strict",
		"NoNewPrivileges": "yes",
	} {
		if got := svc[k]; !slices.Equal(got, []string{want}) {
			t.Errorf("[Service] %s=%q, want %q", k, got, want)
		}
	}
	caps := strings.Fields(strings.Join(svc["CapabilityBoundingSet"], " "))
	slices.Sort(caps)
	if want := []string{"CAP_BPF", "CAP_DAC_READ_SEARCH", "CAP_NET_ADMIN", "CAP_PERFMON"}; !slices.Equal(caps, want) {
		t.Errorf("CapabilityBoundingSet %q, want %q", caps, want)
	}
	rw := strings.Fields(strings.Join(svc["ReadWritePaths"], " "))
	for _, p := range []string{"/sys/fs/bpf", "/run/bindguard"} {
		if !slices.Contains(rw, p) {
			t.Errorf("ReadWritePaths %q lacks %s", rw, p)
		}
	}

	// ExecStart: the installed binary, `run`, known flags, plus $BINDGUARD_OPTS.
	start := strings.Fields(strings.Join(svc["ExecStart"], " "))
	if len(start) < 2 || start[0] != "/usr/local/bin/bindguard" || start[1] != "run" {
		t.Fatalf("ExecStart %q: want /usr/local/bin/bindguard run ...", start)
	}
	args := slices.DeleteFunc(start[2:], func(a string) bool { return a == "$BINDGUARD_OPTS" })
	if len(args) != len(start)-3 {
		t.Errorf("ExecStart %q: want $BINDGUARD_OPTS once, last", start)
	}
	flags := runFlags(t)
	got := parseRunArgs(t, "ExecStart", flags, args)
	if reg := one(t, "ExecStart", got, "registry"); reg != "/etc/bindguard/registry.d" {
		t.Errorf("ExecStart --registry %q, want /etc/bindguard/registry.d (ConfigurationDirectory=bindguard)", reg)
	}
	if one(t, "ExecStart", got, "keep-on-exit") != "true" {
		t.Errorf("ExecStart: want --keep-on-exit")
	}
	if m := one(t, "ExecStart", got, "mode"); m != "audit" {
		t.Errorf("ExecStart --mode %q: ship audit; enforce is a per-host decision", m)
	}
	ready := one(t, "ExecStart", got, "ready-file")
	if filepath.Dir(ready) != "/run/bindguard" {
		t.Errorf("ExecStart --ready-file %q: want it in RuntimeDirectory /run/bindguard", ready)
	}
	if post := strings.Join(svc["ExecStartPost"], " "); !strings.Contains(post, ready) {
		t.Errorf("ExecStartPost %q does not wait for %s", post, ready)
	}

	// The example environment file's flags exist too.
	env, err := os.ReadFile("systemd/bindguard.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(line, "BINDGUARD_OPTS="); ok {
			uq, err := strconv.Unquote(v)
			if err != nil {
				uq = v
			}
			parseRunArgs(t, "bindguard.env", flags, strings.Fields(uq))
		}
	}

	// The metrics port is declared in the shipped fragment, owned by this unit.
	port := metricsPort(t, "ExecStart", one(t, "ExecStart", got, "metrics-addr"))
	for _, labels := range []map[string]string{nil, {"role": "worker"}, {"role": "control-plane"}} {
		c := compileFor(t, "registry.d", labels)
		r, proc := declared(c, port)
		if r == nil || proc != "bindguard" {
			t.Fatalf("registry.d: metrics port %d not declared for process bindguard (got %q)", port, proc)
		}
		if !r.Owners.Any() && !slices.Contains(r.Owners.Units, "bindguard.service") {
			t.Errorf("registry.d: port %d is owned by %+v, not by bindguard.service", port, r.Owners)
		}
	}
}
