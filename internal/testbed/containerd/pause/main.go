// Command pause is the test bed's sandbox image: a static binary that
// sleeps until SIGTERM or SIGINT, like Kubernetes' pause container.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
