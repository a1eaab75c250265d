package raftbolt

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// After raft truncates most of a long log, the store compacts itself: the
// file shrinks, online, and holds the same log.
func TestAutoCompactGivesSpaceBack(t *testing.T) {
	o := testOptions()
	o.AutoCompactFree = 1 << 20
	o.AutoCompactInterval = 10 * time.Millisecond
	o.NoJournal = true // the sizes compared are the file's
	s := openTest(t, o)
	data := make([]byte, 1024)
	for i := uint64(1); i <= 8000; i += 500 {
		batch := entries(i, i+499)
		for _, l := range batch {
			l.Data = data
		}
		require.NoError(t, s.StoreLogs(batch))
	}
	before, err := s.Stats()
	require.NoError(t, err)
	require.NoError(t, s.DeleteRange(1, 7900))
	deadline := time.Now().Add(time.Minute)
	var st Stats
	for time.Now().Before(deadline) {
		st, err = s.Stats()
		require.NoError(t, err)
		if st.LastCompaction != nil {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
	require.NotNil(t, st.LastCompaction, "no automatic compaction within a minute")
	require.Less(t, st.FileSize, before.FileSize/2)
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	require.EqualValues(t, 7901, first)
	require.EqualValues(t, 8000, last)
	require.NoError(t, s.Check())
}

// The policy compacts only a file mostly free, and only past the bound.
func TestAutoCompactPolicy(t *testing.T) {
	s := &Store{opts: Options{AutoCompactFree: 64 << 20}}
	require.False(t, s.shouldCompact(100<<20, 40<<20), "less than half free")
	require.False(t, s.shouldCompact(100<<20, 60<<20), "under the bound")
	require.True(t, s.shouldCompact(200<<20, 150<<20))
}
