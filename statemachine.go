package raftbolt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/boltfile"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// ApplyFunc applies one committed raft.LogCommand entry to the state, inside
// the write transaction tx, and returns the entry's response (what
// raft.ApplyFuture.Response returns on the node that proposed it).
//
// Returning a non-nil error value, or panicking, fails the entry: none of
// its writes are kept and its response is that error (a panic becomes an
// error wrapping ErrPanic). The entry still counts as applied.
//
// It must be deterministic and keep its effects inside tx: the same entry
// on the same state must make the same writes and give the same response
// on every node, and it may run more than once for an entry (see
// StateMachine.ApplyBatch). It must not commit or roll back tx (bbolt
// panics, which fails the entry), keep tx or the byte slices bbolt returns
// after it returns, or touch the reserved bucket "_raftbolt".
type ApplyFunc func(tx *bbolt.Tx, l *raft.Log) interface{}

// ErrPanic is wrapped by the response of an entry whose ApplyFunc panicked,
// and by the error of a View whose function panicked. The message holds
// the panic value; the stack is logged at error level.
var ErrPanic = errors.New("panic inside a transaction")

// StateMachine is a raft.FSM whose state lives in a bbolt file of its own:
// every committed command runs an ApplyFunc inside a bbolt write
// transaction that also records the applied index, so the state survives a
// restart without a snapshot restore and no entry is ever applied twice.
// It implements raft.FSM, raft.BatchingFSM and raft.ConfigurationStore and
// is safe for concurrent use.
//
// Give it its own file, never the log store's. Set
// raft.Config.NoSnapshotRestoreOnStart: the file already holds everything
// applied, and raft would otherwise restore its newest snapshot at every
// start, rolling the state back and replaying the log onto it. Call
// CatchUp before raft.NewRaft.
//
// The file holds the application's buckets next to one reserved bucket,
// "_raftbolt", with the format record, the applied index and term, and the
// latest committed cluster configuration.
//
// Lock order: see Store.
type StateMachine struct {
	path   string
	apply  ApplyFunc
	opts   Options // defaults applied
	logger hclog.Logger

	// handleLocks guard file (locks.go): Apply, ApplyBatch,
	// StoreConfiguration, Restore and Close hold writeMu, from reading the
	// applied index to updating it, so no entry is applied twice; View,
	// LatestConfiguration and Snapshot hold dbMu shared, and wait for a
	// Restore's swap instead of failing or seeing a closed file.
	handleLocks
	file *boltfile.File

	// applied and appliedTerm mirror the applied record of the file after
	// the last committed write or Restore; written under writeMu after the
	// commit, read without locks.
	applied, appliedTerm atomic.Uint64

	// The machine stops when a commit fails or bbolt panics during a
	// write: file.Broken() then holds the error, every entry's response is
	// that error and its index does not advance (raft replays those
	// entries after a restart), and Snapshot refuses. A successful
	// Restore (a new file), or reopening, clears it.
}

var (
	_ raft.FSM                = (*StateMachine)(nil)
	_ raft.BatchingFSM        = (*StateMachine)(nil)
	_ raft.ConfigurationStore = (*StateMachine)(nil)
)

// DefaultStateMachineMmapSize is the initial size of a state file's memory
// map when Options.InitialMmapSize is 0, on 64-bit systems other than
// Windows (where bbolt would grow the file itself to the map's size). It is
// address space, not memory. bbolt remaps a file that outgrows its map,
// and a remap waits for every open read transaction: with a map well above
// the file's size, a commit never waits for a snapshot being persisted.
// etcd maps its bbolt files the same way.
const DefaultStateMachineMmapSize = 1 << 30

// restoreSuffix names the file Restore stages a snapshot in, next to the
// state file. Only the process holding the state file's lock writes it, so
// OpenStateMachine (holding the lock) removes one a crash left.
const restoreSuffix = ".restore"

