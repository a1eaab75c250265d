package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// The cluster workload: a 3-node hashicorp/raft cluster on loopback TCP,
// one per store and round, each node on a store of its own.
const (
	clusterNodes   = 3
	clusterCmdSize = 256 // bytes per Apply

	clusterLeaderWait   = 10 * time.Second // for the first leader and its barrier
	clusterApplyTimeout = 10 * time.Second // enqueue timeout of each Apply
	clusterStallGrace   = 30 * time.Second // past the run's duration, for the last futures
)

// countFSM is the trivial state machine of the cluster workload: it counts
// the commands applied to it.
type countFSM struct{ n atomic.Int64 }

// Apply counts one command.
func (f *countFSM) Apply(*raft.Log) any { f.n.Add(1); return nil }

// Snapshot returns an empty snapshot (the run never lasts long enough for
// raft to take one).
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return emptySnapshot{}, nil }

// Restore discards the snapshot.
func (f *countFSM) Restore(rc io.ReadCloser) error { return rc.Close() }

// emptySnapshot is countFSM's snapshot: nothing.
type emptySnapshot struct{}

// Persist closes the sink.
func (emptySnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }

// Release does nothing.
func (emptySnapshot) Release() {}

// raftNode is one server of a benchmark cluster.
type raftNode struct {
	dir   string
	store logStore
	trans *raft.NetworkTransport
	raft  *raft.Raft
	fsm   *countFSM
}

// raftCluster is three raftNodes on one store implementation.
type raftCluster struct {
	name  string
	nodes []*raftNode
}

// clusterConfig is the raft configuration of one node: the defaults, with
// timeouts for loopback, a silent logger and the apply channel batched.
func clusterConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.BatchApplyCh = true
	c.Logger = hclog.NewNullLogger()
	return c
}

// startCluster opens three fresh stores of im, each with its TCP transport
// on 127.0.0.1 and an in-memory snapshot store, bootstraps node 1 with all
// three servers and starts them. On error it shuts down what it started.
func (b *bench) startCluster(im impl) (c *raftCluster, err error) {
	c = &raftCluster{name: im.name}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.shutdown())
			c = nil
		}
	}()
	var servers []raft.Server
	for i := 1; i <= clusterNodes; i++ {
		n := &raftNode{fsm: &countFSM{}}
		c.nodes = append(c.nodes, n)
		if n.dir, err = b.freshDir(fmt.Sprintf("%s-cluster-n%d", im.name, i)); err != nil {
			return c, err
		}
		if n.store, err = im.open(n.dir); err != nil {
			return c, fmt.Errorf("open %s: %w", im.name, err)
		}
		if n.trans, err = raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 3, 10*time.Second, hclog.NewNullLogger()); err != nil {
			return c, err
		}
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: nodeID(i), Address: n.trans.LocalAddr()})
	}
	for i, n := range c.nodes {
		logs, ok := n.store.(raft.LogStore)
		if !ok {
			return c, fmt.Errorf("%s: %T is not a raft.LogStore", im.name, n.store)
		}
		stable, ok := n.store.(raft.StableStore)
		if !ok {
			return c, fmt.Errorf("%s: %T is not a raft.StableStore", im.name, n.store)
		}
		conf := clusterConfig(nodeID(i + 1))
		snaps := raft.NewInmemSnapshotStore()
		if i == 0 {
			err = raft.BootstrapCluster(conf, logs, stable, snaps, n.trans, raft.Configuration{Servers: servers})
			if err != nil {
				return c, fmt.Errorf("%s: bootstrap: %w", im.name, err)
			}
		}
		if n.raft, err = raft.NewRaft(conf, n.fsm, logs, stable, snaps, n.trans); err != nil {
			return c, fmt.Errorf("%s: node %d: %w", im.name, i+1, err)
		}
	}
	return c, nil
}

// nodeID names the i-th node (from 1).
func nodeID(i int) raft.ServerID { return raft.ServerID(fmt.Sprintf("node%d", i)) }

// leader waits until a node is leader and has committed an entry of its
// term (a barrier), and returns it; or an error after timeout.
func (c *raftCluster) leader(timeout time.Duration) (*raftNode, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, n := range c.nodes {
			if n.raft.State() != raft.Leader {
				continue
			}
			if err := n.raft.Barrier(time.Until(deadline)).Error(); err != nil {
				return nil, fmt.Errorf("%s: barrier on the new leader: %w", c.name, err)
			}
			return n, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil, fmt.Errorf("%s: no leader after %v", c.name, timeout)
}

// shutdown stops every node's raft, then closes the transports and the
// stores, and removes the directories.
func (c *raftCluster) shutdown() error {
	var errs []error
	for i, n := range c.nodes {
		if n.raft != nil {
			if err := n.raft.Shutdown().Error(); err != nil {
				errs = append(errs, fmt.Errorf("%s: node %d: shutdown: %w", c.name, i+1, err))
			}
		}
	}
	for i, n := range c.nodes {
		if n.trans != nil {
			if err := n.trans.Close(); err != nil {
				errs = append(errs, fmt.Errorf("%s: node %d: close transport: %w", c.name, i+1, err))
			}
		}
		if n.store != nil {
			if err := n.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("%s: node %d: close store: %w", c.name, i+1, err))
			}
		}
		if n.dir != "" {
			_ = os.RemoveAll(n.dir)
		}
	}
	return errors.Join(errs...)
}

