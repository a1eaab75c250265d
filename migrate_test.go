package raftbolt

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// These tests build hashicorp/raft-boltdb files by hand: its layout with
// bbolt, its records with go-msgpack/v2 in both time encodings. The
// nested module compat/ migrates files written by the real raft-boltdb.

// boltDBFile describes a raft-boltdb file to write.
type boltDBFile struct {
	logs    []*raft.Log
	stable  map[string][]byte
	newTime bool // the msgpack timestamp extension, not time.MarshalBinary
	// raw replaces the record of an index with these bytes.
	raw map[uint64][]byte
}

// write writes f at path as raft-boltdb does (util.go's encodeMsgPack).
func (f boltDBFile) write(t testing.TB, path string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	h := codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: !f.newTime}}
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		logs, err := tx.CreateBucket(boltDBLogs)
		if err != nil {
			return err
		}
		conf, err := tx.CreateBucket(boltDBConf)
		if err != nil {
			return err
		}
		for _, l := range f.logs {
			var buf bytes.Buffer
			if err := codec.NewEncoder(&buf, &h).Encode(l); err != nil {
				return err
			}
			v := buf.Bytes()
			if r, ok := f.raw[l.Index]; ok {
				v = r
			}
			key := bigEndian(l.Index)
			if err := logs.Put(key, v); err != nil {
				return err
			}
		}
		for k, v := range f.stable {
			if err := conf.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NoError(t, db.Close())
}

func bigEndian(i uint64) []byte {
	return []byte{byte(i >> 56), byte(i >> 48), byte(i >> 40), byte(i >> 32), byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
}

// boltDBEntry builds entry i of a raft-boltdb log: every type, nil, empty
// and binary payloads, and AppendedAt zero or in several zones.
func boltDBEntry(i uint64) *raft.Log {
	l := &raft.Log{Index: i, Term: i/100 + 1}
	switch i % 7 {
	case 0:
		l.Type = raft.LogNoop
	case 1:
		l.Type = raft.LogCommand
		l.Data = []byte(fmt.Sprintf("set key-%d", i))
	case 2:
		l.Type = raft.LogCommand
		l.Data = []byte{0, 1, 2, 0xff, byte(i)}
		l.Extensions = []byte("ext")
	case 3:
		l.Type = raft.LogBarrier
	case 4:
		l.Type = raft.LogConfiguration
		l.Data = raft.EncodeConfiguration(testConfiguration("1", "2", fmt.Sprint(3+i%5)))
	case 5:
		l.Type = raft.LogCommand
		l.Data = []byte{}
	case 6:
		l.Type = raft.LogCommand
		l.Data = bytes.Repeat([]byte{byte(i)}, int(i%3000))
	}
	switch i % 5 {
	case 0:
		// zero AppendedAt, as raft-boltdb files from before raft 1.3 hold
	case 1:
		l.AppendedAt = time.Unix(1700000000+int64(i), int64(i)).UTC()
	case 2:
		l.AppendedAt = time.Unix(1700000000+int64(i), 999).In(time.FixedZone("", 7*3600))
	case 3:
		l.AppendedAt = time.Unix(1700000000+int64(i), 0).In(time.Local)
	case 4:
		l.AppendedAt = time.Unix(1600000000+int64(i), 123456789).UTC()
	}
	return l
}

func boltDBEntries(from, to uint64) []*raft.Log {
	var ls []*raft.Log
	for i := from; i <= to; i++ {
		ls = append(ls, boltDBEntry(i))
	}
	return ls
}

// raftStableKeys are the keys raft keeps in its StableStore.
func raftStableKeys() map[string][]byte {
	return map[string][]byte{
		"CurrentTerm":  bigEndian(42),
		"LastVoteTerm": bigEndian(41),
		"LastVoteCand": []byte("127.0.0.1:8300"),
	}
}

// sourceLogs decodes every entry of a raft-boltdb file as raft-boltdb does.
func sourceLogs(t testing.TB, path string) map[uint64]*raft.Log {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	out := map[uint64]*raft.Log{}
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(boltDBLogs).ForEach(func(k, v []byte) error {
			l := new(raft.Log)
			if err := codec.NewDecoder(bytes.NewBuffer(v), &codec.MsgpackHandle{}).Decode(l); err != nil {
				return err
			}
			out[l.Index] = l
			return nil
		})
	}))
	return out
}

