package raftbolt

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/raftbolt/raftbolt/internal/boltfile"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// compactSuffix names the file Compact builds next to the store. Only a
// process holding the store's lock writes it, so Open (holding the lock)
// removes one left by a crash.
const compactSuffix = ".compact"

// compactChunk bounds the bytes copied per transaction while writers run,
// so neither file holds a long transaction and memory stays bounded.
const compactChunk = 16 << 20

// compaction records what writers change in the file while Compact copies
// the log without holding writeMu: StoreLogs and DeleteRange, and the
// journal's checkpoints, which write without writeMu. A nil *compaction (no
// compaction running) ignores the calls. Compact reads it holding writeMu
// and ckptMu, when nobody marks it.
type compaction struct {
	// dirtyFrom is the lowest index written or deleted at the tail since the
	// copy began: copied entries from it on may be stale. Head truncations
	// need no record; the final pass drops whatever lies below the first index.
	dirtyFrom atomic.Uint64
}

// mark records that the file changed from index i on.
func (c *compaction) mark(i uint64) {
	if c == nil {
		return
	}
	for {
		cur := c.dirtyFrom.Load()
		if i >= cur || c.dirtyFrom.CompareAndSwap(cur, i) {
			return
		}
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
// the new file is synced and renamed over the old one (keeping its
// permission bits), and the directory synced. A crash at any point leaves
// either the old file, complete, or the new one, complete; a leftover
// partial copy (path + ".compact") is removed by the next Open. Another
// Open waiting for the store's lock meanwhile opens the new file, never
// the replaced one. A Backup or Check in progress goes on reading the
// replaced file, which is released when it ends.
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
	start := time.Now()
	sizeBefore := fileSize(s.path)
	tmp := s.path + compactSuffix
	_ = os.Remove(tmp)

	s.writeMu.Lock()
	if s.closed.Load() {
		s.writeMu.Unlock()
		return ErrClosed
	}
	if err := s.file.Broken(); err != nil {
		s.writeMu.Unlock()
		return wrapOp(op, s.path, err)
	}
	c := &compaction{}
	c.dirtyFrom.Store(^uint64(0))
	s.compaction.Store(c)
	s.writeMu.Unlock()

	o := s.opts
	o.NoSync = true // synced once, before the rename
	o.VerifyOnOpen = false
	nf, err := boltfile.Create(tmp, fileOptions(&o, s.logger, layout.LogStore.Create))
	if err != nil {
		s.endCompaction()
		return opError(op, s.path, fmt.Errorf("create %s: %w", tmp, err))
	}
	discard := func(err error) error {
		nf.Retire()
		_ = nf.Close()
		_ = os.Remove(tmp)
		return opError(op, s.path, err)
	}
	if err := s.copyLog(nf); err != nil {
		s.endCompaction()
		return discard(err)
	}

	// Writers and checkpoints wait from here on, until the new file is
	// in place.
	s.writeMu.Lock()
	s.ckptMu.Lock()
	pauseStart := time.Now()
	old, err := s.swapFile(nf)
	s.compaction.Store(nil)
	pause := time.Since(pauseStart)
	s.ckptMu.Unlock()
	s.writeMu.Unlock()
	if err != nil {
		return discard(err)
	}
	// Released once writers run again (or, with a Backup still reading
	// it, when that ends): the last close of the replaced file frees all
	// of its blocks, which takes tens of milliseconds for a few hundred
	// MB, so it is done a slice at a time.
	if err := old.Close(); err != nil {
		s.logger.Warn("closing the replaced file failed", "error", err)
	}

	st := CompactStats{At: time.Now(), Duration: time.Since(start), Pause: pause, SizeBefore: sizeBefore, SizeAfter: fileSize(s.path)}
	s.lastCompact.Store(&st)
	metrics.MeasureSince(metricCompact, start)
	metrics.AddSample(metricCompactPause, float32(pause)/float32(time.Millisecond))
	s.logger.Info("compacted store", "size_before", st.SizeBefore, "size_after", st.SizeAfter,
		"duration", st.Duration, "writer_pause", pause)
	return nil
}

// swapFile brings nf up to date with the store, syncs it, puts it in
// place of the store's file and returns the replaced file, retired and
// still open. The caller holds writeMu.
func (s *Store) swapFile(nf *boltfile.File) (*boltfile.File, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	err := s.finishCopy(nf)
	s.runlock()
	if err != nil {
		return nil, err
	}
	nf.SetNoSync(s.opts.NoSync)
	// Synced before readers are held up: MoveTo syncs it again, which
	// then costs nothing.
	if err := nf.DB().Sync(); err != nil {
		return nil, err
	}

	// Readers wait too, only for the rename.
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if err := nf.MoveTo(s.path); err != nil {
		return nil, err
	}
	old := s.file
	old.Retire()
	s.reader.close()
	s.file = nf
	s.pageSize = nf.PageSize() // nf is not in use yet
	s.reader.reset(nf)
	return old, nil
}

func (s *Store) endCompaction() {
	s.writeMu.Lock()
	s.compaction.Store(nil)
	s.writeMu.Unlock()
}

// copyLog copies the log into ndb in chunks, each in a read transaction of
// its own, while writers go on.
func (s *Store) copyLog(nf *boltfile.File) error {
	var next []byte // first key of the next chunk; nil: the log's first
	for {
		if err := s.rlock(); err != nil {
			return err
		}
		var more bool
		err := s.view("compact", func(tx *bbolt.Tx) error {
			b, err := layout.LogStore.Buckets(tx)
			if err != nil {
				return err
			}
			return nf.Update(func(ntx *bbolt.Tx) error {
				nb, err := layout.LogStore.Buckets(ntx)
				if err != nil {
					return err
				}
				c := b.Log.Cursor()
				k, v := c.First()
				if next != nil {
					k, v = c.Seek(next)
				}
				for n := 0; k != nil && n < compactChunk; k, v = c.Next() {
					if err := nb.Log.Put(k, v); err != nil {
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
		s.runlock()
		if err != nil || !more {
			return err
		}
	}
}

// finishCopy brings nf up to date with the store, holding writeMu: it
// drops copied entries that were truncated or overwritten since, copies the
// entries written since, and replaces the small buckets wholesale. It
// seeks to what changed rather than walking the copy, so writers wait for
// the changes made during the copy, not for the size of the log.
func (s *Store) finishCopy(nf *boltfile.File) error {
	st := s.loadState()
	first, last := st.first, st.last
	dirty := s.compaction.Load().dirtyFrom.Load()
	return s.view("compact", func(tx *bbolt.Tx) error {
		ob, err := layout.LogStore.Buckets(tx)
		if err != nil {
			return err
		}
		return nf.Update(func(ntx *bbolt.Tx) error {
			nb, err := layout.LogStore.Buckets(ntx)
			if err != nil {
				return err
			}
			if last == 0 {
				if err := recreateBucket(ntx, layout.LogBucket); err != nil {
					return err
				}
			} else {
				// Keep the copied entries in [first, min(last, dirty-1)].
				if err := deleteBelow(nb.Log, first); err != nil {
					return err
				}
				if err := deleteFrom(nb.Log, min(last, dirty-1)+1); err != nil {
					return err
				}
				from := first
				if k, _ := nb.Log.Cursor().Last(); k != nil {
					i, _ := codec.Uint64(k)
					from = i + 1
				}
				key := codec.Key(from)
				c := ob.Log.Cursor()
				for k, v := c.Seek(key[:]); k != nil; k, v = c.Next() {
					if err := nb.Log.Put(k, v); err != nil {
						return err
					}
				}
			}
			for _, name := range [][]byte{layout.MetaBucket, layout.StableBucket, layout.ConfigBucket, layout.ConfigIndexBucket} {
				if err := replaceBucket(ntx, tx.Bucket(name), name); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// deleteBelow deletes the keys of b below index i.
func deleteBelow(b *bbolt.Bucket, i uint64) error {
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.First() {
		if n, ok := codec.Uint64(k); ok && n >= i {
			return nil
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// deleteFrom deletes the keys of b from index i on.
func deleteFrom(b *bbolt.Bucket, i uint64) error {
	key := codec.Key(i)
	c := b.Cursor()
	for k, _ := c.Seek(key[:]); k != nil; k, _ = c.Seek(key[:]) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
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
