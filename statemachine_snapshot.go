package raftbolt

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/boltfile"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// Snapshot returns a snapshot of the state as it is now (raft.FSM). It
// only begins a bbolt read transaction; Persist streams the file from it
// (tx.WriteTo) while entries go on being applied, and Release ends it.
//
// The copy is itself a state file, applied index and configuration
// included, so a snapshot taken while entries are applied is consistent.
// A write that must grow bbolt's memory map waits until the snapshots open
// at the time are released (bbolt remaps only without readers): the
// default map of DefaultStateMachineMmapSize keeps that from happening
// below 1 GiB; set Options.InitialMmapSize above the file's size for
// larger states.
func (m *StateMachine) Snapshot() (raft.FSMSnapshot, error) {
	const op = "snapshot"
	if err := m.rlock(); err != nil {
		return nil, err
	}
	defer m.runlock()
	f := m.file
	if err := f.Broken(); err != nil {
		return nil, wrapOp(op, m.path, err)
	}
	var tx *bbolt.Tx
	err := f.Guard(false, func() (err error) {
		tx, err = f.DB().Begin(false)
		return err
	})
	if err != nil {
		return nil, wrapOp(op, m.path, err)
	}
	f.Acquire()
	return &smSnapshot{m: m, f: f, tx: tx}, nil
}

// smSnapshot is a read transaction on one state file; it holds a reference
// to the file until Release.
type smSnapshot struct {
	m  *StateMachine
	f  *boltfile.File
	mu sync.Mutex // guards tx: nil once released
	tx *bbolt.Tx
}

// Persist writes the snapshot's copy of the state file to sink and closes
// it, or cancels it on error.
func (s *smSnapshot) Persist(sink raft.SnapshotSink) error {
	const op = "persist snapshot"
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tx == nil {
		_ = sink.Cancel()
		return opError(op, s.m.path, invalidf("the snapshot was released"))
	}
	var n int64
	err := s.f.Guard(false, func() (err error) {
		n, err = s.tx.WriteTo(sink)
		return err
	})
	if err != nil {
		_ = sink.Cancel()
		return opError(op, s.m.path, fmt.Errorf("after %d bytes: %w", n, err))
	}
	return sink.Close()
}

// Release ends the snapshot's read transaction. It may be called more than
// once.
func (s *smSnapshot) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tx == nil {
		return
	}
	_ = s.f.Guard(false, s.tx.Rollback)
	s.tx = nil
	if err := s.f.Release(); err != nil {
		s.m.logger.Warn("closing a replaced or closed state file failed", "error", err)
	}
}

// restoreHook, when set (by tests), is called at each stage of Restore:
// "staged", "validated" and "swapped".
var restoreHook func(stage string)

func restoreStage(stage string) {
	if restoreHook != nil {
		restoreHook(stage)
	}
}

// Restore replaces the state with the one in the snapshot stream rc
// (raft.FSM), in the running process: the state after it is the stream's,
// whatever the state before it held, with the stream's applied index. The
// one exception is the cluster configuration: of the stream's and the
// current one, the newer (higher index) is kept, because raft keeps its own
// configuration when an operator restores an older snapshot.
//
// The stream is written to a staged file next to the state file, checked
// to be a state-machine file of a format this build reads (every page is
// verified before bbolt maps it: the stream is untrusted input), synced,
// and renamed over the state file; then the new file is in use. Readers
// (View) keep reading the old state meanwhile and wait only for the
// swap itself. A stream that is not a valid state file is rejected with an
// error (wrapping ErrNotStore, ErrCorrupt or ErrUnsupportedVersion) and the
// old state is kept. A crash at any point leaves the old state or the new
// one, complete; the next OpenStateMachine removes a leftover staged file.
//
// Restoring a snapshot of another cluster with raft.Restore: pass the
// snapshot's own raft.SnapshotMeta, so that raft moves its index past the
// stream's applied index (entries at or below it would be skipped).
func (m *StateMachine) Restore(rc io.ReadCloser) error {
	_, err := m.restore(rc, false)
	return err
}

