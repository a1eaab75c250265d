package raftbolt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/raftbolt/raftbolt/internal/codec"
	"go.etcd.io/bbolt"
)

// compactSuffix names the file Compact builds next to the store. Only a
// process holding the store's lock writes it, so Open (holding the lock)
// removes one left by a crash.
const compactSuffix = ".compact"

// compactChunk bounds the bytes copied per transaction while writers run,
// so neither file holds a long transaction and memory stays bounded.
const compactChunk = 16 << 20

// compaction records what writers change while Compact copies the log
// without holding writeMu. Guarded by writeMu; a nil *compaction (no
// compaction running) ignores the calls.
type compaction struct {
	// dirtyFrom is the lowest index written or deleted at the tail since the
	// copy began: copied entries from it on may be stale. Head truncations
	// need no record; the final pass drops whatever lies below the first index.
	dirtyFrom uint64
}

func (c *compaction) logsStored(first uint64) {
	if c != nil {
		c.dirtyFrom = min(c.dirtyFrom, first)
	}
}

func (c *compaction) tailDeleted(from uint64) {
	if c != nil {
		c.dirtyFrom = min(c.dirtyFrom, from)
	}
}

// CompactStats describes the last Compact.
type CompactStats struct {
	At         time.Time     // when it finished
	Duration   time.Duration // the whole compaction
	Pause      time.Duration // how long writers were blocked
	SizeBefore int64         // file size before, bytes
	SizeAfter  int64         // file size after, bytes
}

// Compact rewrites the store into a new file holding only its live data
// and puts it in place of the old one, reclaiming the space that log
// truncation freed (bbolt reuses free pages but never shrinks its file).
//
// The store stays open and in use. The log is copied while writers go on;
// then writers are blocked while the changes made meanwhile are copied and
// the new file is synced and renamed over the old one. A crash at any point
// leaves either the old file, complete, or the new one, complete: the new
// file is synced before the rename, and a leftover partial copy (path +
// ".compact") is removed by the next Open.
func (s *Store) Compact() error {
	const op = "compact"
	if s.opts.ReadOnly {
		if s.closed.Load() {
			return ErrClosed
		}
		return ErrReadOnly
	}
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if p := s.broken.Load(); p != nil {
		return *p
	}
	start := time.Now()
	sizeBefore := fileSize(s.path)
	tmp := s.path + compactSuffix
	_ = os.Remove(tmp)

	s.writeMu.Lock()
	if s.closed.Load() {
		s.writeMu.Unlock()
		return ErrClosed
	}
	s.compaction = &compaction{dirtyFrom: ^uint64(0)}
	s.writeMu.Unlock()

	o := s.opts
	o.NoSync = true // synced once, before the rename
	o.VerifyOnOpen = false
	ndb, err := openBolt(tmp, &o, s.logger)
	if err != nil {
		s.endCompaction()
		return opError(op, s.path, fmt.Errorf("create %s: %w", tmp, err))
	}
	discard := func(err error) error {
		s.endCompaction()
		_ = ndb.Close()
		_ = os.Remove(tmp)
		return opError(op, s.path, err)
	}
	if err := ndb.Update(createLayout); err != nil {
		return discard(err)
	}
	if err := s.copyLog(ndb); err != nil {
		return discard(err)
	}

	// Writers wait from here on, until the new file is in place.
	s.writeMu.Lock()
	pauseStart := time.Now()
	old, victim, err := s.swapFile(ndb, tmp)
	s.compaction = nil
	pause := time.Since(pauseStart)
	s.writeMu.Unlock()
	if err != nil {
		_ = ndb.Close()
		_ = os.Remove(tmp)
		return opError(op, s.path, err)
	}
	// Closed once writers run again: closing the last descriptor of the
	// renamed-over file makes the file system free all of its blocks,
	// which takes tens of milliseconds for a file of a few hundred MB.
	if err := old.Close(); err != nil {
		s.logger.Warn("closing the replaced file failed", "error", err)
	}
	releaseGradually(victim)

	st := CompactStats{At: time.Now(), Duration: time.Since(start), Pause: pause, SizeBefore: sizeBefore, SizeAfter: fileSize(s.path)}
	s.lastCompact.Store(&st)
	metrics.MeasureSince(metricCompact, start)
	metrics.AddSample(metricCompactPause, float32(pause)/float32(time.Millisecond))
	s.logger.Info("compacted store", "size_before", st.SizeBefore, "size_after", st.SizeAfter,
		"duration", st.Duration, "writer_pause", pause)
	return nil
}

