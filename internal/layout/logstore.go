package layout

import (
	"bytes"
	"fmt"

	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/journal"
	"go.etcd.io/bbolt"
)

// JournalSuffix names a log store's journal file: the store's path
// followed by it.
const JournalSuffix = ".journal"

// The log store's buckets. Every one is top-level, and LogStore.Create
// makes all of them in one transaction with the format record, so no write
// path ever meets a missing bucket in a file Inspect found Complete: a
// missing bucket is damage, and LogStore.Buckets says so.
var (
	// MetaBucket holds the format record (KeyFormat) and the store's own
	// integers (KeyCommit, KeySnapshotIndex, KeySnapshotConfig).
	MetaBucket = []byte("raftbolt")
	// LogBucket holds the log: key = 8-byte big-endian index, value = an
	// entry record (internal/codec).
	LogBucket = []byte("log")
	// StableBucket holds raft's StableStore keys, each value a value
	// record (internal/codec) of the value given.
	StableBucket = []byte("stable")
	// ConfigBucket holds the latest cluster configuration record, under
	// KeyLatest, its only key.
	ConfigBucket = []byte("config")
	// ConfigIndexBucket holds one empty-valued key (8-byte big-endian)
	// per configuration entry in LogBucket, and no other key, so that the
	// newest configuration entry below an index is found without scanning
	// the log.
	ConfigIndexBucket = []byte("config-index")

	logStoreBuckets = [][]byte{MetaBucket, LogBucket, StableBucket, ConfigBucket, ConfigIndexBucket}
)

// Keys of MetaBucket (besides KeyFormat) and of ConfigBucket. The integers
// are value records of 8 bytes, big-endian (LogStore.Uint64); a missing
// one is 0.
var (
	// KeyCommit is the commit index persisted with the last StoreLogs
	// after a StageCommitIndex.
	KeyCommit = []byte("commit")
	// KeySnapshotIndex is the largest index of a snapshot recorded
	// through WrapSnapshotStore.
	KeySnapshotIndex = []byte("snapshot-index")
	// KeySnapshotConfig is the largest configuration index of a snapshot
	// recorded through WrapSnapshotStore.
	KeySnapshotConfig = []byte("snapshot-config-index")
	// KeyLatest is ConfigBucket's only key: the latest configuration
	// record (internal/codec).
	KeyLatest = []byte("latest")
	// KeyJournal is how far the store's journal (internal/journal) is
	// checkpointed into the file: a value record of the journal's id, the
	// sequence number, offset and checksum of the last frame applied (8,
	// 8, 8 and 4 bytes, big-endian). Absent: no journal was ever used.
	// Every checkpoint writes it in the transaction that applies its
	// frames.
	KeyJournal = []byte("journal")
)

// LogStore is the layout of a log store file.
var LogStore logStore

// JournalRecord reads KeyJournal from meta: the record, and whether there
// is one. A record that fails its checks is an error wrapping
// errs.ErrCorrupt.
func (logStore) JournalRecord(meta *bbolt.Bucket) (journal.Record, bool, error) {
	raw := meta.Get(KeyJournal)
	if raw == nil {
		return journal.Record{}, false, nil
	}
	v, err := codec.DecodeValue(KeyJournal, raw)
	if err != nil {
		return journal.Record{}, true, corruptf("the journal record: %v", err)
	}
	r, err := journal.DecodeRecord(v) // wraps ErrCorrupt
	if err != nil {
		return journal.Record{}, true, fmt.Errorf("the journal record: %w", err)
	}
	return r, true, nil
}

// PutJournalRecord writes r as KeyJournal in meta.
func (logStore) PutJournalRecord(meta *bbolt.Bucket, r journal.Record) error {
	return meta.Put(KeyJournal, codec.AppendValue(nil, KeyJournal, r.Encode()))
}

type logStore struct{}

