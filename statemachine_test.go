package raftbolt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/layout"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// kvApply is a deterministic ApplyFunc over the bucket "kv". Commands:
// "set K V", "del K", "incr K" (an integer that counts how often it was
// applied), "fail K V" (writes, then returns an error) and "panic K V"
// (writes, then panics). calls counts its invocations.
func kvApply(calls *atomic.Int64) ApplyFunc {
	return func(tx *bbolt.Tx, l *raft.Log) interface{} {
		if calls != nil {
			calls.Add(1)
		}
		parts := strings.SplitN(string(l.Data), " ", 3)
		b, err := tx.CreateBucketIfNotExists([]byte("kv"))
		if err != nil {
			return err
		}
		key := []byte(parts[1])
		val := func() []byte {
			if len(parts) < 3 {
				return nil
			}
			return []byte(parts[2])
		}
		switch parts[0] {
		case "set":
			if err := b.Put(key, val()); err != nil {
				return err
			}
			return l.Index
		case "del":
			return b.Delete(key)
		case "incr":
			n, _ := strconv.Atoi(string(b.Get(key)))
			n++
			if err := b.Put(key, []byte(strconv.Itoa(n))); err != nil {
				return err
			}
			return n
		case "fail":
			_ = b.Put(key, val())
			return fmt.Errorf("refused %s", key)
		case "panic":
			_ = b.Put(key, val())
			panic("boom " + string(key))
		}
		return fmt.Errorf("unknown command %q", l.Data)
	}
}

func cmd(index uint64, data string) *raft.Log {
	return &raft.Log{Index: index, Term: 1 + index/100, Type: raft.LogCommand, Data: []byte(data)}
}

// cmds numbers commands from first on.
func cmds(first uint64, data ...string) []*raft.Log {
	var ls []*raft.Log
	for i, d := range data {
		ls = append(ls, cmd(first+uint64(i), d))
	}
	return ls
}

func confEntry(index uint64, c raft.Configuration) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(c)}
}

func openSMAt(t testing.TB, path string, apply ApplyFunc, opts ...*Options) *StateMachine {
	t.Helper()
	o := testOptions()
	if len(opts) > 0 {
		o = opts[0]
	}
	m, err := OpenStateMachine(path, apply, o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func openSM(t testing.TB, calls *atomic.Int64) *StateMachine {
	t.Helper()
	return openSMAt(t, filepath.Join(t.TempDir(), "state.db"), kvApply(calls))
}

// kv returns the contents of the bucket "kv".
func kv(t testing.TB, m *StateMachine) map[string]string {
	t.Helper()
	got := map[string]string{}
	require.NoError(t, m.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("kv"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			got[string(k)] = string(v)
			return nil
		})
	}))
	return got
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

// snapshotOf returns the stream of a snapshot of m.
func snapshotOf(t testing.TB, m *StateMachine) []byte {
	t.Helper()
	snap, err := m.Snapshot()
	require.NoError(t, err)
	defer snap.Release()
	var sink memSink
	require.NoError(t, snap.Persist(&sink))
	require.True(t, sink.closed)
	return sink.Bytes()
}

func TestStateMachineOpenCreatesItsBucketOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	m := openSMAt(t, path, kvApply(nil))
	require.Zero(t, m.AppliedIndex())
	_, _, err := m.LatestConfiguration()
	require.Equal(t, ErrNoConfiguration, err)
	var names []string
	require.NoError(t, m.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			names = append(names, string(name))
			return nil
		})
	}))
	require.Equal(t, []string{"_raftbolt"}, names)
	require.Equal(t, []interface{}{uint64(1)}, m.ApplyBatch(cmds(1, "set a 1")))
	require.NoError(t, m.Close())

	// The application's buckets next to ours are the state, not foreign.
	m = openSMAt(t, path, kvApply(nil))
	require.EqualValues(t, 1, m.AppliedIndex())
	require.Equal(t, map[string]string{"a": "1"}, kv(t, m))
	require.NoError(t, m.Close())

	// An empty file, and a bbolt file without buckets, are new states.
	for _, prep := range []func(string){
		func(p string) { require.NoError(t, os.WriteFile(p, nil, 0o600)) },
		func(p string) {
			db, err := bbolt.Open(p, 0o600, nil)
			require.NoError(t, err)
			require.NoError(t, db.Close())
		},
	} {
		p := filepath.Join(t.TempDir(), "state.db")
		prep(p)
		m := openSMAt(t, p, kvApply(nil))
		require.Zero(t, m.AppliedIndex())
	}
}

