package raftbolt

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// listFSM is a deterministic FSM that records the commands applied to it.
type listFSM struct {
	mu       sync.Mutex
	commands []string
}

func (f *listFSM) Apply(l *raft.Log) interface{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commands = append(f.commands, string(l.Data))
	return len(f.commands)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &listSnapshot{append([]string(nil), f.commands...)}, nil
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

type listSnapshot struct{ commands []string }

func (s *listSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.commands); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *listSnapshot) Release() {}

// singleNode is a one-server raft cluster on a raftbolt store.
type singleNode struct {
	raft  *raft.Raft
	store *Store
	fsm   *listFSM
	trans *raft.InmemTransport
}

func startSingleNode(t *testing.T, dir string, bootstrap bool) *singleNode {
	t.Helper()
	store, err := Open(filepath.Join(dir, "raft.db"), testOptions())
	require.NoError(t, err)
	conf := raft.DefaultConfig()
	conf.LocalID = "node-1"
	conf.Logger = hclog.NewNullLogger()
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	require.NoError(t, err)
	_, trans := raft.NewInmemTransport("node-1")
	fsm := &listFSM{}
	r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
	require.NoError(t, err)
	if bootstrap {
		cfg := raft.Configuration{Servers: []raft.Server{{ID: "node-1", Address: trans.LocalAddr()}}}
		require.NoError(t, r.BootstrapCluster(cfg).Error())
	}
	n := &singleNode{raft: r, store: store, fsm: fsm, trans: trans}
	t.Cleanup(n.stop)
	require.Eventually(t, func() bool { return r.State() == raft.Leader }, 10*time.Second, 10*time.Millisecond)
	return n
}

func (n *singleNode) stop() {
	if n.raft != nil {
		_ = n.raft.Shutdown().Error()
		_ = n.store.Close()
		n.raft = nil
	}
}

func TestRaftSingleNodeOnStore(t *testing.T) {
	dir := t.TempDir()
	n := startSingleNode(t, dir, true)
	for i := 0; i < 20; i++ {
		require.NoError(t, n.raft.Apply([]byte(fmt.Sprintf("cmd-%d", i)), time.Second).Error())
	}
	require.NoError(t, n.raft.Barrier(time.Second).Error())
	require.Len(t, n.fsm.list(), 20)
	term, err := n.store.GetUint64([]byte("CurrentTerm"))
	require.NoError(t, err)
	require.NotZero(t, term)
	last, err := n.store.LastIndex()
	require.NoError(t, err)
	require.GreaterOrEqual(t, last, uint64(22), "bootstrap configuration, no-op and 20 commands")
	require.NoError(t, n.store.Check())
	n.stop()

	// Restarted from disk: raft finds its log, term and configuration, and
	// replays the commands into a fresh FSM once it leads again.
	n = startSingleNode(t, dir, false)
	require.NoError(t, n.raft.Barrier(time.Second).Error())
	cmds := n.fsm.list()
	require.Len(t, cmds, 20)
	require.Equal(t, "cmd-19", cmds[19])
	require.NoError(t, n.raft.Apply([]byte("after-restart"), time.Second).Error())
	future := n.raft.GetConfiguration()
	require.NoError(t, future.Error())
	require.Len(t, future.Configuration().Servers, 1)
}
