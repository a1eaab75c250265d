package layout

import (
	"fmt"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/codec"
	"go.etcd.io/bbolt"
)

// StateBucket is a state machine file's one reserved top-level bucket;
// every other bucket is the application's. It holds the format record
// (KeyFormat), the applied record and, once one is committed, the latest
// configuration record. The leading underscore keeps it apart from the
// names applications choose, and from the log store's MetaBucket, so
// neither kind of file is taken for the other.
var StateBucket = []byte("_raftbolt")

// Keys of StateBucket besides KeyFormat.
var (
	// keyApplied holds the index and term of the last applied entry (see
	// encodeApplied). Every transaction that applies entries writes it,
	// and StateMachine.Create writes 0, 0, so a complete file always has
	// one.
	keyApplied = []byte("applied")
	// keyConfig holds the latest committed configuration record
	// (internal/codec), absent until one is committed.
	keyConfig = []byte("config")
)

// StateMachine is the layout of a state machine file's reserved bucket.
var StateMachine stateMachine

type stateMachine struct{}

// Create lays out a new state machine file: StateBucket, its format
// record and an applied record of index 0, term 0. It runs in the one
// write transaction that turns an empty file (Inspect found it Empty) into
// a state machine file.
func (stateMachine) Create(tx *bbolt.Tx) error {
	b, err := tx.CreateBucket(StateBucket)
	if err != nil {
		return fmt.Errorf("create bucket %q: %w", StateBucket, err)
	}
	if err := b.Put(KeyFormat, formatRecord(codec.KindStateMachine)); err != nil {
		return err
	}
	return b.Put(keyApplied, encodeApplied(0, 0))
}

// Inspect classifies the file open in tx as a state machine file without
// changing it. Empty, RaftBoltDB and Complete come with a nil error;
// anything else is an error wrapping ErrNotStore (someone else's buckets,
// a raftbolt log store), ErrUnsupportedVersion (a newer format) or
// ErrCorrupt (no valid format record or applied record, or a damaged
// configuration record).
func (stateMachine) Inspect(tx *bbolt.Tx) (Class, error) {
	b := tx.Bucket(StateBucket)
	if b == nil {
		return foreign(tx, MetaBucket,
			fmt.Sprintf("this is a raftbolt log store (bucket %q); a state machine needs a file of its own", MetaBucket),
			fmt.Sprintf("but no bucket %q with a state-machine format record", StateBucket))
	}
	if err := checkFormat(b, StateBucket, codec.KindStateMachine, "state machine"); err != nil {
		return 0, err
	}
	if _, _, err := decodeApplied(b.Get(keyApplied)); err != nil {
		return 0, err
	}
	if rec := b.Get(keyConfig); rec != nil {
		if _, _, err := codec.DecodeConfiguration(rec); err != nil {
			return 0, corruptf("configuration record: %v", err)
		}
	}
	return Complete, nil
}

// Applied reads the applied record in tx: the index and term of the last
// entry the state holds.
func (stateMachine) Applied(tx *bbolt.Tx) (index, term uint64, err error) {
	b, err := stateBucket(tx)
	if err != nil {
		return 0, 0, err
	}
	return decodeApplied(b.Get(keyApplied))
}

// PutApplied writes the applied record in tx, in the transaction that
// applies the entries up to index, so the state and its applied index
// never disagree.
func (stateMachine) PutApplied(tx *bbolt.Tx, index, term uint64) error {
	b, err := stateBucket(tx)
	if err != nil {
		return err
	}
	return b.Put(keyApplied, encodeApplied(index, term))
}

// Configuration reads the configuration record in tx: the latest
// committed configuration and its index. ok is false, with a nil error,
// when none was recorded.
func (stateMachine) Configuration(tx *bbolt.Tx) (index uint64, c raft.Configuration, ok bool, err error) {
	b, err := stateBucket(tx)
	if err != nil {
		return 0, raft.Configuration{}, false, err
	}
	rec := b.Get(keyConfig)
	if rec == nil {
		return 0, raft.Configuration{}, false, nil
	}
	index, c, err = codec.DecodeConfiguration(rec)
	if err != nil {
		return 0, raft.Configuration{}, false, corruptf("configuration record: %v", err)
	}
	return index, c, true, nil
}

// PutConfiguration records c at index in tx unless the recorded one is as
// new or newer, so the record only moves forward. A damaged record is
// replaced rather than kept failing.
func (stateMachine) PutConfiguration(tx *bbolt.Tx, index uint64, c raft.Configuration) error {
	b, err := stateBucket(tx)
	if err != nil {
		return err
	}
	if rec := b.Get(keyConfig); rec != nil {
		if cur, _, err := codec.DecodeConfiguration(rec); err == nil && cur >= index {
			return nil
		}
	}
	return b.Put(keyConfig, codec.AppendConfiguration(nil, index, c))
}

// stateBucket returns StateBucket in tx; a missing one (damage, or an
// ApplyFunc that deleted it) is an ErrCorrupt naming it.
func stateBucket(tx *bbolt.Tx) (*bbolt.Bucket, error) {
	b := tx.Bucket(StateBucket)
	if b == nil {
		return nil, corruptf("bucket %q is missing", StateBucket)
	}
	return b, nil
}

// encodeApplied returns the applied record: a value record
// (internal/codec, its checksum covering the key) of the index and term,
// 8 bytes each, big-endian.
func encodeApplied(index, term uint64) []byte {
	v := make([]byte, 0, 16)
	v = append(v, codec.PutUint64(index)...)
	v = append(v, codec.PutUint64(term)...)
	return codec.AppendValue(nil, keyApplied, v)
}

// decodeApplied decodes an applied record; a missing or damaged one is
// ErrCorrupt.
func decodeApplied(rec []byte) (index, term uint64, err error) {
	v, err := codec.DecodeValue(keyApplied, rec)
	if err != nil {
		return 0, 0, corruptf("the applied record: %v", err)
	}
	if len(v) != 16 {
		return 0, 0, corruptf("the applied record holds %d bytes, not 16", len(v))
	}
	index, _ = codec.Uint64(v[:8])
	term, _ = codec.Uint64(v[8:])
	return index, term, nil
}