func TestStateMachineRefusesOtherFilesWithoutChangingThem(t *testing.T) {
	boltWith := func(t *testing.T, p string, fill func(tx *bbolt.Tx) error) {
		db, err := bbolt.Open(p, 0o600, nil)
		require.NoError(t, err)
		require.NoError(t, db.Update(fill))
		require.NoError(t, db.Close())
	}
	cases := []struct {
		name string
		prep func(t *testing.T, p string)
		want error
		msg  string
	}{
		{"not bbolt", func(t *testing.T, p string) {
			require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte("not a database "), 1000), 0o600))
		}, ErrNotStore, "not a bbolt database"},
		{"foreign bbolt", func(t *testing.T, p string) {
			boltWith(t, p, func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("users")); return err })
		}, ErrNotStore, `"users"`},
		{"log store", func(t *testing.T, p string) {
			s, err := Open(p, testOptions())
			require.NoError(t, err)
			require.NoError(t, s.Close())
		}, ErrNotStore, "log store"},
		{"raft-boltdb", func(t *testing.T, p string) {
			boltWith(t, p, func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("logs")); return err })
		}, ErrNotStore, "raft-boltdb"},
		{"newer format", func(t *testing.T, p string) {
			boltWith(t, p, func(tx *bbolt.Tx) error {
				b, err := tx.CreateBucket(layout.StateBucket)
				if err != nil {
					return err
				}
				return b.Put(layout.KeyFormat, codec.AppendFormat(nil, codec.Format{Version: layout.Version + 1, Kind: codec.KindStateMachine}))
			})
		}, ErrUnsupportedVersion, "version 2"},
		{"no format record", func(t *testing.T, p string) {
			boltWith(t, p, func(tx *bbolt.Tx) error { _, err := tx.CreateBucket(layout.StateBucket); return err })
		}, ErrCorrupt, "no format record"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.db")
			c.prep(t, p)
			before := fileHash(t, p)
			for _, ro := range []bool{false, true} {
				o := testOptions()
				o.ReadOnly = ro
				_, err := OpenStateMachine(p, kvApply(nil), o)
				require.ErrorIs(t, err, c.want, "read-only %v", ro)
				require.ErrorContains(t, err, c.msg)
				require.ErrorContains(t, err, p, "the error names the file")
			}
			require.Equal(t, before, fileHash(t, p), "the file changed")
		})
	}

	// And the log store refuses a state file.
	p := filepath.Join(t.TempDir(), "state.db")
	m := openSMAt(t, p, kvApply(nil))
	require.NoError(t, m.Close())
	_, err := Open(p, testOptions())
	require.ErrorIs(t, err, ErrNotStore)
}

func TestStateMachineBadInput(t *testing.T) {
	dir := t.TempDir()
	_, err := OpenStateMachine(filepath.Join(dir, "state.db"), nil, testOptions())
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "nil ApplyFunc")
	_, err = OpenStateMachine("", kvApply(nil), testOptions())
	require.ErrorIs(t, err, ErrInvalid)
	_, err = OpenStateMachine(filepath.Join(dir, "x.db"), kvApply(nil), &Options{LockTimeout: -1})
	require.ErrorIs(t, err, ErrInvalid)
	_, statErr := os.Stat(filepath.Join(dir, "state.db"))
	require.True(t, os.IsNotExist(statErr), "a refused open created the file")

	t.Run("read-only", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		ro := testOptions()
		ro.ReadOnly = true
		_, err := OpenStateMachine(path, nil, ro)
		require.Error(t, err, "read-only never creates")
		_, statErr := os.Stat(path)
		require.True(t, os.IsNotExist(statErr))

		m := openSMAt(t, path, kvApply(nil))
		m.ApplyBatch(cmds(1, "set a 1"))
		m.StoreConfiguration(1, testConfiguration("a"))
		stream := snapshotOf(t, m)
		require.NoError(t, m.Close())

		r := openSMAt(t, path, nil, ro) // no ApplyFunc needed to inspect
		require.Equal(t, map[string]string{"a": "1"}, kv(t, r))
		require.EqualValues(t, 1, r.AppliedIndex())
		_, c, err := r.LatestConfiguration()
		require.NoError(t, err)
		require.Equal(t, testConfiguration("a"), c)
		require.Equal(t, []interface{}{ErrReadOnly}, r.ApplyBatch(cmds(2, "set b 2")))
		require.ErrorIs(t, r.Restore(io.NopCloser(bytes.NewReader(stream))), ErrReadOnly)
		require.NotEmpty(t, snapshotOf(t, r), "a read-only machine still snapshots")
		require.EqualValues(t, 1, r.AppliedIndex())
	})

	t.Run("closed", func(t *testing.T) {
		m := openSM(t, nil)
		m.ApplyBatch(cmds(1, "set a 1"))
		require.NoError(t, m.Close())
		require.NoError(t, m.Close(), "Close is idempotent")
		require.Equal(t, []interface{}{ErrClosed, ErrClosed}, m.ApplyBatch(cmds(2, "set b 2", "set c 3")))
		require.Equal(t, ErrClosed, m.Apply(cmd(2, "set b 2")))
		require.Equal(t, ErrClosed, m.View(func(*bbolt.Tx) error { return nil }))
		_, _, err := m.LatestConfiguration()
		require.Equal(t, ErrClosed, err)
		_, err = m.Snapshot()
		require.Equal(t, ErrClosed, err)
		require.Equal(t, ErrClosed, m.Restore(io.NopCloser(strings.NewReader("x"))))
		require.Equal(t, ErrClosed, m.storeConfiguration(5, testConfiguration("a")))
		require.EqualValues(t, 1, m.AppliedIndex(), "the last value")
	})

	t.Run("nil arguments", func(t *testing.T) {
		m := openSM(t, nil)
		require.ErrorIs(t, m.View(nil), ErrInvalid)
		require.ErrorIs(t, m.Restore(nil), ErrInvalid)
		resp := m.ApplyBatch([]*raft.Log{nil, cmd(1, "set a 1")})
		require.ErrorIs(t, resp[0].(error), ErrInvalid)
		require.Equal(t, uint64(1), resp[1])
		require.ErrorIs(t, m.storeConfiguration(0, testConfiguration("a")), ErrInvalid)
		require.ErrorIs(t, m.storeConfiguration(3, raft.Configuration{}), ErrInvalid)
		_, err := m.CatchUp(nil)
		require.ErrorIs(t, err, ErrInvalid)
	})

	t.Run("locked", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		openSMAt(t, path, kvApply(nil))
		o := testOptions()
		o.LockTimeout = 50 * time.Millisecond
		_, err := OpenStateMachine(path, kvApply(nil), o)
		require.ErrorIs(t, err, ErrLocked)
	})
}

func TestStateMachineRestartSkipsAppliedEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	var calls atomic.Int64
	m := openSMAt(t, path, kvApply(&calls))
	var batch []*raft.Log
	for i := 1; i <= 10; i++ {
		batch = append(batch, cmd(uint64(i), "incr n"))
	}
	m.ApplyBatch(batch[:4])
	m.ApplyBatch(batch[4:7])
	require.EqualValues(t, 7, calls.Load())
	require.EqualValues(t, 7, m.AppliedIndex())
	require.NoError(t, m.Close())

	// raft replays from its last snapshot (here: from the start) after a
	// restart: only the entries the state does not hold run.
	calls.Store(0)
	m = openSMAt(t, path, kvApply(&calls))
	require.EqualValues(t, 7, m.AppliedIndex())
	resp := m.ApplyBatch(batch)
	require.EqualValues(t, 3, calls.Load(), "entries 1-7 were applied again")
	require.Equal(t, []interface{}{nil, nil, nil, nil, nil, nil, nil, 8, 9, 10}, resp)
	require.Equal(t, "10", kv(t, m)["n"])
	require.Nil(t, m.Apply(cmd(5, "incr n")), "one at a time too")
	require.Equal(t, "10", kv(t, m)["n"])
	require.EqualValues(t, 3, calls.Load())
}

func TestStateMachineBatchIsolation(t *testing.T) {
	var calls atomic.Int64
	m := openSM(t, &calls)
	m.ApplyBatch(cmds(1, "set keep 0"))
	calls.Store(0)

	batch := cmds(2,
		"set a 1",       // 2
		"fail b 2",      // 3: writes b, then fails
		"set c 3",       // 4
		"panic d 4",     // 5: writes d, then panics
		"set a 5",       // 6
		"del keep",      // 7
		"fail keep 7",   // 8: writes keep again, then fails
		"fail last 9",   // 9: the batch ends with failures
		"panic last 10", // 10
	)
	resp := m.ApplyBatch(batch)
	require.Len(t, resp, len(batch))
	require.Equal(t, uint64(2), resp[0])
	require.EqualError(t, resp[1].(error), "refused b", "apply's own error, as it is")
	require.Equal(t, uint64(4), resp[2])
	require.ErrorIs(t, resp[3].(error), ErrPanic)
	require.ErrorContains(t, resp[3].(error), "boom d")
	require.ErrorContains(t, resp[3].(error), "entry 5")
	require.Equal(t, uint64(6), resp[4])
	require.Nil(t, resp[5])
	require.EqualError(t, resp[6].(error), "refused keep")
	require.EqualError(t, resp[7].(error), "refused last")
	require.ErrorIs(t, resp[8].(error), ErrPanic)

	require.Equal(t, map[string]string{"a": "5", "c": "3"}, kv(t, m), "no write of a failed entry is kept")
	require.EqualValues(t, 10, m.AppliedIndex(), "failed entries advance the index")
	// Every entry ran once, and the entries before a failure once more:
	// 2 (re-run before 3), 4 (before 5), 6 and 7 (before 8).
	require.EqualValues(t, len(batch)+4, calls.Load())

	// Later entries apply; failed ones are never applied again.
	calls.Store(0)
	require.Equal(t, []interface{}{nil, nil, uint64(11)}, m.ApplyBatch([]*raft.Log{batch[1], batch[8], cmd(11, "set e 11")}))
	require.EqualValues(t, 1, calls.Load())
	require.Equal(t, map[string]string{"a": "5", "c": "3", "e": "11"}, kv(t, m))

	t.Run("every entry fails", func(t *testing.T) {
		m := openSM(t, nil)
		resp := m.ApplyBatch(cmds(1, "fail a 1", "panic b 2", "fail c 3"))
		for _, r := range resp {
			require.Error(t, r.(error))
		}
		require.Empty(t, kv(t, m))
		require.EqualValues(t, 3, m.AppliedIndex())
		m = reopenSM(t, m)
		require.EqualValues(t, 3, m.AppliedIndex(), "the index of failed entries is durable")
	})

	t.Run("apply touching the reserved bucket", func(t *testing.T) {
		bad := func(tx *bbolt.Tx, l *raft.Log) interface{} {
			if string(l.Data) == "evil" {
				return tx.DeleteBucket(layout.StateBucket)
			}
			return kvApply(nil)(tx, l)
		}
		m := openSMAt(t, filepath.Join(t.TempDir(), "state.db"), bad)
		resp := m.ApplyBatch(cmds(1, "set a 1", "evil", "set b 2"))
		require.ErrorIs(t, resp[1].(error), ErrInvalid)
		require.ErrorContains(t, resp[1].(error), "reserved bucket")
		require.Equal(t, map[string]string{"a": "1", "b": "2"}, kv(t, m))
		require.EqualValues(t, 3, m.AppliedIndex())
	})

	t.Run("apply that commits the transaction itself", func(t *testing.T) {
		bad := func(tx *bbolt.Tx, l *raft.Log) interface{} { return tx.Commit() }
		m := openSMAt(t, filepath.Join(t.TempDir(), "state.db"), bad)
		resp := m.ApplyBatch(cmds(1, "x"))
		require.ErrorIs(t, resp[0].(error), ErrPanic, "bbolt panics on a managed commit")
		require.EqualValues(t, 1, m.AppliedIndex())
		resp = m.ApplyBatch(cmds(2, "x"))
		require.ErrorIs(t, resp[0].(error), ErrPanic, "the machine goes on")
		require.EqualValues(t, 2, m.AppliedIndex())
	})
}

