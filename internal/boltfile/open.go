package boltfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftbolt/raftbolt/internal/boltcheck"
	"github.com/raftbolt/raftbolt/internal/errs"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Mode is the permission of the files Open creates: a raft log holds
// whatever the application replicates.
const Mode os.FileMode = 0o600

// creatingInfix names the temporary file a new file is built in, next to
// its final name: path + creatingInfix + a random suffix.
const creatingInfix = ".creating-"

// Options are how a file is opened.
type Options struct {
	ReadOnly        bool
	NoSync          bool
	VerifyOnOpen    bool // walk every page before bbolt maps the file
	LockTimeout     time.Duration
	InitialMmapSize int
	Logger          hclog.Logger // never nil

	// Init lays out a new file in the one write transaction that turns an
	// empty bbolt file into one of its kind. With Init, a writable Open of
	// a missing or empty path creates the file durably (Open's doc); nil
	// means Open never creates one.
	Init func(tx *bbolt.Tx) error
}

// testHookLocked, when set (by tests), runs inside bbolt.Open once the
// file is locked and checked: a panic there stands for one of bbolt's.
var testHookLocked func()

// errRetry is what the open hook returns when the locked descriptor is no
// longer the file at the path (a Compact or Restore renamed another file
// over it while Open waited for the lock), or is an empty file that must
// be created first: Open starts again.
var errRetry = errors.New("the file at the path changed while opening it")

// Open opens the bbolt file at path. With the lock held (exclusive for a
// writable handle, shared for a read-only one; waiting up to LockTimeout,
// then ErrLocked), it checks that the path still names the locked file
// and, before bbolt maps it, the file's structure (internal/boltcheck):
// its meta pages and size, and after a crash or with VerifyOnOpen every
// page. A panic inside bbolt is ErrCorrupt, and no failure leaves the
// descriptor or its lock behind.
//
// A writable Open with o.Init of a path that is missing or holds an empty
// file creates it atomically and durably first: the file is built and
// synced under a temporary name, linked (or renamed, over an empty file)
// into place, and the directory synced. A power cut at any point leaves
// no file, the empty one, or a complete one; never a torn one. created
// reports that this Open made it.
func Open(path string, o Options) (f *File, created bool, err error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, false, fmt.Errorf("%w: %s is a directory, not a file", errs.ErrInvalid, path)
	}
	deadline := time.Now().Add(o.LockTimeout)
	for {
		if !o.ReadOnly && o.Init != nil {
			made, err := ensure(path, o, time.Until(deadline))
			if err != nil {
				return nil, false, err
			}
			created = created || made
		}
		f, err = open(path, o, time.Until(deadline), false)
		if !errors.Is(err, errRetry) {
			return f, created, err
		}
		if time.Now().After(deadline) {
			return nil, false, fmt.Errorf("%w: %s kept changing while Open waited for it (waited %v)", errs.ErrLocked, path, o.LockTimeout)
		}
	}
}

// Create creates a new, empty bbolt file at path, which must not exist,
// with o.Init's layout, for a file that replaces another one once complete
// (MoveTo): Compact's copy, Restore's staged snapshot. Its name is not
// durable until MoveTo.
func Create(path string, o Options) (*File, error) {
	fd, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, Mode)
	if err != nil {
		return nil, err
	}
	_ = fd.Close()
	co := o
	co.Init = nil
	f, err := open(path, co, o.LockTimeout, true)
	if err == nil && o.Init != nil {
		if err = f.Update(o.Init); err != nil {
			_ = f.Close()
		}
	}
	if err != nil {
		_ = os.Remove(path)
		return nil, err
	}
	return f, nil
}

// open opens path with bbolt; see Open.
func open(path string, o Options, timeout time.Duration, fresh bool) (_ *File, err error) {
	f := &File{path: path, opts: o, logger: o.Logger, fresh: fresh}
	bo := &bbolt.Options{
		// The lock is taken by lockFile in the hook below, with the
		// caller's timeout; bbolt then takes the same lock on the same
		// descriptor at once. Where lockFile cannot lock (no flock),
		// bbolt's timeout applies.
		Timeout: max(timeout, time.Millisecond),
		// The freelist is not written at each commit, and it is a
		// hashmap: hashicorp/raft-boltdb writes its whole freelist (an
		// array) at every commit, so after a large truncation frees
		// thousands of pages each append rewrites all of them and appends
		// get about 10x slower. Close writes the freelist once so that the
		// next Open need not rebuild it; after a crash bbolt rebuilds it
		// by walking the tree.
		NoFreelistSync:  true,
		FreelistType:    bbolt.FreelistMapType,
		ReadOnly:        o.ReadOnly,
		NoSync:          o.NoSync,
		InitialMmapSize: o.InitialMmapSize,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			fd, err := os.OpenFile(name, flag, mode)
			if err != nil {
				return nil, err
			}
			if err := f.checkLocked(fd, timeout); err != nil {
				_ = fd.Close()
				return nil, err
			}
			f.fd = fd
			if testHookLocked != nil {
				testHookLocked()
			}
			return fd, nil
		},
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bbolt panicked while opening the file: %v", errs.ErrCorrupt, r)
		}
		if err != nil && f.fd != nil {
			// bbolt closes the descriptor on the errors it returns, not
			// when it panics; either way the lock must go with it.
			unlockFile(f.fd)
			_ = f.fd.Close()
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err := bbolt.Open(path, Mode, bo)
	switch {
	case err == nil:
		f.db = db
		f.refs.Store(1)
		return f, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s is held by another handle (waited %v)", errs.ErrLocked, path, timeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("%w: %v", errs.ErrNotStore, err)
	}
	return nil, err
}

