package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// demoOptions configures runDemo.
type demoOptions struct {
	dir     string // where the nodes' directories go; "" = a temporary directory, removed on success
	out     io.Writer
	logs    io.Writer // for the logs; nil = stderr
	verbose bool      // raft's logs at info level (else none)
	timeout time.Duration
}

// demoResult is what the demo did, for its test.
type demoResult struct {
	nodes     map[raft.ServerID]*node // every node, all stopped when runDemo returns
	stopped   raft.ServerID           // the first leader: stopped, then removed
	bootstrap raft.Configuration      // the 3-server configuration the cluster started with
	final     raft.Configuration      // the configuration after node-4 joined and the stopped node left
	want      map[string]string       // the FSM state every running node ended with
}

// demoTune makes the demo quick and makes it truncate its logs often: a
// snapshot every 16 entries, keeping 8.
func demoTune(c *raft.Config) {
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
	c.SnapshotThreshold = 16
	c.SnapshotInterval = 100 * time.Millisecond
	c.TrailingLogs = 8
}

// demo is one run of the demo: its nodes and what it applied.
type demo struct {
	ctx     context.Context
	opts    demoOptions
	out     io.Writer
	logger  hclog.Logger
	dir     string
	nodes   map[raft.ServerID]*node
	want    map[string]string
	nextKey int
}

