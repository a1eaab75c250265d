package raftbolt

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// TestBadInputChangesNothing gives every method nil, zero, huge and
// out-of-order input. Each gets an error wrapping the named sentinel and
// leaves the file byte for byte as it was. The README's Guarantees table
// lists these cases.
func TestBadInputChangesNothing(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(10, 20)))
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 3))
	require.NoError(t, s.StoreConfiguration(10, testConfiguration("a")))
	require.NoError(t, s.Set([]byte("LastVoteCand"), []byte("node-1")))
	var l raft.Log
	huge := make([]byte, bbolt.MaxKeySize+1)
	cases := []struct {
		name   string
		call   func() error
		target error
	}{
		{"StoreLogs nil entry", func() error { return s.StoreLogs([]*raft.Log{entry(21), nil}) }, ErrInvalid},
		{"StoreLogs index 0", func() error { return s.StoreLogs([]*raft.Log{{Index: 0}}) }, ErrInvalid},
		{"StoreLogs gap after last", func() error { return s.StoreLogs(entries(22, 23)) }, ErrNotContiguous},
		{"StoreLogs overlap", func() error { return s.StoreLogs(entries(15, 25)) }, ErrNotContiguous},
		{"StoreLogs out of order", func() error { return s.StoreLogs([]*raft.Log{entry(22), entry(21)}) }, ErrNotContiguous},
		{"StoreLogs repeated index", func() error { return s.StoreLogs([]*raft.Log{entry(21), entry(21)}) }, ErrNotContiguous},
		{"StoreLog nil", func() error { return s.StoreLog(nil) }, ErrInvalid},
		{"GetLog nil *raft.Log", func() error { return s.GetLog(10, nil) }, ErrInvalid},
		{"GetLog index 0", func() error { return s.GetLog(0, &l) }, raft.ErrLogNotFound},
		{"GetLog past the end", func() error { return s.GetLog(1<<63, &l) }, raft.ErrLogNotFound},
		{"DeleteRange hole", func() error { return s.DeleteRange(12, 18) }, ErrNotContiguous},
		{"Set nil key", func() error { return s.Set(nil, []byte("v")) }, ErrInvalid},
		{"Set empty key", func() error { return s.Set([]byte{}, []byte("v")) }, ErrInvalid},
		{"Set key over bbolt's limit", func() error { return s.Set(huge, nil) }, ErrInvalid},
		{"SetUint64 empty key", func() error { return s.SetUint64(nil, 1) }, ErrInvalid},
		{"Get empty key", func() error { _, err := s.Get(nil); return err }, ErrInvalid},
		{"Get missing key", func() error { _, err := s.Get([]byte("nope")); return err }, ErrKeyNotFound},
		{"GetUint64 missing key", func() error { _, err := s.GetUint64([]byte("nope")); return err }, ErrKeyNotFound},
		{"GetUint64 of a non-integer", func() error { _, err := s.GetUint64([]byte("LastVoteCand")); return err }, ErrCorrupt},
		{"StoreConfiguration index 0", func() error { return s.StoreConfiguration(0, testConfiguration("a")) }, ErrInvalid},
		{"StoreConfiguration no servers", func() error { return s.StoreConfiguration(11, raft.Configuration{}) }, ErrInvalid},
		{"StoreConfiguration duplicate IDs", func() error {
			return s.StoreConfiguration(11, raft.Configuration{Servers: []raft.Server{{ID: "a", Address: "x"}, {ID: "a", Address: "y"}}})
		}, ErrInvalid},
		{"StoreConfiguration no voter", func() error {
			return s.StoreConfiguration(11, raft.Configuration{Servers: []raft.Server{{ID: "a", Address: "x", Suffrage: raft.Nonvoter}}})
		}, ErrInvalid},
		{"Backup to nil", func() error { _, err := s.Backup(nil); return err }, ErrInvalid},
		{"FSM without inner FSM", func() error {
			err, _ := NewFSM(s, nil).Apply(&raft.Log{Type: raft.LogCommand}).(error)
			return err
		}, ErrInvalid},
		{"FSM nil entry", func() error { err, _ := NewFSM(s, &listFSM{}).Apply(nil).(error); return err }, ErrInvalid},
		{"WrapSnapshotStore without inner", func() error {
			_, err := WrapSnapshotStore(s, nil).Create(raft.SnapshotVersionMax, 1, 1, testConfiguration("a"), 1, nil)
			return err
		}, ErrInvalid},
	}
	for _, tc := range cases {
		before := fileHash(t, s.Path())
		err := tc.call()
		require.ErrorIs(t, err, tc.target, tc.name)
		require.Equal(t, before, fileHash(t, s.Path()), "%s changed the file", tc.name)
	}
	requireLog(t, s, 10, 20)
	// An older configuration is not an error: it is ignored.
	require.NoError(t, s.StoreConfiguration(5, testConfiguration("b")))
	index, _, err := s.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 10, index)
}

func TestBadOpenChangesNothing(t *testing.T) {
	dir := t.TempDir()
	quiet := func(o Options) *Options { o.Logger = hclog.NewNullLogger(); return &o }
	cases := []struct {
		name   string
		path   string
		opts   *Options
		target error
	}{
		{"empty path", "", nil, ErrInvalid},
		{"a directory", dir, quiet(Options{}), ErrInvalid},
		{"a directory, read-only", dir, quiet(Options{ReadOnly: true}), ErrInvalid},
		{"missing parent directory", filepath.Join(dir, "missing", "raft.db"), quiet(Options{}), os.ErrNotExist},
		{"negative LockTimeout", filepath.Join(dir, "a.db"), quiet(Options{LockTimeout: -1}), ErrInvalid},
		{"negative InitialMmapSize", filepath.Join(dir, "b.db"), quiet(Options{InitialMmapSize: -1}), ErrInvalid},
		{"read-only, missing file", filepath.Join(dir, "c.db"), quiet(Options{ReadOnly: true}), os.ErrNotExist},
	}
	for _, tc := range cases {
		s, err := Open(tc.path, tc.opts)
		require.Error(t, err, tc.name)
		require.Nil(t, s, tc.name)
		if tc.target != nil {
			require.ErrorIs(t, err, tc.target, tc.name)
		}
		if tc.path != "" {
			require.Contains(t, err.Error(), tc.path, tc.name)
		}
	}
	entriesLeft, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entriesLeft, "a refused Open created a file")
}