// reopenSM closes m and opens its file again with the same apply and options.
func reopenSM(t testing.TB, m *StateMachine) *StateMachine {
	t.Helper()
	require.NoError(t, m.Close())
	o := m.opts
	return openSMAt(t, m.Path(), m.apply, &o)
}

// An ApplyFunc that is not deterministic (an entry fails on its re-run)
// still leaves no partial entry and applies every other one exactly once.
func TestStateMachineNonDeterministicApply(t *testing.T) {
	runs := map[uint64]int{}
	var logs bytesLog
	o := testOptions()
	o.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Warn})
	flaky := func(tx *bbolt.Tx, l *raft.Log) interface{} {
		runs[l.Index]++
		if l.Index == 2 && runs[l.Index] == 2 {
			return errors.New("flaky")
		}
		return kvApply(nil)(tx, l)
	}
	m := openSMAt(t, filepath.Join(t.TempDir(), "state.db"), flaky, o)
	resp := m.ApplyBatch(cmds(1, "set a 1", "set b 2", "fail c 3", "set d 4"))
	require.Equal(t, uint64(1), resp[0])
	require.EqualError(t, resp[1].(error), "flaky", "the entry failed on its re-run")
	require.EqualError(t, resp[2].(error), "refused c", "run again after the flaky one, and failed again")
	require.Equal(t, uint64(4), resp[3])
	require.Equal(t, map[string]string{"a": "1", "d": "4"}, kv(t, m))
	require.Equal(t, map[uint64]int{1: 3, 2: 2, 3: 2, 4: 1}, runs)
	require.EqualValues(t, 4, m.AppliedIndex())
	require.Contains(t, logs.String(), "not deterministic")
}

func TestStateMachineRecordsConfigurations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	m := openSMAt(t, path, kvApply(nil))
	c1, c2 := testConfiguration("a"), testConfiguration("a", "b")

	// raft hands a BatchingFSM its configuration entries inside ApplyBatch.
	resp := m.ApplyBatch([]*raft.Log{
		cmd(1, "set x 1"),
		confEntry(2, c1),
		cmd(3, "fail y 3"), // rolls back the optimistic transaction, configuration included
		{Index: 4, Term: 1, Type: raft.LogNoop},
		confEntry(5, c2),
		{Index: 6, Term: 1, Type: raft.LogBarrier},
	})
	require.Equal(t, []interface{}{uint64(1), nil, resp[2], nil, nil, nil}, resp)
	require.Error(t, resp[2].(error))
	index, c, err := m.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 5, index)
	require.Equal(t, c2, c)
	require.EqualValues(t, 6, m.AppliedIndex(), "non-command entries advance the index")

	// Recorded with the applied index: both survive a reopen together.
	m = reopenSM(t, m)
	index, c, err = m.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 5, index)
	require.Equal(t, c2, c)
	require.EqualValues(t, 6, m.AppliedIndex())

	// A replayed (skipped) or older configuration changes nothing.
	m.ApplyBatch([]*raft.Log{confEntry(2, c1)})
	m.StoreConfiguration(3, c1)
	index, _, err = m.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 5, index)
	// StoreConfiguration (raft's call for FSMs that do not batch) records a newer one.
	m.StoreConfiguration(9, c1)
	index, c, err = m.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 9, index)
	require.Equal(t, c1, c)

	// An undecodable configuration entry is reported, not fatal.
	resp = m.ApplyBatch([]*raft.Log{{Index: 10, Type: raft.LogConfiguration, Data: []byte{0xc1}}, cmd(11, "set z 1")})
	require.ErrorIs(t, resp[0].(error), ErrCorrupt)
	require.Equal(t, uint64(11), resp[1])
	index, _, err = m.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 9, index)
}

