package raftbolt

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

var soak = flag.Bool("soak", false, "run long soak versions of the cluster and crash tests")

// clusterNode is one raft server on a raftbolt store, over TCP on loopback.
type clusterNode struct {
	id    raft.ServerID
	dir   string
	addr  raft.ServerAddress
	store *Store
	fsm   *listFSM
	raft  *raft.Raft
	trans *raft.NetworkTransport
}

// nodeConfig is a raft configuration with timeouts short enough for tests
// and thresholds low enough that snapshots and truncations happen.
func nodeConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.Logger = hclog.NewNullLogger()
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
	c.SnapshotThreshold = 32
	c.SnapshotInterval = 50 * time.Millisecond
	c.TrailingLogs = 8
	return c
}

// nodeStorage opens what a test node keeps: a TCP transport on addr (a new
// port when empty), its raftbolt store in dir and file snapshots in dir,
// wrapped by WrapSnapshotStore.
func nodeStorage(t *testing.T, dir string, addr raft.ServerAddress) (*raft.NetworkTransport, *Store, raft.SnapshotStore) {
	t.Helper()
	bind := string(addr)
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	trans, err := raft.NewTCPTransportWithLogger(bind, nil, 3, 2*time.Second, hclog.NewNullLogger())
	require.NoError(t, err)
	store, err := Open(filepath.Join(dir, "raft.db"), testOptions())
	require.NoError(t, err)
	files, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	require.NoError(t, err)
	return trans, store, WrapSnapshotStore(store, files)
}

// startNode starts (or restarts, from its directory) a node. addr may be
// empty for a new port.
func startNode(t *testing.T, id raft.ServerID, dir string, addr raft.ServerAddress, tweak func(*raft.Config)) *clusterNode {
	t.Helper()
	trans, store, snaps := nodeStorage(t, dir, addr)
	conf := nodeConfig(id)
	if tweak != nil {
		tweak(conf)
	}
	fsm := &listFSM{}
	r, err := raft.NewRaft(conf, NewFSM(store, fsm), store, store, snaps, trans)
	require.NoError(t, err)
	n := &clusterNode{id: id, dir: dir, addr: trans.LocalAddr(), store: store, fsm: fsm, raft: r, trans: trans}
	t.Cleanup(n.stop)
	return n
}

func (n *clusterNode) stop() {
	if n.raft == nil {
		return
	}
	_ = n.raft.Shutdown().Error()
	_ = n.trans.Close()
	_ = n.store.Close()
	n.raft = nil
}

// cluster is a set of nodes started by startCluster.
type cluster struct {
	t     *testing.T
	nodes map[raft.ServerID]*clusterNode
}

func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, nodes: map[raft.ServerID]*clusterNode{}}
	var servers []raft.Server
	for i := 1; i <= n; i++ {
		id := raft.ServerID(fmt.Sprintf("node-%d", i))
		node := startNode(t, id, t.TempDir(), "", nil)
		c.nodes[id] = node
		servers = append(servers, raft.Server{ID: id, Address: node.addr})
	}
	require.NoError(t, c.nodes["node-1"].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error())
	c.leader()
	return c
}

// leader waits for a running node to lead and returns it.
func (c *cluster) leader() *clusterNode {
	c.t.Helper()
	var leader *clusterNode
	require.Eventually(c.t, func() bool {
		for _, n := range c.nodes {
			if n.raft != nil && n.raft.State() == raft.Leader {
				leader = n
				return true
			}
		}
		return false
	}, 20*time.Second, 20*time.Millisecond, "no leader")
	return leader
}

// apply applies commands through the leader, retrying on leadership changes.
func (c *cluster) apply(cmds ...string) {
	c.t.Helper()
	for _, cmd := range cmds {
		require.Eventually(c.t, func() bool {
			err := c.leader().raft.Apply([]byte(cmd), 2*time.Second).Error()
			return err == nil || !(errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost))
		}, 20*time.Second, 10*time.Millisecond)
	}
}

// converged waits until every running node's FSM holds exactly want.
func (c *cluster) converged(want []string) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		for _, n := range c.nodes {
			if n.raft != nil && !equalStrings(n.fsm.list(), want) {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "FSMs did not converge")
}

