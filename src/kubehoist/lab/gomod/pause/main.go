// Command pause is the lab's sandbox ("pause") container: PID 1 of every pod sandbox.
//
// It holds the pod's namespaces open by doing nothing, reaps any child that is
// re-parented to it (as PID 1 of the pod's PID namespace, orphans become its
// children), and exits 0 when it is asked to stop with SIGTERM or SIGINT.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const version = "kubehoist-pause 1"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-v", "--version", "version":
			fmt.Println(version)
			return
		default:
			fmt.Fprintf(os.Stderr, "usage: %s [-v]\n", os.Args[0])
			os.Exit(2)
		}
	}
	// Signals first: a SIGTERM that comes early must not find the default action.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1, orphans will not be reaped here")
	}
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			reap()
		default:
			reap()
			os.Exit(0)
		}
	}
}

// reap collects every child that has exited; one SIGCHLD may stand for several.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
