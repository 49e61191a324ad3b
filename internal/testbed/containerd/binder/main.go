// Command binder is the test bed's workload image: it binds each port given
// as an argument (PROTO:PORT, e.g. tcp:8080 udp:53; on 0.0.0.0, or on
// ADDR with PROTO:ADDR:PORT) as its first action, prints one line per port,
//
//	bind tcp:8080 ok
//	bind tcp:8081 error EPERM
//
// keeps the sockets open and sleeps until SIGTERM. BINDER_PORTS (space
// separated) is read too, after the arguments. The spec "usr1" waits for
// SIGUSR1 before going on with the specs after it, so a test can bind at a
// moment of its choosing:
//
//	waiting usr1
//	bind tcp:8081 ok
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	specs := append(os.Args[1:], strings.Fields(os.Getenv("BINDER_PORTS"))...)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	var keep []int
	for _, s := range specs {
		if s == "usr1" {
			fmt.Println("waiting usr1")
			<-usr1
			continue
		}
		fd, err := bind(s)
		if err != nil {
			fmt.Printf("bind %s error %s\n", s, errName(err))
			continue
		}
		keep = append(keep, fd)
		fmt.Printf("bind %s ok\n", s)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for _, fd := range keep {
		syscall.Close(fd)
	}
}

// bind opens and binds one socket with raw syscalls, so the errno is the
// kernel's, and listens on TCP ones.
func bind(spec string) (int, error) {
	parts := strings.Split(spec, ":")
	addr := "0.0.0.0"
	if len(parts) == 3 {
		addr, parts = parts[1], []string{parts[0], parts[2]}
	}
	if len(parts) != 2 {
		return 0, fmt.Errorf("bad spec %q", spec)
	}
	port, err := strconv.ParseUint(parts[1], 10, 16)
	ip := net.ParseIP(addr).To4()
	if err != nil || ip == nil {
		return 0, fmt.Errorf("bad spec %q", spec)
	}
	typ := syscall.SOCK_STREAM
	if parts[0] == "udp" {
		typ = syscall.SOCK_DGRAM
	} else if parts[0] != "tcp" {
		return 0, fmt.Errorf("bad spec %q", spec)
	}
	fd, err := syscall.Socket(syscall.AF_INET, typ, 0)
	if err != nil {
		return 0, err
	}
	sa := &syscall.SockaddrInet4{Port: int(port)}
	copy(sa.Addr[:], ip)
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return 0, err
	}
	if typ == syscall.SOCK_STREAM {
		if err := syscall.Listen(fd, 16); err != nil {
			syscall.Close(fd)
			return 0, err
		}
	}
	return fd, nil
}

func errName(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case syscall.EPERM:
			return "EPERM"
		case syscall.EADDRINUSE:
			return "EADDRINUSE"
		case syscall.EACCES:
			return "EACCES"
		}
		return fmt.Sprintf("errno %d", int(en))
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}
