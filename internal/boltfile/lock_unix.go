//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package boltfile

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/raftbolt/raftbolt/internal/errs"
)

// lockPoll is how often lockFile retries while another handle holds the lock.
const lockPoll = 20 * time.Millisecond

// lockFile takes the flock that bbolt takes (exclusive for a writable
// handle, shared for a read-only one) on f, waiting up to timeout.
//
// Taking it here, on the descriptor bbolt is about to use, lets Open check
// the file before bbolt maps it with no window in which another process
// could change it, and bbolt's own flock on the same descriptor then
// succeeds at once. flock locks belong to the open file description, so a
// second handle in the same process waits like another process would.
func lockFile(f *os.File, exclusive bool, timeout time.Duration) error {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case !errors.Is(err, syscall.EWOULDBLOCK):
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return fmt.Errorf("%w: %s is held by another handle, in this process or another (waited %v)", errs.ErrLocked, f.Name(), timeout)
		}
		time.Sleep(min(wait, lockPoll))
	}
}

// unlockFile drops f's flock explicitly. Closing the descriptor is not
// enough while bbolt's memory map of the file is in place: the map keeps
// the open file description, which owns the lock, alive. Through
// SyscallConn, so that a descriptor already closed (and its number perhaps
// reused by another file) is never touched.
func unlockFile(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { _ = syscall.Flock(int(fd), syscall.LOCK_UN) })
}

// tryLock takes f's exclusive flock if nobody holds it, without waiting.
func tryLock(f *os.File) bool {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}

func dupFD(fd int) (int, error) { return syscall.Dup(fd) }

// unlinked reports whether the file has no name left, so that truncating
// it can only free its blocks.
func unlinked(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink == 0
}
