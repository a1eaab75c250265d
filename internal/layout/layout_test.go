package layout

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/errs"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

type inspector func(*bbolt.Tx) (Class, error)

// boltWith returns a bbolt file that fill wrote into.
func boltWith(t *testing.T, fill func(tx *bbolt.Tx) error) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "f.db"), 0o600, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, db.Update(fill))
	return db
}

func buckets(names ...string) func(tx *bbolt.Tx) error {
	return func(tx *bbolt.Tx) error {
		for _, n := range names {
			if _, err := tx.CreateBucket([]byte(n)); err != nil {
				return err
			}
		}
		return nil
	}
}

func newer(bucket []byte, k codec.Kind) func(tx *bbolt.Tx) error {
	return func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket(bucket)
		if err != nil {
			return err
		}
		return b.Put(KeyFormat, codec.AppendFormat(nil, codec.Format{Version: Version + 1, Kind: k}))
	}
}

func TestInspect(t *testing.T) {
	for _, c := range []struct {
		name    string
		fill    func(tx *bbolt.Tx) error
		inspect inspector
		class   Class
		err     error
		text    string
	}{
		{"new log store", LogStore.Create, LogStore.Inspect, Complete, nil, ""},
		{"new state machine", StateMachine.Create, StateMachine.Inspect, Complete, nil, ""},
		{"empty as log store", buckets(), LogStore.Inspect, Empty, nil, ""},
		{"empty as state machine", buckets(), StateMachine.Inspect, Empty, nil, ""},
		{"raft-boltdb as log store", buckets("logs", "conf"), LogStore.Inspect, RaftBoltDB, nil, ""},
		{"raft-boltdb as state machine", buckets("conf"), StateMachine.Inspect, RaftBoltDB, nil, ""},
		{"state machine as log store", StateMachine.Create, LogStore.Inspect, 0, errs.ErrNotStore,
			"this is a raftbolt state machine file (OpenStateMachine), not a log store"},
		{"log store as state machine", LogStore.Create, StateMachine.Inspect, 0, errs.ErrNotStore,
			`this is a raftbolt log store (bucket "raftbolt"); a state machine needs a file of its own`},
		{"foreign as log store", buckets("users", "orders"), LogStore.Inspect, 0, errs.ErrNotStore,
			`holds buckets "orders", "users" and no raftbolt format record`},
		{"foreign as state machine", buckets("users"), StateMachine.Inspect, 0, errs.ErrNotStore,
			`holds buckets "users" but no bucket "_raftbolt" with a state-machine format record`},
		{"newer log store", newer(MetaBucket, codec.KindLogStore), LogStore.Inspect, 0, errs.ErrUnsupportedVersion,
			"the store was written by format version 2"},
		{"newer state machine", newer(StateBucket, codec.KindStateMachine), StateMachine.Inspect, 0, errs.ErrUnsupportedVersion,
			"the state machine was written by format version 2"},
		{"kind mismatch", func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucket(StateBucket)
			if err != nil {
				return err
			}
			return b.Put(KeyFormat, formatRecord(codec.KindLogStore))
		}, StateMachine.Inspect, 0, errs.ErrNotStore, "the file is a raftbolt log store, not a state machine"},
		{"no format record", buckets("raftbolt"), LogStore.Inspect, 0, errs.ErrCorrupt, `bucket "raftbolt" has no format record`},
		{"bucket missing", func(tx *bbolt.Tx) error {
			if err := LogStore.Create(tx); err != nil {
				return err
			}
			return tx.DeleteBucket(ConfigIndexBucket)
		}, LogStore.Inspect, 0, errs.ErrCorrupt, `bucket "config-index" is missing`},
		{"no applied record", func(tx *bbolt.Tx) error {
			if err := StateMachine.Create(tx); err != nil {
				return err
			}
			return tx.Bucket(StateBucket).Delete(keyApplied)
		}, StateMachine.Inspect, 0, errs.ErrCorrupt, "the applied record"},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := boltWith(t, c.fill)
			require.NoError(t, db.View(func(tx *bbolt.Tx) error {
				class, err := c.inspect(tx)
				if c.err != nil {
					require.ErrorIs(t, err, c.err)
					require.ErrorContains(t, err, c.text)
					return nil
				}
				require.NoError(t, err)
				require.Equal(t, c.class, class)
				return nil
			}))
		})
	}
}

func TestLogStoreBuckets(t *testing.T) {
	db := boltWith(t, LogStore.Create)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		b, err := LogStore.Buckets(tx)
		require.NoError(t, err)
		require.Equal(t, 1.0, b.Log.FillPercent, "the log is packed full in a write")
		n, err := LogStore.Uint64(b.Meta, KeyCommit)
		require.NoError(t, err)
		require.Zero(t, n, "a missing integer is 0")
		require.NoError(t, LogStore.PutUint64(b.Meta, KeyCommit, 42))
		n, err = LogStore.Uint64(b.Meta, KeyCommit)
		require.NoError(t, err)
		require.EqualValues(t, 42, n)
		require.NoError(t, b.Meta.Put(KeySnapshotIndex, []byte{1, 2, 3}))
		_, err = LogStore.Uint64(b.Meta, KeySnapshotIndex)
		require.ErrorIs(t, err, errs.ErrCorrupt)
		require.ErrorContains(t, err, `bucket "raftbolt", key "snapshot-index"`)
		require.NoError(t, tx.DeleteBucket(StableBucket))
		_, err = LogStore.Buckets(tx)
		require.ErrorIs(t, err, errs.ErrCorrupt)
		require.ErrorContains(t, err, `bucket "stable" is missing`)
		return nil
	}))
}

func TestStateMachineRecords(t *testing.T) {
	db := boltWith(t, StateMachine.Create)
	c5 := raft.Configuration{Servers: []raft.Server{{ID: "a", Address: "a:1"}}}
	c3 := raft.Configuration{Servers: []raft.Server{{ID: "b", Address: "b:1"}}}
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		index, term, err := StateMachine.Applied(tx)
		require.NoError(t, err)
		require.Zero(t, index+term, "a new file has applied nothing")
		require.NoError(t, StateMachine.PutApplied(tx, 7, 2))
		index, term, err = StateMachine.Applied(tx)
		require.NoError(t, err)
		require.Equal(t, [2]uint64{7, 2}, [2]uint64{index, term})

		_, _, ok, err := StateMachine.Configuration(tx)
		require.NoError(t, err)
		require.False(t, ok)
		require.NoError(t, StateMachine.PutConfiguration(tx, 5, c5))
		require.NoError(t, StateMachine.PutConfiguration(tx, 3, c3), "an older one is ignored")
		index, c, ok, err := StateMachine.Configuration(tx)
		require.NoError(t, err)
		require.True(t, ok)
		require.EqualValues(t, 5, index)
		require.Equal(t, c5, c)

		require.NoError(t, tx.DeleteBucket(StateBucket))
		_, _, err = StateMachine.Applied(tx)
		require.ErrorIs(t, err, errs.ErrCorrupt)
		require.ErrorContains(t, err, `bucket "_raftbolt" is missing`)
		return nil
	}))
}
