package boltfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/raftbolt/raftbolt/internal/errs"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

func testOptions(init func(*bbolt.Tx) error) Options {
	return Options{LockTimeout: time.Second, Logger: hclog.NewNullLogger(), Init: init}
}

func createBucket(tx *bbolt.Tx) error {
	_, err := tx.CreateBucket([]byte("b"))
	return err
}

// A new file is laid out under a temporary name: the final name appears
// only once the file is complete and synced, so a power cut during the
// creation can never leave a torn file under it.
func TestOpenCreatesUnderATemporaryName(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.db")
	var during []string
	init := func(tx *bbolt.Tx) error {
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists while its layout is written", path)
		}
		names, _ := filepath.Glob(filepath.Join(dir, "*"))
		during = names
		return createBucket(tx)
	}
	f, created, err := Open(path, testOptions(init))
	require.NoError(t, err)
	require.True(t, created)
	require.Len(t, during, 1, "one temporary file")
	require.NoError(t, f.View(func(tx *bbolt.Tx) error {
		require.NotNil(t, tx.Bucket([]byte("b")))
		return nil
	}))
	require.NoError(t, f.Close())
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	require.Equal(t, []string{path}, names, "no temporary file left")

	// Opened again, it is not created again.
	f, created, err = Open(path, testOptions(init))
	require.NoError(t, err)
	require.False(t, created)
	require.NoError(t, f.Close())
}

// A failed creation leaves nothing under the final name.
func TestFailedCreationLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.db")
	boom := errors.New("boom")
	_, _, err := Open(path, testOptions(func(*bbolt.Tx) error { return boom }))
	require.ErrorIs(t, err, boom)
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	require.Empty(t, names)
}

// An empty file at the path is replaced by a complete one, never laid out
// in place.
func TestOpenOfAnEmptyFileReplacesIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	require.NoError(t, os.WriteFile(path, nil, 0o640))
	before, err := os.Stat(path)
	require.NoError(t, err)
	f, created, err := Open(path, testOptions(createBucket))
	require.NoError(t, err)
	require.True(t, created)
	defer f.Close()
	after, err := os.Stat(path)
	require.NoError(t, err)
	require.False(t, os.SameFile(before, after), "a new file, renamed over the empty one")
	require.Equal(t, os.FileMode(0o640), after.Mode().Perm(), "its mode kept")
}

// A read-only Open never creates a file.
func TestReadOnlyOpenCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(createBucket)
	o.ReadOnly = true
	_, _, err := Open(filepath.Join(dir, "missing.db"), o)
	require.ErrorIs(t, err, fs.ErrNotExist)
	empty := filepath.Join(dir, "empty.db")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	_, _, err = Open(empty, o)
	require.ErrorIs(t, err, errs.ErrNotStore)
	fi, err := os.Stat(empty)
	require.NoError(t, err)
	require.Zero(t, fi.Size())
}

// Temporary files of a creation a crash interrupted are removed; one in
// use is not.
func TestStaleCreationsAreRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.db")
	stale := path + creatingInfix + "123"
	require.NoError(t, os.WriteFile(stale, []byte("partial"), 0o600))
	busy := path + creatingInfix + "456"
	require.NoError(t, os.WriteFile(busy, []byte("in use"), 0o600))
	held, err := os.Open(busy)
	require.NoError(t, err)
	defer held.Close()
	require.NoError(t, lockFile(held, true, time.Second))

	f, _, err := Open(path, testOptions(createBucket))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = os.Stat(stale)
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = os.Stat(busy)
	require.NoError(t, err)
}

// Link never replaces a file; Replace keeps the replaced file's mode.
func TestLinkAndReplace(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	require.NoError(t, os.WriteFile(a, []byte("a"), 0o600))
	require.NoError(t, os.WriteFile(b, []byte("b"), 0o600))
	require.ErrorIs(t, Link(a, b), fs.ErrExist)
	got, _ := os.ReadFile(b)
	require.Equal(t, "b", string(got))

	require.NoError(t, Link(a, c))
	_, err := os.Stat(a)
	require.ErrorIs(t, err, fs.ErrNotExist, "the temporary name is removed")

	require.NoError(t, os.Chmod(b, 0o644))
	require.NoError(t, Replace(c, b))
	fi, err := os.Stat(b)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	got, _ = os.ReadFile(b)
	require.Equal(t, "a", string(got))
	require.Error(t, SyncDir(filepath.Join(dir, "missing")), "errors are returned, not logged")
}