// OpenStateMachine opens the state file at path, creating it when it is
// missing or empty, and returns the state machine that applies committed
// commands to it with apply. opts may be nil for the defaults.
//
// A new file gets the reserved bucket, its format record and an applied
// index of 0 in one write transaction. An existing one is verified and
// left unchanged; OpenStateMachine refuses, with an error and without
// writing, a file that is not a bbolt database, a bbolt database that
// holds buckets but no state-machine format record (someone else's file,
// or a raftbolt log store: ErrNotStore), a state file of a newer format
// (ErrUnsupportedVersion) and a damaged file (ErrCorrupt). A staged
// snapshot left by a Restore that crashed is removed.
//
// Of Options, these apply: ReadOnly (inspect only: View, AppliedIndex,
// LatestConfiguration and Snapshot work, apply may be nil, every entry's
// response and Restore are ErrReadOnly), NoSync, LockTimeout, Logger,
// InitialMmapSize (default DefaultStateMachineMmapSize) and VerifyOnOpen.
// The entry-cache, metrics and replay
// fields are the log store's and are ignored.
func OpenStateMachine(path string, apply ApplyFunc, opts *Options) (*StateMachine, error) {
	const op = "open state machine"
	o, err := opts.withDefaults()
	if err != nil {
		return nil, opError(op, path, err)
	}
	if path == "" {
		return nil, opError(op, path, invalidf("empty path"))
	}
	if apply == nil && !o.ReadOnly {
		return nil, opError(op, path, invalidf("nil ApplyFunc (only a read-only state machine may do without one)"))
	}
	if o.InitialMmapSize == 0 && strconv.IntSize == 64 && runtime.GOOS != "windows" {
		o.InitialMmapSize = DefaultStateMachineMmapSize
	}
	m := &StateMachine{
		path:   path,
		apply:  apply,
		opts:   o,
		logger: o.Logger.With("path", path),
	}
	m.readOnly = o.ReadOnly
	start := time.Now()
	created, err := m.open()
	if err != nil {
		return nil, err
	}
	m.logger.Info("opened state machine", "format_version", layout.Version, "created", created,
		"read_only", o.ReadOnly, "applied_index", m.applied.Load(), "duration", time.Since(start))
	return m, nil
}

// open opens the file, verifies or creates the layout and loads the
// applied record.
func (m *StateMachine) open() (created bool, err error) {
	const op = "open state machine"
	f, created, err := boltfile.Open(m.path, fileOptions(&m.opts, m.logger, layout.StateMachine.Create))
	if err != nil {
		if m.opts.ReadOnly && errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("read-only: %w", err)
		}
		return false, opError(op, m.path, err)
	}
	if !m.opts.ReadOnly {
		removeStaleRestore(m.path, m.logger)
	}
	m.file = f
	if err = m.checkLayout(); err == nil {
		err = m.loadApplied()
	}
	if err != nil {
		_ = f.Close()
		return false, err
	}
	return created, nil
}

// checkLayout verifies the layout of the state file, which a writable
// open created if the file was missing or empty. A bbolt file without any
// bucket, made by something else, is laid out in place, in one write
// transaction.
func (m *StateMachine) checkLayout() error {
	const op = "open state machine"
	var l layout.Class
	err := m.view(m.file, op, func(tx *bbolt.Tx) (err error) {
		l, err = inspectStateFile(tx)
		return err
	})
	if err != nil || l == layout.Complete {
		return err
	}
	if m.opts.ReadOnly {
		return opError(op, m.path, fmt.Errorf("%w: the file holds no state machine (read-only opens never create one)", ErrNotStore))
	}
	return m.update(op, func(tx *bbolt.Tx) error {
		// Checked again inside the transaction that writes.
		if l, err := inspectStateFile(tx); err != nil || l != layout.Empty {
			return fmt.Errorf("layout changed while opening: %v", err)
		}
		return layout.StateMachine.Create(tx)
	})
}

func (m *StateMachine) loadApplied() error {
	return m.view(m.file, "open state machine", func(tx *bbolt.Tx) error {
		index, term, err := layout.StateMachine.Applied(tx)
		if err != nil {
			return err
		}
		m.applied.Store(index)
		m.appliedTerm.Store(term)
		return nil
	})
}

// removeStaleRestore removes the staged snapshot a crashed Restore left.
// The caller holds the state file's lock, so no Restore is running.
func removeStaleRestore(path string, logger hclog.Logger) {
	staged := path + restoreSuffix
	if err := os.Remove(staged); err == nil {
		logger.Warn("removed the staged snapshot of an interrupted restore; the state is the one before it", "file", staged)
	}
}

// Path returns the path the state machine was opened with.
func (m *StateMachine) Path() string { return m.path }

// AppliedIndex returns the index of the last entry the state holds: the
// newest entry applied, or the index the state held when the snapshot it
// was restored from was taken. It is 0 for a new state. After Close it
// returns the last value.
func (m *StateMachine) AppliedIndex() uint64 { return m.applied.Load() }

