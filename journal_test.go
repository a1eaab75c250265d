package raftbolt

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/boltcheck"
	"github.com/stretchr/testify/require"
)

func journalOptions() *Options {
	return &Options{Logger: hclog.NewNullLogger(), MetricsInterval: -1,
		JournalSize: 256 << 10, CheckpointInterval: time.Hour}
}

// crashCopy copies a store's file and journal while it is open, as a
// crash would leave them (no checkpoint runs meanwhile: the interval is an
// hour and the journal has room).
func crashCopy(t *testing.T, s *Store) string {
	t.Helper()
	dir := t.TempDir()
	for _, suffix := range []string{"", journalSuffix} {
		b, err := os.ReadFile(s.Path() + suffix)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "raft.db"+suffix), b, 0o600))
	}
	return filepath.Join(dir, "raft.db")
}

// Journaled batches are served before any checkpoint, survive a crash
// (read back read-only without writing, replayed by a writable Open), and
// a store opened without the option replays the journal and removes it.
func TestJournalReplay(t *testing.T) {
	s := openTest(t, journalOptions())
	require.NoError(t, s.StoreLogs(entries(1, 100)))
	require.NoError(t, s.StageCommitIndex(90))
	require.NoError(t, s.StoreLogs(entries(101, 150)))
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, 2, st.JournalBatches, "nothing checkpointed yet")
	requireLog(t, s, 1, 150)

	path := crashCopy(t, s)
	before := fileHash(t, path)
	ro := journalOptions()
	ro.ReadOnly = true
	r := openAt(t, path, ro)
	requireLog(t, r, 1, 150)
	require.NoError(t, r.Check())
	c, err := r.GetCommitIndex()
	require.NoError(t, err)
	require.EqualValues(t, 90, c)
	// Backup of the read-only handle includes the journaled batches,
	// and writes neither file.
	jbefore := fileHash(t, path+journalSuffix)
	var buf bytes.Buffer
	written, err := r.Backup(&buf)
	require.NoError(t, err)
	require.EqualValues(t, buf.Len(), written)
	require.NoError(t, r.Close())
	require.Equal(t, before, fileHash(t, path), "a read-only open writes nothing")
	require.Equal(t, jbefore, fileHash(t, path+journalSuffix), "nor to the journal")
	bpath := filepath.Join(t.TempDir(), "backup.db")
	require.NoError(t, os.WriteFile(bpath, buf.Bytes(), 0o600))
	b := openAt(t, bpath, journalOptions())
	requireLog(t, b, 1, 150)
	c, err = b.GetCommitIndex()
	require.NoError(t, err)
	require.EqualValues(t, 90, c)
	require.NoError(t, b.Check())
	require.NoError(t, b.Close())

	w := openAt(t, path, journalOptions())
	requireLog(t, w, 1, 150)
	require.NoError(t, w.StoreLogs(entries(151, 160)))
	w = reopen(t, w)
	st, err = w.Stats()
	require.NoError(t, err)
	require.Zero(t, st.JournalBatches, "Close checkpointed everything")
	requireLog(t, w, 1, 160)
	require.NoError(t, w.Close())

	// A second crash copy, opened without the journal.
	s2 := crashCopy(t, s)
	o := journalOptions()
	o.NoJournal = true
	n := openAt(t, s2, o)
	requireLog(t, n, 1, 150)
	_, err = os.Stat(s2 + journalSuffix)
	require.ErrorIs(t, err, os.ErrNotExist, "replayed, checkpointed and removed")
	require.NoError(t, n.Check())
}

