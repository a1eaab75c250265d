package raftbolt

import (
	"testing"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// Regression tests for issue 10: a batch of which the entry cache keeps
// only the newest records, appended while the cache held older ones,
// labelled the kept records with the indexes of the batch's first ones, so
// GetLog returned another entry's record (ErrCorrupt, or worse, a wrong
// entry that happened to hold the asked index's neighbour).
func TestCachePartlyKeptBatch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     func(*Options)
		batches  []int // entries per StoreLogs
		dataSize int   // bytes of Data per entry; 0 keeps entry's small data
	}{
		// Two batches of 1 MiB entries against the default 32 MiB byte bound:
		// each keeps only its newest 31 entries.
		{"default options, large entries", func(*Options) {}, []int{64, 64}, 1 << 20},
		// The entry bound: every batch but the first ones is larger than it.
		{"CacheSize 3", func(o *Options) { o.CacheSize = 3 }, []int{1, 2, 7, 64, 1000}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions()
			tc.opts(o)
			s := openTest(t, o)
			want := map[uint64]*raft.Log{}
			next := uint64(1)
			for _, n := range tc.batches {
				batch := make([]*raft.Log, n)
				for k := range batch {
					batch[k] = sizedEntry(next, tc.dataSize)
					want[next] = batch[k]
					next++
				}
				require.NoError(t, s.StoreLogs(batch))
			}
			for i := uint64(1); i < next; i++ {
				var got raft.Log
				require.NoError(t, s.GetLog(i, &got), "index %d", i)
				require.Equal(t, want[i].Index, got.Index, "index %d", i)
				require.Equal(t, *want[i], got, "index %d", i)
			}
		})
	}
}

// sizedEntry is entry(i) with size bytes of data derived from i, or entry(i)
// itself when size is 0.
func sizedEntry(i uint64, size int) *raft.Log {
	l := entry(i)
	if size > 0 {
		l.Data = make([]byte, size)
		for k := range l.Data {
			l.Data[k] = byte(i) ^ byte(k)
		}
	}
	return l
}
