package golden

import (
	"bytes"
	"os"
	"testing"
)

// Check compares got with the file at path; with update it first writes
// got there, so the comparison passes and the file shows the change.
func Check(t testing.TB, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (rerun with -update if the change is meant):\n%s", path, got)
	}
}