// Create lays out a new log store: every bucket and the format record. It
// runs in the one write transaction that turns an empty file (Inspect
// found it Empty) into a store, so a file is a complete store or none.
func (logStore) Create(tx *bbolt.Tx) error {
	for _, name := range logStoreBuckets {
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("create bucket %q: %w", name, err)
		}
	}
	return tx.Bucket(MetaBucket).Put(KeyFormat, formatRecord(codec.KindLogStore))
}

// Inspect classifies the file open in tx as a log store without changing
// it. Empty, RaftBoltDB and Complete come with a nil error; anything else
// is an error wrapping ErrNotStore (someone else's buckets, a raftbolt
// state machine file), ErrUnsupportedVersion (a newer format) or
// ErrCorrupt (no valid format record, or a bucket missing).
func (logStore) Inspect(tx *bbolt.Tx) (Class, error) {
	meta := tx.Bucket(MetaBucket)
	if meta == nil {
		return foreign(tx, StateBucket,
			"this is a raftbolt state machine file (OpenStateMachine), not a log store",
			"and no raftbolt format record")
	}
	if err := checkFormat(meta, MetaBucket, codec.KindLogStore, "store"); err != nil {
		return 0, err
	}
	for _, name := range logStoreBuckets {
		if tx.Bucket(name) == nil {
			return 0, corruptf("bucket %q is missing", name)
		}
	}
	return Complete, nil
}

// LogBuckets are a log store's buckets within one transaction, valid
// until it ends.
type LogBuckets struct {
	Meta, Log, Stable, Config, ConfigIndex *bbolt.Bucket
}

// Buckets returns the store's buckets in tx. A bucket that went missing
// (only damage can do that) is an ErrCorrupt naming it, never bbolt's
// "bucket not found" or a nil bucket.
func (l logStore) Buckets(tx *bbolt.Tx) (b LogBuckets, err error) {
	for _, x := range []struct {
		b    **bbolt.Bucket
		name []byte
	}{
		{&b.Meta, MetaBucket}, {&b.Log, LogBucket}, {&b.Stable, StableBucket},
		{&b.Config, ConfigBucket}, {&b.ConfigIndex, ConfigIndexBucket},
	} {
		if *x.b, err = l.Bucket(tx, x.name); err != nil {
			return b, err
		}
	}
	return b, nil
}

// Bucket returns one of the store's buckets in tx, for the transactions
// that need only some of them (opening a bucket costs bbolt a few
// allocations, and StoreLogs runs at every raft append). A missing bucket
// is an ErrCorrupt naming it, as in Buckets.
func (logStore) Bucket(tx *bbolt.Tx, name []byte) (*bbolt.Bucket, error) {
	b := tx.Bucket(name)
	if b == nil {
		return nil, corruptf("bucket %q is missing", name)
	}
	if tx.Writable() && (bytes.Equal(name, LogBucket) || bytes.Equal(name, ConfigIndexBucket)) {
		// The log is appended at its end and truncated at either end, so
		// full pages are never split again: pack them full instead of the
		// default half, which halves the pages an append rewrites and the
		// size of the file.
		b.FillPercent = 1.0
	}
	return b, nil
}

// Uint64 reads the integer under key of meta (MetaBucket); a missing key
// is 0. A damaged record is an ErrCorrupt naming the key.
func (logStore) Uint64(meta *bbolt.Bucket, key []byte) (uint64, error) {
	rec := meta.Get(key)
	if rec == nil {
		return 0, nil
	}
	n, err := codec.DecodeUint64Value(key, rec)
	if err != nil {
		return 0, corruptf("bucket %q, key %q: %v", MetaBucket, key, err)
	}
	return n, nil
}

// PutUint64 writes the integer v under key of meta (MetaBucket).
func (logStore) PutUint64(meta *bbolt.Bucket, key []byte, v uint64) error {
	return meta.Put(key, codec.AppendUint64Value(nil, key, v))
}
