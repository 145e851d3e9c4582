//go:build linux

package integration

import "syscall"

// sysProcAttr makes a child die with the test binary, so a test that
// panics or times out leaves no redis-server, sipedge or sipp behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
