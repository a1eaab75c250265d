// Package layout owns the bucket layout and the records of both raftbolt
// file kinds, the log store and the state machine: the names of their
// buckets and keys, their creation in the one write transaction that turns
// an empty bbolt file into a file of the kind (Options.Init of
// internal/boltfile), the classification of an opened file (Inspect), and
// typed access to the buckets and records within a transaction.
//
// Everything here takes a *bbolt.Tx that the caller began and runs inside
// it: the package never opens, creates or replaces a file, never begins or
// ends a transaction, and keeps no state. The byte formats of the records
// are internal/codec's. Its errors wrap the sentinels of internal/errs,
// and name the bucket or record involved; the operation and the path are
// the caller's to add, and so is any advice that names the public API's
// remedies (what to do with a hashicorp/raft-boltdb file: RaftBoltDB).
package layout

import (
	"errors"
	"fmt"
	"strings"

	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/errs"
	"go.etcd.io/bbolt"
)

// Version is the format version this build writes into the format record
// of either kind. Inspect refuses a file whose record names a newer one
// (ErrUnsupportedVersion) and reads every older one.
const Version = 1

// KeyFormat is the key of the format record (internal/codec), in the
// kind's own bucket: MetaBucket of a log store, StateBucket of a state
// machine. Its kind byte says which of the two the file is.
var KeyFormat = []byte("format")

// Class is what Inspect found in a file.
type Class int

const (
	// Empty is a bbolt file without any bucket: a new file, which Create
	// lays out.
	Empty Class = iota
	// Complete is a file of the kind inspected with its whole layout:
	// its format record is of this kind and no newer than Version, and
	// every bucket of the kind exists.
	Complete
	// RaftBoltDB is a hashicorp/raft-boltdb store, recognised by its
	// buckets "logs" or "conf", so that the caller can say what to do
	// with it. Inspect returns it with a nil error: the message is the
	// caller's.
	RaftBoltDB
)

// raft-boltdb's buckets (v1 and v2 alike).
var raftBoltDBBuckets = [][]byte{[]byte("logs"), []byte("conf")}

// foreign classifies a file that lacks the bucket the inspected kind keeps
// its format record in: Empty, RaftBoltDB, or ErrNotStore. other is the
// other kind's bucket, and otherKind the error's detail for a file of that
// kind; a file holding neither kind's nor raft-boltdb's buckets is
// ErrNotStore listing its buckets, followed by notMine.
func foreign(tx *bbolt.Tx, other []byte, otherKind, notMine string) (Class, error) {
	var names []string
	_ = tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
		names = append(names, fmt.Sprintf("%q", name))
		return nil
	})
	switch {
	case len(names) == 0:
		return Empty, nil
	case tx.Bucket(other) != nil:
		return 0, fmt.Errorf("%w: %s", errs.ErrNotStore, otherKind)
	case isRaftBoltDB(tx):
		return RaftBoltDB, nil
	}
	return 0, fmt.Errorf("%w: the bbolt database holds buckets %s %s", errs.ErrNotStore, strings.Join(names, ", "), notMine)
}

func isRaftBoltDB(tx *bbolt.Tx) bool {
	for _, name := range raftBoltDBBuckets {
		if tx.Bucket(name) != nil {
			return true
		}
	}
	return false
}

// checkFormat checks the format record in bucket (named name) against
// want. noun names the file in the error of a newer version ("store").
func checkFormat(b *bbolt.Bucket, name []byte, want codec.Kind, noun string) error {
	rec := b.Get(KeyFormat)
	if rec == nil {
		return corruptf("bucket %q has no format record", name)
	}
	f, err := codec.DecodeFormat(rec, Version)
	if errors.Is(err, codec.ErrVersion) {
		return fmt.Errorf("%w: the %s was written by format version %d; this build reads version %d and older",
			errs.ErrUnsupportedVersion, noun, f.Version, Version)
	}
	if err != nil {
		return corruptf("format record: %v", err)
	}
	if f.Kind != want {
		return fmt.Errorf("%w: the file is a raftbolt %s, not a %s", errs.ErrNotStore, f.Kind, want)
	}
	return nil
}

// formatRecord returns the format record of a new file of kind k.
func formatRecord(k codec.Kind) []byte {
	return codec.AppendFormat(nil, codec.Format{Version: Version, Kind: k})
}

// corruptf returns an error wrapping ErrCorrupt with a formatted detail.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errs.ErrCorrupt}, args...)...)
}
