package main

import (
	"fmt"
	"io"

	"github.com/bindguard/bindguard/autobind"
	"github.com/bindguard/bindguard/policy"
)

// warnAutobind warns of restricted ports inside this node's
// ip_local_port_range: there the kernel may hand them out to bind(0),
// listen() or connect() unless they are reserved (run does that in enforce
// mode). It only warns; the exit code is not changed.
func warnAutobind(c *policy.Compiled, stderr io.Writer) {
	conflicts, err := autobind.InRange(c)
	if err != nil {
		fmt.Fprintf(stderr, "warning: cannot read this node's ephemeral port range (%v): restricted ports inside it are not checked\n", err)
		return
	}
	for _, cf := range conflicts {
		fmt.Fprintf(stderr, "warning: %s\n", cf)
	}
}
