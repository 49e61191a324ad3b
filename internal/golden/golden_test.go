package golden

import (
	"os"
	"path/filepath"
	"testing"
)

// recorder keeps what Check reports instead of failing the test.
type recorder struct {
	testing.TB
	errors int
}

func (r *recorder) Helper()                   {}
func (r *recorder) Errorf(string, ...any)     { r.errors++ }
func (r *recorder) Fatal(args ...any)         { r.TB.Fatal(args...) }
func (r *recorder) Fatalf(f string, a ...any) { r.TB.Fatalf(f, a...) }

func TestCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "want.txt")
	r := &recorder{TB: t}
	Check(r, path, []byte("one\n"), true)
	if b, _ := os.ReadFile(path); string(b) != "one\n" || r.errors != 0 {
		t.Fatalf("-update wrote %q with %d errors, want the output and none", b, r.errors)
	}
	Check(r, path, []byte("one\n"), false)
	if r.errors != 0 {
		t.Errorf("equal output reported %d errors", r.errors)
	}
	Check(r, path, []byte("two\n"), false)
	if r.errors != 1 {
		t.Errorf("different output reported %d errors, want 1", r.errors)
	}
}
