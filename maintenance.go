package raftbolt

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/raftbolt/raftbolt/internal/boltfile"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// Check reads the whole store in one read transaction and verifies it:
// every entry's checksum and decoding, that each entry holds the index it
// is stored under, that the log has no holes, that every configuration
// entry is indexed (and nothing else is), and the checksums of the stable
// values and of the format, integer and configuration records. The error wraps ErrCorrupt and names
// the first bad index or record. Writers are not blocked; Check sees the
// store as of its start.
func (s *Store) Check() error {
	if err := s.checkPending(); err != nil {
		return wrapOp("check", s.path, err)
	}
	f, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release(f)
	return wrapOp("check", s.path, f.View(func(tx *bbolt.Tx) error {
		if _, err := inspectStore(tx); err != nil {
			return err
		}
		b, err := layout.LogStore.Buckets(tx)
		if err != nil {
			return err
		}
		if err := checkLog(b); err != nil {
			return err
		}
		for _, key := range [][]byte{layout.KeyCommit, layout.KeySnapshotIndex, layout.KeySnapshotConfig} {
			if _, err := layout.LogStore.Uint64(b.Meta, key); err != nil {
				return err
			}
		}
		if err := b.Stable.ForEach(func(k, v []byte) error {
			if _, err := codec.DecodeValue(k, v); err != nil {
				return corruptf("stable key %q: %v", k, err)
			}
			return nil
		}); err != nil {
			return err
		}
		if rec := b.Config.Get(layout.KeyLatest); rec != nil {
			if _, _, err := codec.DecodeConfiguration(rec); err != nil {
				return corruptf("configuration record: %v", err)
			}
		}
		return nil
	}))
}

// acquire takes a reference to the current file for a long reader, which
// then runs without holding dbMu: Compact's swap never waits for it, and
// the replaced file stays open until release.
func (s *Store) acquire() (*boltfile.File, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.runlock()
	s.file.Acquire()
	return s.file, nil
}

// release drops a reference acquire took.
func (s *Store) release(f *boltfile.File) {
	if err := f.Release(); err != nil {
		s.logger.Warn("closing a replaced or closed file failed", "error", err)
	}
}

func checkLog(b layout.LogBuckets) error {
	var prev uint64
	c := b.Log.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		index, ok := codec.Uint64(k)
		if !ok {
			return corruptf("log key %x (after index %d) is not an 8-byte index", k, prev)
		}
		if prev != 0 && index != prev+1 {
			return corruptf("entry %d: missing (the log jumps from %d to %d)", prev+1, prev, index)
		}
		got, typ, err := codec.CheckEntry(v)
		if err != nil {
			return corruptf("entry %d: %v", index, err)
		}
		if got != index {
			return corruptf("entry %d: record holds index %d", index, got)
		}
		if isConfigEntry(typ) && b.ConfigIndex.Get(k) == nil {
			return corruptf("entry %d: configuration entry missing from bucket %q", index, layout.ConfigIndexBucket)
		}
		prev = index
	}
	c = b.ConfigIndex.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		index, ok := codec.Uint64(k)
		if !ok {
			return corruptf("bucket %q: key %x is not an 8-byte index", layout.ConfigIndexBucket, k)
		}
		v := b.Log.Get(k)
		if v == nil {
			return corruptf("bucket %q lists entry %d, which is not in the log", layout.ConfigIndexBucket, index)
		}
		if _, typ, err := codec.CheckEntry(v); err == nil && !isConfigEntry(typ) {
			return corruptf("bucket %q lists entry %d, which is a %v entry", layout.ConfigIndexBucket, index, typ)
		}
	}
	return nil
}

// Backup writes a consistent copy of the store to w while the store stays
// in use: one read transaction, so writers are not blocked (the file may
// grow meanwhile, since pages freed during the copy are reused only after
// it). One exception: a write that outgrows bbolt's memory map waits for
// the copy to finish, since bbolt remaps only without readers. If backups
// are slow (streamed over a network) and the log still grows, set
// Options.InitialMmapSize above the file's size to rule that out. A
// Compact meanwhile does not wait for the copy: the copy goes on from the
// replaced file, which is released when it ends. The copy is itself a
// store file: Open it, or put it in place of the original while no
// process uses that. It returns the bytes written.
//
// The journal's pending batches are checkpointed into the file first, so
// the copy holds every entry; a read-only handle, which cannot write the
// file, builds the copy in the system's temp directory instead.
func (s *Store) Backup(w io.Writer) (int64, error) {
	if w == nil {
		return 0, opError("backup", s.path, invalidf("nil writer"))
	}
	// The copy is of the file: what the journal holds goes into it first.
	if s.opts.ReadOnly {
		if n, _ := s.pending.len(); n > 0 {
			return s.backupWithPending(w)
		}
	}
	if err := s.checkpointNow(); err != nil {
		return 0, err
	}
	return s.copyFile(w)
}

