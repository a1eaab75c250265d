package raftbolt

import (
	"fmt"
	"io"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"
)

// WrapSnapshotStore returns a raft.SnapshotStore that behaves as inner and,
// when a snapshot's sink closes successfully, records the snapshot's
// configuration and configuration index in store. raft writes a snapshot
// both when it takes one and when a follower installs one from the leader,
// and calls no ConfigurationStore for the latter: without this, a node
// caught up by a snapshot would not know its cluster configuration.
//
// The recorded configuration index also tells GetCommitIndex which
// configuration entries a snapshot covers (see GetCommitIndex).
func WrapSnapshotStore(store *Store, inner raft.SnapshotStore) raft.SnapshotStore {
	return &snapshotStore{store: store, inner: inner}
}

type snapshotStore struct {
	store *Store
	inner raft.SnapshotStore
}

// errNoSnapshotStore is returned by a wrapper made without a store or an
// inner snapshot store.
var errNoSnapshotStore = fmt.Errorf("%w: WrapSnapshotStore needs a *Store and an inner raft.SnapshotStore", ErrInvalid)

func (w *snapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	if w.store == nil || w.inner == nil {
		return nil, errNoSnapshotStore
	}
	sink, err := w.inner.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &recordingSink{SnapshotSink: sink, store: w.store, index: index, conf: configuration, confIndex: configurationIndex}, nil
}

func (w *snapshotStore) List() ([]*raft.SnapshotMeta, error) {
	if w.inner == nil {
		return nil, errNoSnapshotStore
	}
	return w.inner.List()
}

func (w *snapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	if w.inner == nil {
		return nil, nil, errNoSnapshotStore
	}
	return w.inner.Open(id)
}

// recordingSink records its snapshot's configuration once the inner sink
// closed successfully, that is once the snapshot is durable.
type recordingSink struct {
	raft.SnapshotSink
	store     *Store
	index     uint64
	conf      raft.Configuration
	confIndex uint64
}

// Close closes the inner sink, then records the configuration. A failure
// to record is returned (after being logged and counted): raft then treats
// the snapshot as failed and tries again, rather than believing the node
// knows a configuration it did not record.
func (s *recordingSink) Close() error {
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	if s.confIndex == 0 || len(s.conf.Servers) == 0 {
		return nil // nothing committed to record (raft never sends this)
	}
	if err := s.store.recordSnapshotConfiguration(s.index, s.confIndex, s.conf); err != nil {
		s.store.logger.Error("failed to record a snapshot's cluster configuration",
			"snapshot_id", s.ID(), "snapshot_index", s.index, "configuration_index", s.confIndex, "error", err)
		metrics.IncrCounter(metricConfigRecordFailed, 1)
		return err
	}
	return nil
}