// A reader's reference keeps a retired file open after its owner closed
// it; the last Release closes it.
func TestReferencesKeepTheFileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	f, _, err := Open(path, testOptions(createBucket))
	require.NoError(t, err)
	f.Acquire()
	require.NoError(t, f.Close())
	require.NoError(t, f.View(func(tx *bbolt.Tx) error { return nil }), "still open for its reader")
	require.NoError(t, f.Release())
	g, _, err := Open(path, testOptions(createBucket))
	require.NoError(t, err, "the lock went with the last reference")
	require.NoError(t, g.Close())
}

// A panic in a write breaks the file; Close then does not wait for
// bbolt's writer lock and releases the flock.
func TestCloseOfABrokenFileReleasesTheLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	f, _, err := Open(path, testOptions(createBucket))
	require.NoError(t, err)
	err = f.Update(func(*bbolt.Tx) error { panic("damaged page") })
	require.ErrorIs(t, err, errs.ErrCorrupt)
	require.ErrorIs(t, f.Update(func(*bbolt.Tx) error { return nil }), errs.ErrCorrupt)
	requireClosesBroken(t, f)
	g, _, err := Open(path, testOptions(createBucket))
	require.NoError(t, err)
	require.NoError(t, g.Close())
}

// requireClosesBroken checks that f, broken by a panic, still holds
// bbolt's writer lock, and that Close returns ErrCorrupt at once rather
// than wait for it.
func requireClosesBroken(t *testing.T, f *File) {
	t.Helper()
	requireWriterLockHeld(t, f)
	done := make(chan error, 1)
	go func() { done <- f.Close() }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, errs.ErrCorrupt)
	case <-time.After(time.Minute):
		t.Fatal("Close hung")
	}
}

// requireWriterLockHeld checks that bbolt's writer lock is held: a
// Begin(true) blocks (its goroutine stays blocked for good).
func requireWriterLockHeld(t *testing.T, f *File) {
	t.Helper()
	db := f.DB()
	begun := make(chan struct{})
	go func() {
		if tx, err := db.Begin(true); err == nil {
			_ = tx.Rollback()
		}
		close(begun)
	}()
	select {
	case <-begun:
		t.Fatal("bbolt's writer lock is free: the panicked transaction was rolled back")
	case <-time.After(100 * time.Millisecond):
	}
}

// A write that panics on a damaged file whose freelist is not synced
// breaks the file; the process goes on. bbolt's DB.Update rolled such a
// transaction back, which walked every (damaged) page in a goroutine of
// bbolt's own, where a fault killed the process: the trials of the root
// package hit it a few times in thousands.
func TestPanickedWriteOnADamagedFileDoesNotCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	f, _, err := Open(path, testOptions(createBucket))
	require.NoError(t, err)
	for i := 0; i < 20; i++ { // a few pages of leaves and branches, freelist not synced
		require.NoError(t, f.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket([]byte("b"))
			for k := 0; k < 100; k++ {
				if err := b.Put([]byte{byte(i), byte(k)}, make([]byte, 200)); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	errFn := errors.New("the write's own error")
	require.ErrorIs(t, f.Update(func(*bbolt.Tx) error { return errFn }), errFn)
	require.NoError(t, f.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte("k"), nil) }), "rolled back: writes go on")

	fi, err := os.Stat(path)
	require.NoError(t, err)
	page := int64(f.PageSize())
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	noise := make([]byte, page)
	for i := range noise {
		noise[i] = byte(i*31 + 7)
	}
	for off := 2 * page; off < fi.Size(); off += page { // every page but the two meta pages
		_, err := w.WriteAt(noise, off)
		require.NoError(t, err)
	}
	require.NoError(t, w.Close())

	err = f.Update(func(*bbolt.Tx) error { panic("bbolt: damaged page") })
	require.ErrorIs(t, err, errs.ErrCorrupt)
	require.ErrorIs(t, f.Update(func(*bbolt.Tx) error { return nil }), errs.ErrCorrupt, "broken")
	requireClosesBroken(t, f)
}

// A panic inside bbolt's Open is ErrCorrupt, and leaves neither the
// descriptor nor its lock behind: a retry in the same process opens the
// file (it used to get ErrLocked).
func TestPanicDuringOpenReleasesTheLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	f, _, err := Open(path, testOptions(createBucket))
	require.NoError(t, err)
	require.NoError(t, f.Close())

	testHookLocked = func() { panic("bbolt: damaged meta page") }
	_, _, err = Open(path, testOptions(createBucket))
	testHookLocked = nil
	require.ErrorIs(t, err, errs.ErrCorrupt)

	o := testOptions(createBucket)
	o.LockTimeout = 100 * time.Millisecond
	g, _, err := Open(path, o)
	require.NoError(t, err, "the lock must have gone with the failed open")
	require.NoError(t, g.Close())
}
