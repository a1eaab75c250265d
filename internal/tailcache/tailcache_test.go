package tailcache

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// batch encodes records "rec-<index>" of indexes first..first+n-1 into one
// buffer from c, as the store does.
func batch(c *Cache, first uint64, n int) ([]byte, [][]byte) {
	size := 0
	for i := 0; i < n; i++ {
		size += len(fmt.Sprintf("rec-%08d", first+uint64(i)))
	}
	mem := c.Buffer(size)
	recs := make([][]byte, n)
	for i := range recs {
		start := len(mem)
		mem = fmt.Appendf(mem, "rec-%08d", first+uint64(i))
		recs[i] = mem[start:len(mem):len(mem)]
	}
	return mem, recs
}

func appendBatch(c *Cache, first uint64, n int) {
	mem, recs := batch(c, first, n)
	c.Append(first, mem, recs)
}

// requireRun asserts that c holds exactly the records first..last.
func requireRun(t *testing.T, c *Cache, first, last uint64) {
	t.Helper()
	n, bytes := c.Len()
	if last < first {
		require.Zero(t, n)
		require.Zero(t, bytes)
		return
	}
	require.Equal(t, int(last-first+1), n)
	require.Equal(t, n*len("rec-00000000"), bytes)
	for _, i := range []uint64{first - 1, last + 1} {
		ok, err := c.Get(i, func([]byte) error { panic("called for a missing record") })
		require.NoError(t, err)
		require.False(t, ok, "index %d", i)
	}
	for i := first; i <= last; i++ {
		var got string
		ok, err := c.Get(i, func(rec []byte) error { got = string(rec); return nil })
		require.NoError(t, err)
		require.True(t, ok, "index %d", i)
		require.Equal(t, fmt.Sprintf("rec-%08d", i), got)
	}
}

func TestBounds(t *testing.T) {
	const recSize = len("rec-00000000")
	for _, tc := range []struct {
		name               string
		entries, bytes     int
		batches, batchSize int
		first, last        uint64 // expected run
	}{
		{"within both bounds", 100, 1 << 20, 5, 10, 1, 50},
		{"entry bound evicts oldest", 32, 1 << 20, 5, 10, 19, 50},
		{"byte bound evicts oldest", 1000, 25 * recSize, 5, 10, 26, 50},
		{"a batch larger than the entry bound", 8, 1 << 20, 1, 50, 43, 50},
		{"a batch larger than the byte bound", 1000, 8 * recSize, 1, 50, 43, 50},
		{"no byte bound", 16, -1, 3, 10, 15, 30},
		{"disabled", 0, 1 << 20, 3, 10, 1, 0},
		{"a record larger than the byte bound", 16, recSize - 1, 2, 3, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.entries, tc.bytes)
			next := uint64(1)
			for b := 0; b < tc.batches; b++ {
				appendBatch(c, next, tc.batchSize)
				next += uint64(tc.batchSize)
			}
			requireRun(t, c, tc.first, tc.last)
		})
	}
}

func TestDeletes(t *testing.T) {
	c := New(100, 1<<20)
	appendBatch(c, 1, 10)
	appendBatch(c, 11, 10)
	c.DeleteThrough(4)
	requireRun(t, c, 5, 20)
	c.DeleteFrom(15)
	requireRun(t, c, 5, 14)
	appendBatch(c, 15, 3) // continues the run
	requireRun(t, c, 5, 17)
	appendBatch(c, 40, 2) // does not: the cache restarts
	requireRun(t, c, 40, 41)
	c.Reset()
	requireRun(t, c, 1, 0)
	appendBatch(c, 7, 2)
	requireRun(t, c, 7, 8)
}

// A buffer comes back from Buffer only once none of its records is cached,
// so a reused buffer never changes a record the cache still serves.
func TestBuffersAreReusedOnlyWhenFree(t *testing.T) {
	c := New(20, 1<<20)
	mem1, recs1 := batch(c, 1, 10)
	c.Append(1, mem1, recs1)
	mem2, recs2 := batch(c, 11, 10)
	c.Append(11, mem2, recs2)
	// Both buffers are in use: a new one is allocated.
	mem3, recs3 := batch(c, 21, 10)
	require.NotSame(t, &mem1[:1][0], &mem3[:1][0])
	require.NotSame(t, &mem2[:1][0], &mem3[:1][0])
	c.Append(21, mem3, recs3) // evicts 1..10, freeing mem1
	requireRun(t, c, 11, 30)
	mem4 := c.Buffer(len(mem1))
	require.Same(t, &mem1[:1][0], &mem4[:1][0], "the freed buffer is handed out again")
	requireRun(t, c, 11, 30)

	// A buffer much larger than the batch is not handed out for it.
	c = New(20, 1<<20)
	mem, recs := batch(c, 1, 20)
	c.Append(1, mem, recs)
	c.Reset()
	small := c.Buffer(len(mem) / 10)
	require.NotSame(t, &mem[:1][0], &small[:cap(small)][0])
}

// A batch of which only the newest records are cached does not keep its
// whole buffer alive for them: they are copied.
func TestPartlyCachedBatchIsCopied(t *testing.T) {
	c := New(4, 1<<20)
	mem, recs := batch(c, 1, 100)
	c.Append(1, mem, recs)
	requireRun(t, c, 97, 100)
	for i := range mem {
		mem[i] = 'x' // the caller's buffer is free again
	}
	requireRun(t, c, 97, 100)
}

// Readers decode under the read lock while the writer appends, evicts and
// reuses buffers; run with -race.
func TestConcurrentReadersAndWriter(t *testing.T) {
	c := New(64, 1<<20)
	const batches = 2000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); ; i = i%(batches*8) + 1 {
				select {
				case <-stop:
					return
				default:
				}
				_, err := c.Get(i, func(rec []byte) error {
					if want := fmt.Sprintf("rec-%08d", i); string(rec) != want {
						return fmt.Errorf("index %d: record %q, want %q", i, rec, want)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := uint64(1)
	for b := 0; b < batches; b++ {
		appendBatch(c, next, 8)
		next += 8
	}
	close(stop)
	wg.Wait()
	requireRun(t, c, next-64, next-1)
}
