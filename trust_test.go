package raftbolt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// Regression tests for the defects of the trust-repair issue: each failed
// on the code before the fix (the commit message says how).

// The log's first and last index are published together: no reader ever
// sees one from one write and the other from another (first 1 with last
// 0 while the first batch commits, or first 0 with last 10 while a full
// DeleteRange commits).
func TestFirstAndLastAreNeverTorn(t *testing.T) {
	o := testOptions()
	o.CacheSize = -1
	s := openTest(t, o)
	var (
		stop atomic.Bool
		torn atomic.Value
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			st, err := s.Stats()
			if err != nil {
				torn.Store(err.Error())
				return
			}
			if (st.FirstIndex == 0) != (st.LastIndex == 0) || st.FirstIndex > st.LastIndex {
				torn.Store(fmt.Sprintf("first %d, last %d", st.FirstIndex, st.LastIndex))
				return
			}
		}
	}()
	for round := 0; round < 20000 && torn.Load() == nil; round++ {
		require.NoError(t, s.StoreLogs(entries(1, 10)))
		require.NoError(t, s.DeleteRange(1, 10))
	}
	stop.Store(true)
	wg.Wait()
	require.Nil(t, torn.Load(), "a reader saw a torn log state")
}

// waitForSecondDescriptor waits until another descriptor of this process
// is open on path: a second Open of it has opened the file and waits for
// its lock.
func waitForSecondDescriptor(t *testing.T, path string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc/self/fd")
	}
	want, err := filepath.EvalSymlinks(path)
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		fds, _ := os.ReadDir("/proc/self/fd")
		n := 0
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == want {
				n++
			}
		}
		if n >= 2 {
			return
		}
		runtime.Gosched()
	}
	t.Fatal("the second Open never opened the file")
}

// An Open that waits for the store's lock while Compact renames a new file
// over the path opens the new file once it gets the lock, never the
// replaced one (which it used to find empty, truncated, or with a bad
// descriptor).
func TestOpenWaitingDuringCompactOpensTheNewFile(t *testing.T) {
	for _, readOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("read-only=%v", readOnly), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "raft.db")
			a, err := Open(path, testOptions())
			require.NoError(t, err)
			require.NoError(t, a.StoreLogs(entries(1, 300)))
			require.NoError(t, a.DeleteRange(1, 100))

			type opened struct {
				s   *Store
				err error
			}
			got := make(chan opened, 1)
			go func() {
				o := testOptions()
				o.LockTimeout = time.Minute
				o.ReadOnly = readOnly
				s, err := Open(path, o)
				got <- opened{s, err}
			}()
			waitForSecondDescriptor(t, path)
			require.NoError(t, a.Compact())
			require.NoError(t, a.StoreLogs(entries(301, 400)))
			require.NoError(t, a.Close())

			r := <-got
			require.NoError(t, r.err)
			defer r.s.Close()
			require.NoError(t, r.s.Check())
			requireLog(t, r.s, 101, 400)
			if !readOnly {
				require.NoError(t, r.s.StoreLogs(entries(401, 410)))
				require.NoError(t, r.s.Compact())
				requireLog(t, r.s, 101, 410)
			}
		})
	}
}

// The same for a state machine whose Restore renames a new file over the
// path while another OpenStateMachine waits for the lock.
func TestOpenWaitingDuringRestoreOpensTheNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	m := openSMAt(t, path, kvApply(nil))
	m.ApplyBatch(cmds(1, "set a 1"))
	src := openSM(t, nil)
	src.ApplyBatch(cmds(1, "set a 1", "set b 2", "set c 3"))
	snap := snapshotOf(t, src)

	type opened struct {
		m   *StateMachine
		err error
	}
	got := make(chan opened, 1)
	go func() {
		o := testOptions()
		o.LockTimeout = time.Minute
		w, err := OpenStateMachine(path, kvApply(nil), o)
		got <- opened{w, err}
	}()
	waitForSecondDescriptor(t, path)
	require.NoError(t, m.Restore(io.NopCloser(bytes.NewReader(snap))))
	m.ApplyBatch(cmds(4, "set d 4"))
	require.NoError(t, m.Close())

	r := <-got
	require.NoError(t, r.err)
	defer r.m.Close()
	require.EqualValues(t, 4, r.m.AppliedIndex(), "the restored file, with the entry applied after")
	require.NoError(t, r.m.View(func(tx *bbolt.Tx) error {
		require.Equal(t, "4", string(tx.Bucket([]byte("kv")).Get([]byte("d"))))
		return nil
	}))
}

// blockingWriter blocks its first Write until release is closed.
type blockingWriter struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.started) })
	<-w.release
	return len(p), nil
}

