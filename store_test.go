package raftbolt

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/layout"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

func TestOpenCreatesEveryBucketOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := Open(path, testOptions())
	require.NoError(t, err)
	require.Equal(t, path, s.Path())
	require.NoError(t, s.Close())

	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		var names []string
		_ = tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			names = append(names, string(name))
			return nil
		})
		require.ElementsMatch(t, []string{"raftbolt", "log", "stable", "config", "config-index"}, names)
		f, err := codec.DecodeFormat(tx.Bucket(layout.MetaBucket).Get(layout.KeyFormat), layout.Version)
		require.NoError(t, err)
		require.Equal(t, codec.Format{Version: layout.Version, Kind: codec.KindLogStore}, f)
		return nil
	}))
}

func TestOpenEmptyFilesAreNewStores(t *testing.T) {
	dir := t.TempDir()
	zero := filepath.Join(dir, "zero.db")
	require.NoError(t, os.WriteFile(zero, nil, 0o600))
	s := openAt(t, zero)
	require.NoError(t, s.StoreLogs(entries(1, 3)))

	// A bbolt database without a single bucket (a crash between bbolt
	// creating the file and the store's init transaction leaves one).
	empty := filepath.Join(dir, "empty.db")
	db, err := bbolt.Open(empty, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	s = openAt(t, empty)
	require.NoError(t, s.StoreLogs(entries(1, 3)))
	requireLog(t, s, 1, 3)
}

func TestOpenRefusesForeignFilesWithoutChangingThem(t *testing.T) {
	dir := t.TempDir()
	newer := func() string {
		p := filepath.Join(dir, "newer.db")
		s := openAt(t, p)
		require.NoError(t, s.Close())
		db, err := bbolt.Open(p, 0o600, nil)
		require.NoError(t, err)
		require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
			rec := codec.AppendFormat(nil, codec.Format{Version: layout.Version + 1, Kind: codec.KindLogStore})
			return tx.Bucket(layout.MetaBucket).Put(layout.KeyFormat, rec)
		}))
		require.NoError(t, db.Close())
		return p
	}
	boltWith := func(name string, buckets ...string) func() string {
		return func() string {
			p := filepath.Join(dir, name)
			db, err := bbolt.Open(p, 0o600, nil)
			require.NoError(t, err)
			require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
				for _, b := range buckets {
					if _, err := tx.CreateBucket([]byte(b)); err != nil {
						return err
					}
				}
				return nil
			}))
			require.NoError(t, db.Close())
			return p
		}
	}
	cases := []struct {
		name   string
		make   func() string
		target error
		text   string
	}{
		{"text file", func() string {
			p := filepath.Join(dir, "text.db")
			require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte("hello, raft\n"), 2000), 0o600))
			return p
		}, ErrNotStore, "not a bbolt database"},
		{"short file", func() string {
			p := filepath.Join(dir, "short.db")
			require.NoError(t, os.WriteFile(p, []byte("x"), 0o600))
			return p
		}, ErrNotStore, "not a bbolt database"},
		{"someone else's buckets", boltWith("other.db", "users", "orders"), ErrNotStore, `"orders"`},
		{"raft-boltdb", boltWith("raftboltdb.db", "logs", "conf"), ErrNotStore, "raftbolt migrate"},
		{"newer format", newer, ErrUnsupportedVersion, "format version 2"},
		{"state machine file", func() string {
			p := filepath.Join(dir, "state.db")
			m, err := OpenStateMachine(p, func(*bbolt.Tx, *raft.Log) interface{} { return nil }, testOptions())
			require.NoError(t, err)
			require.NoError(t, m.Close())
			return p
		}, ErrNotStore, "state machine file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.make()
			before := fileHash(t, p)
			for _, ro := range []bool{false, true} {
				o := testOptions()
				o.ReadOnly = ro
				_, err := Open(p, o)
				require.ErrorIs(t, err, tc.target)
				require.ErrorContains(t, err, tc.text)
				require.ErrorContains(t, err, p)
			}
			require.Equal(t, before, fileHash(t, p), "Open changed a file it refused")
		})
	}
}

