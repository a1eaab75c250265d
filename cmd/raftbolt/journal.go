package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/raftbolt/raftbolt"
	"github.com/raftbolt/raftbolt/internal/boltfile"
	"github.com/raftbolt/raftbolt/internal/journal"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// journalJSON is what check found in a log store's journal file.
type journalJSON struct {
	Path string `json:"path"`
	OK   bool   `json:"ok"`
	// InUse: the store's checkpoint record names the journal. A journal
	// file it does not name was created by a run that crashed before it
	// recorded it: nothing was appended to it.
	InUse bool   `json:"in_use"`
	Size  int64  `json:"size,omitempty"`
	ID    string `json:"id,omitempty"` // hex, the journal's and the record's
	// CheckpointSeq is the sequence number of the last frame checkpointed
	// into the store file; the batches past it (Batches frames, Bytes of
	// the ring, FirstSeq to LastSeq) are what Open replays.
	CheckpointSeq uint64 `json:"checkpoint_seq"`
	Batches       int    `json:"batches"`
	Bytes         int64  `json:"bytes"`
	FirstSeq      uint64 `json:"first_seq,omitempty"`
	LastSeq       uint64 `json:"last_seq,omitempty"`
	// Damage in the middle of the journal: frame DamagedSeq, expected at
	// DamagedOffset, is not intact, yet frames up to LaterSeq were
	// written after it.
	DamagedSeq    *uint64 `json:"damaged_seq,omitempty"`
	DamagedOffset *int64  `json:"damaged_offset,omitempty"`
	LaterSeq      *uint64 `json:"later_seq,omitempty"`
	Problem       string  `json:"problem,omitempty"`
}

// inspectJournal verifies the journal file of the log store at path, read
// only (internal/journal's Inspect, the checks of the store's Open): its
// header, that its id is the one the store's checkpoint record names, that
// the frames past the checkpoint chain and that no damage hides frames
// after them. That the batches continue the log is the store's Open and
// Check to say. It returns nil when there is no journal file, or when the
// store file's record cannot be read (the store's own check reports why).
func (c *ctx) inspectJournal(path string) (*journalJSON, error) {
	jpath := path + layout.JournalSuffix
	if _, err := os.Lstat(jpath); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	rec, inUse, found, recErr, err := c.journalRecord(path)
	switch {
	case errors.Is(err, raftbolt.ErrLocked):
		return nil, err
	case err != nil || !found:
		return nil, nil
	}
	out := &journalJSON{Path: jpath}
	if recErr != nil {
		out.InUse = true
		out.Problem = fmt.Sprintf("the store's journal record is damaged: %v", recErr)
		return out, nil
	}
	if !inUse {
		out.OK = true
		return out, nil
	}
	out.InUse = true
	out.ID = fmt.Sprintf("%016x", rec.ID)
	out.CheckpointSeq = rec.Pos.Seq
	rep, err := journal.Inspect(jpath, rec.ID, rec.Pos)
	out.Size, out.Batches, out.Bytes, out.FirstSeq, out.LastSeq = rep.Size, rep.Frames, rep.Bytes, rep.FirstSeq, rep.LastSeq
	var de *journal.DamageError
	switch {
	case errors.As(err, &de):
		out.DamagedSeq, out.DamagedOffset, out.LaterSeq = &de.Seq, &de.Off, &de.Later
		out.Problem = de.Error()
	case errors.Is(err, raftbolt.ErrCorrupt):
		out.Problem = strings.TrimPrefix(err.Error(), "journal "+jpath+": ")
	case err != nil:
		return nil, err
	default:
		out.OK = true
	}
	return out, nil
}

// journalRecord reads the store's checkpoint record (layout.KeyJournal)
// in a read-only handle of its own: the record, whether there is one,
// whether the file has the log store's meta bucket at all, and why the
// record is damaged (recErr, wrapping ErrCorrupt); err is about the file.
func (c *ctx) journalRecord(path string) (rec journal.Record, inUse, found bool, recErr, err error) {
	f, _, err := boltfile.Open(path, boltfile.Options{ReadOnly: true, LockTimeout: c.lockTimeout, Logger: hclog.NewNullLogger()})
	if err != nil {
		return rec, false, false, nil, err
	}
	defer f.Close()
	err = f.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(layout.MetaBucket)
		if meta == nil {
			return nil
		}
		found = true
		rec, inUse, recErr = layout.LogStore.JournalRecord(meta)
		return nil
	})
	return rec, inUse, found, recErr, err
}

// reportJournal prints check's line about the journal.
func reportJournal(w io.Writer, j *journalJSON) {
	switch {
	case !j.OK:
		fmt.Fprintf(w, "journal %s: DAMAGED: %s\n", j.Path, j.Problem)
	case !j.InUse:
		fmt.Fprintf(w, "journal %s: ok: not in use (never recorded in the store; the next writable open removes it)\n", j.Path)
	case j.Batches == 0:
		fmt.Fprintf(w, "journal %s: ok: %s, everything checkpointed (to frame %d)\n", j.Path, humanBytes(j.Size), j.CheckpointSeq)
	default:
		fmt.Fprintf(w, "journal %s: ok: %s, %d batch(es) (%s, frames %d-%d) past the checkpoint, verified\n",
			j.Path, humanBytes(j.Size), j.Batches, humanBytes(j.Bytes), j.FirstSeq, j.LastSeq)
	}
}
