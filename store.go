package raftbolt

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/tailcache"
	"go.etcd.io/bbolt"
)

// Store is a raft log store, stable store and cluster-configuration store
// kept in one bbolt file. It implements raft.LogStore, raft.StableStore,
// raft.MonotonicLogStore and raft.CommitTrackingLogStore, and is safe for
// concurrent use.
//
// Lock order: writeMu, then dbMu, then the shared reader's and the
// cache's own locks.
type Store struct {
	path   string
	opts   Options // defaults applied
	logger hclog.Logger

	// writeMu serializes every write. It is held from the precondition
	// checks to the update of the in-memory state below, so what a writer
	// checked is still true when it commits, and the mirrors change only
	// after the transaction that changed the file committed.
	writeMu sync.Mutex

	// dbMu guards db and closed. Every method holds it shared while it uses
	// db; Close and Compact's file swap hold it exclusively, so no method
	// ever sees a closed or replaced *bbolt.DB.
	dbMu   sync.RWMutex
	db     *bbolt.DB
	closed atomic.Bool
	// pageSize is db's page size, guarded by dbMu like db. It is read
	// here, not from db.Info(), which reads bbolt's mmap fields without
	// bbolt's locks and races with a write transaction that remaps.
	pageSize int

	// reader shares one read transaction among GetLog calls that miss the
	// cache (txn.go).
	reader sharedReader

	// cache holds the encoded records of the newest entries. It only ever
	// holds committed entries, as a contiguous run ending at last; the
	// writer updates it under writeMu after each commit.
	cache *tailcache.Cache

	// Mirrors of the file's state after the last committed write, written
	// under writeMu, read without locks. first and last are 0 when the log
	// is empty; otherwise the log holds exactly the indexes first..last.
	first, last atomic.Uint64
	// commit is the commit index persisted in bucketMeta; staged is the
	// value StageCommitIndex set, written by the next StoreLogs when it
	// differs from commit.
	commit, staged atomic.Uint64

	// broken holds the error of a write transaction in which bbolt
	// panicked; from then on every write returns it (recoverPanic).
	broken atomic.Pointer[error]

	// compaction tracks the log changes made while Compact copies the file
	// (guarded by writeMu; nil when no compaction runs). compactMu lets one
	// Compact run at a time; lastCompact describes the last one.
	compaction  *compaction
	compactMu   sync.Mutex
	lastCompact atomic.Pointer[CompactStats]

	// format is the format version of the file's format record, set by
	// Open and never changed (Compact copies the record as it is).
	format uint32

	stopMetrics chan struct{}
	metricsDone sync.WaitGroup
}

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
	start := time.Now()
	created, err := s.open()
	if err != nil {
		return nil, err
	}
	s.logger.Info("opened store", "format_version", formatVersion, "created", created,
		"read_only", o.ReadOnly, "first_index", s.first.Load(), "last_index", s.last.Load(),
		"commit_index", s.commit.Load(), "duration", time.Since(start))
	s.startMetrics()
	return s, nil
}

// open opens the file and loads the store's state. Its errors carry the
// "raftbolt: open (path)" prefix.
func (s *Store) open() (created bool, err error) {
	if fi, err := os.Stat(s.path); err == nil && fi.IsDir() {
		return false, opError("open", s.path, invalidf("%s is a directory, not a store file", s.path))
	}
	if s.opts.ReadOnly {
		// bbolt would try to initialise an empty file, and fail on a file
		// it opened read-only.
		fi, err := os.Stat(s.path)
		if err != nil {
			return false, opError("open", s.path, fmt.Errorf("read-only: %w", err))
		}
		if fi.Size() == 0 {
			return false, opError("open", s.path, fmt.Errorf("%w: the file is empty (read-only opens never create a store)", ErrNotStore))
		}
	}
	db, err := openBolt(s.path, &s.opts, s.logger)
	if err != nil {
		return false, opError("open", s.path, err)
	}
	if !s.opts.ReadOnly {
		removeStaleCompaction(s.path, s.logger)
	}
	s.db = db
	s.pageSize = db.Info().PageSize // nothing else uses db yet
	s.reader.db = db
	if created, err = s.initLayout(); err == nil {
		err = s.loadState()
	}
	if err != nil {
		s.reader.close()
		_ = db.Close()
		return false, err
	}
	return created, nil
}

