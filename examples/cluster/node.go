package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
)

// nodeConfig says how to start one raft server. Both modes build one.
type nodeConfig struct {
	id     raft.ServerID
	bind   string // TCP address for raft; port 0 picks one (the transport advertises the real one)
	dir    string // the node's own data directory: raft.db and snapshots/
	logger hclog.Logger
	tune   func(*raft.Config) // optional changes to raftConfig
}

// node is one raft server whose log, stable store and cluster
// configuration live in a raftbolt store, with file snapshots.
type node struct {
	id    raft.ServerID
	dir   string
	addr  raft.ServerAddress // what the transport advertises
	store *raftbolt.Store
	snaps raft.SnapshotStore // the file snapshots, wrapped by raftbolt.WrapSnapshotStore
	trans *raft.NetworkTransport
	fsm   *kvFSM
	raft  *raft.Raft

	// hadState is raft.HasExistingState before raft started: a node
	// with state recovers from its directory and never bootstraps again.
	hadState bool
}

// raftConfig is the raft configuration both modes start from: raft's
// default timeouts, and RestoreCommittedLogs, so a restarted node replays
// its committed entries before any election (the store caps the commit
// index it reports so that raft v1.8.0 still finds the node's
// configuration; see the README).
func raftConfig(id raft.ServerID, logger hclog.Logger) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.Logger = logger
	c.RestoreCommittedLogs = true
	// Low enough that a user who applies a hundred commands sees
	// snapshots and log truncation.
	c.SnapshotThreshold = 64
	c.SnapshotInterval = 5 * time.Second
	c.TrailingLogs = 32
	return c
}

// startNode opens the node's store and snapshots in its directory and
// starts raft. It neither bootstraps nor joins: the caller decides, from
// n.hadState.
func startNode(c nodeConfig) (n *node, err error) {
	logger := c.logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, err
	}
	n = &node{id: c.id, dir: c.dir, fsm: newKV()}
	defer func() {
		if err != nil {
			n.stop()
		}
	}()

	n.store, err = raftbolt.Open(filepath.Join(c.dir, "raft.db"), &raftbolt.Options{Logger: logger.Named("raftbolt")})
	if err != nil {
		return n, err
	}
	files, err := raft.NewFileSnapshotStoreWithLogger(c.dir, 2, logger.Named("snapshots"))
	if err != nil {
		return n, err
	}
	// Records the configuration of every snapshot written, also of one
	// installed from the leader, for which raft tells no FSM.
	n.snaps = raftbolt.WrapSnapshotStore(n.store, files)
	n.trans, err = raft.NewTCPTransportWithLogger(c.bind, nil, 3, 10*time.Second, logger.Named("transport"))
	if err != nil {
		return n, fmt.Errorf("raft transport on %s: %w", c.bind, err)
	}
	n.addr = n.trans.LocalAddr()

	n.hadState, err = raft.HasExistingState(n.store, n.store, n.snaps)
	if err != nil {
		return n, err
	}
	conf := raftConfig(c.id, logger.Named("raft"))
	// Nothing to replay on an empty store (raft v1.8.0 would only warn
	// "skipping application of old log: index=0").
	conf.RestoreCommittedLogs = conf.RestoreCommittedLogs && n.hadState
	if c.tune != nil {
		c.tune(conf)
	}
	// The store is the log store and the stable store. No raft.LogCache:
	// the store caches the newest entries itself, and a LogCache would hide
	// raft.CommitTrackingLogStore (RestoreCommittedLogs) from raft.
	n.raft, err = raft.NewRaft(conf, raftbolt.NewFSM(n.store, n.fsm), n.store, n.store, n.snaps, n.trans)
	if err != nil {
		return n, err
	}
	return n, nil
}

// stop shuts raft down and closes the transport and the store. It is
// idempotent and returns the first error.
func (n *node) stop() error {
	var errs []error
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown().Error())
		n.raft = nil
	}
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
		n.trans = nil
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

// running reports whether the node has not been stopped.
func (n *node) running() bool { return n.raft != nil }

// storedConfiguration reads the configuration the node's store recorded.
// A stopped node's store is reopened read-only for it: the store knows the
// cluster even when raft is not running.
func (n *node) storedConfiguration() (uint64, raft.Configuration, error) {
	if n.running() {
		return n.store.LatestConfiguration()
	}
	ro, err := raftbolt.Open(filepath.Join(n.dir, "raft.db"), &raftbolt.Options{ReadOnly: true})
	if err != nil {
		return 0, raft.Configuration{}, err
	}
	defer ro.Close()
	return ro.LatestConfiguration()
}

// servers formats a configuration's servers for people.
func servers(c raft.Configuration) string {
	var parts []string
	for _, s := range c.Servers {
		parts = append(parts, fmt.Sprintf("%s@%s", s.ID, s.Address))
		if s.Suffrage != raft.Voter {
			parts[len(parts)-1] += " (" + s.Suffrage.String() + ")"
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// parseCommand splits a command "key=value". Keys are not empty.
func parseCommand(cmd []byte) (key, value string, err error) {
	k, v, ok := strings.Cut(string(cmd), "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("command %q is not key=value", cmd)
	}
	return k, v, nil
}

// kvFSM is the application's state machine: a map set by "key=value"
// commands. raftbolt.NewFSM wraps it; it knows nothing of configurations.
type kvFSM struct {
	mu       sync.Mutex
	data     map[string]string
	restores int // snapshots restored: on start, or installed from the leader
}

func newKV() *kvFSM { return &kvFSM{data: map[string]string{}} }

// Apply sets a key. A command that is not key=value returns its error as
// the entry's response (the HTTP API rejects those before raft sees them).
func (f *kvFSM) Apply(l *raft.Log) interface{} {
	k, v, err := parseCommand(l.Data)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data[k] = v
	return nil
}

// Snapshot copies the map; Persist writes it as JSON.
func (f *kvFSM) Snapshot() (raft.FSMSnapshot, error) {
	return kvSnapshot(f.state()), nil
}

// Restore replaces the map with a snapshot's.
func (f *kvFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data := map[string]string{}
	if err := json.NewDecoder(rc).Decode(&data); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data = data
	f.restores++
	return nil
}

// state returns a copy of the map.
func (f *kvFSM) state() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]string, len(f.data))
	for k, v := range f.data {
		m[k] = v
	}
	return m
}

func (f *kvFSM) restored() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

// summary describes the state in one line: the key count and a checksum
// of the sorted key=value pairs, so equal states are easy to spot.
func (f *kvFSM) summary() string {
	m := f.state()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := crc32.NewIEEE()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, m[k])
	}
	return fmt.Sprintf("%d keys, checksum %08x", len(keys), h.Sum32())
}

type kvSnapshot map[string]string

func (s kvSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(map[string]string(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (kvSnapshot) Release() {}
