package raftbolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/raftbolt/raftbolt/internal/boltfile"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/journal"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// This file holds the Store's journal (on unless Options.NoJournal;
// internal/journal):
// StoreLogs appends a batch as one frame with one fdatasync; the batch is
// then pending, served from memory, until a checkpoint writes the pending
// batches into the bbolt file in one transaction, together with the
// journal position they end at (layout.KeyJournal). The bbolt file stays
// the store of record: everything checkpointed lives only there.
//
// Ordering. A frame is durable before StoreLogs returns, so anything
// acknowledged after it (Set, StoreConfiguration) can never survive a
// crash without it. What must not be reordered at replay is a DeleteRange
// after pending appends: DeleteRange, and every write of log entries that
// does not go through the journal, checkpoint the pending batches first,
// holding writeMu, so the journal only ever holds appends made after the
// file's last removal. Replay at Open applies exactly the frames after
// the checkpoint's position, in order, each once (internal/journal's chain
// of sequence numbers and checksums).

// journalSuffix names the journal file next to the store.
const journalSuffix = layout.JournalSuffix

// frameBatch is the kind of the journal's frames: one StoreLogs batch.
//
// Payload (big-endian): first index (8), commit index (8), entry count
// (4), then per entry its record's length (4) and the record
// (internal/codec), as the log bucket holds it.
const frameBatch byte = 1

// jbatch is one journaled batch not yet checkpointed.
type jbatch struct {
	first, last uint64
	commit      uint64 // the commit index the batch persisted
	mem         []byte // the records' buffer (from the cache, which gets it back at checkpoint)
	recs        [][]byte
	end         journal.Position // the journal position after its frame
	size        int
}

// pendingLog holds the journaled batches not yet checkpointed, oldest
// first, contiguous. StoreLogs appends under writeMu; a checkpoint drops
// from the front under ckptMu; readers look up under mu.
type pendingLog struct {
	mu      sync.RWMutex
	batches []*jbatch
	bytes   int
}

// get calls fn with the record of index i if a pending batch holds it.
func (p *pendingLog) get(i uint64, fn func(rec []byte) error) (bool, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	n := len(p.batches)
	if n == 0 || i < p.batches[0].first || i > p.batches[n-1].last {
		return false, nil
	}
	k := sort.Search(n, func(k int) bool { return p.batches[k].last >= i })
	b := p.batches[k]
	return true, fn(b.recs[i-b.first])
}

func (p *pendingLog) add(b *jbatch) {
	p.mu.Lock()
	p.batches = append(p.batches, b)
	p.bytes += b.size
	p.mu.Unlock()
}

// front returns the oldest pending batches, as many as fit in max bytes
// but at least one (all of them for a negative max).
func (p *pendingLog) front(max int) []*jbatch {
	p.mu.RLock()
	defer p.mu.RUnlock()
	n, bytes := 0, 0
	for n < len(p.batches) && (max < 0 || n == 0 || bytes+p.batches[n].size <= max) {
		bytes += p.batches[n].size
		n++
	}
	return append([]*jbatch(nil), p.batches[:n]...)
}

// drop removes the n oldest batches.
func (p *pendingLog) drop(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.batches[:n] {
		p.bytes -= b.size
	}
	p.batches = append(p.batches[:0], p.batches[n:]...)
}

// len returns the number of pending batches and their encoded bytes.
func (p *pendingLog) len() (int, int) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.batches), p.bytes
}

// encodeFrame returns the payload of a batch's frame, in buf's memory.
func encodeFrame(buf []byte, first, commit uint64, recs [][]byte) []byte {
	buf = binary.BigEndian.AppendUint64(buf[:0], first)
	buf = binary.BigEndian.AppendUint64(buf, commit)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(recs)))
	for _, r := range recs {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(r)))
		buf = append(buf, r...)
	}
	return buf
}

