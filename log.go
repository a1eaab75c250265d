package raftbolt

import (
	"errors"
	"fmt"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// This file holds the raft.LogStore, raft.MonotonicLogStore and
// raft.CommitTrackingLogStore methods of Store.

// FirstIndex returns the first index in the log, 0 when it is empty.
func (s *Store) FirstIndex() (uint64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	return s.state.Load().first, nil
}

// LastIndex returns the last index in the log, 0 when it is empty.
func (s *Store) LastIndex() (uint64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	return s.state.Load().last, nil
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
	defer s.runlock()
	st := s.state.Load()
	for {
		err := s.getLog(st, index, log)
		if err != errMissing {
			return err
		}
		// The file lacks an entry st lists. A write that removes entries
		// publishes its state before it commits (see Store.state), so
		// either a write published since st was loaded (then the answer
		// is the new state's), or the file is damaged.
		now := s.state.Load()
		if now == st {
			return wrapOp("get log", s.path, s.corruptEntry(index, fmt.Errorf("missing from the log %d-%d", st.first, st.last)))
		}
		st = now
	}
}

// errMissing is getLog's answer for an entry inside first..last that the
// file does not hold.
var errMissing = errors.New("entry missing inside the log")

// getLog serves GetLog from the cache or the file, for the log as st
// describes it; the caller holds dbMu.
func (s *Store) getLog(st *logState, index uint64, log *raft.Log) error {
	if index == 0 || index < st.first || index > st.last {
		return errLogNotFound
	}
	// The journal's pending batches, then the cache, then the file: a
	// checkpoint hands a batch to the cache before it leaves the pending
	// log, and commits it to the file before either.
	if ok, err := s.pending.get(index, func(rec []byte) error { return s.decode(index, rec, log) }); ok {
		return wrapOp("get log", s.path, err)
	}
	if ok, err := s.cache.Get(index, func(rec []byte) error { return s.decode(index, rec, log) }); ok {
		metrics.IncrCounter(metricGetLogCacheHit, 1)
		return wrapOp("get log", s.path, err)
	}
	metrics.IncrCounter(metricGetLogCacheMiss, 1)
	defer metrics.MeasureSince(metricGetLog, time.Now())
	key := codec.Key(index)
	err := s.file.Guard(false, func() error {
		return s.reader.get(key[:], func(rec []byte) error {
			if rec == nil {
				return errMissing
			}
			return s.decode(index, rec, log)
		})
	})
	if err == errMissing {
		return err
	}
	return wrapOp("get log", s.path, err)
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
	st := s.loadState()
	if last := st.last; last != 0 && first != last+1 {
		return opError(op, s.path, fmt.Errorf("%w: the batch starts at index %d, but the last index is %d (expected %d)",
			ErrNotContiguous, first, last, last+1))
	}
	commit, staged := st.commit, s.staged.Load()
	boot := bootstrapConfiguration(logs[0])

	if s.journal != nil {
		if err := s.file.Broken(); err != nil {
			return wrapOp(op, s.path, err)
		}
		if boot == nil && !hasConfigEntry(logs) {
			err := s.appendJournal(first, mem, recs, size, staged)
			if err == nil {
				s.logsStored(st, first, logs[len(logs)-1].Index, staged, len(logs), size, start)
				return nil
			}
			if err != errDirect {
				return opError(op, s.path, err)
			}
		}
		// Written to the file directly, after what the journal holds.
		if err := s.checkpointNow(); err != nil {
			return err
		}
	}

	err = s.update(op, func(tx *bbolt.Tx) error {
		// Only the buckets this batch writes are opened.
		log, err := layout.LogStore.Bucket(tx, layout.LogBucket)
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
					if configIndex, err = layout.LogStore.Bucket(tx, layout.ConfigIndexBucket); err != nil {
						return err
					}
				}
				if err := configIndex.Put(key[:], nil); err != nil {
					return fmt.Errorf("configuration entry %d: %w", l.Index, err)
				}
			}
		}
		if boot != nil {
			config, err := layout.LogStore.Bucket(tx, layout.ConfigBucket)
			if err != nil {
				return err
			}
			if config.Get(layout.KeyLatest) == nil {
				if err := config.Put(layout.KeyLatest, boot); err != nil {
					return err
				}
			}
		}
		if staged != commit {
			meta, err := layout.LogStore.Bucket(tx, layout.MetaBucket)
			if err != nil {
				return err
			}
			return layout.LogStore.PutUint64(meta, layout.KeyCommit, staged)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.cache.Append(first, mem, recs)
	s.compaction.Load().mark(first)
	s.logsStored(st, first, logs[len(logs)-1].Index, staged, len(logs), size, start)
	return nil
}

// logsStored publishes the state after a batch first..last was stored
// (after the commit or the journal's sync: see Store.state).
func (s *Store) logsStored(st logState, first, last, commit uint64, n, size int, start time.Time) {
	if st.first == 0 {
		st.first = first
	}
	st.last, st.commit = last, commit
	s.publish(st)
	metrics.MeasureSince(metricStoreLogs, start)
	metrics.AddSample(metricStoreLogsEntries, float32(n))
	metrics.AddSample(metricStoreLogsBytes, float32(size))
}

// hasConfigEntry reports whether the batch holds an entry raft loads a
// configuration from: such batches go to the file directly, where
// GetCommitIndex's configuration cap sees them.
func hasConfigEntry(logs []*raft.Log) bool {
	for _, l := range logs {
		if isConfigEntry(l.Type) {
			return true
		}
	}
	return false
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
	st := s.loadState()
	first, last := st.first, st.last
	lo, hi := max(from, first), min(to, last)
	if from > to || last == 0 || lo > hi {
		return nil
	}
	if lo > first && hi < last {
		return opError(op, s.path, fmt.Errorf("%w: deleting %d-%d would leave a hole in the log %d-%d",
			ErrNotContiguous, from, to, first, last))
	}
	// The journal only ever holds appends made after the file's last
	// removal (journal.go): what it holds goes into the file first.
	if err := s.checkpointNow(); err != nil {
		return err
	}
	// Published before the commit (see Store.state): from now on no
	// reader asks for the entries being deleted, nor finds them cached.
	next := st
	all := lo == first && hi == last
	switch {
	case all:
		next.first, next.last = 0, 0
		s.cache.Reset()
	case lo == first:
		next.first = hi + 1
		s.cache.DeleteThrough(hi)
	default:
		next.last = lo - 1
		s.cache.DeleteFrom(lo)
	}
	s.publish(next)
	err := s.update(op, func(tx *bbolt.Tx) error {
		if all {
			// raft deletes the whole log after installing a snapshot:
			// dropping the buckets frees their pages at once, where
			// deleting key by key rewrites every page of the tree.
			for _, name := range [][]byte{layout.LogBucket, layout.ConfigIndexBucket} {
				if err := recreateBucket(tx, name); err != nil {
					return err
				}
			}
			return nil
		}
		b, err := layout.LogStore.Buckets(tx)
		if err != nil {
			return err
		}
		for i := lo; i <= hi; i++ {
			key := codec.Key(i)
			if err := b.Log.Delete(key[:]); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
		}
		return deleteKeys(b.ConfigIndex, lo, hi)
	})
	if err != nil {
		s.publish(st) // nothing was deleted
		return err
	}
	if lo > first {
		s.compaction.Load().mark(lo)
	}
	metrics.MeasureSince(metricDeleteRange, start)
	metrics.AddSample(metricDeleteRangeEntries, float32(hi-lo+1))
	s.logger.Debug("deleted log range", "min", lo, "max", hi, "first_index", next.first, "last_index", next.last)
	return nil
}

// recreateBucket replaces bucket name of tx with an empty one.
func recreateBucket(tx *bbolt.Tx, name []byte) error {
	if _, err := layout.LogStore.Bucket(tx, name); err != nil {
		return err
	}
	if err := tx.DeleteBucket(name); err != nil {
		return fmt.Errorf("delete bucket %q: %w", name, err)
	}
	if _, err := tx.CreateBucket(name); err != nil {
		return fmt.Errorf("create bucket %q: %w", name, err)
	}
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
	defer s.runlock()
	st := s.loadState()
	c := min(st.commit, st.last)
	if c == 0 {
		return 0, nil
	}
	err := s.view("get commit index", func(tx *bbolt.Tx) error {
		b, err := layout.LogStore.Buckets(tx)
		if err != nil {
			return err
		}
		snapIndex, err := layout.LogStore.Uint64(b.Meta, layout.KeySnapshotIndex)
		if err != nil {
			return err
		}
		covered, err := layout.LogStore.Uint64(b.Meta, layout.KeySnapshotConfig)
		if err != nil {
			return err
		}
		if limit := s.opts.RestoreReplayLimit; limit > 0 && c > snapIndex+uint64(limit) {
			s.logger.Debug("commit index capped to bound raft's start-up replay",
				"commit_index", c, "snapshot_index", snapIndex, "limit", limit)
			c = snapIndex + uint64(limit)
		}
		if cfg := newestAtOrBelow(b.ConfigIndex, c); cfg > covered {
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