// runDemo starts a 3-node cluster on 127.0.0.1, applies commands, stops the
// leader, adds a fourth node after the logs were truncated (so that it is
// caught up by a snapshot install), removes the stopped node, and prints
// every node's stored configuration and FSM state. Every wait has a
// deadline: it returns an error saying what did not happen in time.
func runDemo(ctx context.Context, opts demoOptions) (res *demoResult, err error) {
	if opts.out == nil {
		opts.out = io.Discard
	}
	if opts.timeout == 0 {
		opts.timeout = 15 * time.Second
	}
	if opts.logs == nil {
		opts.logs = os.Stderr
	}
	level := hclog.Off
	if opts.verbose {
		level = hclog.Info
	}
	d := &demo{
		ctx:    ctx,
		opts:   opts,
		out:    opts.out,
		logger: hclog.New(&hclog.LoggerOptions{Name: "cluster", Level: level, Output: opts.logs}),
		nodes:  map[raft.ServerID]*node{},
		want:   map[string]string{},
	}

	if d.dir, err = demoDir(opts.dir); err != nil {
		return nil, err
	}
	defer func() {
		for _, n := range d.nodes {
			if stopErr := n.stop(); stopErr != nil && err == nil {
				err = fmt.Errorf("stop %s: %w", n.id, stopErr)
			}
		}
		switch {
		case err != nil:
			fmt.Fprintf(d.out, "data kept in %s\n", d.dir)
		case opts.dir == "":
			err = os.RemoveAll(d.dir)
		default:
			fmt.Fprintf(d.out, "data kept in %s\n", d.dir)
		}
	}()
	fmt.Fprintf(d.out, "raftbolt cluster demo, data in %s\n", d.dir)

	// Three nodes; node-1 bootstraps the cluster with all three.
	var boot raft.Configuration
	for i := 1; i <= 3; i++ {
		n, err := d.start(raft.ServerID(fmt.Sprintf("node-%d", i)))
		if err != nil {
			return nil, err
		}
		boot.Servers = append(boot.Servers, raft.Server{ID: n.id, Address: n.addr})
	}
	if err := d.nodes["node-1"].raft.BootstrapCluster(boot).Error(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	fmt.Fprintf(d.out, "node-1 bootstrapped the cluster %s\n", servers(boot))
	leader, err := d.leader("a leader")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(d.out, "leader: %s (term %d)\n", leader.id, leader.raft.CurrentTerm())

	if err := d.apply(40); err != nil {
		return nil, err
	}

	// Lose the leader: the two others elect a new one and go on.
	old, err := d.leader("a leader")
	if err != nil {
		return nil, err
	}
	if err := old.stop(); err != nil {
		return nil, fmt.Errorf("stop %s: %w", old.id, err)
	}
	fmt.Fprintf(d.out, "stopped the leader %s\n", old.id)
	leader, err = d.leader("a new leader after " + string(old.id) + " stopped")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(d.out, "new leader: %s (term %d)\n", leader.id, leader.raft.CurrentTerm())
	if err := d.apply(20); err != nil {
		return nil, err
	}

	// Every running log is truncated now (the low SnapshotThreshold did it
	// already; a snapshot on request makes sure), so whoever leads no longer
	// has entry 1: a new node can only be caught up by a snapshot.
	if err := d.truncate(); err != nil {
		return nil, err
	}

	// A fourth node, empty, joins as a voter.
	n4, err := d.start("node-4")
	if err != nil {
		return nil, err
	}
	if err := d.onLeader("adding node-4", func(l *node) error {
		return l.raft.AddVoter(n4.id, n4.addr, 0, 5*time.Second).Error()
	}); err != nil {
		return nil, err
	}
	fmt.Fprintf(d.out, "added node-4 (raft %s, empty directory) as a voter\n", n4.addr)
	if err := d.converged("node-4 to catch up"); err != nil {
		return nil, err
	}
	if err := d.showSnapshotInstall(n4); err != nil {
		return nil, err
	}
	four := raft.Configuration{Servers: append(append([]raft.Server(nil), boot.Servers...), raft.Server{ID: n4.id, Address: n4.addr})}
	if err := d.storedConfigurations(four); err != nil {
		return nil, err
	}
	index, _, err := n4.store.LatestConfiguration()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(d.out, "every running node's store recorded the 4-server configuration (index %d), node-4's too\n", index)

	// Remove the stopped node for good.
	if err := d.onLeader("removing "+string(old.id), func(l *node) error {
		return l.raft.RemoveServer(old.id, 0, 5*time.Second).Error()
	}); err != nil {
		return nil, err
	}
	final := raft.Configuration{}
	for _, s := range boot.Servers {
		if s.ID != old.id {
			final.Servers = append(final.Servers, s)
		}
	}
	final.Servers = append(final.Servers, raft.Server{ID: n4.id, Address: n4.addr})
	fmt.Fprintf(d.out, "removed %s; the cluster is now %s\n", old.id, servers(final))
	if err := d.apply(5); err != nil {
		return nil, err
	}
	if err := d.storedConfigurations(final); err != nil {
		return nil, err
	}

	if err := d.report(); err != nil {
		return nil, err
	}
	// The stopped node's store kept the configuration it knew when it
	// stopped: it was down for every change after.
	if _, c, err := old.storedConfiguration(); err != nil {
		return nil, fmt.Errorf("%s: %w", old.id, err)
	} else if !reflect.DeepEqual(c, boot) {
		return nil, fmt.Errorf("%s (stopped) stored %s, want the bootstrap configuration %s", old.id, servers(c), servers(boot))
	}
	fmt.Fprintln(d.out, "ok")
	return &demoResult{nodes: d.nodes, stopped: old.id, bootstrap: boot, final: final, want: d.want}, nil
}

// demoDir returns the directory for the nodes' directories: a new
// temporary one, or dir, which must be empty or not exist (the demo starts
// a new cluster each time).
func demoDir(dir string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", "raftbolt-cluster-demo-")
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return dir, os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return "", err
	}
	if len(entries) > 0 {
		return "", fmt.Errorf("-dir %s is not empty: the demo starts a new cluster each run (give an empty or new directory)", dir)
	}
	return dir, nil
}