// decodeFrame turns a frame read back from the journal into a batch; its
// records point into the payload.
func decodeFrame(f journal.Frame) (*jbatch, error) {
	p := f.Payload
	if f.Kind != frameBatch || len(p) < 20 {
		return nil, fmt.Errorf("frame %d: kind %d, %d bytes", f.Seq, f.Kind, len(p))
	}
	b := &jbatch{first: binary.BigEndian.Uint64(p), commit: binary.BigEndian.Uint64(p[8:]), mem: p, end: f.End, size: len(p)}
	n := int(binary.BigEndian.Uint32(p[16:]))
	p = p[20:]
	for k := 0; k < n; k++ {
		if len(p) < 4 || int(binary.BigEndian.Uint32(p)) > len(p)-4 {
			return nil, fmt.Errorf("frame %d: entry %d overruns the frame", f.Seq, k)
		}
		l := int(binary.BigEndian.Uint32(p))
		rec := p[4 : 4+l : 4+l]
		index, _, err := codec.CheckEntry(rec)
		if err != nil {
			return nil, fmt.Errorf("frame %d: entry %d: %v", f.Seq, b.first+uint64(k), err)
		}
		if index != b.first+uint64(k) {
			return nil, fmt.Errorf("frame %d: record %d holds index %d, not %d", f.Seq, k, index, b.first+uint64(k))
		}
		b.recs = append(b.recs, rec)
		p = p[4+l:]
	}
	if n == 0 || len(p) != 0 {
		return nil, fmt.Errorf("frame %d: %d entries, %d bytes left over", f.Seq, n, len(p))
	}
	b.last = b.first + uint64(n) - 1
	return b, nil
}

// openJournal replays the journal a previous run left, if any, and opens
// it for appends unless Options.NoJournal is set. It runs in Open, after the
// file's state is loaded and before the store is in use.
func (s *Store) openJournal() error {
	jpath := s.path + journalSuffix
	var rec journal.Record
	err := s.view("open journal", func(tx *bbolt.Tx) error {
		meta, err := layout.LogStore.Bucket(tx, layout.MetaBucket)
		if err != nil {
			return err
		}
		rec, _, err = layout.LogStore.JournalRecord(meta)
		return err
	})
	if err != nil {
		return err
	}
	_, serr := os.Stat(jpath)
	exists := serr == nil
	if serr != nil && !errors.Is(serr, fs.ErrNotExist) {
		return opError("open journal", jpath, serr)
	}
	if exists && rec.ID == 0 {
		// Created by a run that crashed before it recorded the journal in
		// the file: nothing was appended to it.
		if s.opts.ReadOnly {
			exists = false
		} else {
			if err := boltfile.Remove(jpath); err != nil {
				return opError("open journal", jpath, err)
			}
			s.logger.Warn("removed a journal never put in use", "journal", jpath)
			exists = false
		}
	}
	var j *journal.Journal
	if exists {
		var frames []journal.Frame
		j, frames, err = journal.Open(jpath, rec.ID, rec.Pos, s.opts.ReadOnly, s.opts.NoSync)
		if err != nil {
			return opError("open journal", s.path, err) // err names the journal
		}
		if err := s.replay(frames); err != nil {
			_ = j.Close()
			return opError("open journal", jpath, err)
		}
		if len(frames) > 0 {
			s.logger.Info("replayed the journal", "frames", len(frames), "last_index", s.loadState().last)
		}
		if s.opts.ReadOnly {
			// The pending batches stay in memory; nothing is written.
			return j.Close()
		}
		if !s.opts.NoJournal {
			// They stay pending, for the background checkpoint: Open
			// costs a read of the journal, not a write of it.
			s.useJournal(j)
			if len(frames) > 0 {
				s.checkpoints.poke()
			}
			return nil
		}
		s.ckptMu.Lock()
		s.journal = j // for checkpoint's Checkpointed
		s.ckpt = newCheckpointSizes(j.Size())
		err = s.checkpointAll()
		s.ckptMu.Unlock()
		if err != nil {
			s.journal = nil
			_ = j.Close()
			return err
		}
	}
	if s.opts.ReadOnly {
		return nil
	}
	if s.opts.NoJournal {
		if j != nil {
			// Everything is checkpointed: the store opens without it.
			s.journal = nil
			_ = j.Close()
			if err := boltfile.Remove(jpath); err != nil {
				return opError("open journal", jpath, err)
			}
		}
		return nil
	}
	if j == nil {
		// A new journal: created durably, then recorded in the file,
		// before anything is appended to it.
		id, err := journal.Create(jpath, s.opts.JournalSize)
		if err != nil {
			// A full disk, say: the store works without one (each
			// StoreLogs commits to the file), and the next Open tries
			// again.
			s.logger.Error("cannot create the journal; appending to the file directly", "journal", jpath, "error", err)
			return nil
		}
		start := journal.Record{ID: id, Pos: journal.Start}
		err = s.update("open journal", func(tx *bbolt.Tx) error {
			meta, err := layout.LogStore.Bucket(tx, layout.MetaBucket)
			if err != nil {
				return err
			}
			return layout.LogStore.PutJournalRecord(meta, start)
		})
		if err == nil {
			j, _, err = journal.Open(jpath, id, journal.Start, false, s.opts.NoSync)
		}
		if err != nil {
			return opError("open journal", jpath, err)
		}
	}
	s.useJournal(j)
	return nil
}

