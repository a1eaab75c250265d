package raftbolt

import (
	"bytes"
	"errors"
	"sync"

	"github.com/raftbolt/raftbolt/internal/boltfile"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// Every bbolt transaction the store runs goes through view, update or the
// shared reader below, and so through the guarded transactions of
// internal/boltfile: the one place that turns panics inside bbolt and
// memory faults in the mapped file into errors wrapping ErrCorrupt, and
// refuses writes on a file a panic broke. These add the operation and the
// path to the error.
//
// The caller holds dbMu (shared), so s.file is open and stays current.

// view runs fn in a read-only transaction.
func (s *Store) view(op string, fn func(tx *bbolt.Tx) error) error {
	return wrapOp(op, s.path, s.file.View(fn))
}

// update runs fn in a write transaction. Callers check every precondition
// before they call update, so that a rejected write costs no transaction.
// (In bbolt v1.5 a transaction that fn fails with an error rolls back
// cheaply; one that panics, or whose commit fails, makes bbolt rebuild its
// unsynced freelist by walking every page of the file.)
//
// The caller holds writeMu, so the shared read transaction can be closed
// for the duration without a concurrent writer reopening it.
func (s *Store) update(op string, fn func(tx *bbolt.Tx) error) error {
	return s.updateFile(op, false, fn)
}

// updateFile is update; freelist commits bbolt's freelist too
// (boltfile.File.UpdateWithFreelist).
func (s *Store) updateFile(op string, freelist bool, fn func(tx *bbolt.Tx) error) error {
	if err := s.file.Broken(); err != nil {
		return wrapOp(op, s.path, err)
	}
	s.reader.suspend()
	defer s.reader.resume()
	if freelist {
		return wrapOp(op, s.path, s.file.UpdateWithFreelist(fn))
	}
	return wrapOp(op, s.path, s.file.Update(fn))
}

// wrapOp adds the operation and path to err, except to the sentinels raft
// compares with == and to the context-free ones, and to an error that
// names them already. The Store and the StateMachine share it.
func wrapOp(op, path string, err error) error {
	switch err {
	case nil, errLogNotFound, ErrKeyNotFound, ErrNoConfiguration, ErrClosed, ErrReadOnly:
		return err
	}
	if pe := (*pathError)(nil); errors.As(err, &pe) {
		return err // named already
	}
	return opError(op, path, err)
}

// sharedReader lends one long-lived read transaction to concurrent readers,
// so that a GetLog that misses the cache costs one B+tree lookup and one
// copy instead of a whole transaction (beginning and ending a bbolt read
// transaction allocates about nine objects; the lookup alone, one or two).
// A read-only bbolt transaction is never modified by reads, and bbolt's
// cursor statistics are atomic, so goroutines may share one, each with its
// own cursor; etcd's backend shares its read transaction the same way.
//
// The shared transaction is closed before every write transaction starts
// and reopened by the first read after it committed. That is required, not
// tidy: a commit that grows the file remaps it, and remapping waits for
// every open read transaction, so one kept across a write would deadlock
// it; and pages freed by a write are only reused once every transaction
// older than the write has closed. It also means a reader never sees a
// state older than the last acknowledged write.
type sharedReader struct {
	// mu is held shared while a reader uses tx, and exclusively to open or
	// close it.
	mu   sync.RWMutex
	file *boltfile.File
	tx   *bbolt.Tx
	// log is tx's log bucket.
	log *bbolt.Bucket
	// cursors pools cursors of log. A lookup through a reused cursor
	// allocates nothing, where bbolt's Bucket.Get grows a new cursor stack
	// (three allocations for a tree three levels deep). The pool is
	// replaced with tx, so a cursor is only ever used within its own
	// transaction; each is used by one reader at a time.
	cursors *sync.Pool
	// writing counts the write transactions running; readers then use
	// their own transactions rather than reopen the shared one.
	writing int
	// closed is set when the store closes or swaps its file; from then on
	// the reader never opens a transaction on db again.
	closed bool
}

// get runs fn with the value stored under key in the log bucket (nil when
// there is none), read in a shared read transaction, or in a transaction
// of its own while a write is in progress. fn must copy what it keeps: the
// bytes bbolt returns are only valid until fn returns.
func (r *sharedReader) get(key []byte, fn func(v []byte) error) error {
	r.mu.RLock()
	if r.tx == nil && r.writing == 0 && !r.closed {
		r.mu.RUnlock()
		r.open()
		r.mu.RLock()
	}
	if r.tx != nil {
		defer r.mu.RUnlock()
		c, _ := r.cursors.Get().(*bbolt.Cursor)
		if c == nil {
			c = r.log.Cursor()
		}
		err := fn(seekExact(c, key))
		r.cursors.Put(c)
		return err
	}
	r.mu.RUnlock()
	return r.file.View(func(tx *bbolt.Tx) error {
		log := tx.Bucket(layout.LogBucket)
		if log == nil {
			return corruptf("bucket %q is missing", layout.LogBucket)
		}
		return fn(log.Get(key))
	})
}

// seekExact returns the value under key, or nil, as Bucket.Get does.
func seekExact(c *bbolt.Cursor, key []byte) []byte {
	k, v := c.Seek(key)
	if !bytes.Equal(k, key) {
		return nil
	}
	return v
}

// open starts the shared transaction unless a write is in progress or
// another reader started it first.
func (r *sharedReader) open() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tx != nil || r.writing > 0 || r.closed {
		return
	}
	var tx *bbolt.Tx
	err := r.file.Guard(false, func() (err error) {
		tx, err = r.file.DB().Begin(false)
		return err
	})
	if err != nil {
		return // the caller falls back to a transaction of its own, which reports the error
	}
	log := tx.Bucket(layout.LogBucket)
	if log == nil {
		_ = tx.Rollback()
		return
	}
	r.tx, r.log, r.cursors = tx, log, &sync.Pool{}
}

// suspend closes the shared transaction for a write, waiting for the
// readers that use it.
func (r *sharedReader) suspend() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writing++
	r.release()
}

// resume lets readers open a shared transaction again once no write is in
// progress (a writer and the journal's checkpointer may both be writing).
func (r *sharedReader) resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writing--
}

// close closes the shared transaction for good (Close, or Compact
// replacing the file).
func (r *sharedReader) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.release()
}

// reset points a closed reader at a new file (Compact).
func (r *sharedReader) reset(f *boltfile.File) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.file, r.closed = f, false
}

func (r *sharedReader) release() {
	if r.tx != nil {
		_ = r.tx.Rollback()
		r.tx, r.log, r.cursors = nil, nil, nil
	}
}
