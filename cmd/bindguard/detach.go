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

// pinFlags are the flags of the commands that only read or remove pins.
type pinFlags struct {
	pinPath string
}

func (f *pinFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.pinPath, "pin-path", loader.DefaultPinPath, "bpffs directory bindguard pinned to")
}

func runDetach(args []string, stdout, stderr io.Writer) error {
	var f pinFlags
	if done, err := parseNoOperands("detach", &f, args, stdout, stderr); done {
		return err
	}
	pinPath := &f.pinPath
	if _, err := os.Stat(*pinPath); os.IsNotExist(err) {
		fmt.Fprintf(stdout, "nothing to detach: %s does not exist\n", *pinPath)
		return nil
	}
	if pid, held := loader.PinPathHolder(*pinPath); held {
		fmt.Fprintf(stderr, "warning: a bindguard daemon (pid %d) holds %s; it reports the programs as not attached (/healthz fails) until it stops. To end enforcement, stop the daemon instead.\n", pid, *pinPath)
	}
	if err := loader.RemovePins(*pinPath); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	fmt.Fprintf(stdout, "detached: removed links and maps pinned in %s\n", *pinPath)
	return nil
}
