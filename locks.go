package raftbolt

import (
	"sync"
	"sync/atomic"
)

// handleLocks are the locks with which a Store or a StateMachine guards
// its current file (internal/boltfile), and the one implementation of
// taking them. Their place in the package's lock order is on Store.
//
// The current file changes only while both writeMu and dbMu (exclusive)
// are held (Close; Compact's and Restore's swaps), so a holder of either
// may use it: writers hold writeMu, readers dbMu shared.
type handleLocks struct {
	// writeMu serializes every write. It is held from the precondition
	// checks to the publication of what the write changed, so what a
	// writer checked is still true when it commits.
	writeMu sync.Mutex
	// dbMu is held shared by every reader while it uses the current file
	// (or takes a reference to it, for a long reader), and exclusively to
	// close or replace it, so no reader ever sees a closed or replaced
	// file.
	dbMu sync.RWMutex
	// closed is set under writeMu and dbMu together, by Close.
	closed   atomic.Bool
	readOnly bool // set when the handle is made, never changed
}

// rlock takes dbMu shared, or returns ErrClosed without holding it.
func (l *handleLocks) rlock() error {
	l.dbMu.RLock()
	if l.closed.Load() {
		l.dbMu.RUnlock()
		return ErrClosed
	}
	return nil
}

// runlock releases what rlock took.
func (l *handleLocks) runlock() { l.dbMu.RUnlock() }

// lockWrite takes writeMu for a write, or returns ErrClosed or
// ErrReadOnly without holding it.
func (l *handleLocks) lockWrite() error {
	if l.readOnly {
		if l.closed.Load() {
			return ErrClosed
		}
		return ErrReadOnly
	}
	l.writeMu.Lock()
	if l.closed.Load() {
		l.writeMu.Unlock()
		return ErrClosed
	}
	return nil
}

// unlockWrite releases what lockWrite took.
func (l *handleLocks) unlockWrite() { l.writeMu.Unlock() }

// lockAll takes both locks, exclusively, to close or replace the file.
func (l *handleLocks) lockAll() {
	l.writeMu.Lock()
	l.dbMu.Lock()
}

// unlockAll releases what lockAll took.
func (l *handleLocks) unlockAll() {
	l.dbMu.Unlock()
	l.writeMu.Unlock()
}
