package raftbolt

import (
	"github.com/hashicorp/go-hclog"
	"github.com/raftbolt/raftbolt/internal/boltfile"
	"go.etcd.io/bbolt"
)

// This file maps Options to how internal/boltfile opens a bbolt file, for
// the log store, the state machine, Compact, Restore and Migrate alike.
// Everything about the file itself (the lock and the check that the path
// still names the locked file, the structural check before bbolt maps it,
// panics, durable creation and replacement, reference counting, a Close
// that cannot hang) lives in internal/boltfile.

// fileOptions returns the options a file is opened with. init lays out a
// new file (layout.LogStore.Create, layout.StateMachine.Create); nil never
// creates one.
func fileOptions(o *Options, logger hclog.Logger, init func(tx *bbolt.Tx) error) boltfile.Options {
	return boltfile.Options{
		ReadOnly:        o.ReadOnly,
		NoSync:          o.NoSync,
		VerifyOnOpen:    o.VerifyOnOpen,
		LockTimeout:     o.LockTimeout,
		InitialMmapSize: o.InitialMmapSize,
		Logger:          logger,
		Init:            init,
	}
}
