package testutil

import "syscall"

// procAttr returns the attributes of a server started by a test. On Linux
// the child gets SIGKILL when the test process dies, so that a test binary
// killed by a timeout leaves no server behind holding a port.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
