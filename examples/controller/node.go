package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
	"go.etcd.io/bbolt"
)

// The data model: two buckets of the state file.
var (
	bucketKV    = []byte("kv")    // the keys clients PUT
	bucketNodes = []byte("nodes") // server ID -> HTTP address, to find the leader's API
)

// command is a raft log entry's data.
type command struct {
	Op    string `json:"op"` // "set", "cas", "delete" or "register"
	Key   string `json:"key,omitempty"`
	Value []byte `json:"value,omitempty"`
	Old   []byte `json:"old,omitempty"`  // cas: the value Key must hold for Value to replace it
	ID    string `json:"id,omitempty"`   // register
	HTTP  string `json:"http,omitempty"` // register
}

// apply is the controller's ApplyFunc: the only code that changes the
// state. It runs inside the write transaction raftbolt opens for the entry,
// which also records the entry's index; an error it returns discards its
// writes and becomes the entry's response. It is deterministic, as raft
// requires.
func apply(tx *bbolt.Tx, l *raft.Log) interface{} {
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("entry %d: %w", l.Index, err)
	}
	switch c.Op {
	case "set", "cas", "delete":
		if c.Key == "" {
			return errors.New("empty key")
		}
		b, err := tx.CreateBucketIfNotExists(bucketKV)
		if err != nil {
			return err
		}
		switch c.Op {
		case "delete":
			return b.Delete([]byte(c.Key))
		case "cas":
			// The comparison and the write are one transaction, applied
			// in log order on every node: no other command can come
			// between them, which is what makes it a compare-and-set.
			if cur := b.Get([]byte(c.Key)); cur == nil || !bytes.Equal(cur, c.Old) {
				return errCASMismatch
			}
		}
		return b.Put([]byte(c.Key), c.Value)
	case "register":
		b, err := tx.CreateBucketIfNotExists(bucketNodes)
		if err != nil {
			return err
		}
		return b.Put([]byte(c.ID), []byte(c.HTTP))
	}
	return fmt.Errorf("unknown operation %q", c.Op)
}

// node is one controller: raft, its log store and the state machine.
type node struct {
	cfg      config
	store    *raftbolt.Store
	sm       *raftbolt.StateMachine
	raft     *raft.Raft
	trans    *raft.NetworkTransport
	hadState bool // the directory held a cluster member already
	client   *http.Client
	done     chan struct{}
}

func openNode(cfg config) (n *node, err error) {
	if err := os.MkdirAll(cfg.dir, 0o700); err != nil {
		return nil, err
	}
	n = &node{cfg: cfg, client: &http.Client{Timeout: 15 * time.Second}, done: make(chan struct{})}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	opts := &raftbolt.Options{Logger: cfg.logger.Named("raftbolt")}
	if n.store, err = raftbolt.Open(filepath.Join(cfg.dir, "raft.db"), opts); err != nil {
		return nil, err
	}
	if n.sm, err = raftbolt.OpenStateMachine(filepath.Join(cfg.dir, "state.db"), apply, opts); err != nil {
		return nil, err
	}
	files, err := raft.NewFileSnapshotStoreWithLogger(cfg.dir, 2, cfg.logger.Named("snapshots"))
	if err != nil {
		return nil, err
	}
	snaps := raftbolt.WrapSnapshotStore(n.store, files)
	// A crash between installing a snapshot and restoring it leaves the
	// state behind the snapshot raft will start from: catch up first.
	if _, err := n.sm.CatchUp(snaps); err != nil {
		return nil, err
	}
	if n.trans, err = raft.NewTCPTransportWithLogger(cfg.raftAddr, nil, 3, 10*time.Second, cfg.logger.Named("transport")); err != nil {
		return nil, err
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.id)
	rc.Logger = cfg.logger.Named("raft")
	// The state file holds everything applied: restoring the newest
	// snapshot at start would roll it back and replay the log onto it.
	rc.NoSnapshotRestoreOnStart = true
	// Quick elections for a demo on one machine.
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond

	if n.hadState, err = raft.HasExistingState(n.store, n.store, snaps); err != nil {
		return nil, err
	}
	// NewFSM records every committed configuration in the log store too,
	// so that raft.db (and raftbolt info/config on it) knows the cluster,
	// not only the bootstrap configuration; the state machine still gets
	// every batch, configurations included, and records them itself.
	fsm := raftbolt.NewFSM(n.store, n.sm)
	if n.raft, err = raft.NewRaft(rc, fsm, n.store, n.store, snaps, n.trans); err != nil {
		return nil, err
	}
	if !n.hadState && cfg.join == "" {
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: n.trans.LocalAddr()}}}
		if err := n.raft.BootstrapCluster(boot).Error(); err != nil {
			return nil, err
		}
	}
	go n.registerWhenLeader(n.done)
	return n, nil
}