func (d *demo) start(id raft.ServerID) (*node, error) {
	n, err := startNode(nodeConfig{
		id:     id,
		bind:   "127.0.0.1:0",
		dir:    filepath.Join(d.dir, string(id)),
		logger: d.logger.Named(string(id)),
		tune:   demoTune,
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	d.nodes[id] = n
	fmt.Fprintf(d.out, "started %s: raft on %s, data in %s\n", id, n.addr, n.dir)
	return n, nil
}

// running returns the running nodes, sorted by ID.
func (d *demo) running() []*node {
	var ns []*node
	for _, n := range d.sorted() {
		if n.running() {
			ns = append(ns, n)
		}
	}
	return ns
}

func (d *demo) sorted() []*node {
	var ns []*node
	for _, n := range d.nodes {
		ns = append(ns, n)
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i].id < ns[j].id })
	return ns
}

// waitFor calls try until it reports done, the deadline passes or ctx
// ends. The error try returns while not done says why not yet; a timeout
// error includes the last one.
func (d *demo) waitFor(what string, try func() (done bool, why error)) error {
	deadline := time.Now().Add(d.opts.timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		done, why := try()
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			if why != nil {
				return fmt.Errorf("timed out after %s waiting for %s: %w", d.opts.timeout, what, why)
			}
			return fmt.Errorf("timed out after %s waiting for %s", d.opts.timeout, what)
		}
		select {
		case <-d.ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, d.ctx.Err())
		case <-tick.C:
		}
	}
}

// leader waits for a running node to lead. Right after an election two
// nodes may both believe they lead for a moment: the higher term wins.
func (d *demo) leader(what string) (*node, error) {
	var leader *node
	err := d.waitFor(what, func() (bool, error) {
		leader = nil
		for _, n := range d.running() {
			if n.raft.State() == raft.Leader && (leader == nil || n.raft.CurrentTerm() > leader.raft.CurrentTerm()) {
				leader = n
			}
		}
		if leader == nil {
			return false, errors.New("no running node is the leader")
		}
		return true, nil
	})
	return leader, err
}

// retryable reports whether an operation failed only because leadership
// moved (or the leader was busy), so that it may be tried again on the
// leader of the moment.
func retryable(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrEnqueueTimeout)
}

