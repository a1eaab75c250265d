package raftbolt

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/boltfile"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/journal"
	"github.com/raftbolt/raftbolt/internal/layout"
	"github.com/raftbolt/raftbolt/internal/tailcache"
	"go.etcd.io/bbolt"
)

// Store is a raft log store, stable store and cluster-configuration store
// kept in one bbolt file. It implements raft.LogStore, raft.StableStore,
// raft.MonotonicLogStore and raft.CommitTrackingLogStore, and is safe for
// concurrent use.
//
// Lock order, for every lock of the package (a goroutine holding one only
// ever waits for those after it):
//
//	FSM.mu (the adapter's pending configuration; it calls into the Store)
//	Store.compactMu (one Compact at a time)
//	Store.writeMu / StateMachine.writeMu (every write)
//	Store.ckptMu (one journal checkpoint at a time)
//	Store.dbMu / StateMachine.dbMu (the current file)
//	stableMirror.mu (held across a first read's transaction), sharedReader.mu,
//	the tail cache's lock, smSnapshot.mu
//
// A long reader (Backup, Check, a state-machine snapshot) holds dbMu only
// while it takes a reference to the current file (internal/boltfile), never
// for its whole run, so that Compact's and Restore's swaps never wait for it.
type Store struct {
	path   string
	opts   Options // defaults applied
	logger hclog.Logger

	// handleLocks guard file: writers hold writeMu, readers dbMu shared
	// (locks.go).
	handleLocks
	file *boltfile.File
	// pageSize is file's page size, guarded by dbMu like file. It is read
	// here, not from bbolt's Info(), which reads bbolt's mmap fields
	// without bbolt's locks and races with a write transaction that remaps.
	pageSize int

	// reader shares one read transaction among GetLog calls that miss the
	// cache (txn.go).
	reader sharedReader

	// cache holds the encoded records of the newest entries. It only ever
	// holds committed entries, as a contiguous run ending at the last
	// index; the writer updates it under writeMu.
	cache *tailcache.Cache

	// stable mirrors committed values of the stable bucket for Get
	// (stable.go). It only ever holds a value some Set committed, or one
	// read and decoded from the file: Set publishes its value under writeMu
	// after its transaction committed (and drops the key when it failed);
	// a first read publishes what it read while holding stable.mu, which
	// Set also takes, so an older value never replaces a newer one. Compact
	// copies the stable bucket unchanged, so the mirror outlives the swap.
	stable stableMirror

	// state is the log's extent and commit index, published as one
	// immutable value so that lock-free readers never see a torn one
	// (first from one write, last from another). Only writers, under
	// writeMu, store it: a write that adds entries publishes its state
	// after its transaction committed, one that removes entries (and
	// drops them from the cache) before, so that whatever state a reader
	// loads, every entry it lists is in every read transaction begun
	// after the load, unless the state has changed since (GetLog).
	state atomic.Pointer[logState]
	// staged is the value StageCommitIndex set, written by the next
	// StoreLogs when it differs from state.commit.
	staged atomic.Uint64

	// compaction tracks the log changes made while Compact copies the file
	// (nil when no compaction runs). compactMu lets one Compact run at a
	// time; lastCompact describes the last one.
	compaction atomic.Pointer[compaction]
	// autoCompact runs Compact by itself (autocompact.go).
	autoCompact ticker
	compactMu   sync.Mutex
	lastCompact atomic.Pointer[CompactStats]

	// The journal (journal.go; nil with Options.NoJournal, and in a
	// read-only handle). pending holds the journaled batches not yet
	// checkpointed into the file: the log is the file's entries followed
	// by them. ckptMu lets one checkpoint run at a time; lock order:
	// writeMu, then ckptMu, then dbMu. jbuf is StoreLogs' frame buffer
	// (guarded by writeMu). ckpt bounds the pending bytes.
	journal *journal.Journal
	pending pendingLog
	ckptMu  sync.Mutex
	jbuf    []byte
	ckpt    checkpointSizes
	// checkpoints runs the journal's background checkpoints.
	checkpoints ticker

	// format is the format version of the file's format record, set by
	// Open and never changed (Compact copies the record as it is).
	format uint32

	// gauges emits the file gauges (metrics.go). It never waits for dbMu
	// (emitGauges only tries it), so Close may halt it holding dbMu.
	gauges ticker
}

// logState is the state of the file after the last committed write (or,
// for a write that removes entries, the one in progress). first and last
// are 0 when the log is empty; otherwise the log holds exactly the indexes
// first..last. commit is the commit index persisted in layout.MetaBucket.
type logState struct {
	first, last, commit uint64
}

// loadState returns the published state.
func (s *Store) loadState() logState { return *s.state.Load() }

// publish makes st the state readers see.
func (s *Store) publish(st logState) { s.state.Store(&st) }

var (
	_ raft.LogStore               = (*Store)(nil)
	_ raft.StableStore            = (*Store)(nil)
	_ raft.MonotonicLogStore      = (*Store)(nil)
	_ raft.CommitTrackingLogStore = (*Store)(nil)
)