// A tail truncation followed by new appends replays exactly: DeleteRange
// checkpoints what the journal holds before it removes anything.
func TestJournalTruncationThenAppends(t *testing.T) {
	s := openTest(t, journalOptions())
	require.NoError(t, s.StoreLogs(entries(1, 50)))
	require.NoError(t, s.DeleteRange(1, 10))
	require.NoError(t, s.DeleteRange(41, 50))
	rewritten := entries(41, 60)
	for _, l := range rewritten {
		l.Term = 99
	}
	require.NoError(t, s.StoreLogs(rewritten))
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, 1, st.JournalBatches, "the new appends are only in the journal")
	r := openAt(t, crashCopy(t, s), journalOptions())
	for i := uint64(11); i <= 60; i++ {
		var got, want = rawLog(), entry(i)
		if i > 40 {
			want.Term = 99
		}
		require.NoError(t, r.GetLog(i, got), "index %d", i)
		require.Equal(t, *want, *got, "index %d", i)
	}
	first, _ := r.FirstIndex()
	require.EqualValues(t, 11, first)
	require.NoError(t, r.Check())
}

// The checkpoint keeps the journal small: more batches than the ring
// holds go through, each checkpointed before its space is reused.
func TestJournalWrapsWithCheckpoints(t *testing.T) {
	o := journalOptions()
	o.JournalSize = 64 << 10
	s := openTest(t, o)
	for i := uint64(1); i <= 2000; i += 10 {
		require.NoError(t, s.StoreLogs(entries(i, i+9)))
	}
	requireLog(t, s, 1, 2000)
	s = reopen(t, s)
	requireLog(t, s, 1, 2000)
	require.NoError(t, s.Compact())
	requireLog(t, s, 1, 2000)
	b, err := os.ReadFile(s.Path())
	require.NoError(t, err)
	_, err = boltcheck.Inspect(bytesReaderAt(b), int64(len(b)))
	require.NoError(t, err)
}

func rawLog() *raft.Log { return new(raft.Log) }

func bytesReaderAt(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// GetLog of a journaled entry not yet checkpointed allocates what a read
// from the cache does: one allocation (the entry's bytes).
func TestJournalGetLogAllocations(t *testing.T) {
	s := openTest(t, journalOptions())
	require.NoError(t, s.StoreLogs(entries(1, 10)))
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, 1, st.JournalBatches)
	var l raft.Log
	allocs := testing.AllocsPerRun(200, func() {
		if err := s.GetLog(5, &l); err != nil {
			t.Fatal(err)
		}
	})
	require.LessOrEqual(t, allocs, 1.0)
	require.Equal(t, *entry(5), l)
}

// However fast batches come, what is pending (in memory, and in the
// journal) stays under the bound at which StoreLogs waits for the
// checkpoints, and no checkpoint writes more than its bound at once: the
// memory a store takes does not grow with the write rate. Before the
// bound, pending batches piled up until the journal was full.
func TestJournalPendingStaysBounded(t *testing.T) {
	o := testOptions()
	o.NoJournal, o.CheckpointInterval = false, time.Hour // only the byte bounds start checkpoints
	s := openTest(t, o)
	require.Equal(t, checkpointSizes{trigger: ckptTrigger, max: ckptMax, limit: ckptLimit}, s.ckpt, "the default journal's bounds")
	batch := make([]*raft.Log, 64)
	data := bytes.Repeat([]byte{7}, 4096)
	for b := 0; b < 200; b++ { // 50 MiB
		for k := range batch {
			batch[k] = &raft.Log{Index: uint64(b*64 + k + 1), Term: 1, Data: data}
		}
		require.NoError(t, s.StoreLogs(batch))
		_, bytes := s.pending.len()
		require.Less(t, bytes, ckptLimit, "after batch %d", b)
		frames, ringBytes := s.journal.Pending()
		require.LessOrEqual(t, ringBytes, int64(ckptLimit)+int64(frames)*64, "the ring holds what is pending, framed")
	}
	for i := uint64(1); i <= 200*64; i += 97 {
		var l raft.Log
		require.NoError(t, s.GetLog(i, &l))
		require.Equal(t, i, l.Index)
		require.Equal(t, data, l.Data, "index %d", i)
	}
	got := s.pending.front(s.ckpt.max)
	size := 0
	for _, b := range got {
		size += b.size
	}
	require.LessOrEqual(t, size, ckptMax, "one checkpoint's share")
	require.NoError(t, s.Check())
}