func TestLockTimeout(t *testing.T) {
	s := openTest(t)
	for _, ro := range []bool{false, true} {
		o := testOptions()
		o.LockTimeout = 150 * time.Millisecond
		o.ReadOnly = ro
		start := time.Now()
		_, err := Open(s.Path(), o)
		require.ErrorIs(t, err, ErrLocked)
		require.ErrorContains(t, err, s.Path())
		require.GreaterOrEqual(t, time.Since(start), o.LockTimeout, "Open gave up before LockTimeout")
	}
	// The refused opens did not disturb the holder.
	require.NoError(t, s.StoreLogs(entries(1, 2)))
	requireLog(t, s, 1, 2)

	// Once the holder closes, the file opens.
	require.NoError(t, s.Close())
	s2 := openAt(t, s.Path())
	requireLog(t, s2, 1, 2)
}

func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.db")
	o := testOptions()
	o.ReadOnly = true
	_, err := Open(missing, o)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoFileExists(t, missing)

	zero := filepath.Join(dir, "zero.db")
	require.NoError(t, os.WriteFile(zero, nil, 0o600))
	_, err = Open(zero, o)
	require.ErrorIs(t, err, ErrNotStore)
	fi, err := os.Stat(zero)
	require.NoError(t, err)
	require.Zero(t, fi.Size())

	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 5)))
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 7))
	require.NoError(t, s.StoreConfiguration(3, testConfiguration("1", "2")))
	require.NoError(t, s.Close())
	before := fileHash(t, s.Path())

	ro, err := Open(s.Path(), o)
	require.NoError(t, err)
	requireLog(t, ro, 1, 5)
	v, err := ro.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.EqualValues(t, 7, v)
	idx, cfg, err := ro.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 3, idx)
	require.Equal(t, testConfiguration("1", "2"), cfg)
	require.NoError(t, ro.Check())

	writes := map[string]func() error{
		"StoreLogs":          func() error { return ro.StoreLogs(entries(6, 6)) },
		"StoreLog":           func() error { return ro.StoreLog(entry(6)) },
		"DeleteRange":        func() error { return ro.DeleteRange(1, 2) },
		"Set":                func() error { return ro.Set([]byte("k"), []byte("v")) },
		"SetUint64":          func() error { return ro.SetUint64([]byte("k"), 1) },
		"StageCommitIndex":   func() error { return ro.StageCommitIndex(3) },
		"StoreConfiguration": func() error { return ro.StoreConfiguration(9, testConfiguration("1")) },
		"Compact":            ro.Compact,
	}
	for name, write := range writes {
		require.ErrorIs(t, write(), ErrReadOnly, name)
	}
	// Two read-only handles may share the file.
	ro2, err := Open(s.Path(), o)
	require.NoError(t, err)
	requireLog(t, ro2, 1, 5)
	require.NoError(t, ro2.Close())
	require.NoError(t, ro.Close())
	require.Equal(t, before, fileHash(t, s.Path()), "a read-only handle changed the file")
}

func TestCloseIsIdempotentAndEverythingElseFails(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 3)))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())

	var l raft.Log
	_, err := s.FirstIndex()
	require.ErrorIs(t, err, ErrClosed)
	_, err = s.LastIndex()
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.GetLog(1, &l), ErrClosed)
	require.ErrorIs(t, s.StoreLogs(entries(4, 4)), ErrClosed)
	require.ErrorIs(t, s.StoreLog(entry(4)), ErrClosed)
	require.ErrorIs(t, s.DeleteRange(1, 1), ErrClosed)
	require.ErrorIs(t, s.Set([]byte("k"), nil), ErrClosed)
	_, err = s.Get([]byte("k"))
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.SetUint64([]byte("k"), 1), ErrClosed)
	_, err = s.GetUint64([]byte("k"))
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.StageCommitIndex(1), ErrClosed)
	_, err = s.GetCommitIndex()
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.StoreConfiguration(1, testConfiguration("a")), ErrClosed)
	_, _, err = s.LatestConfiguration()
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.Check(), ErrClosed)
	require.ErrorIs(t, s.Compact(), ErrClosed)
	_, err = s.Backup(&bytes.Buffer{})
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.Sync(), ErrClosed)
	_, err = s.Stats()
	require.ErrorIs(t, err, ErrClosed)
}

