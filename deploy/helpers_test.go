package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/bindguard/bindguard/policy"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// bindguard builds the real binary once per test run.
func bindguard(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		if buildDir, buildErr = os.MkdirTemp("", "bindguard-deploy-test-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "bindguard")
		out, err := exec.Command(gobin, "build", "-o", binPath, "github.com/bindguard/bindguard/cmd/bindguard").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/bindguard: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// runFlags returns the flags of `bindguard run`, read from its --help, and
// whether each takes a value.
func runFlags(t *testing.T) map[string]bool {
	t.Helper()
	cmd := exec.Command(bindguard(t), "run", "--help")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("bindguard run --help: %v (want exit 0)\n%s", err, out.String())
	}
	re := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)( [a-zA-Z]+)?\s`)
	flags := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = m[2] != ""
	}
	if len(flags) < 5 || !flags["registry"] {
		t.Fatalf("cannot read the flags of `bindguard run --help`:\n%s", out.String())
	}
	return flags
}

// parseRunArgs checks args (after "run") against the flags `bindguard run`
// has and returns each flag's values ("true" for a bare boolean flag).
func parseRunArgs(t *testing.T, where string, flags map[string]bool, args []string) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			t.Errorf("%s: argument %q is not a flag (give registries with --registry)", where, a)
			continue
		}
		name, value, hasValue := strings.Cut(name, "=")
		takesValue, known := flags[name]
		switch {
		case !known:
			t.Errorf("%s: `bindguard run` has no flag --%s", where, name)
			continue
		case takesValue && !hasValue:
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				t.Errorf("%s: --%s needs a value", where, name)
				continue
			}
			i++
			value = args[i]
		case !takesValue && !hasValue:
			value = "true"
		}
		got[name] = append(got[name], value)
	}
	return got
}

// one returns the single value of a flag.
func one(t *testing.T, where string, got map[string][]string, name string) string {
	t.Helper()
	v := got[name]
	if len(v) != 1 {
		t.Errorf("%s: want --%s exactly once, got %q", where, name, v)
		return ""
	}
	return v[0]
}

// metricsPort is the port of a --metrics-addr value.
func metricsPort(t *testing.T, where, addr string) uint16 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: --metrics-addr %q: %v", where, addr, err)
		return 0
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Errorf("%s: --metrics-addr %q: %v", where, addr, err)
	}
	return uint16(n)
}

// compileFor loads a registry directory and compiles it for a node.
func compileFor(t *testing.T, dir string, labels map[string]string) *policy.Compiled {
	t.Helper()
	reg, err := policy.Load(dir)
	if err != nil {
		t.Fatalf("registry %s: %v", dir, err)
	}
	c, err := policy.Compile(reg, labels)
	if err != nil {
		t.Fatalf("registry %s for node %s: %v", dir, policy.FormatLabels(labels), err)
	}
	return c
}

// declared returns the rule for a TCP port and the process that declares it.
func declared(c *policy.Compiled, port uint16) (*policy.Rule, string) {
	r := c.Lookup(port, policy.TCP)
	if r == nil || r.Removed {
		return nil, ""
	}
	return r, c.Origins[r.Origin].Process
}
