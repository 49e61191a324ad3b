package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"
)

func init() {
	register("compile", "print the policy a node would load, as a table or JSON", runCompile)
}

type compileFlags struct {
	checkFlags
	output string
}

func (f *compileFlags) register(fs *pflag.FlagSet) {
	f.checkFlags.register(fs)
	fs.StringVarP(&f.output, "output", "o", "table", "output format: table (ports with identical rules collapse into ranges) or json (one rule per port)")
}

func runCompile(args []string, stdout, stderr io.Writer) error {
	var f compileFlags
	fs, done, err := parseRegistryFlags("compile", &f, args, stdout, stderr)
	if done {
		return err
	}
	if f.output != "table" && f.output != "json" {
		return &exitError{code: 2, msg: fmt.Sprintf("compile: --output %q: want table or json", f.output)}
	}
	c, err := compileForNode("compile", fs.Args(), f.nodeLabels, stderr)
	if err != nil {
		return err
	}
	warnAutobind(c, stderr)
	if f.output == "json" {
		return c.WriteJSON(stdout)
	}
	return c.WriteTable(stdout)
}
