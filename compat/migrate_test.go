package compat

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb"
	raftboltdbv2 "github.com/hashicorp/raft-boltdb/v2"
	"github.com/raftbolt/raftbolt"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// boltDBStore is what the two raft-boltdb versions have in common.
type boltDBStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// flavours are the ways a raft-boltdb file can have been written: v1 on
// boltdb/bolt (go-msgpack 1.1.5: the new time encoding), v2 on bbolt with
// its default (the old time encoding) and with MsgpackUseNewTimeFormat.
var flavours = []struct {
	name string
	open func(t testing.TB, path string) boltDBStore
}{
	{"v1", func(t testing.TB, path string) boltDBStore {
		if raceEnabled {
			t.Skip("boltdb/bolt fails checkptr under -race (see race_test.go); TestMigrateGoldenV1File covers v1")
		}
		s, err := raftboltdb.NewBoltStore(path)
		require.NoError(t, err)
		return s
	}},
	{"v2", func(t testing.TB, path string) boltDBStore {
		s, err := raftboltdbv2.New(raftboltdbv2.Options{Path: path, NoSync: true})
		require.NoError(t, err)
		return s
	}},
	{"v2-no-freelist-sync", func(t testing.TB, path string) boltDBStore {
		// Consul, for one, runs raft-boltdb without a synced freelist.
		s, err := raftboltdbv2.New(raftboltdbv2.Options{Path: path, NoSync: true, BoltOptions: &bbolt.Options{NoFreelistSync: true}})
		require.NoError(t, err)
		return s
	}},
	{"v2-new-time", func(t testing.TB, path string) boltDBStore {
		s, err := raftboltdbv2.New(raftboltdbv2.Options{Path: path, NoSync: true, MsgpackUseNewTimeFormat: true})
		require.NoError(t, err)
		return s
	}},
}

// openV2ReadOnly opens any raft-boltdb file (v1 and v2 share the format)
// with raft-boltdb v2 without writing to it: the reference reader.
func openV2ReadOnly(t testing.TB, path string) *raftboltdbv2.BoltStore {
	t.Helper()
	s, err := raftboltdbv2.New(raftboltdbv2.Options{Path: path, BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: time.Second}})
	require.NoError(t, err)
	return s
}

// encodePeers encodes the data of a deprecated peer entry as raft does
// with a network transport: a msgpack list of addresses.
func encodePeers(t testing.TB, addrs ...string) []byte {
	var enc [][]byte
	for _, a := range addrs {
		enc = append(enc, []byte(a))
	}
	var buf bytes.Buffer
	require.NoError(t, codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(enc))
	return buf.Bytes()
}

func configuration(n uint64) raft.Configuration {
	c := raft.Configuration{}
	for i := uint64(1); i <= 1+n%4; i++ {
		c.Servers = append(c.Servers, raft.Server{
			Suffrage: raft.ServerSuffrage(i % 3),
			ID:       raft.ServerID(fmt.Sprintf("node-%d", i)),
			Address:  raft.ServerAddress(fmt.Sprintf("10.0.0.%d:8300", i)),
		})
	}
	c.Servers[0].Suffrage = raft.Voter
	return c
}

// entry builds entry i: every log type, payloads nil, empty, text and
// binary, extensions, AppendedAt zero and in several zones.
func entry(t testing.TB, i uint64) *raft.Log {
	l := &raft.Log{Index: i, Term: i/50 + 1}
	switch i % 8 {
	case 0:
		l.Type = raft.LogNoop
	case 1:
		l.Type = raft.LogCommand
		l.Data = []byte(fmt.Sprintf("set k%d=v%d", i, i))
	case 2:
		l.Type = raft.LogCommand
		l.Data = bytes.Repeat([]byte{byte(i), 0, 0xff}, int(i%700))
		l.Extensions = []byte{byte(i), 1, 2}
	case 3:
		l.Type = raft.LogBarrier
	case 4:
		l.Type = raft.LogConfiguration
		l.Data = raft.EncodeConfiguration(configuration(i))
	case 5:
		l.Type = raft.LogAddPeerDeprecated
		l.Data = encodePeers(t, "10.0.0.1:8300", fmt.Sprintf("10.0.1.%d:8300", i%200))
	case 6:
		l.Type = raft.LogRemovePeerDeprecated
		l.Data = encodePeers(t, "10.0.0.1:8300")
	case 7:
		l.Type = raft.LogCommand
		l.Data = []byte{}
	}
	switch i % 4 {
	case 1:
		l.AppendedAt = time.Unix(1700000000+int64(i), int64(i)*7).UTC()
	case 2:
		l.AppendedAt = time.Unix(1700000000+int64(i), 0).In(time.FixedZone("CEST", 2*3600))
	case 3:
		l.AppendedAt = time.Unix(1600000000+int64(i), 999999999).Local()
	}
	return l
}