// View runs fn in a bbolt read transaction on the state. It sees every
// entry applied before it began and nothing of one in progress. fn's error
// is returned as it is; a panic in fn becomes an error wrapping ErrPanic.
// While Restore swaps the file in, View waits for the swap.
func (m *StateMachine) View(fn func(tx *bbolt.Tx) error) (err error) {
	if fn == nil {
		return opError("view", m.path, invalidf("nil function"))
	}
	if err := m.rlock(); err != nil {
		return err
	}
	defer m.runlock()
	defer func() {
		if r := recover(); r != nil {
			err = m.userPanic("view", "", r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return m.file.DB().View(fn)
}

// LatestConfiguration returns the newest committed cluster configuration
// recorded in the state file and its index, or ErrNoConfiguration.
func (m *StateMachine) LatestConfiguration() (uint64, raft.Configuration, error) {
	if err := m.rlock(); err != nil {
		return 0, raft.Configuration{}, err
	}
	defer m.runlock()
	var (
		index uint64
		c     raft.Configuration
	)
	err := m.view(m.file, "latest configuration", func(tx *bbolt.Tx) (err error) {
		var ok bool
		index, c, ok, err = layout.StateMachine.Configuration(tx)
		if err == nil && !ok {
			err = ErrNoConfiguration
		}
		return err
	})
	return index, c, err
}

// StoreConfiguration records a committed configuration unless a newer one
// is recorded (raft.ConfigurationStore). raft calls it only for FSMs that
// do not batch; *StateMachine batches, so raft hands it configuration
// entries inside ApplyBatch instead, which records them with the applied
// index. A failure is logged at error level (the interface returns none).
func (m *StateMachine) StoreConfiguration(index uint64, c raft.Configuration) {
	err := m.storeConfiguration(index, c)
	if err != nil {
		m.logger.Error("failed to record a committed cluster configuration",
			"index", index, "servers", hclog.Fmt("%+v", c.Servers), "error", err)
	}
}

func (m *StateMachine) storeConfiguration(index uint64, c raft.Configuration) error {
	const op = "store configuration"
	if err := m.lockWrite(); err != nil {
		return err
	}
	defer m.unlockWrite()
	if index == 0 {
		return opError(op, m.path, invalidf("configuration index 0"))
	}
	if err := checkConfiguration(c); err != nil {
		return opError(op, m.path, fmt.Errorf("configuration at index %d: %w", index, err))
	}
	return m.update(op, func(tx *bbolt.Tx) error {
		return layout.StateMachine.PutConfiguration(tx, index, c)
	})
}

// Close closes the state file. It waits for a write in progress, and
// writes bbolt's freelist once so that the next open need not rebuild it.
// A snapshot not yet released keeps the file open (and locked) until its
// Release. A second Close returns nil; every other method then returns
// ErrClosed (entries get it as their response).
func (m *StateMachine) Close() error {
	m.lockAll()
	defer m.unlockAll()
	if m.closed.Load() {
		return nil
	}
	m.closed.Store(true)
	if n := m.file.Refs(); n > 1 {
		m.logger.Debug("state file stays open until its snapshots are released", "snapshots", n-1)
	}
	err := wrapOp("close state machine", m.path, m.file.Close())
	m.logger.Debug("closed state machine")
	return err
}

// view runs fn in a read transaction of f (the current file, or one
// being restored); the state machine's own transactions go through view
// and update, and so through internal/boltfile's guarded transactions.
func (m *StateMachine) view(f *boltfile.File, op string, fn func(tx *bbolt.Tx) error) error {
	return wrapOp(op, m.path, f.View(fn))
}

// update runs fn in a write transaction of the current file. The caller
// holds writeMu. A panic that escapes fn breaks the machine.
func (m *StateMachine) update(op string, fn func(tx *bbolt.Tx) error) error {
	return wrapOp(op, m.path, m.file.Update(fn))
}

// userPanic turns a panic recovered around application code (an ApplyFunc
// or View's function) into an error. A memory fault in the mapped file is
// damage (ErrCorrupt); anything else wraps ErrPanic. what names the entry.
func (m *StateMachine) userPanic(op, what string, r any) error {
	if isMemoryFault(r) {
		m.logger.Error("memory fault reading the state file; the file is damaged", "op", op, "panic", fmt.Sprint(r))
		return opError(op, m.path, corruptf("memory fault in the mapped file%s: %v", what, r))
	}
	m.logger.Error("panic inside a state machine transaction", "op", op, "entry", what,
		"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return opError(op, m.path, fmt.Errorf("%w%s: %v", ErrPanic, what, r))
}

// isMemoryFault reports whether a recovered value is the panic that
// debug.SetPanicOnFault turns a fault in mapped memory into.
func isMemoryFault(r any) bool {
	re, ok := r.(runtime.Error)
	if !ok {
		return false
	}
	_, ok = re.(interface{ Addr() uintptr })
	return ok
}
