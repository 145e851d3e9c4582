//go:build linux && !(amd64 || arm64)

package relay

import "golang.org/x/sys/unix"

func (p *Pool) bindFD(fd, port int) error { return unix.Bind(fd, p.sockaddr(port)) }

func closeFD(fd int) error { return unix.Close(fd) }
