// Command funclen lists the Go functions longer than a limit (60 lines by
// default) in the module's hand-written, non-test code: `make lint` fails
// when it prints anything. Generated files (bpf2go's *_bpfel.go, anything
// marked "Code generated") and tests, whose length is their tables, are
// left out.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	max := flag.Int("max", 60, "longest function allowed, in lines")
	flag.Parse()
	root := "."
	if flag.NArg() > 0 {
		root = flag.Arg(0)
	}
	long, err := scan(root, *max)
	if err != nil {
		fmt.Fprintln(os.Stderr, "funclen:", err)
		os.Exit(2)
	}
	for _, l := range long {
		fmt.Println(l)
	}
	if len(long) > 0 {
		os.Exit(1)
	}
}

// scan returns "file:line: name: N lines" for every function over max lines.
func scan(root string, max int) ([]string, error) {
	var out []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || strings.HasSuffix(p, "_bpfel.go") {
			return nil
		}
		if generated(p) {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			start, end := fset.Position(fn.Pos()), fset.Position(fn.End())
			if n := end.Line - start.Line + 1; n > max {
				out = append(out, fmt.Sprintf("%s:%d: %s: %d lines", p, start.Line, fn.Name.Name, n))
			}
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// generated reports whether a file says it is generated (the Go convention).
func generated(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for i := 0; i < 20 && s.Scan(); i++ {
		if strings.HasPrefix(s.Text(), "// Code generated") && strings.HasSuffix(s.Text(), "DO NOT EDIT.") {
			return true
		}
	}
	return false
}
