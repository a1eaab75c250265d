package compat

import (
	"testing"

	raftboltdb "github.com/hashicorp/raft-boltdb"
	raftboltdbv2 "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/raftbolt/raftbolt"
)

// TestPeersBuild only proves the peers build side by side with raftbolt.
func TestPeersBuild(t *testing.T) {
	_ = raftboltdb.NewBoltStore
	_ = raftboltdbv2.NewBoltStore
	_ = raftwal.Open
	_ = raftbolt.Open
}