// storedServers waits until node n's store records a configuration with
// exactly the given server IDs, and returns its index.
func storedServers(t *testing.T, n *clusterNode, ids ...raft.ServerID) uint64 {
	t.Helper()
	var index uint64
	require.Eventually(t, func() bool {
		i, cfg, err := n.store.LatestConfiguration()
		if err != nil || len(cfg.Servers) != len(ids) {
			return false
		}
		for k, s := range cfg.Servers {
			if s.ID != ids[k] {
				return false
			}
		}
		index = i
		return true
	}, 30*time.Second, 20*time.Millisecond, "%s: stored configuration is not %v", n.id, ids)
	return index
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func commands(prefix string, n int) []string {
	var cmds []string
	for i := 0; i < n; i++ {
		cmds = append(cmds, fmt.Sprintf("%s-%d", prefix, i))
	}
	return cmds
}

// TestFreshInstallRecordsTheBootstrapConfiguration is the scenario this
// project was born from: a new node, bootstrapped, must know its cluster.
func TestFreshInstallRecordsTheBootstrapConfiguration(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, "solo", dir, "", nil)
	cfg := raft.Configuration{Servers: []raft.Server{{ID: "solo", Address: n.addr}}}
	require.NoError(t, n.raft.BootstrapCluster(cfg).Error())
	// Known at once: StoreLogs records the bootstrap entry itself.
	index, got, err := n.store.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 1, index)
	require.Equal(t, cfg, got)

	require.Eventually(t, func() bool { return n.raft.State() == raft.Leader }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, n.raft.Apply([]byte("x"), time.Second).Error())
	index, got, err = n.store.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 1, index)
	require.Equal(t, cfg, got)
	addr := n.addr
	n.stop()

	// Readable read-only, before raft starts.
	o := testOptions()
	o.ReadOnly = true
	ro, err := Open(filepath.Join(dir, "raft.db"), o)
	require.NoError(t, err)
	_, got, err = ro.LatestConfiguration()
	require.NoError(t, err)
	require.Equal(t, cfg, got)
	require.NoError(t, ro.Close())

	n = startNode(t, "solo", dir, addr, nil)
	require.Eventually(t, func() bool { return n.raft.State() == raft.Leader }, 10*time.Second, 10*time.Millisecond)
	_, got, err = n.store.LatestConfiguration()
	require.NoError(t, err)
	require.Equal(t, cfg, got)
}

func TestThreeNodeCluster(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader()
	for _, n := range c.nodes {
		storedServers(t, n, "node-1", "node-2", "node-3")
	}

	// Enough commands for several snapshots and truncations.
	want := commands("a", 150)
	c.apply(want...)
	c.converged(want)
	for _, n := range c.nodes {
		require.Eventually(t, func() bool {
			first, err := n.store.FirstIndex()
			return err == nil && first > 1
		}, 30*time.Second, 20*time.Millisecond, "%s: the log was never truncated", n.id)
		require.NoError(t, n.store.Check())
	}

	// A fourth node joins after the truncation: it is caught up by a
	// snapshot install and learns the 4-server configuration.
	n4 := startNode(t, "node-4", t.TempDir(), "", nil)
	c.nodes["node-4"] = n4
	require.NoError(t, leader.raft.AddVoter("node-4", n4.addr, 0, 10*time.Second).Error())
	more := commands("b", 20)
	c.apply(more...)
	want = append(want, more...)
	c.converged(want)
	for _, n := range c.nodes {
		storedServers(t, n, "node-1", "node-2", "node-3", "node-4")
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n4.dir, 2, hclog.NewNullLogger())
	require.NoError(t, err)
	list, err := snaps.List()
	require.NoError(t, err)
	require.NotEmpty(t, list, "node-4 was not caught up by a snapshot")

	// Remove a follower: it disappears from every remaining configuration.
	var removed raft.ServerID
	for id, n := range c.nodes {
		if n != c.leader() && id != "node-4" {
			removed = id
			break
		}
	}
	require.NoError(t, c.leader().raft.RemoveServer(removed, 0, 10*time.Second).Error())
	c.nodes[removed].stop()
	delete(c.nodes, removed)
	var rest []raft.ServerID
	for _, id := range []raft.ServerID{"node-1", "node-2", "node-3", "node-4"} {
		if id != removed {
			rest = append(rest, id)
		}
	}
	for _, n := range c.nodes {
		storedServers(t, n, rest...)
	}

	// Lose the leader; the others elect a new one and go on.
	old := c.leader()
	old.stop()
	more = commands("c", 10)
	c.apply(more...)
	want = append(want, more...)
	c.converged(want)
	require.NotEqual(t, old.id, c.leader().id)

	// The old leader restarts from its disk and catches up.
	c.nodes[old.id] = startNode(t, old.id, old.dir, old.addr, nil)
	c.converged(want)
	for _, n := range c.nodes {
		storedServers(t, n, rest...)
		require.NoError(t, n.store.Check())
	}
}

