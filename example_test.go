package raftbolt_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
)

// A single-server raft on raftbolt: the store is raft's log store and
// stable store, the FSM adapter records every committed configuration, and
// the snapshot store wrapper records the configurations of snapshots.
func Example() {
	dir, _ := os.MkdirTemp("", "raftbolt-example")
	defer os.RemoveAll(dir)

	store, err := raftbolt.Open(filepath.Join(dir, "raft.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	files, err := raft.NewFileSnapshotStore(dir, 2, io.Discard)
	if err != nil {
		log.Fatal(err)
	}
	snaps := raftbolt.WrapSnapshotStore(store, files)
	addr, trans := raft.NewInmemTransport("")

	conf := raft.DefaultConfig()
	conf.LocalID = "node-1"
	conf.LogOutput = io.Discard
	r, err := raft.NewRaft(conf, raftbolt.NewFSM(store, &counter{}), store, store, snaps, trans)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Shutdown()
	cfg := raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: addr}}}
	if err := r.BootstrapCluster(cfg).Error(); err != nil {
		log.Fatal(err)
	}
	select { // a single server elects itself
	case <-r.LeaderCh():
	case <-time.After(10 * time.Second):
		log.Fatal("no leader after 10s")
	}
	if err := r.Apply([]byte("+1"), time.Second).Error(); err != nil {
		log.Fatal(err)
	}

	index, recorded, err := store.LatestConfiguration()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("configuration at index", index, "has", len(recorded.Servers), "server")
	// Output: configuration at index 1 has 1 server
}

// counter counts the commands applied to it.
type counter struct{ n int }

func (c *counter) Apply(*raft.Log) interface{}         { c.n++; return c.n }
func (c *counter) Snapshot() (raft.FSMSnapshot, error) { return nil, fmt.Errorf("not supported") }
func (c *counter) Restore(io.ReadCloser) error         { return nil }

// The store used directly, as raft uses it.
func ExampleStore_StoreLogs() {
	dir, _ := os.MkdirTemp("", "raftbolt-example")
	defer os.RemoveAll(dir)
	store, err := raftbolt.Open(filepath.Join(dir, "raft.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	err = store.StoreLogs([]*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("a")},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte("b")},
	})
	if err != nil {
		log.Fatal(err)
	}
	// A batch that does not continue the log is refused whole.
	err = store.StoreLogs([]*raft.Log{{Index: 4, Term: 1}})
	fmt.Println(err != nil, errors.Is(err, raftbolt.ErrNotContiguous))

	var l raft.Log
	if err := store.GetLog(2, &l); err != nil {
		log.Fatal(err)
	}
	last, _ := store.LastIndex()
	fmt.Printf("%s, last index %d\n", l.Data, last)
	fmt.Println(store.GetLog(3, &l) == raft.ErrLogNotFound)
	// Output:
	// true true
	// b, last index 2
	// true
}

// The configuration is readable before raft starts, from a read-only
// handle too: what an operator tool or a start-up check needs.
func ExampleStore_LatestConfiguration() {
	dir, _ := os.MkdirTemp("", "raftbolt-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "raft.db")
	store, err := raftbolt.Open(path, nil)
	if err != nil {
		log.Fatal(err)
	}
	cfg := raft.Configuration{Servers: []raft.Server{
		{ID: "a", Address: "10.0.0.1:7000"},
		{ID: "b", Address: "10.0.0.2:7000", Suffrage: raft.Nonvoter},
	}}
	if err := store.StoreConfiguration(12, cfg); err != nil {
		log.Fatal(err)
	}
	store.Close()

	ro, err := raftbolt.Open(path, &raftbolt.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer ro.Close()
	index, got, err := ro.LatestConfiguration()
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range got.Servers {
		fmt.Println(index, s.ID, s.Address, s.Suffrage)
	}
	// Output:
	// 12 a 10.0.0.1:7000 Voter
	// 12 b 10.0.0.2:7000 Nonvoter
}

// A backup taken while the store is in use is itself a store.
func ExampleStore_Backup() {
	dir, _ := os.MkdirTemp("", "raftbolt-example")
	defer os.RemoveAll(dir)
	store, err := raftbolt.Open(filepath.Join(dir, "raft.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if err := store.StoreLog(&raft.Log{Index: 1, Term: 1, Data: []byte("x")}); err != nil {
		log.Fatal(err)
	}

	var buf bytes.Buffer
	if _, err := store.Backup(&buf); err != nil {
		log.Fatal(err)
	}
	copyPath := filepath.Join(dir, "backup.db")
	if err := os.WriteFile(copyPath, buf.Bytes(), 0o600); err != nil {
		log.Fatal(err)
	}
	backup, err := raftbolt.Open(copyPath, &raftbolt.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer backup.Close()
	last, _ := backup.LastIndex()
	fmt.Println("backup holds up to index", last, "check:", backup.Check())
	// Output: backup holds up to index 1 check: <nil>
}

// Compact gives back the space a log truncation freed, online.
func ExampleStore_Compact() {
	dir, _ := os.MkdirTemp("", "raftbolt-example")
	defer os.RemoveAll(dir)
	store, err := raftbolt.Open(filepath.Join(dir, "raft.db"), &raftbolt.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	for i := uint64(1); i <= 10000; i++ {
		l := &raft.Log{Index: i, Term: 1, Data: make([]byte, 1024)}
		if err := store.StoreLog(l); err != nil {
			log.Fatal(err)
		}
	}
	// raft truncates the log after a snapshot.
	if err := store.DeleteRange(1, 9900); err != nil {
		log.Fatal(err)
	}
	before, _ := store.Stats()
	if err := store.Compact(); err != nil {
		log.Fatal(err)
	}
	after, _ := store.Stats()
	fmt.Println("smaller:", after.FileSize < before.FileSize/5)
	// Output: smaller: true
}