// useJournal makes j the journal StoreLogs appends to, with checkpoint
// bounds for its size, and starts the background checkpoints.
func (s *Store) useJournal(j *journal.Journal) {
	s.journal = j
	s.ckpt = newCheckpointSizes(j.Size())
	s.startCheckpointer()
}

// replay makes the batches of frames pending, checking that they continue
// the log, and publishes the state they leave.
func (s *Store) replay(frames []journal.Frame) error {
	st := s.loadState()
	for _, f := range frames {
		b, err := decodeFrame(f)
		if err != nil {
			return corruptf("%v", err)
		}
		if st.last != 0 && b.first != st.last+1 {
			return corruptf("journal frame %d starts at index %d, but the log ends at %d", f.Seq, b.first, st.last)
		}
		s.pending.add(b)
		if st.first == 0 {
			st.first = b.first
		}
		st.last, st.commit = b.last, b.commit
	}
	s.publish(st)
	s.staged.Store(st.commit)
	return nil
}

// errDirect is appendJournal's answer for a batch the journal cannot hold.
var errDirect = errors.New("batch too large for the journal")

// appendJournal appends a checked, encoded batch as one frame and makes it
// pending. The caller holds writeMu.
func (s *Store) appendJournal(first uint64, mem []byte, recs [][]byte, size int, commit uint64) error {
	if 20+size+4*len(recs) > s.journal.MaxPayload() {
		return errDirect
	}
	s.jbuf = encodeFrame(s.jbuf, first, commit, recs)
	end, err := s.journal.Append(frameBatch, s.jbuf)
	if errors.Is(err, journal.ErrFull) {
		// The ring holds only pending frames (a small journal, or the
		// file cannot keep up): checkpoint them all now.
		if err = s.checkpointNow(); err == nil {
			end, err = s.journal.Append(frameBatch, s.jbuf)
		}
	}
	if errors.Is(err, journal.ErrTooLarge) {
		return errDirect
	}
	if err != nil {
		return err
	}
	s.pending.add(&jbatch{first: first, last: first + uint64(len(recs)) - 1, commit: commit, mem: mem, recs: recs, end: end, size: size})
	_, bytes := s.pending.len()
	if bytes >= s.ckpt.trigger {
		s.checkpoints.poke()
	}
	if bytes >= s.ckpt.limit {
		// Appends outrun the checkpoints: wait for the one in progress,
		// and checkpoint more if that was not enough. The pending memory
		// stays bounded, and the stall is one bounded checkpoint.
		s.ckptMu.Lock()
		defer s.ckptMu.Unlock()
		for {
			if _, bytes := s.pending.len(); bytes < s.ckpt.limit {
				return nil
			}
			if err := s.checkpoint(); err != nil {
				// The batch is durable in the journal: the error is
				// the next checkpoint's to report.
				s.logger.Error("checkpoint of the journal failed; will retry", "error", err)
				return nil
			}
		}
	}
	return nil
}

// checkpointSizes bounds the journal's pending bytes (Options.JournalSize
// and the memory they take): a checkpoint starts at trigger, writes at
// most max in one bbolt transaction (whose dirty pages are held in memory
// until it commits), and appends wait for the checkpoints at limit.
type checkpointSizes struct {
	trigger, max, limit int
}

// The bounds of checkpointSizes for a journal at least 16 MiB large
// (smaller ones use a quarter and a half of theirs). A small trigger keeps
// each checkpoint's flush short while appends are few: appends that wait
// on the device behind a checkpoint's fdatasync wait less. While appends
// outrun the checkpoints, more is pending when the next one starts, so it
// writes more at once, up to max.
const (
	ckptTrigger = 64 << 10
	ckptMax     = 2 << 20
	ckptLimit   = 4 << 20
)

func newCheckpointSizes(journalSize int64) checkpointSizes {
	q := int(journalSize / 4)
	return checkpointSizes{trigger: min(q, ckptTrigger), max: min(q, ckptMax), limit: min(2*q, ckptLimit)}
}

