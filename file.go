package raftbolt

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/hashicorp/go-hclog"
	"github.com/raftbolt/raftbolt/internal/boltcheck"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// This file opens bbolt files for the log store, the state machine and
// Migrate alike: with the file lock held and the file's structure checked
// (internal/boltcheck) before bbolt maps it.

// openBolt opens path with bbolt, holding the file lock and checking the
// file's structure before bbolt maps it (internal/boltcheck).
func openBolt(path string, o *Options, logger hclog.Logger) (db *bbolt.DB, err error) {
	bo := &bbolt.Options{
		// The lock is taken by lockFile below with the caller's timeout;
		// bbolt then takes the same lock on the same descriptor at once.
		// Where lockFile cannot lock (no flock), bbolt's timeout applies.
		Timeout: o.LockTimeout,
		// The freelist is not written at each commit, and it is a hashmap:
		// hashicorp/raft-boltdb writes its whole freelist (an array) at every
		// commit, so after a large truncation frees thousands of pages each
		// append rewrites all of them and appends get about 10x slower. Close
		// writes the freelist once so that the next Open need not rebuild it;
		// after a crash bbolt rebuilds it by walking the tree.
		NoFreelistSync:  true,
		FreelistType:    bbolt.FreelistMapType,
		ReadOnly:        o.ReadOnly,
		NoSync:          o.NoSync,
		InitialMmapSize: o.InitialMmapSize,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, mode)
			if err != nil {
				return nil, err
			}
			if err := lockFile(f, !o.ReadOnly, o.LockTimeout); err != nil {
				_ = f.Close()
				return nil, err
			}
			if err := preflight(f, o, logger); err != nil {
				_ = f.Close()
				return nil, err
			}
			return f, nil
		},
	}
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, corruptf("bbolt panicked while opening the file: %v", r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = bbolt.Open(path, fileMode, bo)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s is held by another handle (waited %v)", ErrLocked, path, o.LockTimeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("%w: %v", ErrNotStore, err)
	}
	return nil, err
}

// preflight checks a locked file before bbolt maps it.
func preflight(f *os.File, o *Options, logger hclog.Logger) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return nil // a new store
	}
	rep, err := boltcheck.Inspect(f, fi.Size())
	switch {
	case errors.Is(err, boltcheck.ErrNotBolt):
		return fmt.Errorf("%w: %s is not a bbolt database", ErrNotStore, f.Name())
	case err != nil:
		return corruptf("%v", err)
	}
	for _, m := range rep.BadMeta {
		logger.Warn("a bbolt meta page is invalid; using the other one. After a crash this is a torn write "+
			"of a commit that was never acknowledged; otherwise the newest commit may have been lost",
			"meta_page", m, "txid", rep.Meta.Txid)
	}
	// Without a synced freelist, a writable bbolt Open walks every page
	// in a goroutine of its own, where a damaged page would crash the
	// process: walk them here first, where it is an error.
	if o.VerifyOnOpen || (!o.ReadOnly && !rep.Meta.FreelistSynced()) {
		if err := boltcheck.Walk(f, rep); err != nil {
			return corruptf("%v", err)
		}
	}
	return nil
}

// syncFreelist commits one empty transaction with bbolt's freelist written.
// raftbolt files run with NoFreelistSync (see openBolt); Close calls this to
// leave the file in the state where the next Open reads the freelist from
// its page instead of walking every page. The first commit after that Open
// frees the page again.
func syncFreelist(db *bbolt.DB) error {
	db.NoFreelistSync = false
	defer func() { db.NoFreelistSync = true }()
	return db.Update(func(*bbolt.Tx) error { return nil })
}