func migrateOptions() *Options {
	o := testOptions()
	o.NoSync = false
	return o
}

// requireMigrated checks that the store at dst holds exactly entries
// from..to of the source as raft-boltdb decodes them, and its stable keys.
func requireMigrated(t *testing.T, src, dst string, from, to uint64, stable map[string][]byte) *Store {
	t.Helper()
	want := sourceLogs(t, src)
	o := testOptions()
	o.ReadOnly = true
	s := openAt(t, dst, o)
	require.NoError(t, s.Check())
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	require.Equal(t, from, first)
	require.Equal(t, to, last)
	for i := from; to != 0 && i <= to; i++ {
		var got raft.Log
		require.NoError(t, s.GetLog(i, &got))
		require.Equal(t, *want[i], got, "entry %d", i)
	}
	for k, v := range stable {
		got, err := s.Get([]byte(k))
		require.NoError(t, err, k)
		require.Equal(t, v, got, k)
	}
	return s
}

// requireNoLeftovers checks that dir holds only the named files.
func requireNoLeftovers(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	require.ElementsMatch(t, names, got)
}

func TestMigrateCopiesEverything(t *testing.T) {
	n := uint64(3000)
	if testing.Short() {
		n = 500
	}
	for _, newTime := range []bool{false, true} {
		t.Run(fmt.Sprintf("newTime=%v", newTime), func(t *testing.T) {
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
			boltDBFile{logs: boltDBEntries(1, n), stable: raftStableKeys(), newTime: newTime}.write(t, src)
			before := fileHash(t, src)

			require.NoError(t, Migrate(src, dst, migrateOptions()))

			require.Equal(t, before, fileHash(t, src), "Migrate changed the source")
			s := requireMigrated(t, src, dst, 1, n, raftStableKeys())
			term, err := s.GetUint64([]byte("CurrentTerm"))
			require.NoError(t, err)
			require.EqualValues(t, 42, term)

			// The newest configuration entry is the latest configuration.
			newest := n
			for boltDBEntry(newest).Type != raft.LogConfiguration {
				newest--
			}
			index, c, err := s.LatestConfiguration()
			require.NoError(t, err)
			require.Equal(t, newest, index)
			require.Equal(t, raft.DecodeConfiguration(boltDBEntry(newest).Data), c)
			require.NoError(t, s.Close())
			requireNoLeftovers(t, dir, "raft.db", "raftbolt.db")
		})
	}
}

func TestMigrateTimeEncodings(t *testing.T) {
	// Both encodings of the same instant decode to it; the old one keeps
	// the zone, the new one is in UTC.
	at := time.Date(2024, 5, 6, 7, 8, 9, 10, time.FixedZone("", 2*3600))
	for _, newTime := range []bool{false, true} {
		dir := t.TempDir()
		src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
		logs := []*raft.Log{
			{Index: 5, Term: 2, Type: raft.LogCommand, Data: []byte("x"), AppendedAt: at},
			{Index: 6, Term: 2, Type: raft.LogCommand},
		}
		boltDBFile{logs: logs, newTime: newTime}.write(t, src)
		require.NoError(t, Migrate(src, dst, migrateOptions()))
		s := requireMigrated(t, src, dst, 5, 6, nil)
		var l raft.Log
		require.NoError(t, s.GetLog(5, &l))
		require.True(t, at.Equal(l.AppendedAt), "newTime=%v: %v", newTime, l.AppendedAt)
		_, off := l.AppendedAt.Zone()
		if newTime {
			require.Equal(t, time.UTC, l.AppendedAt.Location())
		} else {
			require.Equal(t, 2*3600, off)
		}
		require.NoError(t, s.GetLog(6, &l))
		require.True(t, l.AppendedAt.IsZero())
	}
}

func TestMigrateCopiesOnlyTheNewestRun(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
	var logs []*raft.Log
	logs = append(logs, boltDBEntries(1, 10)...)
	logs = append(logs, boltDBEntries(20, 30)...)
	logs = append(logs, boltDBEntries(35, 50)...)
	boltDBFile{logs: logs, stable: raftStableKeys()}.write(t, src)
	var logged bytes.Buffer
	o := migrateOptions()
	o.Logger = newTestLogger(&logged)

	require.NoError(t, Migrate(src, dst, o))
	s := requireMigrated(t, src, dst, 35, 50, raftStableKeys())
	require.Contains(t, logged.String(), "skipped_from=1 skipped_before=35")
	// The configuration is the newest in the copied run (49), and one
	// that lies before the gap is not taken.
	index, _, err := s.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 46, index)
}