func TestEveryFieldRoundTrips(t *testing.T) {
	s := openTest(t)
	est := time.FixedZone("EST", -5*3600)
	logs := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("cmd"), AppendedAt: time.Unix(1, 2)},
		{Index: 2, Term: 1, Type: raft.LogNoop},
		{Index: 3, Term: 2, Type: raft.LogAddPeerDeprecated, Data: []byte{0, 1, 2}},
		{Index: 4, Term: 2, Type: raft.LogRemovePeerDeprecated, Data: []byte{3}},
		{Index: 5, Term: 3, Type: raft.LogBarrier, Extensions: []byte("ext")},
		{Index: 6, Term: 3, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{0xab}, 10000)},
		{Index: 7, Term: 1<<64 - 1, Type: raft.LogType(200), Data: []byte{}, Extensions: []byte{}},
		{Index: 8, Term: 4, Type: raft.LogCommand, AppendedAt: time.Now().Round(0)},
		{Index: 9, Term: 4, Type: raft.LogCommand, AppendedAt: time.Now().UTC().Round(0)},
		{Index: 10, Term: 4, Type: raft.LogCommand, AppendedAt: time.Date(2024, 2, 29, 23, 59, 59, 999999999, est)},
		{Index: 11, Term: 4, Type: raft.LogCommand, AppendedAt: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)},
		{Index: 12, Term: 4, Type: raft.LogCommand, AppendedAt: time.Unix(-1e10, 5)},
	}
	require.NoError(t, s.StoreLogs(logs))
	check := func(s *Store) {
		for _, want := range logs {
			var got raft.Log
			require.NoError(t, s.GetLog(want.Index, &got))
			require.Equal(t, *want, got, "index %d", want.Index)
			require.Len(t, got.Data, len(want.Data))
			require.Len(t, got.Extensions, len(want.Extensions))
			require.True(t, want.AppendedAt.Equal(got.AppendedAt))
		}
	}
	check(s) // from the cache
	s = reopen(t, s)
	check(s) // from the file

	o := testOptions()
	o.CacheSize = -1
	s = reopen(t, s)
	require.NoError(t, s.Close())
	s = openAt(t, s.Path(), o)
	check(s)
}

func TestReturnedDataIsTheCallers(t *testing.T) {
	s := openTest(t)
	l := entry(1)
	require.NoError(t, s.StoreLogs([]*raft.Log{l}))
	l.Data[0] = 'X' // the caller reuses its buffer after StoreLogs
	var got raft.Log
	require.NoError(t, s.GetLog(1, &got))
	require.Equal(t, entry(1).Data, got.Data)
	got.Data[0] = 'Y' // and scribbles over what GetLog returned
	var again raft.Log
	require.NoError(t, s.GetLog(1, &again))
	require.Equal(t, entry(1).Data, again.Data)
}

func TestStoreLogsRejectsBadBatchesAndWritesNothing(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 5)))
	require.NoError(t, s.StoreLogs(nil), "an empty batch is a no-op")
	require.NoError(t, s.StoreLogs([]*raft.Log{}), "an empty batch is a no-op")

	cases := []struct {
		name   string
		batch  []*raft.Log
		target error
		text   string
	}{
		{"gap after last", entries(7, 8), ErrNotContiguous, "starts at index 7"},
		{"overlap", entries(5, 7), ErrNotContiguous, "expected 6"},
		{"before first", entries(1, 1), ErrNotContiguous, "starts at index 1"},
		{"gap inside", []*raft.Log{entry(6), entry(8)}, ErrNotContiguous, "index 8 follows index 6"},
		{"descending", []*raft.Log{entry(7), entry(6)}, ErrNotContiguous, "index 6 follows index 7"},
		{"duplicate", []*raft.Log{entry(6), entry(6)}, ErrNotContiguous, "index 6 follows index 6"},
		{"nil entry", []*raft.Log{entry(6), nil}, ErrInvalid, "entry 1 of the batch is nil"},
		{"index 0", []*raft.Log{{Index: 0}}, ErrInvalid, "index 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := s.StoreLogs(tc.batch)
			require.ErrorIs(t, err, tc.target)
			require.ErrorContains(t, err, tc.text)
			require.ErrorContains(t, err, s.Path())
			requireLog(t, s, 1, 5)
		})
	}
	s = reopen(t, s)
	requireLog(t, s, 1, 5)
	require.NoError(t, s.StoreLogs(entries(6, 6)))
	requireLog(t, s, 1, 6)
}