// swapFile brings ndb up to date with the store, syncs it and renames it
// over the store's file, and returns the replaced *bbolt.DB, still open.
// The caller holds writeMu.
func (s *Store) swapFile(ndb *bbolt.DB, tmp string) (*bbolt.DB, *os.File, error) {
	if err := s.rlock(); err != nil {
		return nil, nil, err
	}
	err := s.finishCopy(ndb)
	if err == nil {
		ndb.NoSync = s.opts.NoSync
		if !s.opts.NoSync {
			err = ndb.Sync()
		}
	}
	s.dbMu.RUnlock()
	if err != nil {
		return nil, nil, err
	}
	// A second descriptor of the old file, so that its blocks are freed by
	// releaseGradually rather than all at once by the last close.
	victim, _ := os.OpenFile(s.path, os.O_WRONLY, 0)

	// Readers wait too, only for the swap.
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if err := os.Rename(tmp, s.path); err != nil {
		if victim != nil {
			_ = victim.Close()
		}
		return nil, nil, err
	}
	syncDir(filepath.Dir(s.path), s.logger)
	old := s.db
	s.reader.close()
	s.db = ndb
	s.pageSize = ndb.Info().PageSize // ndb is not in use yet
	s.reader.reset(ndb)
	return old, victim, nil
}

// releaseGradually frees the blocks of a replaced (unlinked) file a slice at
// a time. Freeing a few hundred MB in one go (the last close of the file)
// holds the file system's journal for tens of milliseconds, delaying every
// writer's fsync meanwhile.
func releaseGradually(f *os.File) {
	if f == nil {
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return
	}
	const step = 16 << 20
	for size := fi.Size(); size > 0; {
		size = max(size-step, 0)
		if f.Truncate(size) != nil {
			return
		}
	}
}

func (s *Store) endCompaction() {
	s.writeMu.Lock()
	s.compaction = nil
	s.writeMu.Unlock()
}

// copyLog copies the log into ndb in chunks, each in a read transaction of
// its own, while writers go on.
func (s *Store) copyLog(ndb *bbolt.DB) error {
	var next []byte // first key of the next chunk; nil: the log's first
	for {
		if err := s.rlock(); err != nil {
			return err
		}
		var more bool
		err := s.view("compact", func(tx *bbolt.Tx) error {
			b, err := openBuckets(tx)
			if err != nil {
				return err
			}
			return ndb.Update(func(ntx *bbolt.Tx) error {
				nb, err := openBuckets(ntx)
				if err != nil {
					return err
				}
				c := b.log.Cursor()
				k, v := c.First()
				if next != nil {
					k, v = c.Seek(next)
				}
				for n := 0; k != nil && n < compactChunk; k, v = c.Next() {
					if err := nb.log.Put(k, v); err != nil {
						return err
					}
					n += len(k) + len(v)
				}
				if more = k != nil; more {
					next = append(next[:0], k...)
				}
				return nil
			})
		})
		s.dbMu.RUnlock()
		if err != nil || !more {
			return err
		}
	}
}

// finishCopy brings ndb up to date with the store, holding writeMu: it
// drops copied entries that were truncated or overwritten since, copies the
// entries written since, and replaces the small buckets wholesale.
func (s *Store) finishCopy(ndb *bbolt.DB) error {
	first, last := s.first.Load(), s.last.Load()
	dirty := s.compaction.dirtyFrom
	return s.view("compact", func(tx *bbolt.Tx) error {
		ob, err := openBuckets(tx)
		if err != nil {
			return err
		}
		return ndb.Update(func(ntx *bbolt.Tx) error {
			nb, err := openBuckets(ntx)
			if err != nil {
				return err
			}
			// Keep the copied entries in [first, min(last, dirty-1)].
			keepTo := min(last, dirty-1)
			var stale [][]byte
			c := nb.log.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if i, ok := codec.Uint64(k); !ok || i < first || i > keepTo || last == 0 {
					stale = append(stale, k)
				}
			}
			for _, k := range stale {
				if err := nb.log.Delete(k); err != nil {
					return err
				}
			}
			from := first
			if k, _ := nb.log.Cursor().Last(); k != nil {
				i, _ := codec.Uint64(k)
				from = i + 1
			}
			if last != 0 {
				key := codec.Key(from)
				c := ob.log.Cursor()
				for k, v := c.Seek(key[:]); k != nil; k, v = c.Next() {
					if err := nb.log.Put(k, v); err != nil {
						return err
					}
				}
			}
			for _, name := range [][]byte{bucketMeta, bucketStable, bucketConfig, bucketConfigIndex} {
				if err := replaceBucket(ntx, tx.Bucket(name), name); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// replaceBucket replaces bucket name of ntx with a copy of src.
func replaceBucket(ntx *bbolt.Tx, src *bbolt.Bucket, name []byte) error {
	if err := ntx.DeleteBucket(name); err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
		return err
	}
	dst, err := ntx.CreateBucket(name)
	if err != nil {
		return err
	}
	dst.FillPercent = 1.0
	return src.ForEach(func(k, v []byte) error { return dst.Put(k, v) })
}

// removeStaleCompaction removes the partial copy a crashed Compact left.
// The caller holds the store's lock, so no Compact is running.
func removeStaleCompaction(path string, logger hclog.Logger) {
	tmp := path + compactSuffix
	if err := os.Remove(tmp); err == nil {
		logger.Warn("removed the partial copy of an interrupted compaction", "file", tmp)
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// syncDir fsyncs a directory so that a rename in it is durable.
func syncDir(dir string, logger hclog.Logger) {
	d, err := os.Open(dir)
	if err == nil {
		err = d.Sync()
		_ = d.Close()
	}
	if err != nil {
		logger.Warn("could not sync the directory after a rename", "dir", dir, "error", err)
	}
}
