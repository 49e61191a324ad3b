package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/loader"
)

func init() {
	register("detach", "remove bindguard's links, maps and pins: enforcement ends", runDetach)
}

func runDetach(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("detach", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	pinPath := fs.String("pin-path", loader.DefaultPinPath, "bpffs directory bindguard pinned to")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2, msg: err.Error()}
	}
	if _, err := os.Stat(*pinPath); os.IsNotExist(err) {
		fmt.Fprintf(stdout, "nothing to detach: %s does not exist\n", *pinPath)
		return nil
	}
	if err := loader.RemovePins(*pinPath); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	fmt.Fprintf(stdout, "detached: removed links and maps pinned in %s\n", *pinPath)
	return nil
}
