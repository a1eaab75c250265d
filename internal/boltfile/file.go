// Package boltfile owns everything about one open bbolt file, for the log
// store, the state machine, Compact, Restore and Migrate alike: opening it
// (lock, the check that the path still names the locked file, the
// structural check before bbolt maps it, panics), the guarded view/update
// pair with one error policy, reference counting for long readers, durable
// creation and replacement of files, and a Close that cannot hang.
//
// It knows nothing of what the file holds: the bucket layouts are the
// caller's (Options.Init), and so are the operation names and paths that
// errors are prefixed with. Its errors wrap the sentinels of internal/errs.
package boltfile

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/raftbolt/raftbolt/internal/errs"
	"go.etcd.io/bbolt"
)

// File is one open bbolt file.
//
// Its owner (the Store or StateMachine whose current file it is) holds one
// reference, which Close drops; every long reader (a Backup, a Check, a
// state-machine snapshot) holds another from Acquire to Release, so that
// swapping in a new file never waits for a reader and never closes a file
// under one. The file closes with its last reference.
type File struct {
	path   string // changed only by MoveTo, which the owner serializes with every use
	db     *bbolt.DB
	fd     *os.File // bbolt's descriptor, the one holding the flock
	opts   Options
	logger hclog.Logger

	refs atomic.Int32
	// broken holds the error of a write transaction in which bbolt
	// panicked, or that the owner gave up on (Break): every later Update
	// returns it. After a panic (panicked), bbolt's in-memory freelist or
	// its writer lock may be inconsistent, so Close never calls into bbolt,
	// whose Close could wait for that lock for ever.
	broken   atomic.Pointer[error]
	panicked atomic.Bool
	// retired is set when another file replaced this one (Compact): its
	// blocks are given back a slice at a time when it closes.
	retired atomic.Bool
	closed  atomic.Bool // the owner's Close ran
	fresh   bool        // Create or Open's creation made it: an empty file is laid out in place
	wrote   atomic.Bool // an Update ran: Close writes the freelist
}

// DB returns the bbolt handle. Callers use it only within the guarded
// transactions below or while holding a reference.
func (f *File) DB() *bbolt.DB { return f.db }

// Path returns the file's current name.
func (f *File) Path() string { return f.path }

// PageSize returns bbolt's page size for the file.
func (f *File) PageSize() int { return f.db.Info().PageSize }

// SetNoSync turns bbolt's fsync at commit off or on (Compact writes its
// copy unsynced and syncs it once).
func (f *File) SetNoSync(noSync bool) { f.db.NoSync = noSync }

