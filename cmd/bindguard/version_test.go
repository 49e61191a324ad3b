package main

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/internal/testutils"
)

func TestVersionJSON(t *testing.T) {
	testutils.Privileged(t)
	var out, errb bytes.Buffer
	if err := run([]string{"version", "-o", "json"}, &out, &errb); err != nil {
		t.Fatalf("version: %v\n%s", err, errb.String())
	}
	var v versionJSON
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", out.String(), err)
	}
	if v.Version != version || v.Commit != commit || v.Go != runtime.Version() || v.Kernel == "" {
		t.Errorf("got %+v", v)
	}
	if !v.OK || len(v.Features) == 0 {
		t.Errorf("ok %v with %d features, want ok with some", v.OK, len(v.Features))
	}
	for _, f := range v.Features {
		if !f.Present {
			t.Errorf("%s: missing (%s)", f.Name, f.Error)
		}
	}
}

func TestVersionText(t *testing.T) {
	testutils.Privileged(t)
	var out, errb bytes.Buffer
	if err := run([]string{"version"}, &out, &errb); err != nil {
		t.Fatalf("version: %v\n%s", err, errb.String())
	}
	for _, want := range []string{"bindguard  " + version, "commit     " + commit, "go         " + runtime.Version(),
		"ok       the BPF ring buffer (Linux 5.8)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestVersionUsage(t *testing.T) {
	var out, errb bytes.Buffer
	err := run([]string{"version", "extra"}, &out, &errb)
	if ee, ok := err.(*exitError); !ok || ee.code != 2 {
		t.Errorf("extra argument: got %v, want exit 2", err)
	}
	err = run([]string{"version", "-o", "yaml"}, &out, &errb)
	if ee, ok := err.(*exitError); !ok || ee.code != 2 {
		t.Errorf("-o yaml: got %v, want exit 2", err)
	}
}