func TestEmptyLogAcceptsAnyStart(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(100, 102)))
	requireLog(t, s, 100, 102)
	var l raft.Log
	require.Equal(t, raft.ErrLogNotFound, s.GetLog(0, &l))
	require.Equal(t, raft.ErrLogNotFound, s.GetLog(1, &l))
}

func TestDeleteRange(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 20)))

	require.NoError(t, s.DeleteRange(9, 3), "min > max is a no-op")
	require.NoError(t, s.DeleteRange(30, 40), "nothing there")
	requireLog(t, s, 1, 20)

	err := s.DeleteRange(5, 10)
	require.ErrorIs(t, err, ErrNotContiguous)
	require.ErrorContains(t, err, "hole")
	requireLog(t, s, 1, 20)

	require.NoError(t, s.DeleteRange(0, 4), "head, clipped below")
	requireLog(t, s, 5, 20)
	require.NoError(t, s.DeleteRange(18, 1000), "tail, clipped above")
	requireLog(t, s, 5, 17)
	require.NoError(t, s.StoreLogs(entries(18, 19)), "appends continue after a tail truncation")
	requireLog(t, s, 5, 19)

	s = reopen(t, s)
	requireLog(t, s, 5, 19)

	require.NoError(t, s.DeleteRange(0, ^uint64(0)))
	requireLog(t, s, 0, 0)
	s = reopen(t, s)
	requireLog(t, s, 0, 0)
	require.NoError(t, s.StoreLogs(entries(500, 501)), "an emptied log starts anywhere")
	requireLog(t, s, 500, 501)
}

func TestStableStore(t *testing.T) {
	s := openTest(t)

	v, err := s.Get([]byte("missing"))
	require.Nil(t, v)
	require.True(t, err == ErrKeyNotFound, "Get must return ErrKeyNotFound itself, got %v", err)
	require.Equal(t, "not found", err.Error())
	n, err := s.GetUint64([]byte("missing"))
	require.Zero(t, n)
	require.True(t, err == ErrKeyNotFound, "GetUint64 must return ErrKeyNotFound itself, got %v", err)

	require.NoError(t, s.Set([]byte("LastVoteCand"), []byte("node-1")))
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 42))
	require.NoError(t, s.Set([]byte("empty"), nil))

	got, err := s.Get([]byte("LastVoteCand"))
	require.NoError(t, err)
	require.Equal(t, []byte("node-1"), got)
	got[0] = 'X'
	again, err := s.Get([]byte("LastVoteCand"))
	require.NoError(t, err)
	require.Equal(t, []byte("node-1"), again, "returned slices are the caller's")

	empty, err := s.Get([]byte("empty"))
	require.NoError(t, err)
	require.Empty(t, empty)

	_, err = s.GetUint64([]byte("LastVoteCand"))
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "LastVoteCand")

	for _, key := range [][]byte{nil, {}} {
		require.ErrorIs(t, s.Set(key, []byte("v")), ErrInvalid)
		require.ErrorIs(t, s.SetUint64(key, 1), ErrInvalid)
		_, err := s.Get(key)
		require.ErrorIs(t, err, ErrInvalid)
	}
	require.ErrorIs(t, s.Set(make([]byte, bbolt.MaxKeySize+1), nil), ErrInvalid)

	s = reopen(t, s)
	n, err = s.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.EqualValues(t, 42, n)
}