// Broken returns the error that broke the file, or nil.
func (f *File) Broken() error {
	if p := f.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// Break records err as the file's broken error unless one is recorded:
// every later Update returns it.
func (f *File) Break(err error) {
	f.broken.CompareAndSwap(nil, &err)
}

// View runs fn in a read transaction. Every transaction on the file goes
// through View, Update or Guard; they are the one place that turns a panic
// inside bbolt into an error wrapping ErrCorrupt (bbolt panics when it
// meets a damaged page, in any transaction) and a memory fault in the
// mapped file into such a panic (debug.SetPanicOnFault: a damaged page id
// can point bbolt past the end of the file, where the mapped memory raises
// SIGBUS, which recover alone cannot catch). fn's own errors come back as
// they are.
func (f *File) View(fn func(tx *bbolt.Tx) error) error {
	return f.Guard(false, func() error { return f.db.View(fn) })
}

// Update runs fn in a write transaction, unless the file is broken. A
// panic breaks the file: later Updates return the same error.
func (f *File) Update(fn func(tx *bbolt.Tx) error) error {
	return f.update(false, fn)
}

// UpdateWithFreelist is Update, committing bbolt's freelist with the
// transaction: until the next Update, the file opens after a crash without
// a walk of every page. The journal's checkpoints use it; they are the
// file's most frequent commits then, and rare enough for the cost.
func (f *File) UpdateWithFreelist(fn func(tx *bbolt.Tx) error) error {
	return f.update(true, fn)
}

// update runs fn in a write transaction that commits the freelist, or not.
// bbolt reads NoFreelistSync only while it commits, holding its writer
// lock, which fn runs under too: setting it in fn is race-free.
//
// It does what bbolt's DB.Update does, but for a panic: DB.Update's
// deferred rollback then makes bbolt rebuild its freelist, when it is not
// synced (NoFreelistSync, between checkpoints), by walking every page in a
// goroutine of its own, where the damaged page that caused the panic kills
// the process (SetPanicOnFault and recover are per goroutine). Here a
// transaction that panicked is left open and the file broken (Close never
// waits for bbolt then). fn's errors roll back as in DB.Update, which
// reads no page.
func (f *File) update(freelist bool, fn func(tx *bbolt.Tx) error) error {
	if err := f.Broken(); err != nil {
		return err
	}
	f.wrote.Store(true)
	return f.Guard(true, func() error {
		tx, err := f.db.Begin(true)
		if err != nil {
			return err
		}
		f.db.NoFreelistSync = !freelist
		if err := fn(tx); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	})
}

// Guard runs fn, which calls into bbolt, with View's panic policy; write
// says whether a panic breaks the file (fn wrote to it).
func (f *File) Guard(write bool, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = f.recovered(r, write)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return fn()
}

// recovered turns a panic recovered around bbolt into an error wrapping
// ErrCorrupt, logs it, and after a write breaks the file.
func (f *File) recovered(r any, write bool) error {
	err := fmt.Errorf("%w: bbolt panicked: %v", errs.ErrCorrupt, r)
	f.logger.Error("bbolt panicked; the file is damaged", "file", f.path, "panic", fmt.Sprint(r))
	if write {
		f.panicked.Store(true)
		f.Break(err)
		f.logger.Error("refusing writes until reopened", "file", f.path)
	}
	return err
}

// Acquire takes a reference for a long reader; Release drops it. The
// caller must hold the owner's reference meanwhile (in practice: the
// owner's lock under which the file is current), so that the count never
// rises from zero.
func (f *File) Acquire() { f.refs.Add(1) }

// Release drops a reference taken with Acquire, closing the file with the
// last one.
func (f *File) Release() error {
	if f.refs.Add(-1) == 0 {
		return f.release()
	}
	return nil
}

// Refs returns the number of references (the owner's and the readers').
func (f *File) Refs() int { return int(f.refs.Load()) }

// Retire marks a file that another file has replaced at its path: its
// freelist is not written at Close, and its blocks are given back a slice
// at a time when it closes (releaseGradually).
func (f *File) Retire() { f.retired.Store(true) }

// Close drops the owner's reference; the file closes with the last one.
// It never blocks on bbolt: on a file a bbolt panic broke, it releases the lock
// and the descriptor and leaves bbolt's memory map for the process's
// lifetime (bbolt's Close could wait for ever for a writer lock the panic
// left held), and returns the broken error. Otherwise a writable file gets
// that this handle wrote to, and that is not broken, gets its freelist
// written first (SyncFreelist); a file only read is left as it was. A
// second Close returns nil.
func (f *File) Close() error {
	if !f.closed.CompareAndSwap(false, true) {
		return nil
	}
	if f.panicked.Load() {
		f.abandon()
		return f.Broken()
	}
	var err error
	if f.wrote.Load() && !f.retired.Load() && f.Broken() == nil {
		err = f.SyncFreelist()
	}
	if rerr := f.Release(); err == nil {
		err = rerr
	}
	return err
}

// abandon gives up a broken file without calling into bbolt.
func (f *File) abandon() {
	unlockFile(f.fd)
	_ = f.fd.Close()
	f.logger.Warn("closed a damaged file without bbolt's Close; its memory map stays until the process exits", "file", f.path)
}

// release closes the file once nothing references it.
func (f *File) release() error {
	if f.panicked.Load() {
		f.abandon()
		return nil
	}
	var victim *os.File
	if f.retired.Load() {
		// A descriptor of our own keeps the blocks allocated past bbolt's
		// Close, for releaseGradually to free; it is this file's own
		// descriptor, never whatever the path names now.
		if fd, err := dup(f.fd); err == nil {
			victim = fd
		}
	}
	err := f.Guard(false, f.db.Close)
	if victim != nil {
		releaseGradually(victim)
	}
	return err
}

// SyncFreelist commits one empty transaction with bbolt's freelist
// written. raftbolt files run with NoFreelistSync (see open); Close calls
// this to leave the file in the state where the next Open reads the
// freelist from its page instead of walking every page. The first commit
// after that Open frees the page again.
func (f *File) SyncFreelist() error {
	return f.update(true, func(*bbolt.Tx) error { return nil })
}

// MoveTo puts this complete file in place of the file at path durably
// (Replace: the replaced file's mode kept, synced, renamed, the directory
// synced) and names it path from then on. The caller excludes every other
// use of the file meanwhile.
func (f *File) MoveTo(path string) error {
	if err := Replace(f.path, path); err != nil {
		return err
	}
	f.path = path
	return nil
}

// dup returns a second descriptor of f's open file description.
func dup(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = dupFD(int(fd)) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// releaseGradually frees the blocks of a replaced (unlinked) file a slice
// at a time, through its own descriptor, then closes it. Freeing a few
// hundred MB in one go (the last close of the file) holds the file
// system's journal for tens of milliseconds, delaying every writer's fsync
// meanwhile.
func releaseGradually(fd *os.File) {
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil || !unlinked(fi) {
		return // a name still leads to it: leave it whole
	}
	const step = 16 << 20
	for size := fi.Size(); size > 0; {
		size = max(size-step, 0)
		if fd.Truncate(size) != nil {
			return
		}
	}
}

// FreeBytes returns the bytes of tx's file that bbolt would reuse: the
// file's pages less those of the tree. It walks every bucket's pages, for
// read-only handles, which load no freelist.
func FreeBytes(tx *bbolt.Tx) int64 {
	used := int64(3) // two meta pages and the root bucket's page
	_ = tx.ForEach(func(_ []byte, b *bbolt.Bucket) error {
		bs := b.Stats()
		used += int64(bs.BranchPageN + bs.BranchOverflowN + bs.LeafPageN + bs.LeafOverflowN)
		return nil
	})
	return max(tx.Size()-used*int64(tx.DB().Info().PageSize), 0)
}