// checkpoint writes the oldest pending batches, up to ckpt.max bytes (at
// least one batch), into the bbolt file in one transaction that also
// records the journal position they end at, then hands their records to
// the cache. The caller holds ckptMu, and not dbMu. Appends go on
// meanwhile.
func (s *Store) checkpoint() error {
	batches := s.pending.front(s.ckpt.max)
	if len(batches) == 0 || s.journal == nil {
		return nil
	}
	start := time.Now()
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.runlock()
	last := batches[len(batches)-1]
	rec := journal.Record{ID: s.journal.ID(), Pos: last.end}
	// With the freelist: after a crash, the next Open need not walk the
	// file (a checkpoint is usually the file's last commit).
	err := s.updateFile("checkpoint", true, func(tx *bbolt.Tx) error {
		meta, err := putBatches(tx, batches)
		if err != nil {
			return err
		}
		return layout.LogStore.PutJournalRecord(meta, rec)
	})
	if err != nil {
		return err
	}
	s.compaction.Load().mark(batches[0].first)
	// Into the cache before they leave the pending log, so that a reader
	// finds them in one or the other (or, in between, in the file).
	for _, b := range batches {
		s.cache.Append(b.first, b.mem, b.recs)
	}
	s.pending.drop(len(batches))
	s.journal.Checkpointed(last.end.Seq)
	metrics.MeasureSince(metricCheckpoint, start)
	metrics.AddSample(metricCheckpointBatches, float32(len(batches)))
	return nil
}

// putBatches writes journaled batches' entries into the log bucket and
// the last one's commit index into the meta bucket, which it returns: the
// part of a checkpoint that Backup of a read-only handle repeats in its
// temporary copy.
func putBatches(tx *bbolt.Tx, batches []*jbatch) (*bbolt.Bucket, error) {
	log, err := layout.LogStore.Bucket(tx, layout.LogBucket)
	if err != nil {
		return nil, err
	}
	for _, b := range batches {
		for k, r := range b.recs {
			key := codec.Key(b.first + uint64(k))
			if err := log.Put(key[:], r); err != nil {
				return nil, fmt.Errorf("entry %d: %w", b.first+uint64(k), err)
			}
		}
	}
	meta, err := layout.LogStore.Bucket(tx, layout.MetaBucket)
	if err != nil {
		return nil, err
	}
	return meta, layout.LogStore.PutUint64(meta, layout.KeyCommit, batches[len(batches)-1].commit)
}

// checkpointNow checkpoints everything pending, for a write that must
// follow it in the file (DeleteRange, a batch written directly) or a
// reader of the file alone (Backup). The caller holds writeMu, or nothing.
func (s *Store) checkpointNow() error {
	if s.journal == nil {
		return nil
	}
	s.ckptMu.Lock()
	defer s.ckptMu.Unlock()
	return s.checkpointAll()
}

// checkpointAll checkpoints until nothing is pending. The caller holds
// ckptMu, and writeMu (or appends could keep it going).
func (s *Store) checkpointAll() error {
	for {
		if n, _ := s.pending.len(); n == 0 {
			return nil
		}
		if err := s.checkpoint(); err != nil {
			return err
		}
	}
}

// startCheckpointer starts the background checkpoint loop. Each run
// checkpoints what was pending when it started, in transactions of at
// most ckpt.max bytes, letting appends and other checkpoints (of
// DeleteRange, say) in between.
func (s *Store) startCheckpointer() {
	s.checkpoints.start(s.opts.CheckpointInterval, false, func() {
		batches := s.pending.front(-1)
		if len(batches) == 0 {
			return
		}
		upTo := batches[len(batches)-1].last
		for {
			s.ckptMu.Lock()
			var err error
			done := true
			if b := s.pending.front(1); len(b) > 0 && b[0].first <= upTo {
				err = s.checkpoint()
				done = false
			}
			s.ckptMu.Unlock()
			if err != nil && !errors.Is(err, ErrClosed) {
				s.logger.Error("checkpoint of the journal failed; will retry", "error", err)
			}
			if done || err != nil {
				return
			}
		}
	})
}

// closeJournal stops the checkpoint loop, checkpoints everything and
// closes the journal. The caller holds writeMu and not dbMu.
func (s *Store) closeJournal() error {
	if s.journal == nil {
		return nil
	}
	s.checkpoints.halt()
	err := s.checkpointNow()
	if cerr := s.journal.Close(); err == nil {
		err = cerr
	}
	return err
}
