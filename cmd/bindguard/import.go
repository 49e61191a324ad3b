package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/policy/importer"
)

func init() {
	register("import", "convert a vendor port document (markdown tables) into a registry on stdout", runImport)
}

type importFlags struct {
	format string
	name   string
	source string
}

func (f *importFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.format, "format", "markdown", "input format: markdown (pipe tables with a header row)")
	fs.StringVar(&f.name, "name", "", "metadata.name of the registry (default: the file name without its extension)")
	fs.StringVar(&f.source, "source", "", "metadata.source of the registry (default: the document's title)")
}

// runImport writes the registry as YAML to stdout and a warning per row it
// could not import to stderr, as FILE:LINE: message.
func runImport(args []string, stdout, stderr io.Writer) error {
	var f importFlags
	fs, done, err := parseFlags("import", "FILE (- for stdin)", &f, args, stdout, stderr)
	if done {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return &exitError{code: 2, msg: "import: want exactly one FILE, or - for stdin"}
	}
	if f.format != "markdown" {
		return &exitError{code: 2, msg: fmt.Sprintf("import: --format %q: want markdown", f.format)}
	}
	path := fs.Arg(0)
	name := f.name
	if name == "" {
		if path == "-" {
			return &exitError{code: 2, msg: "import: --name is required when reading stdin"}
		}
		name = nameFromPath(path)
	}

	var in io.Reader = os.Stdin
	if path != "-" {
		file, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer file.Close()
		in = file
	}
	res, err := importer.Markdown(name, in)
	if err != nil {
		return fmt.Errorf("import: %s: %w", path, err)
	}
	if f.source != "" {
		res.Registry.Metadata.Source = f.source
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stderr, "%s:%d: %s\n", path, w.Line, w.Msg)
	}
	out, err := res.YAML()
	if err != nil {
		return fmt.Errorf("import: %s: %w", path, err)
	}
	_, err = stdout.Write(out)
	return err
}

var nameCharsRE = regexp.MustCompile(`[^a-z0-9.-]+`)

// nameFromPath makes a registry name of a file name: "Host Port
// Registry.md" becomes "host-port-registry".
func nameFromPath(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	name := strings.Trim(nameCharsRE.ReplaceAllString(strings.ToLower(base), "-"), "-.")
	if name == "" {
		return "imported"
	}
	return name
}