// copyFile writes a copy of the store's file to w in one read transaction.
func (s *Store) copyFile(w io.Writer) (int64, error) {
	f, err := s.acquire()
	if err != nil {
		return 0, err
	}
	defer s.release(f)
	var n int64
	err = f.View(func(tx *bbolt.Tx) (err error) {
		n, err = tx.WriteTo(w)
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", n, err)
		}
		return nil
	})
	return n, wrapOp("backup", s.path, err)
}

// backupWithPending is Backup for a read-only handle that replayed
// journaled batches (a store a crash left with a journal): it cannot
// checkpoint them into the file, so it copies the file into a temporary
// store (in the system's temp directory: the store's own may not be
// writable), writes the batches there in one transaction, and copies that.
// The store's own files are never written.
func (s *Store) backupWithPending(w io.Writer) (int64, error) {
	dir, err := os.MkdirTemp("", "raftbolt-backup-")
	if err != nil {
		return 0, opError("backup", s.path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "raft.db")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return 0, opError("backup", s.path, err)
	}
	_, err = s.copyFile(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	t, err := Open(tmp, &Options{NoSync: true, NoJournal: true, CacheSize: -1, MetricsInterval: -1,
		AutoCompactFree: -1, Logger: s.logger.Named("backup")})
	if err != nil {
		return 0, opError("backup", s.path, fmt.Errorf("the copy of the file: %w", err))
	}
	batches := s.pending.front(-1)
	err = t.update("backup", func(tx *bbolt.Tx) error {
		_, err := putBatches(tx, batches)
		return err
	})
	var n int64
	if err == nil {
		n, err = t.copyFile(w)
	}
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, opError("backup", s.path, err)
	}
	return n, nil
}

// Stats describes a store at one moment.
type Stats struct {
	// FormatVersion is the version of the store's on-disk format, from
	// its format record.
	FormatVersion uint32
	FirstIndex    uint64 // 0 when the log is empty
	LastIndex     uint64
	CommitIndex   uint64 // as persisted, before GetCommitIndex's cap
	FileSize      int64  // bytes
	// FreeBytes is the space inside the file that bbolt will reuse and
	// Compact would give back.
	FreeBytes    int64
	PageSize     int
	CacheEntries int // entries in the cache, and their encoded bytes
	CacheBytes   int
	// JournalSize is the size of the journal file next to the store, 0
	// without one (Options.NoJournal); JournalBatches and JournalBytes
	// are the batches it holds that are not checkpointed into the file
	// yet, and their encoded bytes.
	JournalSize    int64
	JournalBatches int
	JournalBytes   int
	// LastCompaction describes this handle's last Compact, nil if none.
	LastCompaction *CompactStats
}

// Stats returns the store's statistics. On a read-only handle FreeBytes
// costs a walk over every page (bbolt loads no freelist for such handles);
// otherwise Stats is cheap.
func (s *Store) Stats() (Stats, error) {
	if err := s.rlock(); err != nil {
		return Stats{}, err
	}
	defer s.runlock()
	ls := s.loadState()
	st := Stats{
		FormatVersion:  s.format,
		FirstIndex:     ls.first,
		LastIndex:      ls.last,
		CommitIndex:    ls.commit,
		FileSize:       fileSize(s.path),
		PageSize:       s.pageSize,
		LastCompaction: s.lastCompact.Load(),
	}
	st.CacheEntries, st.CacheBytes = s.cache.Len()
	st.JournalBatches, st.JournalBytes = s.pending.len()
	if fi, err := os.Stat(s.path + journalSuffix); err == nil {
		st.JournalSize = fi.Size()
	}
	if !s.opts.ReadOnly {
		bs := s.file.DB().Stats()
		st.FreeBytes = int64(bs.FreePageN+bs.PendingPageN) * int64(st.PageSize)
		return st, nil
	}
	err := s.view("stats", func(tx *bbolt.Tx) error {
		st.FreeBytes = boltfile.FreeBytes(tx)
		return nil
	})
	return st, err
}

// checkPending verifies the journaled batches not yet checkpointed: every
// record's checksum and index, and that they follow each other.
func (s *Store) checkPending() error {
	var prev uint64
	for _, b := range s.pending.front(-1) {
		if prev != 0 && b.first != prev+1 {
			return corruptf("journal: a batch starts at index %d after index %d", b.first, prev)
		}
		for k, r := range b.recs {
			index, _, err := codec.CheckEntry(r)
			if err != nil {
				return corruptf("journal: entry %d: %v", b.first+uint64(k), err)
			}
			if index != b.first+uint64(k) {
				return corruptf("journal: entry %d: record holds index %d", b.first+uint64(k), index)
			}
		}
		prev = b.last
	}
	return nil
}
