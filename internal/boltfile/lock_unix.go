//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package raftbolt

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
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
			return fmt.Errorf("%w: %s is held by another handle, in this process or another (waited %v)", ErrLocked, f.Name(), timeout)
		}
		time.Sleep(min(wait, lockPoll))
	}
}