func TestStateMachineSnapshotAndRestore(t *testing.T) {
	src := openSM(t, nil)
	src.ApplyBatch(cmds(1, "set a 1", "set b 2"))
	src.ApplyBatch([]*raft.Log{confEntry(3, testConfiguration("a"))})
	src.ApplyBatch(cmds(4, "set c 3"))

	// The snapshot is the state when Snapshot was called, while applying goes on.
	snap, err := src.Snapshot()
	require.NoError(t, err)
	for i := uint64(5); i < 200; i++ {
		src.ApplyBatch(cmds(i, fmt.Sprintf("set k%d %d", i, i)))
	}
	src.ApplyBatch(cmds(200, "del a"))
	var sink memSink
	require.NoError(t, snap.Persist(&sink))
	snap.Release()
	snap.Release() // twice is fine
	stream := sink.Bytes()

	// Restore onto a machine with a state of its own: replaced entirely,
	// applied index included, in the running process.
	var calls atomic.Int64
	dst := openSM(t, &calls)
	dst.ApplyBatch(cmds(1, "set x 1", "set y 2", "set z 3", "set w 4", "set v 5", "set u 6"))
	require.NoError(t, dst.Restore(io.NopCloser(bytes.NewReader(stream))))
	require.Equal(t, map[string]string{"a": "1", "b": "2", "c": "3"}, kv(t, dst))
	require.EqualValues(t, 4, dst.AppliedIndex())
	index, c, err := dst.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 3, index)
	require.Equal(t, testConfiguration("a"), c)
	_, err = os.Stat(dst.Path() + restoreSuffix)
	require.True(t, os.IsNotExist(err), "the staged file is gone")

	// Entries the stream holds are skipped; the next ones apply.
	calls.Store(0)
	require.Equal(t, []interface{}{nil, uint64(5)}, dst.ApplyBatch(cmds(4, "set c 4", "set d 5")))
	require.EqualValues(t, 1, calls.Load())
	dst = reopenSM(t, dst)
	require.Equal(t, map[string]string{"a": "1", "b": "2", "c": "3", "d": "5"}, kv(t, dst))
	require.EqualValues(t, 5, dst.AppliedIndex())

	// Restoring an older snapshot keeps the newer configuration (raft keeps
	// its own when an operator restores an old snapshot).
	dst.ApplyBatch([]*raft.Log{confEntry(6, testConfiguration("a", "b"))})
	require.NoError(t, dst.Restore(io.NopCloser(bytes.NewReader(stream))))
	require.EqualValues(t, 4, dst.AppliedIndex())
	index, _, err = dst.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 6, index)

	// A snapshot is itself a state file.
	p := filepath.Join(t.TempDir(), "copy.db")
	require.NoError(t, os.WriteFile(p, stream, 0o600))
	cp := openSMAt(t, p, kvApply(nil))
	require.EqualValues(t, 4, cp.AppliedIndex())
}

func TestStateMachineRestoreWhileReading(t *testing.T) {
	src := openSM(t, nil)
	var batch []string
	for i := 0; i < 500; i++ {
		batch = append(batch, fmt.Sprintf("set k%03d %d", i, i))
	}
	src.ApplyBatch(cmds(1, batch...))
	stream := snapshotOf(t, src)

	m := openSM(t, nil)
	m.ApplyBatch(cmds(1, "set old 1"))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads, failures atomic.Int64
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := 0
				err := m.View(func(tx *bbolt.Tx) error {
					if b := tx.Bucket([]byte("kv")); b != nil {
						n = b.Stats().KeyN
					}
					return nil
				})
				if err != nil || (n != 1 && n != 500) {
					failures.Add(1)
				}
				reads.Add(1)
			}
		}()
	}
	// A snapshot of the old state stays readable across the swap.
	old, err := m.Snapshot()
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		require.NoError(t, m.Restore(io.NopCloser(bytes.NewReader(stream))))
	}
	close(stop)
	wg.Wait()
	require.Zero(t, failures.Load(), "a reader failed or saw a mixed state")
	require.NotZero(t, reads.Load())
	var sink memSink
	require.NoError(t, old.Persist(&sink))
	old.Release()
	p := filepath.Join(t.TempDir(), "old.db")
	require.NoError(t, os.WriteFile(p, sink.Bytes(), 0o600))
	require.Equal(t, map[string]string{"old": "1"}, kv(t, openSMAt(t, p, kvApply(nil))))
	require.Len(t, kv(t, m), 500)
}

func TestStateMachineRestoreRejectsInvalidStreams(t *testing.T) {
	src := openSM(t, nil)
	src.ApplyBatch(cmds(1, "set a 1"))
	good := snapshotOf(t, src)

	logStore := openTest(t)
	require.NoError(t, logStore.StoreLogs(entries(1, 3)))
	var logBackup bytes.Buffer
	_, err := logStore.Backup(&logBackup)
	require.NoError(t, err)

	foreign := filepath.Join(t.TempDir(), "foreign.db")
	db, err := bbolt.Open(foreign, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("users")); return err }))
	require.NoError(t, db.Close())
	foreignBytes, err := os.ReadFile(foreign)
	require.NoError(t, err)

	damaged := append([]byte(nil), good...)
	for i := 4096 * 2; i < len(damaged); i += 97 {
		damaged[i] ^= 0x5a
	}

	cases := []struct {
		name   string
		stream io.Reader
		want   error
	}{
		{"empty", bytes.NewReader(nil), ErrNotStore},
		{"garbage", strings.NewReader(strings.Repeat("garbage ", 2000)), ErrNotStore},
		{"truncated", bytes.NewReader(good[:len(good)/2]), ErrCorrupt},
		{"damaged pages", bytes.NewReader(damaged), ErrCorrupt},
		{"log store", bytes.NewReader(logBackup.Bytes()), ErrNotStore},
		{"foreign bbolt", bytes.NewReader(foreignBytes), ErrNotStore},
		{"read error", io.MultiReader(bytes.NewReader(good[:5000]), iotestErrReader{}), errStreamBroken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var calls atomic.Int64
			m := openSM(t, &calls)
			m.ApplyBatch(cmds(1, "set old 1", "set older 2"))
			err := m.Restore(io.NopCloser(c.stream))
			require.ErrorIs(t, err, c.want)
			require.ErrorContains(t, err, m.Path())
			require.Equal(t, map[string]string{"old": "1", "older": "2"}, kv(t, m), "the old state is kept")
			require.EqualValues(t, 2, m.AppliedIndex())
			_, statErr := os.Stat(m.Path() + restoreSuffix)
			require.True(t, os.IsNotExist(statErr), "the staged file was left behind")
			require.Equal(t, []interface{}{uint64(3)}, m.ApplyBatch(cmds(3, "set new 3")), "the machine still works")
			m = reopenSM(t, m)
			require.Len(t, kv(t, m), 3)
		})
	}
}

