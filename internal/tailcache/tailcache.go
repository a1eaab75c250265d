// Package tailcache keeps the encoded records of the newest log entries in
// memory, so that raft's replication and apply paths, which read entries
// right after writing them, are served without a bbolt transaction.
//
// The cache holds a contiguous run of indexes that ends at the newest entry
// it was given; it is bounded both by a number of entries and by a number of
// bytes, evicting the oldest entries first. It never reads or writes the
// file: the store tells it what was committed and what was deleted, and
// must do so while holding its write lock, after the commit succeeded.
package tailcache

import "sync"

// Cache is safe for concurrent use by one writer and many readers.
type Cache struct {
	maxEntries int
	maxBytes   int

	mu sync.RWMutex
	// ring holds the records of indexes first .. first+n-1, the record of
	// first being at ring[head]. len(ring) grows by doubling up to maxEntries.
	ring  [][]byte
	head  int
	n     int
	first uint64
	bytes int // sum of len(record) over the cached records
}

// New returns a cache of at most maxEntries records and maxBytes bytes.
// maxEntries <= 0 returns a cache that holds nothing.
func New(maxEntries, maxBytes int) *Cache {
	return &Cache{maxEntries: max(maxEntries, 0), maxBytes: maxBytes}
}

// Get returns the record of index i. The record must not be modified.
func (c *Cache) Get(i uint64) ([]byte, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.n == 0 || i < c.first || i-c.first >= uint64(c.n) {
		return nil, false
	}
	return c.ring[(c.head+int(i-c.first))%len(c.ring)], true
}

// Append adds the records of indexes first .. first+len(recs)-1, which were
// just committed after everything the cache holds. If first does not follow
// the cached run, the cache restarts at first. The cache keeps the records;
// the caller must not modify them afterwards.
func (c *Cache) Append(first uint64, recs [][]byte) {
	if c.maxEntries == 0 || len(recs) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n > 0 && first != c.first+uint64(c.n) {
		c.reset()
	}
	// Records that would be evicted at once are never inserted.
	if skip := len(recs) - c.maxEntries; skip > 0 {
		first += uint64(skip)
		recs = recs[skip:]
	}
	if c.n == 0 {
		c.first = first
	}
	for _, rec := range recs {
		if c.n == len(c.ring) {
			if len(c.ring) < c.maxEntries {
				c.grow()
			} else {
				c.evictOldest()
			}
		}
		c.ring[(c.head+c.n)%len(c.ring)] = rec
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
		slot := (c.head + c.n - 1) % len(c.ring)
		c.bytes -= len(c.ring[slot])
		c.ring[slot] = nil
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
	clear(c.ring)
	c.head, c.n, c.bytes = 0, 0, 0
}

func (c *Cache) evictOldest() {
	c.bytes -= len(c.ring[c.head])
	c.ring[c.head] = nil
	c.head = (c.head + 1) % len(c.ring)
	c.n--
	c.first++
}

// grow doubles the ring (up to maxEntries), keeping the records in order.
func (c *Cache) grow() {
	size := min(max(2*len(c.ring), 64), c.maxEntries)
	ring := make([][]byte, size)
	for i := 0; i < c.n; i++ {
		ring[i] = c.ring[(c.head+i)%len(c.ring)]
	}
	c.ring, c.head = ring, 0
}
