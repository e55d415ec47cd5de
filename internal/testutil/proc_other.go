//go:build !linux

package testutil

import "syscall"

// procAttr returns the attributes of a server started by a test.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}