// writeFile writes, through the real raft-boltdb, the runs of entries
// given as [from, to] pairs (a gap between runs, as raft leaves after a
// snapshot restore) and raft's stable keys.
func writeFile(t testing.TB, open func(testing.TB, string) boltDBStore, path string, runs ...[2]uint64) {
	t.Helper()
	s := open(t, path)
	defer s.Close()
	for _, r := range runs {
		for i := r[0]; i <= r[1]; i += 256 {
			var batch []*raft.Log
			for j := i; j <= min(i+255, r[1]); j++ {
				batch = append(batch, entry(t, j))
			}
			require.NoError(t, s.StoreLogs(batch))
		}
	}
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 77))
	require.NoError(t, s.SetUint64([]byte("LastVoteTerm"), 76))
	require.NoError(t, s.Set([]byte("LastVoteCand"), []byte("10.0.0.2:8300")))
	require.NoError(t, s.Set([]byte("app-key"), []byte{0, 1, 2}))
}

func hashFile(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(b)
}

func quietOptions() *raftbolt.Options {
	return &raftbolt.Options{Logger: hclog.NewNullLogger(), MetricsInterval: -1}
}

func openReadOnly(t testing.TB, path string) *raftbolt.Store {
	t.Helper()
	o := quietOptions()
	o.ReadOnly = true
	s, err := raftbolt.Open(path, o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// requireSameLog checks that dst holds exactly entries from..to, each
// equal in every field to what raft-boltdb itself returns for src, and to
// what was written (the instant of AppendedAt: the new time encoding
// keeps it in UTC).
func requireSameLog(t *testing.T, src string, dst *raftbolt.Store, from, to uint64) {
	t.Helper()
	ref := openV2ReadOnly(t, src)
	defer ref.Close()
	first, err := dst.FirstIndex()
	require.NoError(t, err)
	last, err := dst.LastIndex()
	require.NoError(t, err)
	require.Equal(t, from, first)
	require.Equal(t, to, last)
	for i := from; i <= to; i++ {
		var want, got raft.Log
		require.NoError(t, ref.GetLog(i, &want))
		require.NoError(t, dst.GetLog(i, &got))
		require.Equal(t, want, got, "entry %d", i)

		w := entry(t, i)
		require.Equal(t, w.Index, got.Index)
		require.Equal(t, w.Term, got.Term)
		require.Equal(t, w.Type, got.Type)
		require.Equal(t, len(w.Data), len(got.Data), "entry %d", i)
		if len(w.Data) > 0 {
			require.Equal(t, w.Data, got.Data, "entry %d", i)
		}
		require.Equal(t, len(w.Extensions), len(got.Extensions))
		require.True(t, w.AppendedAt.Equal(got.AppendedAt), "entry %d: %v, want %v", i, got.AppendedAt, w.AppendedAt)
	}
	var l raft.Log
	require.Equal(t, raft.ErrLogNotFound, dst.GetLog(from-1, &l))
}

func requireStableKeys(t *testing.T, s *raftbolt.Store) {
	t.Helper()
	term, err := s.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.EqualValues(t, 77, term)
	term, err = s.GetUint64([]byte("LastVoteTerm"))
	require.NoError(t, err)
	require.EqualValues(t, 76, term)
	cand, err := s.Get([]byte("LastVoteCand"))
	require.NoError(t, err)
	require.Equal(t, "10.0.0.2:8300", string(cand))
	v, err := s.Get([]byte("app-key"))
	require.NoError(t, err)
	require.Equal(t, []byte{0, 1, 2}, v)
}

// newestConfiguration is the configuration raft loads from entries
// from..to: the newest configuration entry's.
func newestConfiguration(t testing.TB, to uint64) (uint64, raft.Configuration) {
	for i := to; ; i-- {
		l := entry(t, i)
		switch l.Type {
		case raft.LogConfiguration:
			return i, raft.DecodeConfiguration(l.Data)
		case raft.LogAddPeerDeprecated, raft.LogRemovePeerDeprecated:
			var peers [][]byte
			require.NoError(t, codec.NewDecoderBytes(l.Data, &codec.MsgpackHandle{}).Decode(&peers))
			var c raft.Configuration
			for _, p := range peers {
				c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p), Address: raft.ServerAddress(p)})
			}
			return i, c
		}
	}
}

