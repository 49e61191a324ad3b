package testutils

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestBinderMainReplies(t *testing.T) {
	var out strings.Builder
	binderMain(strings.NewReader("pid\ntcp 4 127.0.0.1 0\nnonsense\n"), &out)
	want := strconv.Itoa(os.Getpid()) + "\nok\nbad \"nonsense\"\n"
	if out.String() != want {
		t.Errorf("binderMain replied %q, want %q", out.String(), want)
	}
}

func TestListenerMainReplies(t *testing.T) {
	var out strings.Builder
	listenerMain(strings.NewReader("udp 4 127.0.0.1 0\n"), &out)
	if ino, ok := strings.CutPrefix(strings.TrimSpace(out.String()), "ok "); !ok || ino == "0" {
		t.Errorf("listenerMain replied %q, want ok INODE", out.String())
	}
}

func TestHelperRequest(t *testing.T) {
	for _, tc := range []struct {
		reply, want string
		err         error
	}{
		{"ok", "", nil},
		{"ok 42", "42", nil},
		{"err 13", "", syscall.EACCES},
	} {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		go func() {
			bufio.NewReader(inR).ReadString('\n')
			io.WriteString(outW, tc.reply+"\n")
		}()
		h := &helperProc{what: "test", in: inW, out: bufio.NewReader(outR)}
		got, err := h.request("req %d", 1)
		if got != tc.want || err != tc.err {
			t.Errorf("reply %q: got %q, %v; want %q, %v", tc.reply, got, err, tc.want, tc.err)
		}
	}
	if _, err := (&helperProc{what: "test"}).request("x"); err == nil || err.Error() != "test: stopped" {
		t.Errorf("stopped helper: %v", err)
	}
}
