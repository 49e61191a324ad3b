package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"
)

// flagsStruct is a subcommand's flags: a struct whose register method puts
// every flag on a FlagSet.
type flagsStruct interface {
	register(fs *pflag.FlagSet)
}

// parseFlags registers f on a new flag set named after the subcommand and
// parses args. --help prints the usage to stdout and returns done with a nil
// error, so the command exits 0; a bad flag prints the usage to stderr and
// returns an exitError with code 2. operands describes the positional
// arguments in the usage line ("" for none). After a successful parse,
// fs.Usage prints the usage to stderr, for a command whose operands are wrong.
func parseFlags(name, operands string, f flagsStruct, args []string, stdout, stderr io.Writer) (fs *pflag.FlagSet, done bool, err error) {
	fs = pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // pflag's own messages; ours follow
	f.register(fs)
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: bindguard %s [flags] %s\n\nflags:\n", name, operands)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			usage(stdout)
			return fs, true, nil
		}
		usage(stderr)
		return fs, true, &exitError{code: 2, msg: fmt.Sprintf("%s: %v", name, err)}
	}
	fs.Usage = func() { usage(stderr) }
	return fs, false, nil
}

// parseNoOperands is parseFlags for a command that takes no operands: any
// is a usage error.
func parseNoOperands(name string, f flagsStruct, args []string, stdout, stderr io.Writer) (done bool, err error) {
	fs, done, err := parseFlags(name, "", f, args, stdout, stderr)
	if done {
		return true, err
	}
	if fs.NArg() != 0 {
		return true, &exitError{code: 2, msg: name + ": takes no arguments"}
	}
	return false, nil
}

// outputFlag is the -o/--output flag of the commands that print either for
// people (as "text" or as a "table") or as JSON.
type outputFlag struct {
	human  string // the people's format: "text" or "table"
	format string
}

func (o *outputFlag) register(fs *pflag.FlagSet, human, usage string) {
	o.human = human
	fs.StringVarP(&o.format, "output", "o", human, usage)
}

// check returns an exitError with code 2 for a format other than the
// people's and json.
func (o *outputFlag) check(cmd string) error {
	if o.format != o.human && o.format != "json" {
		return &exitError{code: 2, msg: fmt.Sprintf("%s: --output %q: want %s or json", cmd, o.format, o.human)}
	}
	return nil
}

func (o *outputFlag) json() bool { return o.format == "json" }

// writeJSON writes v as indented JSON: every command's -o json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
