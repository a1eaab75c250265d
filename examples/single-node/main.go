// Command single-node runs a one-server raft cluster whose log, stable
// store and cluster configuration live in a raftbolt store.
//
// It bootstraps the cluster on the first run, applies a few commands to a
// tiny deterministic state machine (a running sum), prints the state and
// the configuration the store recorded, and exits. Run it again on the
// same directory and it recovers instead: the store already knows the
// cluster before raft starts, and raft replays the log into the fresh
// state machine.
//
//	go run ./examples/single-node            # data in $TMPDIR/raftbolt-single-node
//	go run ./examples/single-node -dir data  # or anywhere else
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
)

func main() {
	dir := flag.String("dir", filepath.Join(os.TempDir(), "raftbolt-single-node"), "data directory")
	n := flag.Int("n", 3, "commands to apply")
	verbose := flag.Bool("v", false, "show raft's logs")
	flag.Parse()
	if err := run(*dir, *n, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "single-node:", err)
		os.Exit(1)
	}
}

func run(dir string, n int, verbose bool) error {
	level := hclog.Warn
	if verbose {
		level = hclog.Info
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "single-node", Level: level})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}

	store, err := raftbolt.Open(filepath.Join(dir, "raft.db"), &raftbolt.Options{Logger: logger.Named("raftbolt")})
	if err != nil {
		return err
	}
	defer store.Close()

	// The store knows the cluster before raft starts.
	addr := "127.0.0.1:0"
	if index, cfg, err := store.LatestConfiguration(); err == nil {
		fmt.Printf("recovering: the store recorded configuration %s at index %d\n", servers(cfg), index)
		addr = string(cfg.Servers[0].Address)
	} else if errors.Is(err, raftbolt.ErrNoConfiguration) {
		fmt.Println("fresh install: no configuration recorded yet")
	} else {
		return err
	}

	trans, err := raft.NewTCPTransportWithLogger(addr, nil, 3, 10*time.Second, logger.Named("transport"))
	if err != nil {
		return err
	}
	defer trans.Close()
	files, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger.Named("snapshots"))
	if err != nil {
		return err
	}
	snaps := raftbolt.WrapSnapshotStore(store, files)

	conf := raft.DefaultConfig()
	conf.LocalID = "node-1"
	// raft warns about the election every restart starts: show its errors
	// only, unless -v. (A logger of its own: SetLevel on a named logger
	// would change the whole tree's level.)
	raftLevel := hclog.Error
	if verbose {
		raftLevel = hclog.Info
	}
	conf.Logger = hclog.New(&hclog.LoggerOptions{Name: "single-node.raft", Level: raftLevel})
	conf.HeartbeatTimeout = 100 * time.Millisecond
	conf.ElectionTimeout = 100 * time.Millisecond
	conf.LeaderLeaseTimeout = 100 * time.Millisecond

	fsm := &sumFSM{}
	hasState, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return err
	}
	r, err := raft.NewRaft(conf, raftbolt.NewFSM(store, fsm), store, store, snaps, trans)
	if err != nil {
		return err
	}
	defer r.Shutdown()
	if !hasState {
		cfg := raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: trans.LocalAddr()}}}
		if err := r.BootstrapCluster(cfg).Error(); err != nil {
			return err
		}
		fmt.Printf("bootstrapped %s\n", servers(cfg))
	}

	select { // a single server elects itself
	case <-r.LeaderCh():
	case <-time.After(10 * time.Second):
		return errors.New("no leader after 10s")
	}
	for i := 1; i <= n; i++ {
		if err := r.Apply([]byte("add "+strconv.Itoa(i)), 5*time.Second).Error(); err != nil {
			return err
		}
	}
	if err := r.Barrier(5 * time.Second).Error(); err != nil {
		return err
	}

	sum, count := fsm.state()
	fmt.Printf("state: %d commands applied, sum %d\n", count, sum)
	first, _ := store.FirstIndex()
	last, _ := store.LastIndex()
	fmt.Printf("log: entries %d-%d in %s\n", first, last, store.Path())
	index, cfg, err := store.LatestConfiguration()
	if err != nil {
		return err
	}
	fmt.Printf("stored configuration: %s at index %d\n", servers(cfg), index)

	if err := r.Shutdown().Error(); err != nil {
		return err
	}
	return store.Close()
}

func servers(c raft.Configuration) string {
	var parts []string
	for _, s := range c.Servers {
		parts = append(parts, fmt.Sprintf("%s@%s (%s)", s.ID, s.Address, s.Suffrage))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// sumFSM is a deterministic state machine: commands "add N" add N to a sum.
type sumFSM struct {
	mu    sync.Mutex
	sum   int64
	count int64
}

func (f *sumFSM) Apply(l *raft.Log) interface{} {
	v, err := strconv.ParseInt(strings.TrimPrefix(string(l.Data), "add "), 10, 64)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sum += v
	f.count++
	return f.sum
}

func (f *sumFSM) state() (sum, count int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sum, f.count
}

func (f *sumFSM) Snapshot() (raft.FSMSnapshot, error) {
	sum, count := f.state()
	return snapshot{sum, count}, nil
}

func (f *sumFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var sum, count int64
	if _, err := fmt.Fscan(rc, &sum, &count); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sum, f.count = sum, count
	return nil
}

type snapshot struct{ sum, count int64 }

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := fmt.Fprintln(sink, s.sum, s.count); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (snapshot) Release() {}