// checkLocked locks the descriptor bbolt is about to use and checks it
// before bbolt maps it: that the path still names it, and its structure.
func (f *File) checkLocked(fd *os.File, timeout time.Duration) error {
	o := f.opts
	if err := lockFile(fd, !o.ReadOnly, timeout); err != nil {
		return err
	}
	// flock locks an inode, and Compact and Restore rename a new file
	// over the path: a handle that waited for the lock of the replaced
	// file would otherwise use a file nobody else sees (writes lost) or,
	// once it was truncated, find it empty.
	fi, err := fd.Stat()
	if err != nil {
		return err
	}
	pi, err := os.Stat(f.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errRetry
		}
		return err
	}
	if !os.SameFile(fi, pi) {
		return errRetry
	}
	if fi.Size() == 0 {
		switch {
		case f.fresh:
			return nil // a temporary file of Create or ensure: bbolt lays it out
		case !o.ReadOnly && o.Init != nil:
			return errRetry // created by Open's ensure, never in place
		}
		return fmt.Errorf("%w: %s is empty (only a writable open creates a file)", errs.ErrNotStore, f.path)
	}
	rep, err := boltcheck.Inspect(fd, fi.Size())
	switch {
	case errors.Is(err, boltcheck.ErrNotBolt):
		return fmt.Errorf("%w: %s is not a bbolt database", errs.ErrNotStore, fd.Name())
	case err != nil:
		return fmt.Errorf("%w: %v", errs.ErrCorrupt, err)
	}
	for _, m := range rep.BadMeta {
		f.logger.Warn("a bbolt meta page is invalid; using the other one. After a crash this is a torn write "+
			"of a commit that was never acknowledged; otherwise the newest commit may have been lost",
			"meta_page", m, "txid", rep.Meta.Txid)
	}
	// Without a synced freelist, a writable bbolt Open walks every page
	// in a goroutine of its own, where a damaged page would crash the
	// process: walk them here first, where it is an error.
	if o.VerifyOnOpen || (!o.ReadOnly && !rep.Meta.FreelistSynced()) {
		if err := boltcheck.Walk(fd, rep); err != nil {
			return fmt.Errorf("%w: %v", errs.ErrCorrupt, err)
		}
	}
	return nil
}

// ensure creates the file at path when it is missing or empty, and
// reports whether it did.
func ensure(path string, o Options, timeout time.Duration) (bool, error) {
	fi, err := os.Stat(path)
	missing := errors.Is(err, fs.ErrNotExist)
	switch {
	case err == nil && fi.Size() > 0:
		return false, nil
	case err != nil && !missing:
		return false, err
	}
	removeStaleCreations(path, o.Logger)
	nf, err := build(path, o)
	if err != nil {
		return false, err
	}
	// nf stays open, and locked, until its name is in place, so that
	// removeStaleCreations in another process leaves it alone.
	tmp := nf.Path()
	defer os.Remove(tmp) // gone already, once linked or renamed
	var made bool
	if missing {
		err = Link(tmp, path)
		made = err == nil
		if errors.Is(err, fs.ErrExist) {
			err = nil // another Open created it first: use that one
		}
	} else {
		made, err = replaceEmpty(tmp, path, timeout)
	}
	if cerr := nf.Close(); err == nil {
		err = cerr
	}
	return made, err
}

// build creates a complete new file next to path, synced, and returns it
// open.
func build(path string, o Options) (*File, error) {
	tf, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+creatingInfix+"*")
	if err != nil {
		return nil, fmt.Errorf("create a file next to %s: %w", path, err)
	}
	_ = tf.Close()
	co := o
	co.NoSync = false // a torn new file could not be opened again
	co.VerifyOnOpen = false
	co.Init = nil
	nf, err := open(tf.Name(), co, o.LockTimeout, true)
	if err == nil {
		if err = nf.Update(o.Init); err != nil {
			_ = nf.Close()
		}
	}
	if err != nil {
		_ = os.Remove(tf.Name())
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return nf, nil
}

// replaceEmpty puts tmp in place of the empty file at path. It holds the
// empty file's lock meanwhile, so a handle waiting for that lock finds the
// path renamed over when it gets it, and starts again.
func replaceEmpty(tmp, path string, timeout time.Duration) (bool, error) {
	fd, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer fd.Close()
	if err := lockFile(fd, true, timeout); err != nil {
		return false, err
	}
	fi, err := fd.Stat()
	if err != nil {
		return false, err
	}
	if pi, err := os.Stat(path); err != nil || !os.SameFile(fi, pi) || fi.Size() != 0 {
		return false, nil // it changed meanwhile: Open looks again
	}
	if err := Replace(tmp, path); err != nil {
		return false, err
	}
	return true, nil
}

// removeStaleCreations removes the temporary files of creations that a
// crash interrupted: those nobody holds locked.
func removeStaleCreations(path string, logger hclog.Logger) {
	names, _ := filepath.Glob(path + creatingInfix + "*")
	for _, name := range names {
		fd, err := os.Open(name)
		if err != nil {
			continue
		}
		if tryLock(fd) {
			if err := os.Remove(name); err == nil {
				logger.Warn("removed the temporary file of an interrupted creation", "file", name)
			}
		}
		_ = fd.Close()
	}
}
