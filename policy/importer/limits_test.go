package importer

import (
	"bytes"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// hostileDoc is the document that ran import out of memory at 3.1 GB: one
// row with ports ports and a notes cell of notes bytes.
func hostileDoc(ports, notes int) []byte {
	var b bytes.Buffer
	b.WriteString("# Ports\n\n| Port | Process | Notes |\n|---|---|---|\n| ")
	for i := range ports {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(i%9 + 1))
	}
	b.WriteString(" | svc | ")
	b.WriteString(strings.Repeat("n", notes))
	b.WriteString(" |\n")
	return b.Bytes()
}

// allocated returns the bytes f allocates (runtime.MemStats.TotalAlloc).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestImportMemoryBounded: what import allocates is bounded by a small
// multiple of its input, whatever the document: a row of many ports no
// longer multiplies a huge cell.
func TestImportMemoryBounded(t *testing.T) {
	for _, tc := range []struct {
		name         string
		ports, notes int
		// wantErr is the error expected, wantWarn the warning when the
		// row alone is refused.
		wantErr, wantWarn string
	}{
		{"400k ports and a 1 MB notes cell", 400_000, 1 << 20, "", "the port cell lists more than 65536 ports"},
		{"5000 ports and a 1 MB notes cell", 5000, 1 << 20, "over the 4194304 bytes a registry file may hold", ""},
		{"100 ports and a 3 MB notes cell", 100, 3 << 20, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := hostileDoc(tc.ports, tc.notes)
			var res *Result
			var err error
			var out []byte
			alloc := allocated(func() {
				res, err = Markdown("hostile", bytes.NewReader(doc))
				if err == nil {
					out, err = res.YAML()
				}
			})
			t.Logf("%d-byte document: %d bytes allocated (%.1fx), %d bytes out, err %v", len(doc), alloc, float64(alloc)/float64(len(doc)), len(out), err)
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			if tc.wantWarn != "" && (res == nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].Msg, tc.wantWarn)) {
				t.Errorf("want one warning with %q, got %+v", tc.wantWarn, res)
			}
			if tc.wantErr == "" && len(out) > MaxOutput {
				t.Errorf("%d bytes of registry, over MaxOutput", len(out))
			}
			// Linear in the input, and the input is capped at MaxInput.
			if alloc > uint64(40*len(doc)) {
				t.Errorf("allocated %d bytes, over 40 times the %d-byte input", alloc, len(doc))
			}
		})
	}
}