var errStreamBroken = errors.New("stream broken")

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errStreamBroken }

// fakeSnapshots is a raft.SnapshotStore holding streams in memory.
type fakeSnapshots struct {
	metas   []*raft.SnapshotMeta
	streams map[string][]byte
}

func (f *fakeSnapshots) Create(raft.SnapshotVersion, uint64, uint64, raft.Configuration, uint64, raft.Transport) (raft.SnapshotSink, error) {
	return nil, errors.New("not supported")
}
func (f *fakeSnapshots) List() ([]*raft.SnapshotMeta, error) { return f.metas, nil }
func (f *fakeSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	for _, m := range f.metas {
		if m.ID == id {
			return m, io.NopCloser(bytes.NewReader(f.streams[id])), nil
		}
	}
	return nil, nil, errors.New("no such snapshot")
}

func TestStateMachineCatchUp(t *testing.T) {
	src := openSM(t, nil)
	src.ApplyBatch(cmds(1, "set a 1", "set b 2", "set c 3"))
	stream := snapshotOf(t, src)
	snaps := &fakeSnapshots{
		metas:   []*raft.SnapshotMeta{{ID: "s4", Index: 4, Term: 1}}, // 4: a no-op after the last command
		streams: map[string][]byte{"s4": stream},
	}

	// The state is behind the newest snapshot (a crash between a snapshot
	// install and its Restore): CatchUp restores it.
	behind := openSM(t, nil)
	behind.ApplyBatch(cmds(1, "set a 1"))
	restored, err := behind.CatchUp(snaps)
	require.NoError(t, err)
	require.True(t, restored)
	require.EqualValues(t, 3, behind.AppliedIndex())
	require.Len(t, kv(t, behind), 3)

	// The state holds the snapshot already (only a no-op followed it): kept as it is.
	restored, err = src.CatchUp(snaps)
	require.NoError(t, err)
	require.False(t, restored)
	src.ApplyBatch(cmds(5, "set d 5"))
	restored, err = src.CatchUp(snaps)
	require.NoError(t, err)
	require.False(t, restored, "the state is newer than the snapshot")
	restored, err = src.CatchUp(&fakeSnapshots{})
	require.NoError(t, err)
	require.False(t, restored)
}

func TestStateMachineCloseWithOpenSnapshot(t *testing.T) {
	m := openSM(t, nil)
	m.ApplyBatch(cmds(1, "set a 1"))
	snap, err := m.Snapshot()
	require.NoError(t, err)
	require.NoError(t, m.Close())
	var sink memSink
	require.NoError(t, snap.Persist(&sink), "a snapshot outlives Close until released")
	snap.Release()
	require.Error(t, snap.Persist(&memSink{}))
	// Released: the file is closed and unlocked.
	o := testOptions()
	o.LockTimeout = time.Second
	m2 := openSMAt(t, m.Path(), kvApply(nil), o)
	require.EqualValues(t, 1, m2.AppliedIndex())
}

func TestStateMachineStorageFailureStopsApplying(t *testing.T) {
	var logs bytesLog
	o := testOptions()
	o.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Error})
	m := openSMAt(t, filepath.Join(t.TempDir(), "state.db"), kvApply(nil), o)
	m.ApplyBatch(cmds(1, "set a 1"))
	// Simulate a failed commit: the file's descriptor goes away.
	failing := errors.New("disk on fire")
	m.file.Break(failing)
	resp := m.ApplyBatch(cmds(2, "set b 2", "set c 3"))
	require.Len(t, resp, 2)
	for _, r := range resp {
		require.ErrorIs(t, r.(error), failing)
	}
	require.EqualValues(t, 1, m.AppliedIndex())
	_, err := m.Snapshot()
	require.ErrorIs(t, err, failing, "no snapshot of a state that misses entries")
	// A restore replaces the file and clears the failure.
	src := openSM(t, nil)
	src.ApplyBatch(cmds(1, "set a 1", "set b 2"))
	require.NoError(t, m.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, src)))))
	require.Equal(t, []interface{}{uint64(3)}, m.ApplyBatch(cmds(3, "set c 3")))
}