func TestMigrateConfigurationEntries(t *testing.T) {
	peers := func(addrs ...string) []byte {
		var enc [][]byte
		for _, a := range addrs {
			enc = append(enc, []byte(a))
		}
		var buf bytes.Buffer
		require.NoError(t, codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(enc))
		return buf.Bytes()
	}
	cmd := func(i uint64) *raft.Log {
		return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte("x")}
	}
	cases := []struct {
		name  string
		logs  []*raft.Log
		index uint64 // 0: none recorded
		conf  raft.Configuration
	}{
		{"no configuration entry", []*raft.Log{cmd(1), cmd(2)}, 0, raft.Configuration{}},
		{"bootstrap only", []*raft.Log{
			{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(testConfiguration("1"))}, cmd(2),
		}, 1, testConfiguration("1")},
		{"newest wins", []*raft.Log{
			{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(testConfiguration("1"))},
			{Index: 2, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(testConfiguration("1", "2"))}, cmd(3),
		}, 2, testConfiguration("1", "2")},
		{"deprecated peer entries", []*raft.Log{
			{Index: 1, Term: 1, Type: raft.LogAddPeerDeprecated, Data: peers("10.0.0.1:8300")},
			{Index: 2, Term: 1, Type: raft.LogRemovePeerDeprecated, Data: peers("10.0.0.1:8300", "10.0.0.2:8300")}, cmd(3),
		}, 2, raft.Configuration{Servers: []raft.Server{
			{Suffrage: raft.Voter, ID: "10.0.0.1:8300", Address: "10.0.0.1:8300"},
			{Suffrage: raft.Voter, ID: "10.0.0.2:8300", Address: "10.0.0.2:8300"},
		}}},
		{"invalid newest is not recorded", []*raft.Log{
			{Index: 1, Term: 1, Type: raft.LogRemovePeerDeprecated, Data: peers()}, cmd(2),
		}, 0, raft.Configuration{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
			boltDBFile{logs: tc.logs}.write(t, src)
			require.NoError(t, Migrate(src, dst, migrateOptions()))
			s := requireMigrated(t, src, dst, 1, tc.logs[len(tc.logs)-1].Index, nil)
			index, c, err := s.LatestConfiguration()
			if tc.index == 0 {
				require.ErrorIs(t, err, ErrNoConfiguration)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.index, index)
			require.Equal(t, tc.conf, c)
		})
	}
}

func TestMigrateEmptyLog(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
	boltDBFile{stable: raftStableKeys()}.write(t, src)
	require.NoError(t, Migrate(src, dst, migrateOptions()))
	requireMigrated(t, src, dst, 0, 0, raftStableKeys())
}

func TestMigrateErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	boltDBFile{logs: boltDBEntries(1, 20), stable: raftStableKeys()}.write(t, good)

	file := func(name string, write func(p string)) func() string {
		return func() string {
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err != nil {
				write(p)
			}
			return p
		}
	}
	cases := []struct {
		name   string
		src    func() string
		dst    string // "" for a fresh path
		target error
		text   []string
	}{
		{"src missing", func() string { return filepath.Join(dir, "missing.db") }, "",
			fs.ErrNotExist, []string{"missing.db: file does not exist"}},
		{"dst exists", func() string { return good }, "exists",
			fs.ErrExist, []string{"exists: file already exists"}},
		{"src is a raftbolt store", file("store.db", func(p string) {
			s, err := Open(p, testOptions())
			require.NoError(t, err)
			require.NoError(t, s.StoreLogs(entries(1, 3)))
			require.NoError(t, s.Close())
		}), "", ErrNotStore, []string{"already a raftbolt file"}},
		{"src is a text file", file("text.db", func(p string) {
			require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte("hello\n"), 2000), 0o600))
		}), "", ErrNotStore, []string{"not a bbolt database"}},
		{"src is empty", file("empty.db", func(p string) {
			require.NoError(t, os.WriteFile(p, nil, 0o600))
		}), "", ErrNotStore, []string{"is empty"}},
		{"src has other buckets", file("other.db", func(p string) {
			db, err := bbolt.Open(p, 0o600, nil)
			require.NoError(t, err)
			require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
				_, err := tx.CreateBucket([]byte("users"))
				return err
			}))
			require.NoError(t, db.Close())
		}), "", ErrNotStore, []string{`"users"`, "not a hashicorp/raft-boltdb file"}},
		{"undecodable entry", file("garbage.db", func(p string) {
			boltDBFile{logs: boltDBEntries(1, 20), raw: map[uint64][]byte{7: {0xc1, 0xff, 0x00}}}.write(t, p)
		}), "", ErrCorrupt, []string{"entry 7 does not decode"}},
		{"entry under the wrong key", file("moved.db", func(p string) {
			var buf bytes.Buffer
			require.NoError(t, codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(boltDBEntry(99)))
			boltDBFile{logs: boltDBEntries(1, 20), raw: map[uint64][]byte{12: buf.Bytes()}}.write(t, p)
		}), "", ErrCorrupt, []string{"stored under index 12 holds index 99"}},
		{"undecodable configuration", file("badconf.db", func(p string) {
			logs := boltDBEntries(1, 20)
			logs[18] = &raft.Log{Index: 19, Term: 1, Type: raft.LogConfiguration, Data: []byte{0xc1}}
			boltDBFile{logs: logs}.write(t, p)
		}), "", ErrCorrupt, []string{"configuration entry 19"}},
		{"src truncated", file("short.db", func(p string) {
			data, err := os.ReadFile(good)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, data[:len(data)/2], 0o600))
		}), "", ErrCorrupt, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src()
			out := t.TempDir()
			dst := filepath.Join(out, "raftbolt.db")
			if tc.dst != "" {
				dst = filepath.Join(out, tc.dst)
				require.NoError(t, os.WriteFile(dst, []byte("keep me"), 0o600))
			}
			var before [32]byte
			if _, err := os.Stat(src); err == nil {
				before = fileHash(t, src)
			}
			err := Migrate(src, dst, migrateOptions())
			require.ErrorIs(t, err, tc.target)
			require.ErrorContains(t, err, src)
			for _, text := range tc.text {
				require.ErrorContains(t, err, text)
			}
			if tc.dst != "" {
				got, rerr := os.ReadFile(dst)
				require.NoError(t, rerr)
				require.Equal(t, "keep me", string(got))
				requireNoLeftovers(t, out, tc.dst)
			} else {
				requireNoLeftovers(t, out)
			}
			if before != [32]byte{} {
				require.Equal(t, before, fileHash(t, src), "Migrate changed the source")
			}
		})
	}
}

func TestMigrateSourceInUse(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
	boltDBFile{logs: boltDBEntries(1, 5)}.write(t, src)
	// raft-boltdb holds its file with a writable bbolt handle.
	db, err := bbolt.Open(src, 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	o := migrateOptions()
	o.LockTimeout = 100 * time.Millisecond
	err = Migrate(src, dst, o)
	require.ErrorIs(t, err, ErrLocked)
	require.ErrorContains(t, err, "in use")
	requireNoLeftovers(t, dir, "raft.db")
}

func TestMigrateRefusesBadArguments(t *testing.T) {
	require.ErrorIs(t, Migrate("", "x", nil), ErrInvalid)
	require.ErrorIs(t, Migrate("x", "", nil), ErrInvalid)
	require.ErrorIs(t, Migrate("x", "y", &Options{LockTimeout: -1}), ErrInvalid)
}

func TestOpenOfARaftBoltDBFileNamesTheCommand(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "raft.db")
	boltDBFile{logs: boltDBEntries(1, 5)}.write(t, src)
	_, err := Open(src, testOptions())
	require.ErrorIs(t, err, ErrNotStore)
	require.ErrorContains(t, err, fmt.Sprintf("`raftbolt migrate %s %s.raftbolt`", src, src))

	// The command it names works.
	require.NoError(t, Migrate(src, src+".raftbolt", migrateOptions()))
	requireMigrated(t, src, src+".raftbolt", 1, 5, nil)

	require.Equal(t, `'/a b/it'\''s.db'`, shellQuote("/a b/it's.db"))
	require.Equal(t, "/data/raft-1/raft.db", shellQuote("/data/raft-1/raft.db"))
}

func newTestLogger(w *bytes.Buffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: w, Level: hclog.Info})
}