func TestMigrateFilesOfEveryFlavour(t *testing.T) {
	n := uint64(5000)
	if testing.Short() {
		n = 1200
	}
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
			writeFile(t, fl.open, src, [2]uint64{1, n})
			before := hashFile(t, src)

			require.NoError(t, raftbolt.Migrate(src, dst, quietOptions()))
			require.Equal(t, before, hashFile(t, src), "Migrate changed the source")

			s := openReadOnly(t, dst)
			require.NoError(t, s.Check())
			requireSameLog(t, src, s, 1, n)
			requireStableKeys(t, s)
			wantIndex, wantConf := newestConfiguration(t, n)
			index, c, err := s.LatestConfiguration()
			require.NoError(t, err)
			require.Equal(t, wantIndex, index)
			require.Equal(t, wantConf, c)
		})
	}
}

func TestMigrateGaps(t *testing.T) {
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
			// Two gaps: only 900..1300 is current.
			writeFile(t, fl.open, src, [2]uint64{1, 300}, [2]uint64{500, 700}, [2]uint64{900, 1300})
			var logs bytes.Buffer
			o := quietOptions()
			o.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Warn})
			require.NoError(t, raftbolt.Migrate(src, dst, o))
			require.Contains(t, logs.String(), "copied_from=900 copied_to=1300 skipped_from=1 skipped_before=900")

			s := openReadOnly(t, dst)
			requireSameLog(t, src, s, 900, 1300)
			requireStableKeys(t, s)
			index, _, err := s.LatestConfiguration()
			require.NoError(t, err)
			wantIndex, _ := newestConfiguration(t, 1300)
			require.Equal(t, wantIndex, index)
		})
	}
}

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/raftboltdb-v1.db.gz with raft-boltdb v1 (not under -race)")

// goldenV1 is a file the real raft-boltdb v1 wrote: entries 1-300 and
// 500-1200 (a gap) of entry(), and the stable keys of writeFile.
const goldenV1 = "testdata/raftboltdb-v1.db.gz"

// TestMigrateGoldenV1File migrates a file written by raft-boltdb v1, also
// under -race, where v1 itself cannot run.
func TestMigrateGoldenV1File(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
	if *updateGolden {
		writeFile(t, flavours[0].open, src, [2]uint64{1, 300}, [2]uint64{500, 1200})
		raw, err := os.ReadFile(src)
		require.NoError(t, err)
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, err = zw.Write(raw)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
		require.NoError(t, os.WriteFile(goldenV1, buf.Bytes(), 0o644))
	}
	f, err := os.Open(goldenV1)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	raw, err := io.ReadAll(zr)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(src, raw, 0o600))

	require.NoError(t, raftbolt.Migrate(src, dst, quietOptions()))
	s := openReadOnly(t, dst)
	require.NoError(t, s.Check())
	requireSameLog(t, src, s, 500, 1200)
	requireStableKeys(t, s)
	wantIndex, wantConf := newestConfiguration(t, 1200)
	index, c, err := s.LatestConfiguration()
	require.NoError(t, err)
	require.Equal(t, wantIndex, index)
	require.Equal(t, wantConf, c)
}

// TestMigrateAfterTruncation: raft truncates the head of the log after a
// snapshot, so files usually start well after index 1.
func TestMigrateAfterTruncation(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
	writeFile(t, flavours[1].open, src, [2]uint64{1, 1000})
	s := flavours[1].open(t, src)
	require.NoError(t, s.DeleteRange(1, 640))
	require.NoError(t, s.Close())
	require.NoError(t, raftbolt.Migrate(src, dst, quietOptions()))
	requireSameLog(t, src, openReadOnly(t, dst), 641, 1000)
}