func init() {
	children["smrestore"] = restoreChild
	children["smapply"] = applyChild
}

// TestStateMachineRestoreCrash kills a process (kill -9) at each stage of
// a Restore; the state file is then the old state or the new one, whole,
// and usable.
func TestStateMachineRestoreCrash(t *testing.T) {
	work := t.TempDir()
	oldPath := filepath.Join(work, "old.db")
	old := openSMAt(t, oldPath, kvApply(nil))
	old.ApplyBatch(cmds(1, "set old 1", "set both old"))
	require.NoError(t, old.Close())
	src := openSM(t, nil)
	var batch []string
	for i := 0; i < 300; i++ {
		batch = append(batch, fmt.Sprintf("set new%03d %s", i, strings.Repeat("x", 100)))
	}
	src.ApplyBatch(cmds(1, batch...))
	src.ApplyBatch(cmds(301, "set both new"))
	snapPath := filepath.Join(work, "new.snap")
	require.NoError(t, os.WriteFile(snapPath, snapshotOf(t, src), 0o600))

	for _, stage := range []string{"copying", "staged", "validated", "swapped"} {
		t.Run(stage, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.db")
			data, err := os.ReadFile(oldPath)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, data, 0o600))

			// The child blocks once it says it is at the stage; the kill
			// (SIGKILL) lands at once, so nothing here is random (no rng).
			// A child that exits by itself fails runToKill.
			reached := false
			_, killed := runToKill(t, nil, kill{}, func(line string) bool {
				if line == "at "+stage {
					reached = true
				}
				return reached
			}, "smrestore", path, snapPath, stage)
			require.True(t, reached, "the child exited before reaching %s", stage)
			require.True(t, killed)

			m := openSMAt(t, path, kvApply(nil))
			_, err = os.Stat(path + restoreSuffix)
			require.True(t, os.IsNotExist(err), "the staged file survived the open")
			state := kv(t, m)
			if stage == "swapped" {
				require.Len(t, state, 301)
				require.Equal(t, "new", state["both"])
				require.EqualValues(t, 301, m.AppliedIndex())
			} else {
				require.Equal(t, map[string]string{"old": "1", "both": "old"}, state)
				require.EqualValues(t, 2, m.AppliedIndex())
			}
			next := m.AppliedIndex() + 1
			require.Equal(t, []interface{}{next}, m.ApplyBatch(cmds(next, "set after 1")))
		})
	}
}

// restoreChild is the child of TestStateMachineRestoreCrash (args: state
// path, snapshot path, stage): it restores the snapshot into the state
// and, at the stage, says "at <stage>" and blocks until it is killed.
func restoreChild(args []string) error {
	path, snapPath, stage := args[0], args[1], args[2]
	block := func() {
		say("at %s", stage)
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}
	restoreHook = func(s string) {
		if s == stage {
			block()
		}
	}
	m, err := OpenStateMachine(path, kvApply(nil), &Options{Logger: hclog.NewNullLogger()})
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	f, err := os.Open(snapPath)
	if err != nil {
		return err
	}
	var r io.Reader = f
	if stage == "copying" {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		r = io.MultiReader(io.LimitReader(f, fi.Size()/2), readerFunc(func([]byte) (int, error) {
			block()
			return 0, io.EOF
		}))
	}
	if err := m.Restore(io.NopCloser(r)); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return fmt.Errorf("restored without reaching %s", stage)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// smNode is a raft server whose state is a StateMachine, over TCP on loopback.
type smNode struct {
	id    raft.ServerID
	dir   string
	addr  raft.ServerAddress
	store *Store
	sm    *StateMachine
	snaps raft.SnapshotStore
	raft  *raft.Raft
	trans *raft.NetworkTransport
	calls *atomic.Int64
}

func startSMNode(t *testing.T, id raft.ServerID, dir string, addr raft.ServerAddress) *smNode {
	t.Helper()
	trans, store, snaps := nodeStorage(t, dir, addr)
	calls := &atomic.Int64{}
	sm, err := OpenStateMachine(filepath.Join(dir, "state.db"), kvApply(calls), testOptions())
	require.NoError(t, err)
	_, err = sm.CatchUp(snaps)
	require.NoError(t, err)
	conf := nodeConfig(id)
	conf.NoSnapshotRestoreOnStart = true
	r, err := raft.NewRaft(conf, sm, store, store, snaps, trans)
	require.NoError(t, err)
	n := &smNode{id: id, dir: dir, addr: trans.LocalAddr(), store: store, sm: sm, snaps: snaps, raft: r, trans: trans, calls: calls}
	t.Cleanup(n.stop)
	return n
}

func (n *smNode) stop() {
	if n.raft == nil {
		return
	}
	_ = n.raft.Shutdown().Error()
	_ = n.trans.Close()
	_ = n.sm.Close()
	_ = n.store.Close()
	n.raft = nil
}

// apply applies commands on leader n, each once.
func (n *smNode) apply(t *testing.T, commands ...string) {
	t.Helper()
	for _, c := range commands {
		f := n.raft.Apply([]byte(c), 5*time.Second)
		require.NoError(t, f.Error())
		if err, ok := f.Response().(error); ok {
			require.NoError(t, err)
		}
	}
}

// holds waits until n's state has key = want.
func (n *smNode) holds(t *testing.T, key, want string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var got string
		_ = n.sm.View(func(tx *bbolt.Tx) error {
			if b := tx.Bucket([]byte("kv")); b != nil {
				got = string(b.Get([]byte(key)))
			}
			return nil
		})
		return got == want
	}, 30*time.Second, 10*time.Millisecond, "%s: %s != %q", n.id, key, want)
}