// clusterResult is one timed run of clients against a cluster's leader.
type clusterResult struct {
	commits int64         // Apply futures that returned nil
	failed  int64         // clients that stopped on an error
	err     error         // the first of those errors
	elapsed time.Duration // until the last client returned
}

// drive runs clients goroutines that Apply 256-byte commands on the leader
// one at a time, each waiting on its future, until d has passed; a client
// stops at its first error. It waits for the last future, up to
// clusterStallGrace past d.
func (b *bench) drive(c *raftCluster, leader *raftNode, clients int, d time.Duration) (clusterResult, error) {
	var (
		res      clusterResult
		commits  atomic.Int64
		failed   atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	cmd := b.payload[:clusterCmdSize] // raft and the stores copy it
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := leader.raft.Apply(cmd, clusterApplyTimeout).Error(); err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					return
				}
				commits.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d + clusterStallGrace):
		// The caller's shutdown fails the futures still waiting.
		return res, fmt.Errorf("%s: Apply futures still pending %v after the end of the run", c.name, clusterStallGrace)
	}
	res.elapsed = time.Since(start)
	res.commits, res.failed, res.err = commits.Load(), failed.Load(), firstErr
	if res.commits == 0 {
		return res, fmt.Errorf("%s: no Apply succeeded: %w", c.name, res.err)
	}
	if res.failed == 0 {
		if got := leader.fsm.n.Load(); got != res.commits {
			return res, fmt.Errorf("%s: the leader's FSM applied %d commands, %d futures succeeded", c.name, got, res.commits)
		}
	}
	return res, nil
}

// clusterRound starts a cluster on im, waits for its leader, drives it and
// shuts it down.
func (b *bench) clusterRound(im impl) (res clusterResult, err error) {
	c, err := b.startCluster(im)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := c.shutdown(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	leader, err := c.leader(clusterLeaderWait)
	if err != nil {
		return res, err
	}
	return b.drive(c, leader, b.cfg.clusterClients, b.cfg.clusterDur)
}

// cluster measures the commit throughput of a 3-node raft cluster on
// loopback TCP for each store: clients concurrent Apply calls on the
// leader for a fixed time. The main table gets the time per commit (so
// that lower is better, like every other row); a table of its own gets the
// commits per second.
func (b *bench) cluster() error {
	rounds, clients, d := b.cfg.clusterRounds, b.cfg.clusterClients, b.cfg.clusterDur
	rowName := fmt.Sprintf("raft cluster, %d nodes, %d clients: time per commit", clusterNodes, clients)
	b.progress("raft cluster: %d rounds × %d stores × %v, %d nodes, %d clients", rounds, len(peers), d, clusterNodes, clients)
	row := b.rep.row(rowName, unitDuration)
	rates := map[string]samples{}
	failed := map[string]int64{}
	var failures []string
	for r := 0; r < rounds; r++ {
		for _, im := range rotated(peers, r) {
			res, err := b.clusterRound(im)
			if err != nil {
				return fmt.Errorf("round %d: %w", r, err)
			}
			rate := float64(res.commits) / res.elapsed.Seconds()
			row.add(im.name, r, float64(res.elapsed)/float64(res.commits))
			rates[im.name] = append(rates[im.name], rate)
			failed[im.name] += res.failed
			msg := ""
			if res.failed > 0 {
				msg = fmt.Sprintf(", %d clients stopped early: %v", res.failed, res.err)
				failures = append(failures, fmt.Sprintf("round %d, %s: %d clients stopped early: %v", r, im.name, res.failed, res.err))
			}
			b.progress("  round %d, %s: %.0f commits/s (%d in %v)%s", r, im.name, rate, res.commits, res.elapsed.Round(time.Millisecond), msg)
		}
	}
	b.rep.speedup(rowName, nameRaftbolt, nameWAL, 1)
	b.rep.speedup(rowName, nameDirect, nameWAL, 1)
	b.rep.speedup(rowName, nameDirect, nameBoltDB, 1)

	var t strings.Builder
	fmt.Fprintf(&t, "### Raft cluster\n\n%d hashicorp/raft nodes in this process on loopback TCP (NewTCPTransport), each on a fresh store of its own "+
		"(used as both LogStore and StableStore, no raft.LogCache in front) and an in-memory snapshot store; raft.DefaultConfig with "+
		"HeartbeatTimeout and ElectionTimeout 500 ms, LeaderLeaseTimeout 250 ms, BatchApplyCh. Node 1 is bootstrapped with all three; "+
		"once a leader has committed a barrier, %d goroutines each Apply a %d B command and wait on its future, again and again, for %v. "+
		"Commits/s counts the futures that returned nil over the time until the last client returned. A new cluster per store and round, "+
		"%d rounds, the order of the stores rotated each round. The main table shows the same runs as time per commit.\n\n",
		clusterNodes, clients, clusterCmdSize, d, rounds)
	fmt.Fprintf(&t, "| Store | commits/s, median | p10 | p90 | clients stopped by an error |\n|---|---|---|---|---|\n")
	for _, im := range peers {
		s := rates[im.name]
		fmt.Fprintf(&t, "| %s | %.0f | %.0f | %.0f | %d |\n", im.name, s.median(), s.quantile(0.1), s.quantile(0.9), failed[im.name])
	}
	for _, f := range failures {
		fmt.Fprintf(&t, "\n- %s", f)
	}
	if len(failures) > 0 {
		t.WriteString("\n")
	}
	b.rep.extra = append(b.rep.extra, t.String())
	return nil
}
