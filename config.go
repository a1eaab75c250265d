package raftbolt

import (
	"fmt"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// StoreConfiguration records c as the cluster configuration committed at
// index, unless a configuration of a newer index is already recorded (then
// it returns nil and writes nothing). It is readable with
// LatestConfiguration, also from a read-only handle and before raft starts.
//
// The index must be non-zero and c valid by raft's own rules: at least one
// voter, every server with a non-empty, unique ID and address.
func (s *Store) StoreConfiguration(index uint64, c raft.Configuration) error {
	return s.recordConfiguration("store configuration", index, c, 0)
}

// recordSnapshotConfiguration records the configuration of a durable
// snapshot taken at snapshotIndex (WrapSnapshotStore): as StoreConfiguration
// does, and in the same transaction it raises the snapshot index and the
// snapshot configuration index that GetCommitIndex's caps compare with.
func (s *Store) recordSnapshotConfiguration(snapshotIndex, index uint64, c raft.Configuration) error {
	if snapshotIndex < index {
		return opError("record snapshot configuration", s.path,
			invalidf("snapshot %d holds a configuration of a later index %d", snapshotIndex, index))
	}
	return s.recordConfiguration("record snapshot configuration", index, c, snapshotIndex)
}

// recordConfiguration records configuration c of the given index. When
// snapshotIndex is non-zero, c is the configuration of a snapshot taken at
// snapshotIndex, and the snapshot marks in layout.MetaBucket are raised in
// the same transaction. The transaction is skipped when nothing would change.
func (s *Store) recordConfiguration(op string, index uint64, c raft.Configuration, snapshotIndex uint64) error {
	if err := s.lockWrite(); err != nil {
		return err
	}
	defer s.unlockWrite()
	if index == 0 {
		return opError(op, s.path, invalidf("configuration index 0"))
	}
	if err := checkConfiguration(c); err != nil {
		return opError(op, s.path, fmt.Errorf("configuration at index %d: %w", index, err))
	}
	// Decide in a read transaction what changes, so that an older or
	// repeated configuration costs no commit (and no fsync).
	var writeConfig, writeSnapConf, writeSnapIndex bool
	err := s.view(op, func(tx *bbolt.Tx) error {
		b, err := layout.LogStore.Buckets(tx)
		if err != nil {
			return err
		}
		if snapshotIndex > 0 {
			confIndex, err := layout.LogStore.Uint64(b.Meta, layout.KeySnapshotConfig)
			if err != nil {
				return err
			}
			snapIndex, err := layout.LogStore.Uint64(b.Meta, layout.KeySnapshotIndex)
			if err != nil {
				return err
			}
			writeSnapConf, writeSnapIndex = index > confIndex, snapshotIndex > snapIndex
		}
		rec := b.Config.Get(layout.KeyLatest)
		if rec == nil {
			writeConfig = true
			return nil
		}
		cur, curConf, err := codec.DecodeConfiguration(rec)
		if err != nil {
			// Replace a damaged record with the one at hand rather than
			// keep failing; say so loudly.
			s.logger.Error("replacing a corrupt configuration record", "index", index, "error", err)
			writeConfig = true
			return nil
		}
		writeConfig = index > cur || index == cur && !equalConfiguration(c, curConf)
		return nil
	})
	if err != nil || !writeConfig && !writeSnapConf && !writeSnapIndex {
		return err
	}
	rec := codec.AppendConfiguration(nil, index, c)
	return s.update(op, func(tx *bbolt.Tx) error {
		b, err := layout.LogStore.Buckets(tx)
		if err != nil {
			return err
		}
		if writeSnapConf {
			if err := layout.LogStore.PutUint64(b.Meta, layout.KeySnapshotConfig, index); err != nil {
				return err
			}
		}
		if writeSnapIndex {
			if err := layout.LogStore.PutUint64(b.Meta, layout.KeySnapshotIndex, snapshotIndex); err != nil {
				return err
			}
		}
		if writeConfig {
			return b.Config.Put(layout.KeyLatest, rec)
		}
		return nil
	})
}

// LatestConfiguration returns the newest configuration recorded with
// StoreConfiguration (or by the FSM adapter and the snapshot store wrapper)
// and its index. It returns ErrNoConfiguration when none was recorded.
func (s *Store) LatestConfiguration() (uint64, raft.Configuration, error) {
	if err := s.rlock(); err != nil {
		return 0, raft.Configuration{}, err
	}
	defer s.runlock()
	var (
		index uint64
		c     raft.Configuration
	)
	err := s.view("latest configuration", func(tx *bbolt.Tx) error {
		b, err := layout.LogStore.Buckets(tx)
		if err != nil {
			return err
		}
		rec := b.Config.Get(layout.KeyLatest)
		if rec == nil {
			return ErrNoConfiguration
		}
		if index, c, err = codec.DecodeConfiguration(rec); err != nil {
			return corruptf("configuration record: %v", err)
		}
		return nil
	})
	return index, c, err
}

// checkConfiguration applies raft's rules for a valid configuration
// (raft.checkConfiguration, which is not exported) and the record's limits.
func checkConfiguration(c raft.Configuration) error {
	if len(c.Servers) == 0 {
		return invalidf("no servers")
	}
	ids := make(map[raft.ServerID]bool, len(c.Servers))
	addrs := make(map[raft.ServerAddress]bool, len(c.Servers))
	voters := 0
	for _, srv := range c.Servers {
		switch {
		case srv.ID == "":
			return invalidf("server with an empty ID (address %q)", srv.Address)
		case srv.Address == "":
			return invalidf("server %q has an empty address", srv.ID)
		case ids[srv.ID]:
			return invalidf("duplicate server ID %q", srv.ID)
		case addrs[srv.Address]:
			return invalidf("duplicate server address %q", srv.Address)
		case srv.Suffrage < raft.Voter || srv.Suffrage > raft.Staging:
			return invalidf("server %q has unknown suffrage %d", srv.ID, srv.Suffrage)
		case len(srv.ID) > codec.MaxServerField || len(srv.Address) > codec.MaxServerField:
			return invalidf("server %q: ID or address longer than %d bytes", srv.ID, codec.MaxServerField)
		}
		ids[srv.ID], addrs[srv.Address] = true, true
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters == 0 {
		return invalidf("no voter among %d servers", len(c.Servers))
	}
	return nil
}

func equalConfiguration(a, b raft.Configuration) bool {
	if len(a.Servers) != len(b.Servers) {
		return false
	}
	for i := range a.Servers {
		if a.Servers[i] != b.Servers[i] {
			return false
		}
	}
	return true
}
