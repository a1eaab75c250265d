package raftbolt_test

import (
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
	"go.etcd.io/bbolt"
)

// A raft node whose state lives in bbolt: the StateMachine is raft's FSM.
// Each committed command runs the ApplyFunc in a write transaction that
// also records the applied index, so a restart neither loses nor repeats
// anything; snapshots stream the state file. No index, configuration or
// snapshot code in the application.
func ExampleOpenStateMachine() {
	dir, _ := os.MkdirTemp("", "raftbolt-example")
	defer os.RemoveAll(dir)

	// "key=value" commands set keys in the bucket "kv"; an empty value is
	// refused: the entry's response is the error and none of its writes
	// are kept.
	apply := func(tx *bbolt.Tx, l *raft.Log) interface{} {
		key, value, _ := strings.Cut(string(l.Data), "=")
		b, err := tx.CreateBucketIfNotExists([]byte("kv"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte(key+".seen"), []byte("yes")); err != nil {
			return err
		}
		if value == "" {
			return fmt.Errorf("empty value for %q", key)
		}
		return b.Put([]byte(key), []byte(value))
	}
	sm, err := raftbolt.OpenStateMachine(filepath.Join(dir, "state.db"), apply, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sm.Close()

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
	// Before raft starts: restore a snapshot a crash kept from the state.
	if _, err := sm.CatchUp(snaps); err != nil {
		log.Fatal(err)
	}

	addr, trans := raft.NewInmemTransport("")
	conf := raft.DefaultConfig()
	conf.LocalID = "node-1"
	conf.LogOutput = io.Discard
	conf.NoSnapshotRestoreOnStart = true // the state file already holds everything applied
	// NewFSM also records each committed configuration in the log store,
	// where store.LatestConfiguration and the raftbolt tool find it.
	r, err := raft.NewRaft(conf, raftbolt.NewFSM(store, sm), store, store, snaps, trans)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Shutdown()
	if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: addr}}}).Error(); err != nil {
		log.Fatal(err)
	}
	select { // a single server elects itself
	case <-r.LeaderCh():
	case <-time.After(10 * time.Second):
		log.Fatal("no leader after 10s")
	}

	for _, cmd := range []string{"color=blue", "size="} {
		f := r.Apply([]byte(cmd), time.Second)
		if err := f.Error(); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: response %v\n", cmd, f.Response())
	}
	_ = sm.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("kv"))
		return b.ForEach(func(k, v []byte) error {
			fmt.Printf("%s = %s\n", k, v)
			return nil
		})
	})
	index, cfg, _ := sm.LatestConfiguration()
	fmt.Println("applied index", sm.AppliedIndex(), "configuration index", index, "servers", len(cfg.Servers))
	// Output:
	// color=blue: response <nil>
	// size=: response empty value for "size"
	// color = blue
	// color.seen = yes
	// applied index 4 configuration index 1 servers 1
}