func TestFSMAdapterRetriesFailedRecords(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.Close()) // every record now fails with ErrClosed

	var logs bytesLog
	o := testOptions()
	o.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Error})
	s.logger = o.Logger
	inner := &listFSM{}
	f := NewFSM(s, inner)
	cfg := testConfiguration("a", "b")
	batch := []*raft.Log{
		{Index: 5, Type: raft.LogCommand, Data: []byte("one")},
		{Index: 6, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(cfg)},
		{Index: 7, Type: raft.LogCommand, Data: []byte("two")},
	}
	resp := f.ApplyBatch(batch)
	require.Equal(t, []interface{}{1, nil, 2}, resp)
	require.Equal(t, []string{"one", "two"}, inner.list(), "a plain FSM gets only the commands")

	index, pending, ok := f.PendingConfiguration()
	require.True(t, ok, "the failure was swallowed")
	require.EqualValues(t, 6, index)
	require.Equal(t, cfg, pending)
	require.Contains(t, logs.String(), "failed to record the committed cluster configuration")
	require.Contains(t, logs.String(), "index=6")
	require.Contains(t, logs.String(), "127.0.0.1:a")

	// The next apply retries it: against a store that works now.
	s2 := openTest(t)
	f.store = s2
	f.Apply(&raft.Log{Index: 8, Type: raft.LogCommand, Data: []byte("three")})
	_, _, ok = f.PendingConfiguration()
	require.False(t, ok)
	index, got, err := s2.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 6, index)
	require.Equal(t, cfg, got)
}

type bytesLog struct{ b []byte }

func (l *bytesLog) Write(p []byte) (int, error) { l.b = append(l.b, p...); return len(p), nil }
func (l *bytesLog) String() string              { return string(l.b) }

// batchingFSM records the batches raft would hand a BatchingFSM.
type batchingFSM struct {
	listFSM
	types []raft.LogType
	confs int
}

func (b *batchingFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	resp := make([]interface{}, len(logs))
	for i, l := range logs {
		b.types = append(b.types, l.Type)
		if l.Type == raft.LogCommand {
			resp[i] = b.Apply(l)
		}
	}
	return resp
}

func (b *batchingFSM) StoreConfiguration(uint64, raft.Configuration) { b.confs++ }

// confFSM is a plain FSM that stores configurations itself.
type confFSM struct {
	listFSM
	confs []uint64
}

func (c *confFSM) StoreConfiguration(index uint64, _ raft.Configuration) {
	c.confs = append(c.confs, index)
}

func TestFSMAdapterDeliversWhatRaftWould(t *testing.T) {
	cfg := testConfiguration("a")
	batch := []*raft.Log{
		{Index: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(cfg)},
		{Index: 2, Type: raft.LogCommand, Data: []byte("x")},
	}

	t.Run("batching inner", func(t *testing.T) {
		s := openTest(t)
		inner := &batchingFSM{}
		resp := NewFSM(s, inner).ApplyBatch(batch)
		require.Equal(t, []interface{}{nil, 1}, resp)
		require.Equal(t, []raft.LogType{raft.LogConfiguration, raft.LogCommand}, inner.types)
		require.Zero(t, inner.confs, "raft never calls StoreConfiguration on a BatchingFSM")
		_, got, err := s.LatestConfiguration()
		require.NoError(t, err)
		require.Equal(t, cfg, got)
	})
	t.Run("configuration-storing inner", func(t *testing.T) {
		s := openTest(t)
		inner := &confFSM{}
		NewFSM(s, inner).ApplyBatch(batch)
		require.Equal(t, []uint64{1}, inner.confs)
		require.Equal(t, []string{"x"}, inner.list())
	})
	t.Run("undecodable configuration", func(t *testing.T) {
		s := openTest(t)
		inner := &listFSM{}
		resp := NewFSM(s, inner).ApplyBatch([]*raft.Log{
			{Index: 1, Type: raft.LogConfiguration, Data: []byte{0xc1}},
			{Index: 2, Type: raft.LogCommand, Data: []byte("x")},
		})
		require.Equal(t, []interface{}{nil, 1}, resp, "no panic, commands still applied")
		_, _, err := s.LatestConfiguration()
		require.ErrorIs(t, err, ErrNoConfiguration)
	})
}