func TestCommitIndexIsPersistedWithTheNextStoreLogs(t *testing.T) {
	s := openTest(t)
	c, err := s.GetCommitIndex()
	require.NoError(t, err)
	require.Zero(t, c)

	require.NoError(t, s.StoreLogs(entries(1, 5)))
	require.NoError(t, s.StageCommitIndex(3))
	c, err = s.GetCommitIndex()
	require.NoError(t, err)
	require.Zero(t, c, "staging alone persists nothing")
	s2 := reopen(t, s)
	c, err = s2.GetCommitIndex()
	require.NoError(t, err)
	require.Zero(t, c, "a staged index is lost without a StoreLogs")

	require.NoError(t, s2.StageCommitIndex(3))
	require.Error(t, s2.StoreLogs(entries(9, 9)))
	c, err = s2.GetCommitIndex()
	require.NoError(t, err)
	require.Zero(t, c, "a failed StoreLogs persists no commit index")

	require.NoError(t, s2.StoreLogs(entries(6, 6)))
	c, err = s2.GetCommitIndex()
	require.NoError(t, err)
	require.EqualValues(t, 3, c)

	require.NoError(t, s2.StageCommitIndex(100))
	require.NoError(t, s2.StoreLogs(entries(7, 7)))
	c, err = s2.GetCommitIndex()
	require.NoError(t, err)
	require.EqualValues(t, 7, c, "never above LastIndex")

	s3 := reopen(t, s2)
	c, err = s3.GetCommitIndex()
	require.NoError(t, err)
	require.EqualValues(t, 7, c)
	require.NoError(t, s3.DeleteRange(5, 7))
	c, err = s3.GetCommitIndex()
	require.NoError(t, err)
	require.EqualValues(t, 4, c, "never above LastIndex, after a tail truncation too")
}

func TestCommitIndexCapBelowUncoveredConfiguration(t *testing.T) {
	s := openTest(t)
	logs := entries(1, 10)
	logs[0].Type = raft.LogConfiguration // the bootstrap configuration
	logs[5].Type = raft.LogConfiguration // a membership change at 6
	require.NoError(t, s.StageCommitIndex(8))
	require.NoError(t, s.StoreLogs(logs))

	c, err := s.GetCommitIndex()
	require.NoError(t, err)
	require.EqualValues(t, 5, c, "just below the newest configuration entry <= 8")

	// A snapshot that covers the configuration at 1 but not the one at 6.
	require.NoError(t, s.recordSnapshotConfiguration(3, 1, testConfiguration("a")))
	c, err = s.GetCommitIndex()
	require.NoError(t, err)
	require.EqualValues(t, 5, c)

	// One that covers 6 lifts the cap.
	require.NoError(t, s.recordSnapshotConfiguration(7, 6, testConfiguration("a", "b")))
	c, err = s.GetCommitIndex()
	require.NoError(t, err)
	require.EqualValues(t, 8, c)

	// A configuration entry above the commit index does not cap it.
	s = reopen(t, s)
	more := entries(11, 12)
	more[1].Type = raft.LogConfiguration
	require.NoError(t, s.StageCommitIndex(11))
	require.NoError(t, s.StoreLogs(more))
	c, err = s.GetCommitIndex()
	require.NoError(t, err)
	require.EqualValues(t, 11, c)

	// Truncating the tail removes its configuration entries from the index.
	require.NoError(t, s.DeleteRange(12, 12))
	require.NoError(t, s.Check())
	// Truncating the head too; with no snapshot covering 6 it still caps.
	require.NoError(t, s.DeleteRange(1, 3))
	require.NoError(t, s.Check())
}

