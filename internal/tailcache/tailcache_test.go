package tailcache

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

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

// A batch of which only the newest records fit, appended after a cached
// run, restarts the cache with the kept records under their own indexes
// (issue 10: they were labelled with the indexes of the batch's first
// records, so Get returned another index's record).
func TestPartlyKeptBatchAfterCachedRun(t *testing.T) {
	const recSize = len("rec-00000000")
	for _, tc := range []struct {
		name           string
		entries, bytes int
		batches        []int
		first, last    uint64 // expected run
	}{
		{"entry bound", 3, 1 << 20, []int{1, 2, 7, 64, 1000}, 1072, 1074},
		{"byte bound", 1000, 8 * recSize, []int{5, 50}, 48, 55},
		{"byte bound, twice", 1000, 31 * recSize, []int{64, 64}, 98, 128},
		{"no record fits", 16, recSize - 1, []int{3, 2}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.entries, tc.bytes)
			next := uint64(1)
			for _, n := range tc.batches {
				appendBatch(c, next, n)
				next += uint64(n)
			}
			requireRun(t, c, tc.first, tc.last)
		})
	}
}

// A batch whose records are all larger than the byte bound leaves the
// cache empty: an older run kept would no longer end at the newest entry.
func TestUncacheableBatchEmptiesCache(t *testing.T) {
	c := New(16, 10*len("rec-00000000"))
	appendBatch(c, 1, 5)
	big := make([]byte, 11*len("rec-00000000"))
	c.Append(6, big, [][]byte{big})
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

// seed returns the seed of a random test: RAFTBOLT_SEED when set, else a
// new one. It is logged so a failure can be replayed.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("RAFTBOLT_SEED"); v != "" {
		var err error
		s, err = strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "RAFTBOLT_SEED")
	}
	t.Logf("seed %d (set RAFTBOLT_SEED=%d to replay)", s, s)
	return s
}

// TestRandomAgainstModel drives the cache as the store does (buffers from
// Buffer, appends after the log's last index, truncations at either end,
// restarts) with records of random sizes, and checks after every step
// against a plain model of the log: every Get is a miss or exactly the
// record appended under that index; the cache holds a contiguous run ending
// at the log's last index, within both bounds, with Len's bytes the sum of
// its records; and an append keeps at least the newest records of its
// batch that fit. A buffer handed out again while one of its records is
// still cached shows up as a record that changed.
func TestRandomAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0))
	for round := 0; round < 40; round++ {
		maxEntries := rng.IntN(40) // 0 disables the cache
		maxBytes := -1
		if rng.IntN(4) > 0 {
			maxBytes = 1 + rng.IntN(600)
		}
		c := New(maxEntries, maxBytes)
		m := model{recs: map[uint64][]byte{}}
		m.restart(0)
		for step := 0; step < 300; step++ {
			var op string
			var minRun int // records the cache must hold after the step
			switch k := rng.IntN(20); {
			case k < 13: // append after the last entry, or restart when the log is empty
				first := m.hi + 1
				if m.empty() || k == 0 {
					first = 1 + rng.Uint64N(1000)
				}
				if first != m.hi+1 || m.empty() {
					m.restart(first) // one that lands on hi+1 continues the log
				}
				n := 1 + rng.IntN(3*maxEntries+3)
				if rng.IntN(8) == 0 {
					n = 1 + rng.IntN(4)
				}
				op = fmt.Sprintf("Append(%d, %d records)", first, n)
				minRun = m.append(c, rng, first, n, maxEntries, maxBytes)
			case k < 16 && !m.empty():
				i := m.lo + rng.Uint64N(m.hi-m.lo+2)
				op = fmt.Sprintf("DeleteFrom(%d)", i)
				c.DeleteFrom(i)
				m.deleteFrom(i)
			case k < 19 && !m.empty():
				i := m.lo - 1 + rng.Uint64N(m.hi-m.lo+2)
				op = fmt.Sprintf("DeleteThrough(%d)", i)
				c.DeleteThrough(i)
				m.deleteThrough(i)
			default:
				op = "Reset"
				c.Reset()
				m.restart(0)
			}
			where := fmt.Sprintf("round %d (entries %d, bytes %d), step %d: %s", round, maxEntries, maxBytes, step, op)
			m.check(t, c, where, maxEntries, maxBytes, minRun)
		}
	}
}

// model is the log the cache is told about: records lo..hi (hi < lo when
// empty).
type model struct {
	recs   map[uint64][]byte
	lo, hi uint64
}

func (m *model) empty() bool { return m.hi < m.lo }

func (m *model) restart(first uint64) {
	clear(m.recs)
	m.lo, m.hi = max(first, 1), max(first, 1)-1
}

// append encodes n records of random sizes at first into a buffer from c,
// appends them, and returns how many of them the cache must keep.
func (m *model) append(c *Cache, rng *rand.Rand, first uint64, n, maxEntries, maxBytes int) int {
	recs := make([][]byte, n)
	size := 0
	for k := range recs {
		recs[k] = fmt.Appendf(nil, "%d:%s", first+uint64(k), make([]byte, rng.IntN(60)))
		size += len(recs[k])
	}
	mem := c.Buffer(size)
	for k, r := range recs {
		start := len(mem)
		mem = append(mem, r...)
		recs[k] = mem[start:len(mem):len(mem)]
		m.recs[first+uint64(k)] = r // the model keeps its own copy
	}
	m.hi = first + uint64(n) - 1
	c.Append(first, mem, recs)
	fit, bytes := 0, 0
	for fit < n && fit < maxEntries {
		r := recs[n-1-fit]
		if maxBytes > 0 && bytes+len(r) > maxBytes {
			break
		}
		bytes += len(r)
		fit++
	}
	return fit
}

func (m *model) deleteFrom(i uint64) {
	for ; m.hi >= i && m.hi >= m.lo; m.hi-- {
		delete(m.recs, m.hi)
	}
}

func (m *model) deleteThrough(i uint64) {
	for ; m.lo <= i && m.lo <= m.hi; m.lo++ {
		delete(m.recs, m.lo)
	}
}

func (m *model) check(t *testing.T, c *Cache, where string, maxEntries, maxBytes, minRun int) {
	t.Helper()
	n, bytes := c.Len()
	require.LessOrEqual(t, n, maxEntries, where)
	if maxBytes > 0 {
		require.LessOrEqual(t, bytes, maxBytes, where)
	}
	require.GreaterOrEqual(t, n, minRun, "%s: the newest records that fit are not all cached", where)
	if n > 0 {
		require.False(t, m.empty(), "%s: %d records cached for an empty log", where, n)
		require.LessOrEqual(t, uint64(n), m.hi-m.lo+1, where)
	}
	// The run must be exactly hi-n+1 .. hi; look a little past both ends.
	sum := 0
	from := m.hi - uint64(min(uint64(n)+3, m.hi))
	for i := from; i <= m.hi+2; i++ {
		var got []byte
		ok, err := c.Get(i, func(rec []byte) error { got = append([]byte(nil), rec...); return nil })
		require.NoError(t, err, where)
		inRun := n > 0 && i <= m.hi && i+uint64(n) > m.hi
		require.Equal(t, inRun, ok, "%s: Get(%d) with %d records cached, log %d-%d", where, i, n, m.lo, m.hi)
		if ok {
			require.Equal(t, string(m.recs[i]), string(got), "%s: record of index %d", where, i)
			sum += len(got)
		}
	}
	require.Equal(t, sum, bytes, "%s: Len's bytes", where)
}