// initLayout verifies the layout of an existing store, or creates it in
// one write transaction in an empty file.
func (s *Store) initLayout() (created bool, err error) {
	var l layout
	err = s.view("open", func(tx *bbolt.Tx) (err error) {
		l, err = inspectLayout(tx)
		return err
	})
	if err != nil || l == layoutStore {
		return false, err
	}
	if s.opts.ReadOnly {
		return false, opError("open", s.path, fmt.Errorf("%w: the bbolt database is empty (read-only opens never create a store)", ErrNotStore))
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return true, s.update("create store", func(tx *bbolt.Tx) error {
		// Checked again inside the transaction that writes: nothing
		// that exists is ever created twice.
		if l, err := inspectLayout(tx); err != nil || l != layoutEmpty {
			return fmt.Errorf("layout changed while opening: %v", err)
		}
		return createLayout(tx)
	})
}

// loadState reads the mirrors of the file's state.
func (s *Store) loadState() error {
	return s.view("open", func(tx *bbolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		c := b.log.Cursor()
		if k, _ := c.First(); k != nil {
			first, ok := codec.Uint64(k)
			if !ok {
				return corruptf("log key %x is not an 8-byte index", k)
			}
			k, _ = c.Last()
			last, ok := codec.Uint64(k)
			if !ok {
				return corruptf("log key %x is not an 8-byte index", k)
			}
			s.first.Store(first)
			s.last.Store(last)
		}
		f, err := codec.DecodeFormat(b.meta.Get(keyFormat), formatVersion)
		if err != nil {
			return corruptf("format record: %v", err)
		}
		s.format = f.Version
		commit, err := getUint64(b.meta, keyCommit)
		if err != nil {
			return err
		}
		s.commit.Store(commit)
		s.staged.Store(commit)
		return nil
	})
}

// Path returns the path the store was opened with.
func (s *Store) Path() string { return s.path }

// Close closes the store. It waits for a write in progress, then makes the
// file quick to reopen: it writes bbolt's freelist once, so the next Open
// loads it instead of walking every page. A second Close returns nil; every
// other method of a closed store returns ErrClosed.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if s.closed.Load() {
		return nil
	}
	s.closed.Store(true)
	s.stopMetricsLoop()
	s.reader.close()
	var err error
	if !s.opts.ReadOnly && s.broken.Load() == nil {
		err = s.persistFreelist()
	}
	if cerr := s.db.Close(); err == nil && cerr != nil {
		err = opError("close", s.path, cerr)
	}
	s.logger.Debug("closed store")
	return err
}

// persistFreelist writes bbolt's freelist once (syncFreelist), recovering
// a panic as every transaction does.
func (s *Store) persistFreelist() (err error) {
	defer s.recoverPanic("close", &err, true)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if err := syncFreelist(s.db); err != nil {
		return opError("close", s.path, err)
	}
	return nil
}

// Sync flushes the file to stable storage. It matters only with NoSync:
// otherwise every write is already synced when it returns.
func (s *Store) Sync() error {
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.dbMu.RUnlock()
	if s.opts.ReadOnly {
		return nil
	}
	if err := s.db.Sync(); err != nil {
		return opError("sync", s.path, err)
	}
	return nil
}

// rlock takes dbMu shared, or returns ErrClosed without holding it.
func (s *Store) rlock() error {
	s.dbMu.RLock()
	if s.closed.Load() {
		s.dbMu.RUnlock()
		return ErrClosed
	}
	return nil
}

// lockWrite takes writeMu and dbMu (shared) for a write, or returns
// ErrClosed or ErrReadOnly holding neither.
func (s *Store) lockWrite() error {
	if s.opts.ReadOnly {
		if s.closed.Load() {
			return ErrClosed
		}
		return ErrReadOnly
	}
	s.writeMu.Lock()
	if err := s.rlock(); err != nil {
		s.writeMu.Unlock()
		return err
	}
	return nil
}

func (s *Store) unlockWrite() {
	s.dbMu.RUnlock()
	s.writeMu.Unlock()
}
