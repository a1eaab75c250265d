package raftbolt

import (
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults for the zero values of Options.
const (
	// DefaultLockTimeout is how long Open waits for another handle to
	// release the file before it returns ErrLocked.
	DefaultLockTimeout = 3 * time.Second
	// DefaultCacheSize is the number of most recent entries GetLog serves
	// from memory. raft reads entries right after writing them (to apply
	// them, and to replicate them to followers), so a few thousand covers
	// a busy leader; raft.LogCache is not needed on top of it.
	DefaultCacheSize = 4096
	// DefaultCacheBytes bounds the memory the entry cache may hold.
	DefaultCacheBytes = 32 << 20
	// DefaultRestoreReplayLimit bounds how many entries GetCommitIndex lets
	// raft replay at start-up (see Options.RestoreReplayLimit).
	DefaultRestoreReplayLimit = 8192
	// DefaultMetricsInterval is how often the file-size and free-space
	// gauges are emitted.
	DefaultMetricsInterval = 10 * time.Second

	// DefaultJournalSize is the size of the journal file (Options.JournalSize):
	// four times what may be pending before StoreLogs waits for the
	// checkpoints, so that appends never wait for the ring itself.
	DefaultJournalSize = 16 << 20

	// DefaultCheckpointInterval is how long a journaled batch waits for its
	// checkpoint at most (Options.CheckpointInterval).
	DefaultCheckpointInterval = time.Second

	// DefaultAutoCompactFree is how much free space the file must hold,
	// besides more than its live data, before the store compacts itself
	// (Options.AutoCompactFree).
	DefaultAutoCompactFree = 64 << 20

	// DefaultAutoCompactInterval is how often the store looks at its free
	// space (Options.AutoCompactInterval).
	DefaultAutoCompactInterval = time.Minute
)

// fileMode is the permission of the files Open and Compact create: a raft
// log holds every command the cluster ever applied, so it is the owner's.
const fileMode os.FileMode = 0o600

// Options configures a Store. The zero value (or a nil *Options) gives a
// durable store with the defaults documented on each field.
type Options struct {
	// ReadOnly opens the store for inspection: the file is never created,
	// no bucket is ever added, and every write returns ErrReadOnly. Several
	// read-only handles may share a file; a read-only Open waits (up to
	// LockTimeout) while a writable handle holds it.
	ReadOnly bool

	// NoSync skips fsync after each commit. A crash of the machine (not of
	// the process) may then lose acknowledged writes or corrupt the file.
	// For tests and benchmarks only.
	NoSync bool

	// LockTimeout is how long Open waits while another handle, in this
	// process or another, holds the file. 0 means DefaultLockTimeout; after
	// it Open returns ErrLocked naming the path.
	LockTimeout time.Duration

	// CacheSize is the number of most recent entries GetLog serves from
	// memory without a bbolt transaction. 0 means DefaultCacheSize; a
	// negative value disables the cache.
	CacheSize int

	// CacheBytes bounds the encoded size of the cached entries; the oldest
	// are evicted first. 0 means DefaultCacheBytes; a negative value leaves
	// the cache bounded by CacheSize alone.
	CacheBytes int

	// Logger receives the store's structured logs. nil means a logger that
	// writes warnings and errors to stderr and nothing else.
	Logger hclog.Logger

	// MetricsInterval is how often the raftbolt.file.size_bytes and
	// raftbolt.file.free_bytes gauges are emitted (through go-metrics'
	// global sink). 0 means DefaultMetricsInterval; negative disables them.
	MetricsInterval time.Duration

	// MetricsName is the value of the "store" label the file gauges carry,
	// so that the stores of one process keep a gauge each instead of
	// overwriting one another's. "" means the path given to Open.
	MetricsName string

	// RestoreReplayLimit bounds the entries past the newest snapshot
	// recorded through WrapSnapshotStore (or past index 0 when none was)
	// that GetCommitIndex lets raft replay when Config.RestoreCommittedLogs
	// is set. raft v1.8.0 replays them inside NewRaft, before its FSM
	// goroutine runs, through a channel of 128 batches of at most
	// Config.MaxAppendEntries entries: one more batch and NewRaft blocks for
	// ever. Keep it at most 128 x MaxAppendEntries. 0 means
	// DefaultRestoreReplayLimit (128 x raft's default of 64); negative
	// removes the bound. Entries not replayed are applied after the
	// election, as without RestoreCommittedLogs.
	RestoreReplayLimit int

	// InitialMmapSize is the initial size of bbolt's memory map, in bytes.
	// A map at least as large as the file saves remapping as it grows,
	// which waits for every open read transaction. 0 lets bbolt size it.
	InitialMmapSize int

	// VerifyOnOpen makes Open check every page of the file's B+tree
	// (bounds, types, key order, no page reachable twice) before bbolt maps
	// it, even after a clean Close. Open always does this after a crash,
	// when bbolt would otherwise walk an unchecked tree itself. The cost is
	// one read of every page; the raftbolt tool's check command sets it.
	VerifyOnOpen bool

	// NoJournal turns the journal off: each StoreLogs then commits a bbolt
	// transaction (two fsyncs) instead of appending one frame to the
	// journal (one fdatasync).
	//
	// The journal is on by default. StoreLogs appends each batch to a
	// journal file next to the store (path + ".journal", JournalSize
	// bytes, allocated once) with one fdatasync, and a background
	// checkpoint moves journaled entries into the bbolt file in bulk;
	// Close checkpoints everything. Batches holding configuration
	// entries, the bootstrap entry, and batches larger than the journal go
	// to the file directly. A journal left by a crash is replayed by the
	// next Open whatever this option says: with NoJournal, Open
	// checkpoints it into the file and removes it (or returns why it
	// cannot); a read-only Open reads it without writing.
	NoJournal bool

	// Journal was the opt-in switch of the journal before it became the
	// default.
	//
	// Deprecated: the journal is on unless NoJournal is set; Journal is
	// ignored.
	Journal bool

	// JournalSize is the journal file's size, a multiple of 4096, at
	// least 64 KiB; it is allocated and zero-filled when the journal is
	// created (a journal of another size is used as it is until it is
	// next created). 0 means DefaultJournalSize. A checkpoint starts once
	// 64 KiB (or a quarter of a smaller journal) is pending, or
	// CheckpointInterval after the first pending batch, and writes at most
	// 2 MiB (or a quarter) in one transaction; StoreLogs waits for the
	// checkpoints while 4 MiB (or half of the journal) is pending, so the
	// memory the pending entries take stays bounded.
	JournalSize int64

	// CheckpointInterval bounds how long a journaled batch waits for its
	// checkpoint. 0 means DefaultCheckpointInterval.
	CheckpointInterval time.Duration

	// AutoCompactFree makes a writable store Compact itself, online, once
	// its file holds at least this many bytes of free pages and more free
	// space than live data (after raft truncated a long log, say). 0 means
	// DefaultAutoCompactFree; negative turns it off.
	AutoCompactFree int64

	// AutoCompactInterval is how often the store looks at its free space
	// for AutoCompactFree. 0 means DefaultAutoCompactInterval.
	AutoCompactInterval time.Duration
}

// withDefaults returns a copy of o (nil allowed) with defaults filled in.
func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.LockTimeout < 0 {
		return r, invalidf("negative LockTimeout %v", r.LockTimeout)
	}
	if r.InitialMmapSize < 0 {
		return r, invalidf("negative InitialMmapSize %d", r.InitialMmapSize)
	}
	if r.LockTimeout == 0 {
		r.LockTimeout = DefaultLockTimeout
	}
	if r.CacheSize == 0 {
		r.CacheSize = DefaultCacheSize
	}
	if r.CacheBytes == 0 {
		r.CacheBytes = DefaultCacheBytes
	}
	if r.RestoreReplayLimit == 0 {
		r.RestoreReplayLimit = DefaultRestoreReplayLimit
	}
	if r.MetricsInterval == 0 {
		r.MetricsInterval = DefaultMetricsInterval
	}
	if r.JournalSize == 0 {
		r.JournalSize = DefaultJournalSize
	}
	if r.JournalSize < 0 || r.JournalSize%4096 != 0 || r.JournalSize < 64<<10 {
		return r, invalidf("JournalSize %d: a multiple of 4096, at least 64 KiB", r.JournalSize)
	}
	if r.CheckpointInterval == 0 {
		r.CheckpointInterval = DefaultCheckpointInterval
	}
	if r.AutoCompactFree == 0 {
		r.AutoCompactFree = DefaultAutoCompactFree
	}
	if r.AutoCompactInterval == 0 {
		r.AutoCompactInterval = DefaultAutoCompactInterval
	}
	if r.AutoCompactInterval < 0 {
		return r, invalidf("negative AutoCompactInterval %v", r.AutoCompactInterval)
	}
	if r.CheckpointInterval < 0 {
		return r, invalidf("negative CheckpointInterval %v", r.CheckpointInterval)
	}
	if r.Logger == nil {
		r.Logger = hclog.New(&hclog.LoggerOptions{
			Name:   "raftbolt",
			Level:  hclog.Warn,
			Output: os.Stderr,
		})
	}
	return r, nil
}