func (n *node) raftAddr() raft.ServerAddress { return n.trans.LocalAddr() }

func (n *node) close() {
	if n.done != nil {
		close(n.done)
		n.done = nil
	}
	if n.raft != nil {
		_ = n.raft.Shutdown().Error()
	}
	if n.trans != nil {
		_ = n.trans.Close()
	}
	if n.sm != nil {
		_ = n.sm.Close()
	}
	if n.store != nil {
		_ = n.store.Close()
	}
}

// registerWhenLeader records this node's HTTP address each time it becomes
// leader, so that followers know where to forward writes.
func (n *node) registerWhenLeader(done <-chan struct{}) {
	for {
		select {
		case isLeader := <-n.raft.LeaderCh():
			if !isLeader {
				continue
			}
			reg := command{Op: "register", ID: n.cfg.id, HTTP: n.cfg.httpAddr}
			if err := n.applyLocal(reg); err != nil {
				n.cfg.logger.Warn("could not register the HTTP address", "error", err)
			}
		case <-done:
			return
		}
	}
}

// applyLocal applies c through this node's raft, which must lead.
func (n *node) applyLocal(c command) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	f := n.raft.Apply(data, 10*time.Second)
	if err := f.Error(); err != nil {
		return err
	}
	if err, ok := f.Response().(error); ok {
		return &applyError{err}
	}
	return nil
}

// applyError is an error the state machine returned for a command: the
// client's fault, not the cluster's.
type applyError struct{ err error }

func (e *applyError) Error() string { return e.err.Error() }
func (e *applyError) Unwrap() error { return e.err }

// errCASMismatch is the response of a compare-and-set whose key did not
// hold the expected value (or was unset): the command was applied and
// changed nothing.
var errCASMismatch = errors.New("compare-and-set failed: the key does not hold the expected value")

// leaderHTTP returns the HTTP address of the current leader, from the
// state's registry.
func (n *node) leaderHTTP() (string, error) {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return "", errors.New("no leader at the moment")
	}
	var addr string
	err := n.sm.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketNodes); b != nil {
			addr = string(b.Get([]byte(id)))
		}
		return nil
	})
	if err == nil && addr == "" {
		err = fmt.Errorf("the HTTP address of leader %s is not known yet", id)
	}
	return addr, err
}

// joinRequest is the body of POST /join.
type joinRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

// join adds a server as a voter and registers its HTTP address; this node
// must lead.
func (n *node) join(req joinRequest) error {
	if req.ID == "" || req.RaftAddr == "" || req.HTTPAddr == "" {
		return &applyError{errors.New("join needs id, raft_addr and http_addr")}
	}
	if err := n.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.RaftAddr), 0, 20*time.Second).Error(); err != nil {
		return err
	}
	return n.applyLocal(command{Op: "register", ID: req.ID, HTTP: req.HTTPAddr})
}

// joinVia asks the member at addr (any member: followers forward) to add
// this node, retrying until it answers or the timeout passes.
func (n *node) joinVia(addr string, timeout time.Duration) error {
	body, _ := json.Marshal(joinRequest{ID: n.cfg.id, RaftAddr: string(n.raftAddr()), HTTPAddr: n.cfg.httpAddr})
	deadline := time.Now().Add(timeout)
	for {
		resp, err := n.client.Post("http://"+addr+"/join", "application/json", bytes.NewReader(body))
		if err == nil {
			msg := readAll(resp)
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("join via %s: %s: %s", addr, resp.Status, msg)
		}
		if time.Now().After(deadline) {
			return err
		}
		n.cfg.logger.Warn("join failed; retrying", "error", err)
		time.Sleep(500 * time.Millisecond)
	}
}