func TestConfiguration(t *testing.T) {
	s := openTest(t)
	_, _, err := s.LatestConfiguration()
	require.ErrorIs(t, err, ErrNoConfiguration)

	require.NoError(t, s.StoreConfiguration(5, testConfiguration("a", "b", "c")))
	require.NoError(t, s.StoreConfiguration(3, testConfiguration("old")), "an older index is ignored")
	idx, cfg, err := s.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 5, idx)
	require.Equal(t, testConfiguration("a", "b", "c"), cfg)

	nonvoter := testConfiguration("a", "b")
	nonvoter.Servers[1].Suffrage = raft.Nonvoter
	require.NoError(t, s.StoreConfiguration(9, nonvoter))
	s = reopen(t, s)
	idx, cfg, err = s.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 9, idx)
	require.Equal(t, nonvoter, cfg)

	bad := map[string]raft.Configuration{
		"no servers":        {},
		"empty id":          {Servers: []raft.Server{{ID: "", Address: "x"}}},
		"empty addr":        {Servers: []raft.Server{{ID: "a", Address: ""}}},
		"duplicate id":      {Servers: []raft.Server{{ID: "a", Address: "x"}, {ID: "a", Address: "y"}}},
		"duplicate address": {Servers: []raft.Server{{ID: "a", Address: "x"}, {ID: "b", Address: "x"}}},
		"no voter":          {Servers: []raft.Server{{ID: "a", Address: "x", Suffrage: raft.Nonvoter}}},
		"bad suffrage":      {Servers: []raft.Server{{ID: "a", Address: "x", Suffrage: 7}}},
	}
	for name, c := range bad {
		err := s.StoreConfiguration(10, c)
		require.ErrorIs(t, err, ErrInvalid, name)
		require.ErrorContains(t, err, "index 10", name)
	}
	require.ErrorIs(t, s.StoreConfiguration(0, testConfiguration("a")), ErrInvalid)
	idx, _, err = s.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 9, idx, "rejected configurations changed nothing")
}

func TestGetLogDetectsCorruption(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 10)))
	require.NoError(t, s.Close())

	// Damage three entries behind the store's back.
	db, err := bbolt.Open(s.Path(), 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(layout.LogBucket)
		k4, k6, k8 := codec.Key(4), codec.Key(6), codec.Key(8)
		flipped := bytes.Clone(b.Get(k4[:]))
		flipped[len(flipped)/2] ^= 0x40
		if err := b.Put(k4[:], flipped); err != nil {
			return err
		}
		// A valid record of index 7 stored under key 6.
		if err := b.Put(k6[:], codec.AppendEntry(nil, entry(7))); err != nil {
			return err
		}
		return b.Put(k8[:], []byte{1, 2, 3})
	}))
	require.NoError(t, db.Close())

	s = openAt(t, s.Path())
	for i, text := range map[uint64]string{4: "checksum", 6: "holds index 7", 8: "entry 8"} {
		var l raft.Log
		err := s.GetLog(i, &l)
		require.ErrorIs(t, err, ErrCorrupt, "index %d", i)
		require.ErrorContains(t, err, text)
		require.ErrorContains(t, err, s.Path())
	}
	var l raft.Log
	require.NoError(t, s.GetLog(5, &l), "undamaged entries still read")
	err = s.Check()
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "entry 4:")
}

func TestMissingEntriesAndDamagedValuesAreCorruption(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 10)))
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 5))
	require.NoError(t, s.Set([]byte("LastVoteCand"), []byte("node-2")))
	require.NoError(t, s.Close())

	db, err := bbolt.Open(s.Path(), 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		k := codec.Key(6)
		if err := tx.Bucket(layout.LogBucket).Delete(k[:]); err != nil {
			return err
		}
		st := tx.Bucket(layout.StableBucket)
		rec := bytes.Clone(st.Get([]byte("CurrentTerm")))
		rec[3] ^= 1
		if err := st.Put([]byte("CurrentTerm"), rec); err != nil {
			return err
		}
		// A valid record moved under another key.
		return st.Put([]byte("LastVoteTerm"), st.Get([]byte("LastVoteCand")))
	}))
	require.NoError(t, db.Close())

	s = openAt(t, s.Path())
	var l raft.Log
	err = s.GetLog(6, &l)
	require.ErrorIs(t, err, ErrCorrupt, "a hole inside the log is damage, not 'not found'")
	require.ErrorContains(t, err, "entry 6: missing from the log 1-10")
	_, err = s.GetUint64([]byte("CurrentTerm"))
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "CurrentTerm")
	_, err = s.Get([]byte("LastVoteTerm"))
	require.ErrorIs(t, err, ErrCorrupt)
	v, err := s.Get([]byte("LastVoteCand"))
	require.NoError(t, err)
	require.Equal(t, []byte("node-2"), v)
}

