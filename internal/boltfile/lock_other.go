//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package raftbolt

import (
	"os"
	"time"
)

// lockFile does nothing where flock is unavailable: bbolt takes its own
// lock with the same timeout right after, and Open maps its timeout to
// ErrLocked. The file is then checked before it is locked.
func lockFile(*os.File, bool, time.Duration) error { return nil }