// A Backup streaming to a slow sink holds a reference to the file it
// reads, not the store's lock: Compact, appends and reads go on meanwhile,
// and the backup is a complete copy of the store as it was when it began.
func TestBackupDoesNotStallCompactOrRaft(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 200)))
	w := &blockingWriter{started: make(chan struct{}), release: make(chan struct{})}
	backup := make(chan error, 1)
	go func() {
		_, err := s.Backup(w)
		backup <- err
	}()
	<-w.started

	done := make(chan error, 1)
	go func() {
		if err := s.Compact(); err != nil {
			done <- err
			return
		}
		if err := s.StoreLogs(entries(201, 210)); err != nil {
			done <- err
			return
		}
		var l raft.Log
		done <- s.GetLog(5, &l)
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		close(w.release)
		t.Fatal("Compact, StoreLogs or GetLog waited for the Backup")
	}
	close(w.release)
	require.NoError(t, <-backup)
	requireLog(t, s, 1, 210)
}

// A copy made by Backup while Compact replaces the file is complete.
func TestBackupDuringCompactIsComplete(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 500)))
	pr, pw := io.Pipe()
	backup := make(chan error, 1)
	go func() {
		_, err := s.Backup(pw)
		pw.CloseWithError(err)
		backup <- err
	}()
	// Read a little, so the backup is under way, then compact while the
	// rest is read.
	first := make([]byte, 4096)
	_, err := io.ReadFull(pr, first)
	require.NoError(t, err)
	compacted := make(chan error, 1)
	go func() { compacted <- s.Compact() }()
	rest, err := io.ReadAll(pr)
	require.NoError(t, err)
	require.NoError(t, <-backup)
	require.NoError(t, <-compacted)

	path := filepath.Join(t.TempDir(), "copy.db")
	require.NoError(t, os.WriteFile(path, append(first, rest...), 0o600))
	c := openAt(t, path)
	require.NoError(t, c.Check())
	requireLog(t, c, 1, 500)
}

// Compact and Restore keep the permission bits of the file they replace.
func TestReplacingKeepsTheFileMode(t *testing.T) {
	s := openTest(t)
	require.NoError(t, os.Chmod(s.Path(), 0o640))
	require.NoError(t, s.StoreLogs(entries(1, 10)))
	require.NoError(t, s.Compact())
	fi, err := os.Stat(s.Path())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), fi.Mode().Perm(), "Compact")

	m := openSM(t, nil)
	require.NoError(t, os.Chmod(m.Path(), 0o640))
	src := openSM(t, nil)
	src.ApplyBatch(cmds(1, "set a 1"))
	require.NoError(t, m.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, src)))))
	fi, err = os.Stat(m.Path())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), fi.Mode().Perm(), "Restore")
}

// A handle whose write transaction panicked inside bbolt, leaving bbolt's
// writer lock held (as a rollback that panics too does), closes at once,
// returns the error that broke it, and releases the file lock so that a
// new Open can proceed.
func TestCloseAfterAPanickedWriteDoesNotHang(t *testing.T) {
	o := testOptions()
	o.LockTimeout = time.Second
	o.Logger = hclog.NewNullLogger()
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := Open(path, o)
	require.NoError(t, err)
	require.NoError(t, s.StoreLogs(entries(1, 10)))

	err = s.breakWithHeldWriterLock()
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorIs(t, s.StoreLogs(entries(11, 11)), ErrCorrupt, "a broken handle refuses writes")

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		require.ErrorIs(t, err, ErrCorrupt)
	case <-time.After(time.Minute):
		t.Fatal("Close hung on the broken handle")
	}
	s2, err := Open(path, o)
	require.NoError(t, err, "the lock must be released")
	defer s2.Close()
	requireLog(t, s2, 1, 10)
}

var errSimulated = errors.New("simulated damage")

// breakWithHeldWriterLock makes a write transaction panic inside the
// store's guarded update, as bbolt does on a damaged page. The update
// leaves the transaction open (bbolt's rollback would walk the damaged
// file), so bbolt's writer lock stays held for ever: a Begin(true) after
// it must block, which this checks.
func (s *Store) breakWithHeldWriterLock() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	err := s.update("test", func(*bbolt.Tx) error { panic(errSimulated) })
	db := s.file.DB()
	begun := make(chan struct{})
	go func() {
		if tx, err := db.Begin(true); err == nil { // blocks for ever, or the lock was not held
			_ = tx.Rollback()
		}
		close(begun)
	}()
	select {
	case <-begun:
		return errors.New("bbolt's writer lock was free after the panic")
	case <-time.After(100 * time.Millisecond):
	}
	return err
}