// restore implements Restore. With unlessSame, a stream whose applied index
// and term are the state's own is discarded instead of swapped in (the
// same entries applied deterministically make the same state).
func (m *StateMachine) restore(rc io.ReadCloser, unlessSame bool) (swapped bool, err error) {
	const op = "restore"
	if rc == nil {
		return false, opError(op, m.path, invalidf("nil snapshot stream"))
	}
	defer rc.Close()
	start := time.Now()
	if err := m.lockWrite(); err != nil {
		return false, err
	}
	defer m.unlockWrite()

	staged := m.path + restoreSuffix
	_ = os.Remove(staged)
	size, err := m.stage(rc, staged)
	if err != nil {
		_ = os.Remove(staged)
		return false, opError(op, m.path, err)
	}
	restoreStage("staged")
	nf, index, term, err := m.openStaged(staged, size)
	if err != nil {
		_ = os.Remove(staged)
		return false, opError(op, m.path, fmt.Errorf("the snapshot stream (%d bytes) is not a usable state machine file; the state is unchanged: %w", size, err))
	}
	discard := func(err error) error {
		nf.Retire()
		_ = nf.Close()
		_ = os.Remove(staged)
		if err == nil {
			return nil
		}
		return opError(op, m.path, err)
	}
	if unlessSame && index == m.applied.Load() && term == m.appliedTerm.Load() {
		m.logger.Debug("the snapshot holds the state already; not restored", "applied_index", index)
		return false, discard(nil)
	}
	if err := m.keepNewerConfiguration(nf); err != nil {
		return false, discard(err)
	}
	restoreStage("validated")

	// Readers wait from here to the swap.
	m.dbMu.Lock()
	if err := nf.MoveTo(m.path); err != nil {
		m.dbMu.Unlock()
		return false, discard(err)
	}
	old := m.file
	old.Retire()
	m.file = nf
	m.applied.Store(index)
	m.appliedTerm.Store(term)
	m.dbMu.Unlock()
	restoreStage("swapped")

	// A snapshot of the old file still being persisted keeps it open
	// until its Release.
	if err := old.Close(); err != nil {
		m.logger.Warn("closing the replaced state file failed", "error", err)
	}
	m.logger.Info("restored the state from a snapshot", "applied_index", index, "bytes", size, "duration", time.Since(start))
	return true, nil
}

// stage writes the stream to a new file at staged and syncs it.
func (m *StateMachine) stage(r io.Reader, staged string) (int64, error) {
	f, err := os.OpenFile(staged, os.O_WRONLY|os.O_CREATE|os.O_EXCL, boltfile.Mode)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err != nil {
		_ = f.Close()
		return n, fmt.Errorf("reading the snapshot stream, after %d bytes: %w", n, err)
	}
	if !m.opts.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// openStaged opens and validates the staged file: a bbolt file whose every
// page checks out, holding a state machine of a format this build reads.
func (m *StateMachine) openStaged(staged string, size int64) (f *boltfile.File, index, term uint64, err error) {
	if size == 0 {
		return nil, 0, 0, fmt.Errorf("%w: the stream is empty", ErrNotStore)
	}
	o := m.opts
	o.ReadOnly = false
	o.VerifyOnOpen = true
	f, _, err = boltfile.Open(staged, fileOptions(&o, m.logger, nil))
	if err != nil {
		return nil, 0, 0, err
	}
	err = f.View(func(tx *bbolt.Tx) error {
		l, err := inspectStateFile(tx)
		if err != nil {
			return err
		}
		if l != layout.Complete {
			return fmt.Errorf("%w: the stream is a bbolt database without any bucket", ErrNotStore)
		}
		index, term, err = layout.StateMachine.Applied(tx)
		return err
	})
	if err != nil {
		f.Retire()
		_ = f.Close()
		return nil, 0, 0, err
	}
	return f, index, term, nil
}

// keepNewerConfiguration writes the current configuration into the staged
// file nf when it is newer than the one nf holds.
func (m *StateMachine) keepNewerConfiguration(nf *boltfile.File) error {
	var (
		index uint64
		c     raft.Configuration
		ok    bool
	)
	err := m.view(m.file, "restore", func(tx *bbolt.Tx) (err error) {
		index, c, ok, err = layout.StateMachine.Configuration(tx)
		return err
	})
	switch {
	case err != nil:
		m.logger.Warn("cannot read the current configuration; the snapshot's is kept", "error", err)
		return nil
	case !ok:
		return nil
	}
	return nf.Update(func(tx *bbolt.Tx) error {
		return layout.StateMachine.PutConfiguration(tx, index, c)
	})
}

// CatchUp restores the newest snapshot of snaps when it is newer than the
// state; call it before raft.NewRaft.
//
// With raft.Config.NoSnapshotRestoreOnStart, raft assumes at start that
// the state holds its newest snapshot, and applies only the entries after
// it. That holds, except after a crash between raft writing a snapshot it
// received from the leader and Restore swapping it in: the state is then
// older than the snapshot, and the entries in between would never be
// applied. CatchUp finds that case (the newest snapshot's index is above
// AppliedIndex) and restores the snapshot. A snapshot taken right after
// entries the state never sees (raft's no-op and barrier entries) is also
// above AppliedIndex; CatchUp then reads it and finds the state it holds
// already (same applied index and term), and keeps the file as it is.
func (m *StateMachine) CatchUp(snaps raft.SnapshotStore) (restored bool, err error) {
	const op = "catch up"
	if snaps == nil {
		return false, opError(op, m.path, invalidf("nil snapshot store"))
	}
	list, err := snaps.List()
	if err != nil {
		return false, opError(op, m.path, fmt.Errorf("list snapshots: %w", err))
	}
	if len(list) == 0 || list[0].Index <= m.AppliedIndex() {
		return false, nil
	}
	meta, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return false, opError(op, m.path, fmt.Errorf("open snapshot %s: %w", list[0].ID, err))
	}
	m.logger.Info("the newest snapshot is newer than the state; restoring it",
		"snapshot_id", meta.ID, "snapshot_index", meta.Index, "applied_index", m.AppliedIndex())
	return m.restore(rc, true)
}
