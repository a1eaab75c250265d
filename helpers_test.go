package raftbolt

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/boltcheck"
	"github.com/stretchr/testify/require"
)

// testOptions are fast options for tests that do not test durability.
// They keep the default journal; with RAFTBOLT_TEST_JOURNAL=0 they turn
// it off (Options.NoJournal), so that the whole suite runs against each
// way of appending.
func testOptions() *Options {
	return &Options{NoSync: true, Logger: hclog.NewNullLogger(), MetricsInterval: -1, NoJournal: !testJournal}
}

// testJournal is false when RAFTBOLT_TEST_JOURNAL=0.
var testJournal = os.Getenv("RAFTBOLT_TEST_JOURNAL") != "0"

// openTest opens a store in a new temp dir with testOptions (or opts).
func openTest(t testing.TB, opts ...*Options) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "raft.db"), opts...)
}

func openAt(t testing.TB, path string, opts ...*Options) *Store {
	t.Helper()
	o := testOptions()
	if len(opts) > 0 {
		o = opts[0]
	}
	s, err := Open(path, o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// reopen closes s and opens its file again with the same options.
func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	require.NoError(t, s.Close())
	o := s.opts
	return openAt(t, s.Path(), &o)
}

// entry builds an entry whose fields all derive from its index.
func entry(i uint64) *raft.Log {
	return &raft.Log{
		Index:      i,
		Term:       i/10 + 1,
		Type:       raft.LogCommand,
		Data:       []byte(fmt.Sprintf("data-%d", i)),
		Extensions: []byte(fmt.Sprintf("ext-%d", i)),
		AppendedAt: time.Unix(1700000000+int64(i), int64(i)),
	}
}

// entries builds entries from..to inclusive.
func entries(from, to uint64) []*raft.Log {
	var ls []*raft.Log
	for i := from; i <= to; i++ {
		ls = append(ls, entry(i))
	}
	return ls
}

// requireLog asserts that the store holds exactly entries first..last as
// built by entry.
func requireLog(t testing.TB, s *Store, first, last uint64) {
	t.Helper()
	fi, err := s.FirstIndex()
	require.NoError(t, err)
	li, err := s.LastIndex()
	require.NoError(t, err)
	require.Equal(t, first, fi, "first index")
	require.Equal(t, last, li, "last index")
	if last == 0 {
		return
	}
	for i := first; i <= last; i++ {
		var l raft.Log
		require.NoError(t, s.GetLog(i, &l), "index %d", i)
		require.Equal(t, *entry(i), l, "index %d", i)
	}
	var l raft.Log
	require.Equal(t, raft.ErrLogNotFound, s.GetLog(first-1, &l))
	require.Equal(t, raft.ErrLogNotFound, s.GetLog(last+1, &l))
}

// usedBytes returns how much of a store file's bytes hold bbolt's data:
// its high water mark. Past it lie zeros (preallocated) or nothing.
func usedBytes(t testing.TB, data []byte) int {
	t.Helper()
	rep, err := boltcheck.Inspect(bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	return int(rep.Meta.HighMark) * rep.Meta.PageSize
}

// fileHash returns the sha256 of a file, to show that it did not change.
func fileHash(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(b)
}

func testConfiguration(ids ...string) raft.Configuration {
	var c raft.Configuration
	for _, id := range ids {
		c.Servers = append(c.Servers, raft.Server{
			ID: raft.ServerID(id), Address: raft.ServerAddress("127.0.0.1:" + id),
		})
	}
	return c
}