func TestCheckFindsHoles(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.Check(), "an empty store is fine")
	require.NoError(t, s.StoreLogs(entries(1, 10)))
	require.NoError(t, s.Check())
	require.NoError(t, s.Close())

	db, err := bbolt.Open(s.Path(), 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		k := codec.Key(6)
		return tx.Bucket(layout.LogBucket).Delete(k[:])
	}))
	require.NoError(t, db.Close())

	s = openAt(t, s.Path())
	err = s.Check()
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "entry 6: missing")
}

func TestConcurrentReadersWithAWriter(t *testing.T) {
	o := testOptions()
	o.CacheSize = 64 // most reads miss the cache and share a transaction
	s := openTest(t, o)
	require.NoError(t, s.StoreLogs(entries(1, 100)))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				for i := first; i <= last && i != 0; i += 7 {
					var l raft.Log
					err := s.GetLog(i, &l)
					if err == raft.ErrLogNotFound {
						continue // truncated meanwhile
					}
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(l.Data, entry(i).Data) || l.Index != i {
						errs <- errors.New("wrong entry")
						return
					}
				}
			}
		}()
	}
	for next := uint64(101); next <= 3000; next += 10 {
		require.NoError(t, s.StoreLogs(entries(next, next+9)))
		if next%200 == 1 {
			first, _ := s.FirstIndex()
			require.NoError(t, s.DeleteRange(first, next-100))
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, s.Check())
}

func TestCorruptFileNeverPanics(t *testing.T) {
	s := openTest(t)
	for i := uint64(1); i <= 2000; i += 100 {
		require.NoError(t, s.StoreLogs(entries(i, i+99)))
	}
	require.NoError(t, s.Close())
	data, err := os.ReadFile(s.Path())
	require.NoError(t, err)
	pageSize := os.Getpagesize()

	// Zero each page in turn (meta pages excepted): every read either
	// returns the right entry or an error, never a panic.
	used := usedBytes(t, data)
	for page := 2; page*pageSize < used; page++ {
		damaged := bytes.Clone(data)
		clear(damaged[page*pageSize : (page+1)*pageSize])
		p := filepath.Join(t.TempDir(), "damaged.db")
		require.NoError(t, os.WriteFile(p, damaged, 0o600))
		d, err := Open(p, testOptions())
		if err != nil {
			require.True(t, errors.Is(err, ErrCorrupt), "page %d: %v", page, err)
			continue
		}
		for i := uint64(1); i <= 2000; i++ {
			var l raft.Log
			err := d.GetLog(i, &l)
			if err == nil {
				require.Equal(t, *entry(i), l)
			} else if err != raft.ErrLogNotFound {
				require.ErrorIs(t, err, ErrCorrupt, "page %d index %d", page, i)
			}
		}
		_ = d.Check()
		_ = d.Close()
	}

	// A file cut short would fault when mapped: it is refused first.
	p := filepath.Join(t.TempDir(), "short.db")
	require.NoError(t, os.WriteFile(p, data[:used/2], 0o600))
	_, err = Open(p, testOptions())
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "truncated")
}

func TestBackupIsAConsistentStore(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 500)))
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 3))
	require.NoError(t, s.StoreConfiguration(1, testConfiguration("a")))
	var buf bytes.Buffer
	n, err := s.Backup(&buf)
	require.NoError(t, err)
	require.EqualValues(t, buf.Len(), n)
	require.NoError(t, s.StoreLogs(entries(501, 510)), "the store stays in use")

	p := filepath.Join(t.TempDir(), "backup.db")
	require.NoError(t, os.WriteFile(p, buf.Bytes(), 0o600))
	b := openAt(t, p)
	require.NoError(t, b.Check())
	requireLog(t, b, 1, 500)
	term, err := b.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.EqualValues(t, 3, term)
	_, err = s.Backup(nil)
	require.ErrorIs(t, err, ErrInvalid)
}

