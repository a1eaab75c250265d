package raftbolt

import (
	"bytes"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/bbolt"
)

// Every bbolt transaction the store runs goes through view, update or the
// shared reader below. They are the one place that:
//   - turns a panic inside bbolt into an error wrapping ErrCorrupt. bbolt
//     panics when it meets a damaged page, in any transaction, not only at
//     Open;
//   - turns a memory fault into such a panic (debug.SetPanicOnFault): a
//     damaged page id can point bbolt past the end of the file, where the
//     mapped memory raises SIGBUS, which recover alone cannot catch;
//   - prefixes errors with the operation and the path.
//
// The caller holds dbMu (shared), so s.db is open and stays open.

// view runs fn in a read-only transaction.
func (s *Store) view(op string, fn func(tx *bbolt.Tx) error) (err error) {
	defer s.recoverPanic(op, &err, false)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return s.wrap(op, s.db.View(fn))
}

// update runs fn in a write transaction. Callers check every precondition
// before they call update, so that a rejected write costs no transaction.
// (In bbolt v1.5 a transaction that fn fails with an error rolls back
// cheaply; one that panics, or whose commit fails, makes bbolt rebuild its
// unsynced freelist by walking every page of the file.)
//
// The caller holds writeMu, so the shared read transaction can be closed
// for the duration without a concurrent writer reopening it.
func (s *Store) update(op string, fn func(tx *bbolt.Tx) error) (err error) {
	if p := s.broken.Load(); p != nil {
		return *p
	}
	defer s.recoverPanic(op, &err, true)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	s.reader.suspend()
	defer s.reader.resume()
	return s.wrap(op, s.db.Update(fn))
}

// wrap adds the operation and path to err, except to the sentinels raft
// compares with == and to the context-free ones.
func (s *Store) wrap(op string, err error) error {
	switch err {
	case nil, errLogNotFound, ErrKeyNotFound, ErrNoConfiguration, ErrClosed, ErrReadOnly:
		return err
	}
	return opError(op, s.path, err)
}

// recoverPanic is deferred by every function that calls into bbolt. A panic
// in a write transaction may have left bbolt's in-memory freelist or locks
// inconsistent, so the store refuses further writes (reads go on) until it
// is reopened.
func (s *Store) recoverPanic(op string, errp *error, write bool) {
	r := recover()
	if r == nil {
		return
	}
	var broken *atomic.Pointer[error]
	if write {
		broken = &s.broken
	}
	*errp = panicError(op, s.path, s.logger, r, broken)
}

// panicError turns the value r of a panic recovered around a bbolt
// transaction into an error wrapping ErrCorrupt and logs it. For a write
// transaction the caller passes its broken flag, which records the error
// (the first one wins): the handle then refuses writes until reopened,
// because bbolt's in-memory freelist or locks may be inconsistent. Store
// and StateMachine share it; recover itself must stay in their deferred
// functions.
func panicError(op, path string, logger hclog.Logger, r any, broken *atomic.Pointer[error]) error {
	err := opError(op, path, corruptf("bbolt panicked: %v", r))
	logger.Error("bbolt panicked; the file is damaged", "op", op, "path", path, "panic", fmt.Sprint(r))
	if broken != nil {
		broken.CompareAndSwap(nil, &err)
		logger.Error("refusing writes until reopened", "path", path)
	}
	return err
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
	mu sync.RWMutex
	db *bbolt.DB
	tx *bbolt.Tx
	// log is tx's log bucket.
	log *bbolt.Bucket
	// cursors pools cursors of log. A lookup through a reused cursor
	// allocates nothing, where bbolt's Bucket.Get grows a new cursor stack
	// (three allocations for a tree three levels deep). The pool is
	// replaced with tx, so a cursor is only ever used within its own
	// transaction; each is used by one reader at a time.
	cursors *sync.Pool
	// writing is true while a write transaction runs; readers then use
	// their own transactions rather than reopen the shared one.
	writing bool
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
	if r.tx == nil && !r.writing && !r.closed {
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
	return r.db.View(func(tx *bbolt.Tx) error {
		log := tx.Bucket(bucketLog)
		if log == nil {
			return corruptf("bucket %q is missing", bucketLog)
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
	if r.tx != nil || r.writing || r.closed {
		return
	}
	tx, err := r.db.Begin(false)
	if err != nil {
		return // the caller falls back to a transaction of its own, which reports the error
	}
	log := tx.Bucket(bucketLog)
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
	r.writing = true
	r.release()
}

// resume lets readers open a shared transaction again after a write.
func (r *sharedReader) resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writing = false
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
func (r *sharedReader) reset(db *bbolt.DB) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.db, r.closed = db, false
}

func (r *sharedReader) release() {
	if r.tx != nil {
		_ = r.tx.Rollback()
		r.tx, r.log, r.cursors = nil, nil, nil
	}
}
