package raftbolt

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/boltcheck"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/tailcache"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
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

// getUint64 reads an integer record of bucketMeta; a missing key is 0.
func getUint64(b *bbolt.Bucket, key []byte) (uint64, error) {
	rec := b.Get(key)
	if rec == nil {
		return 0, nil
	}
	n, err := codec.DecodeUint64Value(key, rec)
	if err != nil {
		return 0, corruptf("bucket %q, key %q: %v", bucketMeta, key, err)
	}
	return n, nil
}

// putUint64 writes an integer record of bucketMeta.
func putUint64(b *bbolt.Bucket, key []byte, v uint64) error {
	return b.Put(key, codec.AppendUint64Value(nil, key, v))
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

// persistFreelist commits one empty transaction with the freelist synced.
// The store runs with NoFreelistSync (see openBolt); this leaves the file
// in the state where Open reads the freelist from one page. The first
// commit after the next Open frees that page again.
func (s *Store) persistFreelist() (err error) {
	defer s.recoverPanic("close", &err, true)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	s.db.NoFreelistSync = false
	defer func() { s.db.NoFreelistSync = true }()
	if err := s.db.Update(func(*bbolt.Tx) error { return nil }); err != nil {
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

// FirstIndex returns the first index in the log, 0 when it is empty.
func (s *Store) FirstIndex() (uint64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	return s.first.Load(), nil
}

// LastIndex returns the last index in the log, 0 when it is empty.
func (s *Store) LastIndex() (uint64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	return s.last.Load(), nil
}

// IsMonotonic reports true: the store only accepts indexes that continue
// the log, which lets raft skip its own gap checks (raft.MonotonicLogStore).
func (s *Store) IsMonotonic() bool { return true }

// GetLog reads the entry at index into log. It returns raft.ErrLogNotFound
// itself when there is no such entry, and an error wrapping ErrCorrupt
// when the stored bytes fail their checksum, do not decode, hold another
// index, or are missing from inside the log (which is contiguous).
func (s *Store) GetLog(index uint64, log *raft.Log) error {
	if log == nil {
		return opError("get log", s.path, invalidf("nil *raft.Log for index %d", index))
	}
	if err := s.rlock(); err != nil {
		return err
	}
	err := s.getLog(index, log)
	s.dbMu.RUnlock()
	if err != errMissing {
		return err
	}
	// The entry was missing although the mirrors said it is there: either a
	// truncation committed meanwhile, or the file is damaged. With writes
	// excluded the mirrors match the file, so ask again.
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.dbMu.RUnlock()
	if err = s.getLog(index, log); err == errMissing {
		return s.corruptEntry(index, fmt.Errorf("missing from the log %d-%d", s.first.Load(), s.last.Load()))
	}
	return err
}

// errMissing is getLog's answer for an entry inside first..last that the
// file does not hold.
var errMissing = errors.New("entry missing inside the log")

// getLog serves GetLog from the cache or the file; the caller holds dbMu.
func (s *Store) getLog(index uint64, log *raft.Log) error {
	if ok, err := s.cache.Get(index, func(rec []byte) error { return s.decode(index, rec, log) }); ok {
		metrics.IncrCounter(metricGetLogCacheHit, 1)
		return s.wrap("get log", err)
	}
	if index == 0 || index < s.first.Load() || index > s.last.Load() {
		return errLogNotFound
	}
	metrics.IncrCounter(metricGetLogCacheMiss, 1)
	defer metrics.MeasureSince(metricGetLog, time.Now())
	err := s.readLog(index, log)
	if err == errLogNotFound {
		return errMissing
	}
	return err
}

// readLog reads entry index from the file through the shared reader.
func (s *Store) readLog(index uint64, log *raft.Log) (err error) {
	defer s.recoverPanic("get log", &err, false)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	key := codec.Key(index)
	err = s.reader.get(key[:], func(rec []byte) error {
		if rec == nil {
			return errLogNotFound
		}
		return s.decode(index, rec, log)
	})
	return s.wrap("get log", err)
}

// decode decodes the record of entry index into log and checks that it
// holds that index.
func (s *Store) decode(index uint64, rec []byte, log *raft.Log) error {
	if err := codec.DecodeEntry(rec, log); err != nil {
		return s.corruptEntry(index, err)
	}
	if log.Index != index {
		return s.corruptEntry(index, fmt.Errorf("record holds index %d", log.Index))
	}
	return nil
}

func (s *Store) corruptEntry(index uint64, err error) error {
	s.logger.Error("corrupt log entry", "index", index, "error", err)
	return corruptf("entry %d: %v", index, err) // the caller adds the operation and path
}

// StoreLog stores one entry; see StoreLogs.
func (s *Store) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs appends a batch of entries in one transaction: all of them or,
// on any error, none. The indexes must be consecutive and, unless the log
// is empty, start right after LastIndex; otherwise the error wraps
// ErrNotContiguous. A nil entry or index 0 is ErrInvalid. An empty batch
// is a no-op. A commit index staged with StageCommitIndex is persisted in
// the same transaction.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	const op = "store logs"
	start := time.Now()
	if err := s.lockWrite(); err != nil {
		return err
	}
	defer s.unlockWrite()
	if len(logs) == 0 {
		return nil
	}
	// Preconditions, all checked before the transaction starts.
	mem, recs, size, err := s.encodeBatch(logs)
	if err != nil {
		return opError(op, s.path, err)
	}
	first := logs[0].Index
	if last := s.last.Load(); last != 0 && first != last+1 {
		return opError(op, s.path, fmt.Errorf("%w: the batch starts at index %d, but the last index is %d (expected %d)",
			ErrNotContiguous, first, last, last+1))
	}
	commit, staged := s.commit.Load(), s.staged.Load()
	boot := bootstrapConfiguration(logs[0])

	err = s.update(op, func(tx *bbolt.Tx) error {
		// Only the buckets this batch writes are opened.
		log, err := openBucket(tx, bucketLog)
		if err != nil {
			return err
		}
		var configIndex *bbolt.Bucket
		for i, l := range logs {
			key := codec.Key(l.Index)
			if err := log.Put(key[:], recs[i]); err != nil {
				return fmt.Errorf("entry %d: %w", l.Index, err)
			}
			if isConfigEntry(l.Type) {
				if configIndex == nil {
					if configIndex, err = openBucket(tx, bucketConfigIndex); err != nil {
						return err
					}
				}
				if err := configIndex.Put(key[:], nil); err != nil {
					return fmt.Errorf("configuration entry %d: %w", l.Index, err)
				}
			}
		}
		if boot != nil {
			config, err := openBucket(tx, bucketConfig)
			if err != nil {
				return err
			}
			if config.Get(keyLatest) == nil {
				if err := config.Put(keyLatest, boot); err != nil {
					return err
				}
			}
		}
		if staged != commit {
			meta, err := openBucket(tx, bucketMeta)
			if err != nil {
				return err
			}
			return putUint64(meta, keyCommit, staged)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if s.first.Load() == 0 {
		s.first.Store(first)
	}
	s.last.Store(logs[len(logs)-1].Index)
	s.commit.Store(staged)
	s.cache.Append(first, mem, recs)
	s.compaction.logsStored(first)
	metrics.MeasureSince(metricStoreLogs, start)
	metrics.AddSample(metricStoreLogsEntries, float32(len(logs)))
	metrics.AddSample(metricStoreLogsBytes, float32(size))
	return nil
}

// encodeBatch checks a batch and encodes its entries into one buffer from
// the cache, which keeps it with the records after the commit (and hands it
// out again once they have left the cache). The caller holds writeMu.
func (s *Store) encodeBatch(logs []*raft.Log) (mem []byte, recs [][]byte, size int, err error) {
	for i, l := range logs {
		if l == nil {
			return nil, nil, 0, invalidf("entry %d of the batch is nil", i)
		}
		if l.Index == 0 {
			return nil, nil, 0, invalidf("entry %d of the batch has index 0", i)
		}
		if i > 0 && l.Index != logs[i-1].Index+1 {
			return nil, nil, 0, fmt.Errorf("%w: index %d follows index %d in the batch", ErrNotContiguous, l.Index, logs[i-1].Index)
		}
		n := codec.EntrySize(l)
		if n > bbolt.MaxValueSize {
			return nil, nil, 0, invalidf("entry %d encodes to %d bytes, over bbolt's value limit of %d", l.Index, n, bbolt.MaxValueSize)
		}
		size += n
	}
	mem = s.cache.Buffer(size)
	recs = make([][]byte, len(logs))
	for i, l := range logs {
		start := len(mem)
		mem = codec.AppendEntry(mem, l)
		recs[i] = mem[start:len(mem):len(mem)]
	}
	return mem, recs, size, nil
}

// bootstrapConfiguration returns the configuration record of l when l is
// the entry raft.BootstrapCluster writes (index 1, term 1, a configuration),
// or nil. StoreLogs records it as the latest configuration when none is
// recorded yet: it is every node's first configuration and nothing can
// replace it at index 1, and recording it with the entry means a node knows
// its cluster from the moment it is bootstrapped, not only once the FSM
// has applied the entry.
func bootstrapConfiguration(l *raft.Log) []byte {
	if l.Index != 1 || l.Term != 1 || l.Type != raft.LogConfiguration {
		return nil
	}
	c, err := decodeConfiguration(l.Data)
	if err != nil || checkConfiguration(c) != nil {
		return nil
	}
	return codec.AppendConfiguration(nil, 1, c)
}

// isConfigEntry reports whether raft loads a configuration from entries of
// type t when it starts (raft.Raft.processConfigurationLogEntry).
func isConfigEntry(t raft.LogType) bool {
	return t == raft.LogConfiguration || t == raft.LogAddPeerDeprecated || t == raft.LogRemovePeerDeprecated
}

// DeleteRange deletes the entries from through to, inclusive, clipped to
// the entries that exist. from > to is a no-op. A range that would leave a
// hole (entries kept on both sides of it) is rejected with an error
// wrapping ErrNotContiguous, and nothing is deleted. Deleting everything
// leaves an empty log, whose next StoreLogs may start at any index.
func (s *Store) DeleteRange(from, to uint64) error {
	const op = "delete range"
	start := time.Now()
	if err := s.lockWrite(); err != nil {
		return err
	}
	defer s.unlockWrite()
	first, last := s.first.Load(), s.last.Load()
	lo, hi := max(from, first), min(to, last)
	if from > to || last == 0 || lo > hi {
		return nil
	}
	if lo > first && hi < last {
		return opError(op, s.path, fmt.Errorf("%w: deleting %d-%d would leave a hole in the log %d-%d",
			ErrNotContiguous, from, to, first, last))
	}
	err := s.update(op, func(tx *bbolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		for i := lo; i <= hi; i++ {
			key := codec.Key(i)
			if err := b.log.Delete(key[:]); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
		}
		return deleteKeys(b.configIndex, lo, hi)
	})
	if err != nil {
		return err
	}
	switch {
	case lo == first && hi == last:
		s.first.Store(0)
		s.last.Store(0)
		s.cache.Reset()
	case lo == first:
		s.first.Store(hi + 1)
		s.cache.DeleteThrough(hi)
	default:
		s.last.Store(lo - 1)
		s.cache.DeleteFrom(lo)
		s.compaction.tailDeleted(lo)
	}
	metrics.MeasureSince(metricDeleteRange, start)
	metrics.AddSample(metricDeleteRangeEntries, float32(hi-lo+1))
	s.logger.Debug("deleted log range", "min", lo, "max", hi, "first_index", s.first.Load(), "last_index", s.last.Load())
	return nil
}

// deleteKeys deletes the 8-byte keys lo..hi of a small index bucket.
func deleteKeys(b *bbolt.Bucket, lo, hi uint64) error {
	from := codec.Key(lo)
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(from[:]); k != nil; k, _ = c.Next() {
		if i, ok := codec.Uint64(k); !ok || i > hi {
			break
		}
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// StageCommitIndex stages index as the commit index. Nothing is written
// now: the next successful StoreLogs persists it in its own transaction
// (raft.CommitTrackingLogStore).
func (s *Store) StageCommitIndex(index uint64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.opts.ReadOnly {
		return ErrReadOnly
	}
	s.staged.Store(index)
	return nil
}

// GetCommitIndex returns the persisted commit index, never more than
// LastIndex, 0 when none was persisted, with two caps for raft v1.8's
// Config.RestoreCommittedLogs, which replays the entries up to this index
// inside NewRaft. Returning less only shortens that replay (the rest is
// applied after the election, as without the option); it is always safe.
//
// The first cap keeps the replay within Options.RestoreReplayLimit entries
// past the newest snapshot recorded through WrapSnapshotStore: raft v1.8.0
// queues the replay on a channel nobody reads until NewRaft returns, and
// blocks for ever once it holds 128 batches.
//
// The second keeps the node's cluster configuration: after the replay raft
// looks for configuration entries only past this index, so a configuration
// entry at or below it that no snapshot covers would be forgotten and the
// node would start with no peers ("no known peers, aborting election").
// When the log holds configuration entries at or below the index that no
// snapshot recorded through WrapSnapshotStore covers (one whose
// configuration index is at least the entry's), the result is c-1 for the
// newest such entry c.
func (s *Store) GetCommitIndex() (uint64, error) {
	if err := s.rlock(); err != nil {
		return 0, err
	}
	defer s.dbMu.RUnlock()
	c := min(s.commit.Load(), s.last.Load())
	if c == 0 {
		return 0, nil
	}
	err := s.view("get commit index", func(tx *bbolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		snapIndex, err := getUint64(b.meta, keySnapshotIndex)
		if err != nil {
			return err
		}
		covered, err := getUint64(b.meta, keySnapshotConfig)
		if err != nil {
			return err
		}
		if limit := s.opts.RestoreReplayLimit; limit > 0 && c > snapIndex+uint64(limit) {
			s.logger.Debug("commit index capped to bound raft's start-up replay",
				"commit_index", c, "snapshot_index", snapIndex, "limit", limit)
			c = snapIndex + uint64(limit)
		}
		if cfg := newestAtOrBelow(b.configIndex, c); cfg > covered {
			s.logger.Debug("commit index capped below a configuration entry no snapshot covers",
				"commit_index", c, "configuration_index", cfg, "snapshot_configuration_index", covered)
			c = cfg - 1
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return c, nil
}

// newestAtOrBelow returns the largest 8-byte key of b that is <= i, or 0.
func newestAtOrBelow(b *bbolt.Bucket, i uint64) uint64 {
	c := b.Cursor()
	next := codec.Key(i + 1)
	var k []byte
	if k, _ = c.Seek(next[:]); k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	if n, ok := codec.Uint64(k); ok && n <= i {
		return n
	}
	return 0
}

// Set stores a StableStore key. The key must be non-empty and at most
// bbolt.MaxKeySize bytes.
func (s *Store) Set(key, val []byte) error {
	const op = "set"
	if err := s.lockWrite(); err != nil {
		return err
	}
	defer s.unlockWrite()
	if err := checkKey(key); err != nil {
		return opError(op, s.path, err)
	}
	if len(val) > bbolt.MaxValueSize {
		return opError(op, s.path, invalidf("value of key %q is %d bytes, over bbolt's limit of %d", key, len(val), bbolt.MaxValueSize))
	}
	rec := codec.AppendValue(nil, key, val)
	return s.update(op, func(tx *bbolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		return b.stable.Put(key, rec)
	})
}

// Get returns the value of a StableStore key: a copy the caller keeps. A
// key that was never set returns ErrKeyNotFound itself.
func (s *Store) Get(key []byte) ([]byte, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.dbMu.RUnlock()
	if err := checkKey(key); err != nil {
		return nil, opError("get", s.path, err)
	}
	var val []byte
	err := s.view("get", func(tx *bbolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		rec := b.stable.Get(key)
		if rec == nil {
			return ErrKeyNotFound
		}
		v, err := codec.DecodeValue(key, rec)
		if err != nil {
			return corruptf("stable key %q: %v", key, err)
		}
		val = append(make([]byte, 0, len(v)), v...)
		return nil
	})
	return val, err
}

// SetUint64 stores a StableStore key holding a uint64 (8 bytes, big-endian,
// as hashicorp/raft-boltdb stores them).
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, codec.PutUint64(val))
}

// GetUint64 returns a uint64 stored with SetUint64. A key that was never
// set returns (0, ErrKeyNotFound); a value that is not 8 bytes long is
// ErrCorrupt.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	n, ok := codec.Uint64(v)
	if !ok {
		return 0, opError("get uint64", s.path, corruptf("stable key %q holds %d bytes, not an 8-byte integer", key, len(v)))
	}
	return n, nil
}

func checkKey(key []byte) error {
	if len(key) == 0 {
		return invalidf("empty key")
	}
	if len(key) > bbolt.MaxKeySize {
		return invalidf("key of %d bytes, over bbolt's limit of %d", len(key), bbolt.MaxKeySize)
	}
	return nil
}