func TestMigrateErrorsWithRealFiles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "raft.db")
	writeFile(t, flavours[1].open, src, [2]uint64{1, 100})

	t.Run("open names the command", func(t *testing.T) {
		_, err := raftbolt.Open(src, quietOptions())
		require.ErrorIs(t, err, raftbolt.ErrNotStore)
		require.ErrorContains(t, err, fmt.Sprintf("raftbolt migrate %s %s.raftbolt", src, src))
	})
	t.Run("source in use by raft-boltdb", func(t *testing.T) {
		s := flavours[1].open(t, src)
		defer s.Close()
		o := quietOptions()
		o.LockTimeout = 100 * time.Millisecond
		dst := filepath.Join(t.TempDir(), "raftbolt.db")
		err := raftbolt.Migrate(src, dst, o)
		require.ErrorIs(t, err, raftbolt.ErrLocked)
		require.NoFileExists(t, dst)
	})
	t.Run("destination exists", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "raftbolt.db")
		require.NoError(t, raftbolt.Migrate(src, dst, quietOptions()))
		before := hashFile(t, dst)
		err := raftbolt.Migrate(src, dst, quietOptions())
		require.ErrorIs(t, err, fs.ErrExist)
		require.ErrorContains(t, err, dst)
		require.Equal(t, before, hashFile(t, dst))

		// and a raftbolt store is not migrated again.
		err = raftbolt.Migrate(dst, dst+".again", quietOptions())
		require.ErrorIs(t, err, raftbolt.ErrNotStore)
		require.ErrorContains(t, err, "already a raftbolt")
	})
	t.Run("source missing", func(t *testing.T) {
		err := raftbolt.Migrate(filepath.Join(dir, "nope.db"), filepath.Join(t.TempDir(), "x.db"), quietOptions())
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorContains(t, err, "nope.db: file does not exist")
	})
	t.Run("corrupt entry", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.db")
		writeFile(t, flavours[1].open, bad, [2]uint64{1, 100})
		db, err := bbolt.Open(bad, 0o600, nil)
		require.NoError(t, err)
		require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte("logs")).Put([]byte{0, 0, 0, 0, 0, 0, 0, 57}, []byte{0x85, 0xa5, 'I'})
		}))
		require.NoError(t, db.Close())
		out := t.TempDir()
		err = raftbolt.Migrate(bad, filepath.Join(out, "raftbolt.db"), quietOptions())
		require.ErrorIs(t, err, raftbolt.ErrCorrupt)
		require.ErrorContains(t, err, "entry 57")
		ents, err := os.ReadDir(out)
		require.NoError(t, err)
		require.Empty(t, ents, "a failed migration left files behind")
	})
}

