//go:build unix && !linux

package relay

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// Off Linux there is no epoll: every socket has a goroutine of its own,
// parked in the runtime's netpoller until the socket is readable, with a
// buffer lent by the pool while it drains.

// workerSet lends the per-socket goroutines their scratch.
type workerSet struct {
	scratch sync.Pool
}

// attachment is what a stream's goroutines are waited for with.
type attachment struct {
	wg sync.WaitGroup
}

// readerAt is unused off Linux.
type readerAt struct{}

// attach starts one goroutine per socket of s; detach stops them.
func (ws *workerSet) attach(s *Stream) error {
	for i := range s.rd {
		if r := &s.rd[i]; r.ch == chRTCP && r.in.ports.mux {
			continue
		}
		s.att.wg.Add(1)
		go ws.run(&s.rd[i])
	}
	return nil
}

// detach wakes the goroutines of s out of their wait and returns once
// they are gone: the sockets can close.
func (ws *workerSet) detach(s *Stream) {
	past := time.Unix(1, 0)
	for i := range s.legs {
		pp := s.legs[i].ports
		_ = pp.socks[chRTP].c.SetReadDeadline(past)
		if !pp.mux {
			_ = pp.socks[chRTCP].c.SetReadDeadline(past)
		}
	}
	s.att.wg.Wait()
}

// running is how many workers run: none, there is a goroutine per socket.
func (ws *workerSet) running() int { return 0 }

func (ws *workerSet) run(r *reader) {
	defer r.s.att.wg.Done()
	raw := r.in.ports.socks[r.ch].raw
	onReadable := func(uintptr) bool {
		sc, _ := ws.scratch.Get().(*scratch)
		if sc == nil {
			sc = newScratch()
		}
		more := r.drain(sc)
		ws.scratch.Put(sc)
		return more
	}
	for {
		if err := raw.Read(onReadable); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed) {
				r.s.log.Debug().Err(err).Stringer("side", r.in.side).Msg("relay read")
			}
			return
		}
	}
}

// poll has nothing to do: each socket's goroutine waits on it alone.
func (ws *workerSet) poll() {}
