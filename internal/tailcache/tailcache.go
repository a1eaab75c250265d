// Package tailcache keeps the encoded records of the newest log entries in
// memory, so that raft's replication and apply paths, which read entries
// right after writing them, are served without a bbolt transaction.
//
// The cache holds a contiguous run of indexes that ends at the newest entry
// it was given; it is bounded both by a number of entries and by a number of
// bytes, evicting the oldest entries first. It never reads or writes the
// file: the store tells it what was committed and what was deleted, and
// must do so while holding its write lock, after the commit succeeded.
//
// The records of one batch live in one buffer, which the writer asks the
// cache for (Buffer): once every record of a buffer has left the cache, the
// buffer is handed out again. Allocating fresh memory for every batch costs
// more than encoding it (the runtime zeroes it, and faults it in again after
// its scavenger returned it to the OS), so a steady writer allocates
// nothing. This is why a record is only ever read under the cache's lock
// (Get), never handed out: its bytes are overwritten once it is evicted.
package tailcache

import "sync"

// Bounds on the buffers kept for reuse. With them, the memory the cache
// holds beyond the bytes of its records is at most a quarter of those bytes
// (Buffer hands out a kept buffer only for a batch that fills it at least
// 80%), plus the rest of the oldest batch's buffer when only part of it is
// still cached, plus maxFree buffers of at most maxFreeBytes.
const (
	maxFree      = 4       // buffers
	maxFreeBytes = 4 << 20 // bytes per buffer; larger ones are left to the GC
)

// Cache is safe for concurrent use by one writer and many readers.
type Cache struct {
	maxEntries int
	maxBytes   int

	mu sync.RWMutex
	// ring holds the records of indexes first .. first+n-1, the record of
	// first being at ring[head]. len(ring) grows by doubling up to maxEntries.
	ring  []slot
	head  int
	n     int
	first uint64
	bytes int // sum of len(record) over the cached records
	// free holds buffers none of whose records is cached any more, for
	// Buffer to hand out again.
	free [][]byte
}

// slot is one cached record and the buffer it lies in.
type slot struct {
	rec []byte
	buf *buffer // nil when rec has a buffer of its own
}

// buffer is the memory of one batch's records, shared by those cached.
type buffer struct {
	mem  []byte
	refs int // records in mem that the cache holds
}

// New returns a cache of at most maxEntries records and maxBytes bytes.
// maxEntries <= 0 returns a cache that holds nothing; maxBytes <= 0 leaves
// it bounded by maxEntries alone.
func New(maxEntries, maxBytes int) *Cache {
	return &Cache{maxEntries: max(maxEntries, 0), maxBytes: maxBytes}
}

// Get calls fn with the record of index i, under the cache's read lock,
// and reports whether the cache holds it. fn must not keep the record nor
// call into the cache.
func (c *Cache) Get(i uint64, fn func(rec []byte) error) (bool, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.n == 0 || i < c.first || i-c.first >= uint64(c.n) {
		return false, nil
	}
	return true, fn(c.ring[(c.head+int(i-c.first))%len(c.ring)].rec)
}

// Buffer returns an empty slice with room for size bytes, for the writer
// to encode a batch into before it commits it and passes it to Append.
// It is memory the cache no longer uses, when it has such a buffer.
func (c *Cache) Buffer(size int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, b := range c.free {
		if cap(b) >= size && cap(b)-size <= size/4 {
			c.free = append(c.free[:k], c.free[k+1:]...)
			return b[:0]
		}
	}
	return make([]byte, 0, size)
}