func TestCompactReclaimsSpaceAndKeepsEverything(t *testing.T) {
	s := openTest(t)
	big := func(i uint64) *raft.Log {
		l := entry(i)
		l.Data = bytes.Repeat([]byte{byte(i)}, 1024)
		return l
	}
	var batch []*raft.Log
	for i := uint64(1); i <= 20000; i++ {
		batch = append(batch, big(i))
		if len(batch) == 500 {
			require.NoError(t, s.StoreLogs(batch))
			batch = nil
		}
	}
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 9))
	require.NoError(t, s.StoreConfiguration(7, testConfiguration("a", "b")))
	require.NoError(t, s.DeleteRange(1, 19900))
	before, err := s.Stats()
	require.NoError(t, err)

	require.NoError(t, s.Compact())
	after, err := s.Stats()
	require.NoError(t, err)
	require.Less(t, after.FileSize, before.FileSize/5, "compacted to under 20%%")
	require.NotNil(t, after.LastCompaction)
	require.EqualValues(t, layout.Version, before.FormatVersion)
	require.EqualValues(t, layout.Version, after.FormatVersion)
	require.NoError(t, s.Check())
	for i := uint64(19901); i <= 20000; i++ {
		var l raft.Log
		require.NoError(t, s.GetLog(i, &l))
		require.Equal(t, *big(i), l)
	}
	require.NoError(t, s.StoreLogs([]*raft.Log{big(20001)}), "writes go to the new file")
	s = reopen(t, s)
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	require.EqualValues(t, 19901, first)
	require.EqualValues(t, 20001, last)
	term, err := s.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.EqualValues(t, 9, term)
	idx, _, err := s.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 7, idx)
	require.NoFileExists(t, s.Path()+compactSuffix)
}

func TestCompactWhileWriting(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 5000)))
	require.NoError(t, s.DeleteRange(1, 2000))

	done := make(chan error, 1)
	go func() {
		next := uint64(5001)
		for k := 0; k < 300; k++ {
			if err := s.StoreLogs(entries(next, next+9)); err != nil {
				done <- err
				return
			}
			next += 10
			if k%50 == 0 { // overwrite the tail, as a new leader would
				if err := s.DeleteRange(next-5, next-1); err != nil {
					done <- err
					return
				}
				next -= 5
			}
			if k%70 == 0 {
				first, _ := s.FirstIndex()
				if err := s.DeleteRange(first, first+100); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	for i := 0; i < 3; i++ {
		require.NoError(t, s.Compact())
	}
	require.NoError(t, <-done)
	require.NoError(t, s.Check())
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	requireLog(t, s, first, last)
	s = reopen(t, s)
	requireLog(t, s, first, last)
}

func TestErrorsNameTheProblem(t *testing.T) {
	_, err := Open("", nil)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = Open(filepath.Join(t.TempDir(), "no", "such", "dir", "raft.db"), testOptions())
	require.ErrorIs(t, err, os.ErrNotExist)
	require.True(t, strings.Contains(err.Error(), "no/such/dir"))
	_, err = Open(filepath.Join(t.TempDir(), "x.db"), &Options{LockTimeout: -1})
	require.ErrorIs(t, err, ErrInvalid)

	s := openTest(t)
	require.ErrorIs(t, s.GetLog(1, nil), ErrInvalid)
}

// TestGaugesWhileTheFileGrows: the gauge loop and Stats read the page size
// while writers grow the file, which makes bbolt unmap and remap it. bbolt's
// DB.Info read the map unlocked (a data race, and a panic when it caught
// the map unmapped).
func TestGaugesWhileTheFileGrows(t *testing.T) {
	o := testOptions()
	o.MetricsInterval = time.Millisecond
	s := openTest(t, o)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			if _, err := s.Stats(); err != nil {
				return
			}
		}
	}()
	data := make([]byte, 64<<10)
	for i := uint64(1); i <= 64; i++ {
		require.NoError(t, s.StoreLogs([]*raft.Log{{Index: i, Term: 1, Data: data}}))
	}
	<-done
}
