package main

import (
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/features"
)

// Set at build time: go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc1234".
var (
	version = "dev"
	commit  = "unknown"
)

func init() {
	register("version", "print the version and whether this kernel has what bindguard needs", runVersion)
}

type versionJSON struct {
	Version  string        `json:"version"`
	Commit   string        `json:"commit"`
	Go       string        `json:"go"`
	Kernel   string        `json:"kernel"`
	OK       bool          `json:"ok"`
	Features []featureJSON `json:"features"`
}

type featureJSON struct {
	Name      string `json:"name"`
	Needed    string `json:"needed"`
	MinKernel string `json:"minKernel"`
	Config    string `json:"config,omitempty"`
	Present   bool   `json:"present"`
	Error     string `json:"error,omitempty"`
}

type versionFlags struct{ output outputFlag }

func (f *versionFlags) register(fs *pflag.FlagSet) {
	f.output.register(fs, "text", "text or json")
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	var f versionFlags
	if done, err := parseNoOperands("version", &f, args, stdout, stderr); done {
		return err
	}
	if err := f.output.check("version"); err != nil {
		return err
	}

	found := features.Check()
	missing := features.Verify(found)
	v := versionJSON{
		Version: version, Commit: commit, Go: runtime.Version(), Kernel: features.KernelRelease(),
		OK: missing == nil, Features: make([]featureJSON, len(found)),
	}
	for i, f := range found {
		v.Features[i] = featureJSON{Name: f.Name, Needed: f.Needed, MinKernel: f.MinKernel, Config: f.Config, Present: f.Present}
		if f.Err != nil {
			v.Features[i].Error = f.Err.Error()
		}
	}

	if f.output.json() {
		if err := writeJSON(stdout, v); err != nil {
			return err
		}
	} else if err := printVersion(stdout, v); err != nil {
		return err
	}
	if missing != nil {
		return &exitError{code: 1, msg: "version: " + missing.Error()}
	}
	return nil
}

func printVersion(w io.Writer, v versionJSON) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "bindguard\t%s\n", v.Version)
	fmt.Fprintf(tw, "commit\t%s\n", v.Commit)
	fmt.Fprintf(tw, "go\t%s\n", v.Go)
	fmt.Fprintf(tw, "kernel\t%s\n", v.Kernel)
	fmt.Fprintf(tw, "features\t\n")
	for _, f := range v.Features {
		state := "ok"
		switch {
		case f.Error != "":
			state = "unknown"
		case !f.Present:
			state = "MISSING"
		}
		since := "Linux " + f.MinKernel
		if f.Config != "" {
			since += ", " + f.Config
		}
		fmt.Fprintf(tw, "  %s\t%s (%s)\n", state, f.Name, since)
	}
	return tw.Flush()
}
