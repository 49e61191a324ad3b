package testutils

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// A helper is a copy of the test binary (the binder or the listener) that
// answers each request line on its stdin with one line on its stdout: "ok",
// "ok RESULT", "err ERRNO" or "bad LINE".

// maybeServe turns the process into the helper main when startHelper started
// it with env set; it returns otherwise.
func maybeServe(env string, main func(io.Reader, io.Writer) int) {
	if os.Getenv(env) != "1" {
		return
	}
	os.Exit(main(os.Stdin, os.Stdout))
}

// serveLines answers each line of in with what reply returns for its fields,
// or with "bad LINE" when reply returns "".
func serveLines(in io.Reader, out io.Writer, reply func(f []string) string) {
	s := bufio.NewScanner(in)
	w := bufio.NewWriter(out)
	for s.Scan() {
		r := reply(strings.Fields(s.Text()))
		if r == "" {
			r = fmt.Sprintf("bad %q", s.Text())
		}
		fmt.Fprintln(w, r)
		w.Flush()
	}
}

// errReply is the reply for a failed request: its errno.
func errReply(err error) string { return fmt.Sprintf("err %d", err.(syscall.Errno)) }

// helperProc is the test's end of a running helper.
type helperProc struct {
	what string     // binder or listener, for errors
	mu   sync.Mutex // one request at a time
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	PID  int
}

// request sends one request line and waits for its reply. It returns what
// follows "ok" (empty for a bare "ok"), or the errno of an "err" reply.
func (h *helperProc) request(format string, args ...any) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.in == nil {
		return "", errors.New(h.what + ": stopped")
	}
	if _, err := fmt.Fprintf(h.in, format+"\n", args...); err != nil {
		return "", fmt.Errorf("%s: %w", h.what, err)
	}
	line, err := h.out.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s: %w", h.what, err)
	}
	line = strings.TrimSpace(line)
	if line == "ok" {
		return "", nil
	}
	if v, ok := strings.CutPrefix(line, "ok "); ok {
		return v, nil
	}
	if n, ok := strings.CutPrefix(line, "err "); ok {
		e, _ := strconv.Atoi(n)
		return "", syscall.Errno(e)
	}
	return "", errors.New(h.what + ": " + line)
}

// Stop closes the helper's input, which ends it (a listener closes its
// sockets first), and waits for it.
func (h *helperProc) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.in != nil {
		h.in.Close()
		h.in = nil
		h.cmd.Wait()
	}
}
