//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package boltfile

import (
	"errors"
	"os"
	"time"
)

// lockFile does nothing where flock is unavailable: bbolt takes its own
// lock with the same timeout right after, and Open maps its timeout to
// ErrLocked. The file is then checked before it is locked.
func lockFile(*os.File, bool, time.Duration) error { return nil }

func unlockFile(*os.File) {}

// tryLock cannot tell whether another process uses f: it reports false, so
// that nothing is removed on its word.
func tryLock(*os.File) bool { return false }

func dupFD(int) (int, error) { return -1, errors.ErrUnsupported }

func unlinked(os.FileInfo) bool { return false }
