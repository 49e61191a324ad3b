package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/policy"
)

func init() {
	register("check", "validate registries and report every error with FILE:LINE:COL", runCheck)
}

// checkFlags are the flags shared by check and compile.
type checkFlags struct {
	nodeLabels []string
}

func (f *checkFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.nodeLabels, "node-label", nil,
		"a label of the node to check for, as key=value (repeatable); without any, check for every node")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name, args string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bindguard %s [flags] %s\n\nflags:\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}

// parseRegistryFlags parses args; help is not an error, bad flags exit with 2.
func parseRegistryFlags(fs *pflag.FlagSet, args []string) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return true, nil
		}
		return true, &exitError{code: 2, msg: fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return true, &exitError{code: 2, msg: fs.Name() + ": no registry given: want files, directories or builtin:NAME"}
	}
	return false, nil
}

// loadAndValidate loads the paths and validates them for the node. Registry
// errors are printed to stderr one per line, and the returned error is an
// exitError with code 1 and no message.
func loadAndValidate(paths []string, labels map[string]string, stderr io.Writer) (*policy.Registry, error) {
	reg, err := policy.Load(paths...)
	if reg == nil {
		return nil, err
	}
	if errs := reg.Validate(labels); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		return nil, &exitError{code: 1}
	}
	return reg, nil
}

func runCheck(args []string, stdout, stderr io.Writer) error {
	var f checkFlags
	fs := newFlagSet("check", "PATH...", stderr)
	f.register(fs)
	if done, err := parseRegistryFlags(fs, args); done {
		return err
	}
	labels, err := parseLabels(f.nodeLabels)
	if err != nil {
		return &exitError{code: 2, msg: "check: " + err.Error()}
	}
	reg, err := loadAndValidate(fs.Args(), labels, stderr)
	if err != nil {
		return err
	}
	tcp, udp := reg.Coverage(labels)
	node := "all nodes"
	if len(labels) > 0 {
		node = "node " + policy.FormatLabels(labels)
	}
	files := map[string]bool{}
	for _, s := range reg.Sources {
		files[s.File] = true
	}
	fmt.Fprintf(stdout, "ok: %d files, %d entries, %d removed; %s: %d ports covered (tcp %d, udp %d)\n",
		len(files), len(reg.Entries), len(reg.Removed), node, tcp+udp, tcp, udp)
	return nil
}