// TestRaftRestartsOnMigratedStore runs a real raft node on raft-boltdb v2
// (TCP transport, file snapshots, a snapshot and a log truncation, a
// configuration change), stops it, migrates its store and restarts it on
// raftbolt: the log, the term, the configuration and the FSM (rebuilt from
// the snapshot and the log) are what they were.
func TestRaftRestartsOnMigratedStore(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 120
	}
	dir := t.TempDir()
	boltPath := filepath.Join(dir, "raft.db")

	// Run on raft-boltdb.
	bs, err := raftboltdbv2.NewBoltStore(boltPath)
	require.NoError(t, err)
	node := startRaft(t, dir, "", bs, bs, nil)
	require.NoError(t, node.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{
		{ID: "node-1", Address: node.addr},
	}}).Error())
	node.waitLeader(t)
	var want []string
	for i := 0; i < n; i++ {
		cmd := fmt.Sprintf("cmd-%d", i)
		require.NoError(t, node.raft.Apply([]byte(cmd), 5*time.Second).Error())
		want = append(want, cmd)
		if i == n/2 {
			require.NoError(t, node.raft.Snapshot().Error())
			// A configuration change after the snapshot: it lives in the log only.
			require.NoError(t, node.raft.AddNonvoter("node-2", "127.0.0.1:1", 0, 5*time.Second).Error())
		}
	}
	require.Equal(t, want, node.fsm.list())
	confBefore := node.raft.GetConfiguration()
	require.NoError(t, confBefore.Error())
	lastBefore := node.raft.LastIndex()
	node.stop(t)
	firstBefore, err := bs.FirstIndex()
	require.NoError(t, err)
	require.Greater(t, firstBefore, uint64(1), "raft did not truncate the log after the snapshot")
	termBefore, err := bs.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.NoError(t, bs.Close())

	// Migrate with the process stopped.
	storePath := filepath.Join(dir, "raftbolt.db")
	require.NoError(t, raftbolt.Migrate(boltPath, storePath, quietOptions()))
	store, err := raftbolt.Open(storePath, quietOptions())
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	first, _ := store.FirstIndex()
	last, _ := store.LastIndex()
	require.Equal(t, firstBefore, first)
	require.Equal(t, lastBefore, last)
	term, err := store.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.Equal(t, termBefore, term)
	_, recorded, err := store.LatestConfiguration()
	require.NoError(t, err)
	require.Equal(t, confBefore.Configuration(), recorded)

	// Restart on raftbolt, at the same address, with a fresh FSM.
	node = startRaft(t, dir, node.addr, store, store, func(fsm raft.FSM) raft.FSM { return raftbolt.NewFSM(store, fsm) })
	node.waitLeader(t)
	require.NoError(t, node.raft.Barrier(5*time.Second).Error())
	require.Equal(t, want, node.fsm.list(), "the FSM was not rebuilt from the snapshot and the log")
	conf := node.raft.GetConfiguration()
	require.NoError(t, conf.Error())
	require.Equal(t, confBefore.Configuration(), conf.Configuration())
	term, err = store.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.Greater(t, term, termBefore)
	require.NoError(t, node.raft.Apply([]byte("after"), 5*time.Second).Error())
	require.Equal(t, append(want, "after"), node.fsm.list())
	node.stop(t)
	require.NoError(t, store.Check())
}

type raftNode struct {
	raft  *raft.Raft
	fsm   *listFSM
	trans *raft.NetworkTransport
	addr  raft.ServerAddress
}

func startRaft(t *testing.T, dir string, addr raft.ServerAddress, logs raft.LogStore, stable raft.StableStore, wrap func(raft.FSM) raft.FSM) *raftNode {
	t.Helper()
	bind := string(addr)
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	trans, err := raft.NewTCPTransportWithLogger(bind, nil, 3, 2*time.Second, hclog.NewNullLogger())
	require.NoError(t, err)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	require.NoError(t, err)
	c := raft.DefaultConfig()
	c.LocalID = "node-1"
	c.Logger = hclog.NewNullLogger()
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
	c.SnapshotThreshold = 1 << 20 // snapshots only when the test asks
	c.TrailingLogs = 10
	fsm := &listFSM{}
	var f raft.FSM = fsm
	if wrap != nil {
		f = wrap(fsm)
	}
	r, err := raft.NewRaft(c, f, logs, stable, snaps, trans)
	require.NoError(t, err)
	n := &raftNode{raft: r, fsm: fsm, trans: trans, addr: trans.LocalAddr()}
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *raftNode) waitLeader(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return n.raft.State() == raft.Leader }, 20*time.Second, 10*time.Millisecond, "no leader")
}

func (n *raftNode) stop(t *testing.T) {
	if n.raft == nil {
		return
	}
	if err := n.raft.Shutdown().Error(); err != nil && !errors.Is(err, raft.ErrRaftShutdown) {
		t.Errorf("shutdown: %v", err)
	}
	_ = n.trans.Close()
	n.raft = nil
}

// listFSM is a deterministic FSM that records the commands applied to it.
type listFSM struct {
	mu       sync.Mutex
	commands []string
}

func (f *listFSM) Apply(l *raft.Log) interface{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commands = append(f.commands, string(l.Data))
	return nil
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return listSnapshot(append([]string(nil), f.commands...)), nil
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var cmds []string
	if err := json.NewDecoder(rc).Decode(&cmds); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commands = cmds
	return nil
}

func (f *listFSM) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

type listSnapshot []string

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (listSnapshot) Release() {}