// Open opens the store at path, creating it when the file is missing or
// empty. opts may be nil for the defaults.
//
// A new store gets every bucket and its format record in one write
// transaction. An existing one is verified and left unchanged: Open
// refuses, with an error and without writing, a file that is not a bbolt
// database or holds someone else's buckets (ErrNotStore, which also names
// the migration for a hashicorp/raft-boltdb file), a store of a newer
// format (ErrUnsupportedVersion) and a damaged file (ErrCorrupt). While
// another handle holds the file, Open waits up to LockTimeout, then
// returns ErrLocked.
func Open(path string, opts *Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, opError("open", path, err)
	}
	if path == "" {
		return nil, opError("open", path, invalidf("empty path"))
	}
	s := &Store{
		path:   path,
		opts:   o,
		logger: o.Logger.With("path", path),
		cache:  tailcache.New(o.CacheSize, o.CacheBytes),
	}
	s.readOnly = o.ReadOnly
	start := time.Now()
	created, err := s.open()
	if err != nil {
		return nil, err
	}
	st := s.loadState()
	s.logger.Info("opened store", "format_version", layout.Version, "created", created,
		"read_only", o.ReadOnly, "first_index", st.first, "last_index", st.last,
		"commit_index", st.commit, "duration", time.Since(start))
	s.startMetrics()
	s.startAutoCompact()
	return s, nil
}

// open opens the file and loads the store's state. Its errors carry the
// "raftbolt: open (path)" prefix.
func (s *Store) open() (created bool, err error) {
	f, created, err := boltfile.Open(s.path, fileOptions(&s.opts, s.logger, layout.LogStore.Create))
	if err != nil {
		if s.opts.ReadOnly && errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("read-only: %w", err)
		}
		return false, opError("open", s.path, err)
	}
	if !s.opts.ReadOnly {
		removeStaleCompaction(s.path, s.logger)
	}
	s.file = f
	s.pageSize = f.PageSize() // nothing else uses the file yet
	s.reader.file = f
	if err = s.checkLayout(); err == nil {
		err = s.loadFileState()
	}
	if err == nil {
		err = s.openJournal()
	}
	if err != nil {
		s.reader.close()
		_ = f.Close()
		return false, err
	}
	return created, nil
}

// checkLayout verifies the layout of the store, which a writable Open
// created if the file was missing or empty. A bbolt file without any
// bucket, made by something else, is laid out in place, in one write
// transaction.
func (s *Store) checkLayout() error {
	var l layout.Class
	err := s.view("open", func(tx *bbolt.Tx) (err error) {
		l, err = inspectStore(tx)
		return err
	})
	if err != nil || l == layout.Complete {
		return err
	}
	if s.opts.ReadOnly {
		return opError("open", s.path, fmt.Errorf("%w: the file holds no store (read-only opens never create one)", ErrNotStore))
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.update("create store", func(tx *bbolt.Tx) error {
		// Checked again inside the transaction that writes: nothing
		// that exists is ever created twice.
		if l, err := inspectStore(tx); err != nil || l != layout.Empty {
			return fmt.Errorf("layout changed while opening: %v", err)
		}
		return layout.LogStore.Create(tx)
	})
}

// loadFileState reads the file's state and publishes it.
func (s *Store) loadFileState() error {
	return s.view("open", func(tx *bbolt.Tx) error {
		b, err := layout.LogStore.Buckets(tx)
		if err != nil {
			return err
		}
		var st logState
		c := b.Log.Cursor()
		if k, _ := c.First(); k != nil {
			var ok bool
			if st.first, ok = codec.Uint64(k); !ok {
				return corruptf("log key %x is not an 8-byte index", k)
			}
			k, _ = c.Last()
			if st.last, ok = codec.Uint64(k); !ok {
				return corruptf("log key %x is not an 8-byte index", k)
			}
		}
		f, err := codec.DecodeFormat(b.Meta.Get(layout.KeyFormat), layout.Version)
		if err != nil {
			return corruptf("format record: %v", err)
		}
		s.format = f.Version
		if st.commit, err = layout.LogStore.Uint64(b.Meta, layout.KeyCommit); err != nil {
			return err
		}
		s.publish(st)
		s.staged.Store(st.commit)
		return nil
	})
}

// Path returns the path the store was opened with.
func (s *Store) Path() string { return s.path }

// Close closes the store. It waits for a write in progress, then makes the
// file quick to reopen: it writes bbolt's freelist once, so the next Open
// loads it instead of walking every page. A Backup or Check still running
// keeps the file open (and locked) until it ends. Close never hangs: on a
// handle a bbolt panic broke (its writes returned ErrCorrupt), it releases
// the file and its lock without bbolt and returns that error. A second
// Close returns nil; every other method of a closed store returns
// ErrClosed.
func (s *Store) Close() error {
	s.autoCompact.halt() // before writeMu, which a Compact it runs takes
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return nil
	}
	jerr := s.closeJournal() // checkpoints, so it needs dbMu shared
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	s.closed.Store(true)
	s.gauges.halt()
	s.reader.close()
	err := wrapOp("close", s.path, s.file.Close())
	if jerr != nil {
		err = wrapOp("close", s.path, jerr)
	}
	s.logger.Debug("closed store")
	return err
}

// Sync flushes the file to stable storage. It matters only with NoSync:
// otherwise every write is already synced when it returns.
func (s *Store) Sync() error {
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.runlock()
	if s.opts.ReadOnly {
		return nil
	}
	if err := s.file.DB().Sync(); err != nil {
		return opError("sync", s.path, err)
	}
	return nil
}