// Append adds the records of indexes first .. first+len(recs)-1, which were
// just committed after everything the cache holds. The records lie in mem,
// the batch's buffer (from Buffer); the cache keeps it and the caller must
// not touch either afterwards. If first does not follow the cached run, the
// cache restarts at first; if only the batch's newest records fit the
// bounds, it restarts with them.
func (c *Cache) Append(first uint64, mem []byte, recs [][]byte) {
	if c.maxEntries == 0 || len(recs) == 0 {
		return
	}
	// Records that would be evicted at once, by either bound, are never
	// inserted. When some are dropped, the others get buffers of their
	// own, so that the batch's whole buffer is not kept for their sake.
	keep, size := 0, 0
	for keep < len(recs) && keep < c.maxEntries {
		r := recs[len(recs)-1-keep]
		if c.maxBytes > 0 && size+len(r) > c.maxBytes {
			break
		}
		size += len(r)
		keep++
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The cache restarts when the batch does not follow the cached run, and
	// when the batch's oldest records do not fit: then no older record fits
	// either (the run must stay contiguous), and the kept records must not
	// be placed after the cached run, which would label them with the
	// indexes of the dropped ones.
	if c.n > 0 && (first != c.first+uint64(c.n) || keep < len(recs)) {
		c.reset()
	}
	var buf *buffer
	if keep == len(recs) {
		buf = &buffer{mem: mem, refs: keep}
	} else {
		defer c.recycle(mem) // once the kept records are copied
		first += uint64(len(recs) - keep)
		recs = recs[len(recs)-keep:]
	}
	if keep == 0 {
		return
	}
	if c.n == 0 {
		c.first = first
	}
	for _, rec := range recs {
		if buf == nil {
			rec = append([]byte(nil), rec...)
		}
		if c.n == len(c.ring) {
			if len(c.ring) < c.maxEntries {
				c.grow()
			} else {
				c.evictOldest()
			}
		}
		c.ring[(c.head+c.n)%len(c.ring)] = slot{rec: rec, buf: buf}
		c.n++
		c.bytes += len(rec)
	}
	for c.n > 0 && c.maxBytes > 0 && c.bytes > c.maxBytes {
		c.evictOldest()
	}
}

// DeleteFrom drops the records of index i and above (a tail truncation).
func (c *Cache) DeleteFrom(i uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.n > 0 && c.first+uint64(c.n)-1 >= i {
		c.drop((c.head + c.n - 1) % len(c.ring))
		c.n--
	}
}

// DeleteThrough drops the records of index i and below (a head truncation).
func (c *Cache) DeleteThrough(i uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.n > 0 && c.first <= i {
		c.evictOldest()
	}
}

// Reset drops every record.
func (c *Cache) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reset()
}

// Len returns the number of cached records and their total size in bytes.
func (c *Cache) Len() (entries, bytes int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.n, c.bytes
}

func (c *Cache) reset() {
	for c.n > 0 {
		c.evictOldest()
	}
	c.head = 0
}

func (c *Cache) evictOldest() {
	c.drop(c.head)
	c.head = (c.head + 1) % len(c.ring)
	c.n--
	c.first++
}

// drop clears a slot, recycling its buffer when it held the buffer's last
// cached record.
func (c *Cache) drop(k int) {
	s := c.ring[k]
	c.ring[k] = slot{}
	c.bytes -= len(s.rec)
	if s.buf != nil {
		if s.buf.refs--; s.buf.refs == 0 {
			c.recycle(s.buf.mem)
		}
	}
}

// recycle keeps mem for Buffer, in place of the buffer kept longest when
// maxFree are kept already. The caller holds mu exclusively, so no reader
// is looking at mem.
func (c *Cache) recycle(mem []byte) {
	if cap(mem) == 0 || cap(mem) > maxFreeBytes {
		return
	}
	if len(c.free) == maxFree {
		copy(c.free, c.free[1:])
		c.free = c.free[:maxFree-1]
	}
	c.free = append(c.free, mem)
}

// grow doubles the ring (up to maxEntries), keeping the records in order.
func (c *Cache) grow() {
	size := min(max(2*len(c.ring), 64), c.maxEntries)
	ring := make([]slot, size)
	for i := 0; i < c.n; i++ {
		ring[i] = c.ring[(c.head+i)%len(c.ring)]
	}
	c.ring, c.head = ring, 0
}
