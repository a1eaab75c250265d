package raftbolt

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/raftbolt/raftbolt/internal/codec"
	"go.etcd.io/bbolt"
)

// formatVersion is the store format this build writes. Open refuses a
// store whose format record names a newer one (ErrUnsupportedVersion).
const formatVersion = 1

// The bucket layout. Every bucket is top-level and every one of them is
// created by Open, in one transaction with the format record, so no write
// path can ever meet a missing bucket on a store Open accepted.
var (
	// bucketMeta holds the format record and the store's own state.
	bucketMeta = []byte("raftbolt")
	// bucketLog holds the log: key = 8-byte big-endian index, value = an
	// entry record (internal/codec).
	bucketLog = []byte("log")
	// bucketStable holds raft's StableStore keys, values as given.
	bucketStable = []byte("stable")
	// bucketConfig holds the latest cluster configuration record.
	bucketConfig = []byte("config")
	// bucketConfigIndex holds one empty-valued key (8-byte big-endian) per
	// configuration entry in bucketLog, so GetCommitIndex finds the newest
	// one below the commit index without scanning the log.
	bucketConfigIndex = []byte("config-index")

	allBuckets = [][]byte{bucketMeta, bucketLog, bucketStable, bucketConfig, bucketConfigIndex}
)

// Keys of bucketMeta and bucketConfig.
var (
	keyFormat = []byte("format") // format record (internal/codec)
	// keyCommit is the commit index persisted with the last StoreLogs
	// after a StageCommitIndex (8-byte big-endian).
	keyCommit = []byte("commit")
	// keySnapshotConfig is the largest configuration index of a snapshot
	// recorded through WrapSnapshotStore (8-byte big-endian).
	keySnapshotConfig = []byte("snapshot-config-index")
	// keySnapshotIndex is the largest index of a snapshot recorded through
	// WrapSnapshotStore (8-byte big-endian).
	keySnapshotIndex = []byte("snapshot-index")
	// keyLatest is bucketConfig's only key: the latest configuration.
	keyLatest = []byte("latest")
)

// raft-boltdb's buckets (v1 and v2 alike), recognised so that Open can say
// what to do with such a file.
var raftBoltDBBuckets = [][]byte{[]byte("logs"), []byte("conf")}

// layout is what Open found in the file.
type layout int

const (
	layoutEmpty layout = iota // a bbolt file with no bucket at all: a new store
	layoutStore               // a complete raftbolt store
)

// inspectLayout classifies the file open in tx without changing it.
func inspectLayout(tx *bbolt.Tx) (layout, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		var names []string
		_ = tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			names = append(names, fmt.Sprintf("%q", name))
			return nil
		})
		if len(names) == 0 {
			return layoutEmpty, nil
		}
		if tx.Bucket(bucketState) != nil {
			return 0, fmt.Errorf("%w: this is a raftbolt state machine file (OpenStateMachine), not a log store", ErrNotStore)
		}
		if isRaftBoltDB(tx) {
			return 0, fmt.Errorf("%w: %s", ErrNotStore, migrateHint(tx.DB().Path()))
		}
		return 0, fmt.Errorf("%w: the bbolt database holds buckets %s and no raftbolt format record",
			ErrNotStore, strings.Join(names, ", "))
	}
	rec := meta.Get(keyFormat)
	if rec == nil {
		return 0, corruptf("bucket %q has no format record", bucketMeta)
	}
	f, err := codec.DecodeFormat(rec, formatVersion)
	if errors.Is(err, codec.ErrVersion) {
		return 0, fmt.Errorf("%w: the store was written by format version %d; this build reads version %d and older",
			ErrUnsupportedVersion, f.Version, formatVersion)
	}
	if err != nil {
		return 0, corruptf("format record: %v", err)
	}
	if f.Kind != codec.KindLogStore {
		return 0, fmt.Errorf("%w: the file is a raftbolt %s, not a log store", ErrNotStore, f.Kind)
	}
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			return 0, corruptf("bucket %q is missing", name)
		}
	}
	return layoutStore, nil
}

// migrateHint tells the owner of the hashicorp/raft-boltdb file at path
// the exact commands that convert it.
func migrateHint(path string) string {
	p, q := shellQuote(path), shellQuote(path+".raftbolt")
	return fmt.Sprintf("%s is a hashicorp/raft-boltdb store (buckets \"logs\" and \"conf\"); "+
		"with the process that uses it stopped, convert it with `raftbolt migrate %s %s` (or raftbolt.Migrate) "+
		"and open %s, or move the copy into place with `mv %s %s.boltdb && mv %s %s`",
		path, p, q, q, p, p, q, p)
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// characters that are safe unquoted.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@%", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func isRaftBoltDB(tx *bbolt.Tx) bool {
	for _, name := range raftBoltDBBuckets {
		if tx.Bucket(name) != nil {
			return true
		}
	}
	return false
}

// createLayout creates every bucket and the format record. It runs in the
// one write transaction that turns an empty file into a store.
func createLayout(tx *bbolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("create bucket %q: %w", name, err)
		}
	}
	rec := codec.AppendFormat(nil, codec.Format{Version: formatVersion, Kind: codec.KindLogStore})
	return tx.Bucket(bucketMeta).Put(keyFormat, rec)
}

// buckets are the store's buckets within one transaction.
type buckets struct {
	meta, log, stable, config, configIndex *bbolt.Bucket
}

// openBuckets returns the store's buckets in tx. Every transaction starts
// with it, so a bucket that went missing (only damage can do that) is an
// ErrCorrupt naming it, never bbolt's "bucket not found".
func openBuckets(tx *bbolt.Tx) (b buckets, err error) {
	for _, x := range []struct {
		b    **bbolt.Bucket
		name []byte
	}{
		{&b.meta, bucketMeta}, {&b.log, bucketLog}, {&b.stable, bucketStable},
		{&b.config, bucketConfig}, {&b.configIndex, bucketConfigIndex},
	} {
		if *x.b, err = openBucket(tx, x.name); err != nil {
			return b, err
		}
	}
	return b, nil
}

// openBucket returns one of the store's buckets in tx, for the
// transactions that need only some of them (opening a bucket costs bbolt
// a few allocations, and StoreLogs runs at every raft append). A missing
// bucket is an ErrCorrupt naming it, as in openBuckets.
func openBucket(tx *bbolt.Tx, name []byte) (*bbolt.Bucket, error) {
	b := tx.Bucket(name)
	if b == nil {
		return nil, corruptf("bucket %q is missing", name)
	}
	if tx.Writable() && (bytes.Equal(name, bucketLog) || bytes.Equal(name, bucketConfigIndex)) {
		// The log is appended at its end and truncated at either end, so
		// full pages are never split again: pack them full instead of the
		// default half, which halves the pages an append rewrites and the
		// size of the file.
		b.FillPercent = 1.0
	}
	return b, nil
}

// getUint64 reads an integer record of bucketMeta; a missing key is 0.
func getUint64(b *bbolt.Bucket, key []byte) (uint64, error) {
	rec := b.Get(key)
	if rec == nil {
		return 0, nil
	}
	n, err := codec.DecodeUint64Value(key, rec)
	if err != nil {
		return 0, corruptf("bucket %q, key %q: %v", bucketMeta, key, err)
	}
	return n, nil
}

// putUint64 writes an integer record of bucketMeta.
func putUint64(b *bbolt.Bucket, key []byte, v uint64) error {
	return b.Put(key, codec.AppendUint64Value(nil, key, v))
}