func TestStateMachineOnRaft(t *testing.T) {
	n1 := startSMNode(t, "n1", t.TempDir(), "")
	require.NoError(t, n1.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: n1.addr}}}).Error())
	require.Eventually(t, func() bool { return n1.raft.State() == raft.Leader }, 10*time.Second, 10*time.Millisecond)
	incr := func(n int) []string {
		var c []string
		for i := 0; i < n; i++ {
			c = append(c, "incr n")
		}
		return c
	}
	n1.apply(t, incr(60)...)
	require.NoError(t, n1.raft.Snapshot().Error())
	first, err := n1.store.FirstIndex()
	require.NoError(t, err)
	require.Greater(t, first, uint64(2), "the log was not truncated")

	// A node added after the truncation is caught up by a snapshot install:
	// Restore on a running node.
	n2 := startSMNode(t, "n2", t.TempDir(), "")
	require.NoError(t, n1.raft.AddNonvoter("n2", n2.addr, 0, 10*time.Second).Error())
	n1.apply(t, incr(5)...)
	n2.holds(t, "n", "65")
	require.Less(t, n2.calls.Load(), int64(65), "n2 was not caught up by a snapshot")
	_, c, err := n2.sm.LatestConfiguration()
	require.NoError(t, err)
	require.Len(t, c.Servers, 2, "the configuration came with the snapshot or the entry")

	// n2 falls behind the leader's log while down, and comes back with a
	// state of its own: Restore on a node that has state.
	n2.stop()
	n1.apply(t, incr(60)...)
	require.NoError(t, n1.raft.Snapshot().Error())
	n2 = startSMNode(t, "n2", n2.dir, n2.addr)
	n1.apply(t, "incr n")
	n2.holds(t, "n", "126")
	require.Less(t, n2.calls.Load(), int64(61), "n2 was not caught up by a snapshot")

	// Restarts apply nothing twice: NoSnapshotRestoreOnStart and the
	// recorded applied index.
	for _, restart := range []func() *smNode{
		func() *smNode { n2.stop(); n2 = startSMNode(t, "n2", n2.dir, n2.addr); return n2 },
		func() *smNode { n1.stop(); n1 = startSMNode(t, "n1", n1.dir, n1.addr); return n1 },
	} {
		n := restart()
		require.Eventually(t, func() bool { return n1.raft.State() == raft.Leader }, 20*time.Second, 10*time.Millisecond)
		require.NoError(t, n1.raft.Barrier(10*time.Second).Error())
		n.holds(t, "n", "126")
	}
	n1.apply(t, "incr n")
	n1.holds(t, "n", "127")
	n2.holds(t, "n", "127")
	require.EqualValues(t, 1, n1.calls.Load(), "n1 applied old entries again after its restart")
}

// TestStateMachineCrashDuringApply kills a process (kill -9) while it
// applies batches of "incr n": every acknowledged entry survives, and
// each entry is applied exactly once (n equals the applied index), across
// several crashes and restarts that replay what the state already holds.
func TestStateMachineCrashDuringApply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	var acked uint64
	for round := 0; round < 3; round++ {
		target := acked + 40 + uint64(round)*7
		// The kill lands at once after the target's ack (no rng: nothing
		// is random); acks the child writes before it dies count too.
		var bad error
		runToKill(t, nil, kill{}, func(line string) bool {
			n, err := strconv.ParseUint(strings.TrimPrefix(line, "ack "), 10, 64)
			if err != nil {
				if bad == nil {
					bad = fmt.Errorf("child said %q: %w", line, err)
				}
				return true
			}
			acked = max(acked, n)
			return n >= target
		}, "smapply", path)
		require.NoError(t, bad)
		require.GreaterOrEqual(t, acked, target, "the child stopped early")

		m := openSMAt(t, path, kvApply(nil))
		applied := m.AppliedIndex()
		require.GreaterOrEqual(t, applied, acked, "round %d: an acknowledged entry was lost", round)
		require.Equal(t, strconv.FormatUint(applied, 10), kv(t, m)["n"], "round %d: an entry was applied twice or half", round)
		require.NoError(t, m.Close())
	}
}

// applyChild is the child of TestStateMachineCrashDuringApply (args: state
// path): it applies batches of "incr n" for ever, replaying from index 1
// as raft would after a restart, and acknowledges each batch ("ack <last
// index>") once it is applied.
func applyChild(args []string) error {
	m, err := OpenStateMachine(args[0], kvApply(nil), &Options{Logger: hclog.NewNullLogger()})
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	for i := uint64(1); ; i += 3 {
		batch := []*raft.Log{cmd(i, "incr n"), cmd(i+1, "incr n"), cmd(i+2, "incr n")}
		for _, r := range m.ApplyBatch(batch) {
			if err, ok := r.(error); ok {
				return fmt.Errorf("apply: %w", err)
			}
		}
		say("ack %d", i+2)
	}
}