// rawCommitStore hides GetCommitIndex's caps, to show what raft v1.8.0
// does with the plain persisted commit index.
type rawCommitStore struct{ *Store }

func (r rawCommitStore) GetCommitIndex() (uint64, error) {
	st := r.loadState()
	return min(st.commit, st.last), nil
}

func restoreConfig(c *raft.Config) {
	c.RestoreCommittedLogs = true
	c.SnapshotThreshold = 1 << 20 // snapshots only when the test asks
	c.SnapshotInterval = time.Hour
}

// TestRestoreCommittedLogsTrap reproduces the raft v1.8.0 trap the
// commit-index cap exists for: a node whose configuration entry lies at or
// below the commit index, with no snapshot covering it, restarts without
// any peers and never elects itself.
func TestRestoreCommittedLogsTrap(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, "solo", dir, "", restoreConfig)
	require.NoError(t, n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "solo", Address: n.addr}}}).Error())
	require.Eventually(t, func() bool { return n.raft.State() == raft.Leader }, 10*time.Second, 10*time.Millisecond)
	for _, cmd := range commands("x", 5) {
		require.NoError(t, n.raft.Apply([]byte(cmd), time.Second).Error())
	}
	require.NoError(t, n.raft.Apply([]byte("last"), time.Second).Error()) // persists the commit index
	addr := n.addr
	n.stop()

	store, err := Open(filepath.Join(dir, "raft.db"), testOptions())
	require.NoError(t, err)
	defer store.Close()
	trans, err := raft.NewTCPTransportWithLogger(string(addr), nil, 3, time.Second, hclog.NewNullLogger())
	require.NoError(t, err)
	defer trans.Close()
	files, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	require.NoError(t, err)
	conf := nodeConfig("solo")
	restoreConfig(conf)
	raw := rawCommitStore{store}
	r, err := raft.NewRaft(conf, NewFSM(store, &listFSM{}), raw, store, files, trans)
	require.NoError(t, err)
	defer r.Shutdown()
	future := r.GetConfiguration()
	require.NoError(t, future.Error())
	require.Empty(t, future.Configuration().Servers, "raft v1.8.0 no longer forgets the configuration: the cap may be obsolete")
	require.Never(t, func() bool { return r.State() == raft.Leader }, time.Second, 50*time.Millisecond)
}

func TestRestoreCommittedLogsWithoutSnapshot(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, "solo", dir, "", restoreConfig)
	cfg := raft.Configuration{Servers: []raft.Server{{ID: "solo", Address: n.addr}}}
	require.NoError(t, n.raft.BootstrapCluster(cfg).Error())
	var want []string
	for round := 0; round < 3; round++ {
		require.Eventually(t, func() bool { return n.raft.State() == raft.Leader }, 10*time.Second, 10*time.Millisecond,
			"round %d: not leader again", round)
		future := n.raft.GetConfiguration()
		require.NoError(t, future.Error())
		require.Equal(t, cfg, future.Configuration(), "round %d", round)
		require.NoError(t, n.raft.Barrier(time.Second).Error())
		require.Equal(t, want, n.fsm.list(), "round %d: state after restart", round)
		for _, cmd := range commands(fmt.Sprintf("r%d", round), 10) {
			require.NoError(t, n.raft.Apply([]byte(cmd), time.Second).Error())
			want = append(want, cmd)
		}
		addr := n.addr
		n.stop()
		n = startNode(t, "solo", dir, addr, restoreConfig)
	}
}