// onLeader runs fn on the leader, again on the leader of the moment while
// it fails only because leadership moved.
func (d *demo) onLeader(what string, fn func(*node) error) error {
	var err error
	werr := d.waitFor(what, func() (bool, error) {
		l, lerr := d.leader(what)
		if lerr != nil {
			err = lerr
			return true, nil
		}
		err = fn(l)
		return err == nil || !retryable(err), err
	})
	if werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// apply applies n new key=value commands through the leader, all in
// flight at once (raft batches them), then waits until every running
// node's FSM holds the same state. A command whose outcome a leadership
// change left unknown is applied again: setting a key is idempotent.
func (d *demo) apply(n int) error {
	var cmds []string
	for i := 0; i < n; i++ {
		d.nextKey++
		k, v := fmt.Sprintf("key-%03d", d.nextKey), fmt.Sprintf("value-%d", d.nextKey)
		cmds = append(cmds, k+"="+v)
		d.want[k] = v
	}
	var via raft.ServerID
	err := d.onLeader(fmt.Sprintf("applying %d commands", n), func(l *node) error {
		futures := make([]raft.ApplyFuture, len(cmds))
		for i, c := range cmds {
			futures[i] = l.raft.Apply([]byte(c), 5*time.Second)
		}
		var failed []string
		var ferr error
		for i, f := range futures {
			if err := f.Error(); err != nil {
				if !retryable(err) {
					return fmt.Errorf("%q: %w", cmds[i], err)
				}
				failed, ferr = append(failed, cmds[i]), err
			} else if err, ok := f.Response().(error); ok {
				return fmt.Errorf("%q: %w", cmds[i], err)
			}
		}
		cmds, via = failed, l.id
		return ferr
	})
	if err != nil {
		return err
	}
	if err := d.converged(fmt.Sprintf("every node to apply %d commands", n)); err != nil {
		return err
	}
	var names []string
	for _, r := range d.running() {
		names = append(names, string(r.id))
	}
	fmt.Fprintf(d.out, "applied %d commands through %s; %s each hold %s\n", n, via, strings.Join(names, ", "), d.running()[0].fsm.summary())
	return nil
}

// converged waits until every running node's FSM holds d.want.
func (d *demo) converged(what string) error {
	return d.waitFor(what, func() (bool, error) {
		for _, n := range d.running() {
			if got := n.fsm.state(); !reflect.DeepEqual(got, d.want) {
				return false, fmt.Errorf("%s has %d keys, want %d", n.id, len(got), len(d.want))
			}
		}
		return true, nil
	})
}

// truncate takes a snapshot on every running node (unless one was just
// taken) and waits until none of their logs starts at index 1.
func (d *demo) truncate() error {
	for _, n := range d.running() {
		if err := n.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return fmt.Errorf("snapshot on %s: %w", n.id, err)
		}
	}
	err := d.waitFor("the logs to be truncated", func() (bool, error) {
		for _, n := range d.running() {
			if first, err := n.store.FirstIndex(); err != nil || first <= 1 {
				return false, fmt.Errorf("%s: first index %d (%v)", n.id, first, err)
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, n := range d.running() {
		first, _ := n.store.FirstIndex()
		last, _ := n.store.LastIndex()
		snaps, err := n.snaps.List()
		if err != nil || len(snaps) == 0 {
			return fmt.Errorf("%s: no snapshot listed (%v)", n.id, err)
		}
		fmt.Fprintf(d.out, "%s: snapshot at index %d, log truncated to entries %d-%d\n", n.id, snaps[0].Index, first, last)
	}
	return nil
}

// showSnapshotInstall checks and shows that n, which joined with an empty
// directory after every log was truncated, was caught up by installing a
// snapshot from the leader: its FSM was restored from a snapshot, its
// snapshot store lists it, and its log starts after it.
func (d *demo) showSnapshotInstall(n *node) error {
	snaps, err := n.snaps.List()
	if err != nil {
		return fmt.Errorf("%s: list snapshots: %w", n.id, err)
	}
	if len(snaps) == 0 || n.fsm.restored() == 0 {
		return fmt.Errorf("%s was not caught up by a snapshot install (%d snapshots, %d restores)", n.id, len(snaps), n.fsm.restored())
	}
	s := snaps[len(snaps)-1] // the oldest: the one the leader sent
	first, err := n.store.FirstIndex()
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "%s was caught up by a snapshot install: snapshot %s (index %d, configuration %s at index %d); its log starts at index %d\n",
		n.id, s.ID, s.Index, servers(s.Configuration), s.ConfigurationIndex, first)
	return nil
}

// storedConfigurations waits until every running node's store records want.
func (d *demo) storedConfigurations(want raft.Configuration) error {
	return d.waitFor("every node to store the configuration "+servers(want), func() (bool, error) {
		for _, n := range d.running() {
			_, c, err := n.store.LatestConfiguration()
			if err != nil {
				return false, fmt.Errorf("%s: %w", n.id, err)
			}
			if !reflect.DeepEqual(c, want) {
				return false, fmt.Errorf("%s stored %s", n.id, servers(c))
			}
		}
		return true, nil
	})
}

// report prints every node's state, stored configuration and FSM state.
func (d *demo) report() error {
	fmt.Fprintln(d.out, "\nevery node's stored configuration (store.LatestConfiguration) and FSM state:")
	w := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	for _, n := range d.sorted() {
		index, c, err := n.storedConfiguration()
		if err != nil {
			return fmt.Errorf("%s: stored configuration: %w", n.id, err)
		}
		state := "stopped"
		if n.running() {
			state = strings.ToLower(n.raft.State().String())
		}
		fmt.Fprintf(w, "  %s\t%s\tindex %d\t%s\t%s\n", n.id, state, index, servers(c), n.fsm.summary())
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(d.out)
	return nil
}
