package raftbolt

import (
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"
)

// FSM wraps an application's raft.FSM so that every committed cluster
// configuration is recorded in a Store, where LatestConfiguration finds it
// (also read-only, and before raft starts). Hand the *FSM to raft.NewRaft
// in place of the application's FSM.
//
// *FSM implements raft.FSM, raft.BatchingFSM and raft.ConfigurationStore.
// Because it is a BatchingFSM, raft delivers configuration entries inside
// ApplyBatch and never calls StoreConfiguration; ApplyBatch records them
// itself. The inner FSM receives exactly what raft would have given it: a
// batching inner FSM gets the batches (commands and configurations), a
// plain one gets, in log order, Apply for each command and
// StoreConfiguration for each configuration if it implements
// raft.ConfigurationStore.
//
// A configuration that cannot be recorded (the store is closed, read-only,
// or the disk fails) is logged at error level with its index and servers,
// counted in the raftbolt.fsm.configuration_record_failed metric, kept,
// and retried on every later Apply, ApplyBatch, StoreConfiguration and
// Snapshot until it is recorded or a newer one replaces it.
type FSM struct {
	store    *Store
	inner    raft.FSM
	batching raft.BatchingFSM        // inner, if it batches
	confs    raft.ConfigurationStore // inner, if it stores configurations and does not batch
	logger   hclog.Logger

	// mu guards pending, the newest committed configuration not recorded yet.
	mu      sync.Mutex
	pending *indexedConfiguration
}

type indexedConfiguration struct {
	index uint64
	conf  raft.Configuration
}

var (
	_ raft.FSM                = (*FSM)(nil)
	_ raft.BatchingFSM        = (*FSM)(nil)
	_ raft.ConfigurationStore = (*FSM)(nil)
)

// NewFSM returns an FSM that applies commands to inner and records
// committed configurations in store.
func NewFSM(store *Store, inner raft.FSM) *FSM {
	f := &FSM{store: store, inner: inner}
	if store != nil {
		f.logger = store.logger.Named("fsm")
	} else {
		f.logger = hclog.NewNullLogger()
	}
	if b, ok := inner.(raft.BatchingFSM); ok {
		f.batching = b
	} else if c, ok := inner.(raft.ConfigurationStore); ok {
		f.confs = c
	}
	return f
}

// errNoInner is every response of an FSM made without an inner FSM.
var errNoInner = fmt.Errorf("%w: NewFSM was given a nil inner raft.FSM", ErrInvalid)

// Apply applies a single entry, as raft does for a non-batching FSM: a
// LogCommand goes to the inner FSM, a LogConfiguration is recorded.
func (f *FSM) Apply(l *raft.Log) interface{} {
	f.retry()
	if l == nil {
		return fmt.Errorf("%w: nil *raft.Log", ErrInvalid)
	}
	switch l.Type {
	case raft.LogCommand:
		if f.inner == nil {
			return errNoInner
		}
		return f.inner.Apply(l)
	case raft.LogConfiguration:
		f.applyConfiguration(l)
	}
	return nil
}

// ApplyBatch applies a batch of committed entries, recording the
// configuration entries among them, and returns one response per entry.
//
// A plain inner FSM gets the entries one by one in log order, as raft's own
// loop would give them: Apply for a command, StoreConfiguration for a
// configuration (if it has it), each configuration being recorded in the
// store just before it is handed on. So the store never holds a
// configuration ahead of a command that precedes it in the log. A batching
// inner FSM gets the whole batch in one call, as from raft; its
// configurations are recorded just before it, so that a crash inside the
// inner FSM cannot lose one.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	f.retry()
	if f.batching != nil {
		for _, l := range logs {
			if l != nil && l.Type == raft.LogConfiguration {
				f.applyConfiguration(l)
			}
		}
		return f.batching.ApplyBatch(logs)
	}
	resp := make([]interface{}, len(logs))
	for i, l := range logs {
		switch {
		case l == nil:
			resp[i] = fmt.Errorf("%w: nil *raft.Log in the batch", ErrInvalid)
		case l.Type == raft.LogConfiguration:
			f.applyConfiguration(l)
		case l.Type == raft.LogCommand && f.inner == nil:
			resp[i] = errNoInner
		case l.Type == raft.LogCommand:
			resp[i] = f.inner.Apply(l)
		}
	}
	return resp
}

// applyConfiguration records the configuration of entry l and hands it to
// a non-batching inner ConfigurationStore, as raft would have.
func (f *FSM) applyConfiguration(l *raft.Log) {
	c, err := decodeConfiguration(l.Data)
	if err != nil {
		f.logger.Error("cannot decode a committed configuration entry", "index", l.Index, "error", err)
		metrics.IncrCounter(metricConfigRecordFailed, 1)
		return
	}
	f.record(l.Index, c)
	if f.confs != nil {
		f.confs.StoreConfiguration(l.Index, c)
	}
}

// StoreConfiguration records a committed configuration (raft.ConfigurationStore)
// and passes it on to an inner FSM that stores configurations.
func (f *FSM) StoreConfiguration(index uint64, c raft.Configuration) {
	f.retry()
	f.record(index, c)
	if ic, ok := f.inner.(raft.ConfigurationStore); ok {
		ic.StoreConfiguration(index, c)
	}
}

// Snapshot returns the inner FSM's snapshot.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.retry()
	if f.inner == nil {
		return nil, errNoInner
	}
	return f.inner.Snapshot()
}

// Restore restores the inner FSM. The snapshot's configuration is recorded
// by the snapshot store (WrapSnapshotStore) when raft writes the snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	if f.inner == nil {
		if rc != nil {
			_ = rc.Close()
		}
		return errNoInner
	}
	return f.inner.Restore(rc)
}

// PendingConfiguration returns the newest committed configuration that
// could not be recorded yet, if any.
func (f *FSM) PendingConfiguration() (index uint64, c raft.Configuration, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending == nil {
		return 0, raft.Configuration{}, false
	}
	return f.pending.index, f.pending.conf, true
}

// record stores a committed configuration, or keeps it for a retry.
func (f *FSM) record(index uint64, c raft.Configuration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending != nil && f.pending.index > index {
		return // a newer one is waiting already; the store keeps the newest only
	}
	var err error
	if f.store == nil {
		err = fmt.Errorf("%w: NewFSM was given a nil *Store", ErrInvalid)
	} else {
		err = f.store.StoreConfiguration(index, c)
	}
	if err != nil {
		f.logger.Error("failed to record the committed cluster configuration; will retry",
			"index", index, "servers", hclog.Fmt("%+v", c.Servers), "error", err)
		metrics.IncrCounter(metricConfigRecordFailed, 1)
		f.pending = &indexedConfiguration{index: index, conf: c}
		return
	}
	if f.pending != nil {
		f.logger.Info("recorded the cluster configuration after earlier failures", "index", index)
		f.pending = nil
	}
}

// retry records the pending configuration, if there is one.
func (f *FSM) retry() {
	f.mu.Lock()
	p := f.pending
	f.mu.Unlock()
	if p != nil {
		f.record(p.index, p.conf)
	}
}

// decodeConfiguration decodes a LogConfiguration entry's data. raft's
// DecodeConfiguration panics on bad input; this returns an error.
func decodeConfiguration(data []byte) (c raft.Configuration, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: undecodable configuration entry: %v", ErrCorrupt, r)
		}
	}()
	return raft.DecodeConfiguration(data), nil
}
