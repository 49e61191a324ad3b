package main

import (
	"io"

	"github.com/spf13/pflag"
)

func init() {
	register("compile", "print the policy a node would load, as a table or JSON", runCompile)
}

type compileFlags struct {
	checkFlags
	output outputFlag
}

func (f *compileFlags) register(fs *pflag.FlagSet) {
	f.checkFlags.register(fs)
	f.output.register(fs, "table", "output format: table (ports with identical rules collapse into ranges) or json (one rule per port)")
}

func runCompile(args []string, stdout, stderr io.Writer) error {
	var f compileFlags
	fs, done, err := parseRegistryFlags("compile", &f, args, stdout, stderr)
	if done {
		return err
	}
	if err := f.output.check("compile"); err != nil {
		return err
	}
	c, err := compileForNode("compile", fs.Args(), f.nodeLabels, stderr)
	if err != nil {
		return err
	}
	warnAutobind(c, stderr)
	if f.output.json() {
		return c.WriteJSON(stdout)
	}
	return c.WriteTable(stdout)
}