func TestRestoreCommittedLogsReplaysBeforeElection(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, "solo", dir, "", restoreConfig)
	require.NoError(t, n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "solo", Address: n.addr}}}).Error())
	require.Eventually(t, func() bool { return n.raft.State() == raft.Leader }, 10*time.Second, 10*time.Millisecond)
	before := commands("before", 10)
	for _, cmd := range before {
		require.NoError(t, n.raft.Apply([]byte(cmd), time.Second).Error())
	}
	require.NoError(t, n.raft.Snapshot().Error()) // covers the configuration
	after := commands("after", 30)
	for _, cmd := range after {
		require.NoError(t, n.raft.Apply([]byte(cmd), time.Second).Error())
	}
	require.NoError(t, n.raft.Apply([]byte("last"), time.Second).Error()) // persists the commit index of "after-*"
	addr := n.addr
	n.stop()

	// Restart with an election timeout long enough to look at the FSM
	// before any election: the snapshot and the committed entries after
	// it must already be applied.
	n = startNode(t, "solo", dir, addr, func(c *raft.Config) {
		restoreConfig(c)
		c.HeartbeatTimeout = 3 * time.Second
		c.ElectionTimeout = 3 * time.Second
	})
	want := append(append([]string{}, before...), after...)
	require.Eventually(t, func() bool { return len(n.fsm.list()) >= len(want) }, 2*time.Second, 5*time.Millisecond)
	require.Equal(t, raft.Follower, n.raft.State(), "replayed only after an election")
	require.Equal(t, want, n.fsm.list()[:len(want)])
	require.Eventually(t, func() bool { return n.raft.State() == raft.Leader }, 10*time.Second, 10*time.Millisecond)
}

// TestRestoreReplayIsBounded shows the other raft v1.8.0 trap: a replay of
// more than 128 batches blocks NewRaft for ever. The store bounds it.
func TestRestoreReplayIsBounded(t *testing.T) {
	dir := t.TempDir()
	tweak := func(c *raft.Config) {
		restoreConfig(c)
		c.MaxAppendEntries = 2 // 128 batches of 2: a replay of 257 entries would hang
	}
	n := startNode(t, "solo", dir, "", tweak)
	require.NoError(t, n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "solo", Address: n.addr}}}).Error())
	require.Eventually(t, func() bool { return n.raft.State() == raft.Leader }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, n.raft.Apply([]byte("first"), time.Second).Error())
	require.NoError(t, n.raft.Snapshot().Error())
	var futures []raft.ApplyFuture
	for _, cmd := range commands("x", 400) {
		futures = append(futures, n.raft.Apply([]byte(cmd), 5*time.Second))
	}
	for _, f := range futures {
		require.NoError(t, f.Error())
	}
	require.NoError(t, n.raft.Apply([]byte("last"), time.Second).Error())
	addr := n.addr
	n.stop()

	o := testOptions()
	o.RestoreReplayLimit = 256
	store, err := Open(filepath.Join(dir, "raft.db"), o)
	require.NoError(t, err)
	c, err := store.GetCommitIndex()
	require.NoError(t, err)
	require.LessOrEqual(t, c, uint64(4+256), "snapshot index plus the limit")
	require.NoError(t, store.Close())

	done := make(chan *clusterNode)
	go func() {
		trans, err := raft.NewTCPTransportWithLogger(string(addr), nil, 3, time.Second, hclog.NewNullLogger())
		if err != nil {
			done <- nil
			return
		}
		store, _ := Open(filepath.Join(dir, "raft.db"), o)
		files, _ := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
		conf := nodeConfig("solo")
		tweak(conf)
		fsm := &listFSM{}
		r, err := raft.NewRaft(conf, NewFSM(store, fsm), store, store, WrapSnapshotStore(store, files), trans)
		if err != nil {
			done <- nil
			return
		}
		done <- &clusterNode{id: "solo", dir: dir, store: store, fsm: fsm, raft: r, trans: trans}
	}()
	select {
	case n = <-done:
		require.NotNil(t, n)
		t.Cleanup(n.stop)
	case <-time.After(20 * time.Second):
		t.Fatal("NewRaft blocked replaying the log")
	}
	require.Eventually(t, func() bool { return n.raft.State() == raft.Leader }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, n.raft.Barrier(5*time.Second).Error())
	require.Len(t, n.fsm.list(), 402)
}
