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

// allocated returns the bytes f allocates (runtime.MemStats.TotalAlloc)
// and those still live after it, with what it returned (HeapAlloc after a
// collection).
func allocated(f func()) (total, live uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	total = after.TotalAlloc - before.TotalAlloc
	runtime.GC()
	runtime.ReadMemStats(&after)
	if after.HeapAlloc > before.HeapAlloc {
		live = after.HeapAlloc - before.HeapAlloc
	}
	return total, live
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
		{"5000 ports and a 256 KiB notes cell", 5000, 256 << 10, "over the 4194304 bytes a registry file may hold", ""},
		{"100 ports and a 256 KiB notes cell", 100, 256 << 10, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := hostileDoc(tc.ports, tc.notes)
			var res *Result
			var err error
			var out []byte
			alloc, live := allocated(func() {
				res, err = Markdown("hostile", bytes.NewReader(doc))
				if err == nil {
					out, err = res.YAML()
				}
			})
			t.Logf("%d-byte document: %d bytes allocated (%.1fx), %d live after, %d bytes out, err %v", len(doc), alloc, float64(alloc)/float64(len(doc)), live, len(out), err)
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
			if alloc > uint64(48*len(doc)) {
				t.Errorf("allocated %d bytes, over 48 times the %d-byte input", alloc, len(doc))
			}
			if live > uint64(4*len(doc)) {
				t.Errorf("%d bytes live after the import, over 4 times the %d-byte input", live, len(doc))
			}
			runtime.KeepAlive(res)
			runtime.KeepAlive(out)
		})
	}
}
