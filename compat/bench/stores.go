package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/raftbolt/raftbolt"
	"go.etcd.io/bbolt"
)

// logStore is what the workloads use of a store. The two floors implement
// StoreLogs only.
type logStore interface {
	StoreLogs(logs []*raft.Log) error
	GetLog(index uint64, log *raft.Log) error
	FirstIndex() (uint64, error)
	LastIndex() (uint64, error)
	DeleteRange(min, max uint64) error
	Close() error
}

// impl is one contender: a name and how to open its store in a directory
// (created empty by the caller, or holding what a previous open wrote).
type impl struct {
	name  string
	floor bool // a floor, not a log store: StoreLogs only
	open  func(dir string) (logStore, error)
}

const (
	nameRaftbolt = "raftbolt"           // the defaults: the journal on
	nameDirect   = "raftbolt NoJournal" // each StoreLogs one bbolt transaction
	nameBoltDB   = "raft-boltdb/v2"
	nameWAL      = "raft-wal"
	nameBoltTx   = "bbolt tx floor"
	nameFsync    = "write+fdatasync floor"
)

// Every store runs with its default, durable options: one fsync-backed
// commit per StoreLogs.
var (
	implRaftbolt = impl{name: nameRaftbolt, open: func(dir string) (logStore, error) {
		return raftbolt.Open(filepath.Join(dir, "raft.db"), nil)
	}}
	// Without the journal: issue 6's targets (against raft-boltdb and the
	// bbolt floor) are this one's.
	implDirect = impl{name: nameDirect, open: func(dir string) (logStore, error) {
		return raftbolt.Open(filepath.Join(dir, "raft.db"), &raftbolt.Options{NoJournal: true})
	}}
	implBoltDB = impl{name: nameBoltDB, open: func(dir string) (logStore, error) {
		return raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	}}
	implWAL = impl{name: nameWAL, open: openWAL}

	implBoltTx = impl{name: nameBoltTx, floor: true, open: openBoltFloor}
	implFsync  = impl{name: nameFsync, floor: true, open: openFsyncFloor}

	peers  = []impl{implRaftbolt, implDirect, implBoltDB, implWAL}
	floors = []impl{implBoltTx, implFsync}
)

// walStore closes the meta database raft-wal v0.4.0's Close leaves open
// (and locked, so that reopening the directory in the same process would
// wait for ever).
type walStore struct {
	*raftwal.WAL
	meta *metadb.BoltMetaDB
}

func openWAL(dir string) (logStore, error) {
	meta := &metadb.BoltMetaDB{}
	w, err := raftwal.Open(dir, raftwal.WithMetaStore(meta), raftwal.WithLogger(hclog.NewNullLogger()))
	if err != nil {
		_ = meta.Close()
		return nil, err
	}
	return &walStore{WAL: w, meta: meta}, nil
}

func (w *walStore) Close() error {
	return errors.Join(w.WAL.Close(), w.meta.Close())
}

var errFloor = errors.New("a floor only stores")

// floorStore leaves everything but StoreLogs unimplemented.
type floorStore struct{}

func (floorStore) GetLog(uint64, *raft.Log) error { return errFloor }
func (floorStore) FirstIndex() (uint64, error)    { return 0, errFloor }
func (floorStore) LastIndex() (uint64, error)     { return 0, errFloor }
func (floorStore) DeleteRange(uint64, uint64) error {
	return errFloor
}

// boltFloor is one bare bbolt transaction per StoreLogs, with the options
// raftbolt uses (hashmap freelist, not synced at each commit; the bucket
// packed full): each entry's Data is put under its 8-byte big-endian index.
// bbolt syncs twice per commit (the pages, then the meta page).
type boltFloor struct {
	floorStore
	db *bbolt.DB
}

var floorBucket = []byte("log")

func openBoltFloor(dir string) (logStore, error) {
	db, err := bbolt.Open(filepath.Join(dir, "bolt.db"), 0o600, &bbolt.Options{
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(floorBucket)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &boltFloor{db: db}, nil
}

func (f *boltFloor) StoreLogs(logs []*raft.Log) error {
	return f.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(floorBucket)
		b.FillPercent = 1.0
		for _, l := range logs {
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], l.Index)
			if err := b.Put(k[:], l.Data); err != nil {
				return err
			}
		}
		return nil
	})
}

func (f *boltFloor) Close() error { return f.db.Close() }

// fsyncFloor is one write of the batch's payloads into a preallocated file
// followed by one fdatasync: what a write-ahead log such as raft-wal pays at
// least per append.
type fsyncFloor struct {
	floorStore
	f   *os.File
	off int64
	buf []byte
}

const fsyncFloorSize = 64 << 20 // raft-wal's segment size

func openFsyncFloor(dir string) (logStore, error) {
	f, err := os.OpenFile(filepath.Join(dir, "floor.log"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	// Written out once, so that the timed writes change no file metadata.
	if _, err := f.WriteAt(make([]byte, fsyncFloorSize), 0); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("preallocate: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return nil, err
	}
	return &fsyncFloor{f: f}, nil
}

func (f *fsyncFloor) StoreLogs(logs []*raft.Log) error {
	f.buf = f.buf[:0]
	for _, l := range logs {
		f.buf = append(f.buf, l.Data...)
	}
	if f.off+int64(len(f.buf)) > fsyncFloorSize {
		f.off = 0
	}
	if _, err := f.f.WriteAt(f.buf, f.off); err != nil {
		return err
	}
	f.off += int64(len(f.buf))
	return fdatasync(f.f)
}

func (f *fsyncFloor) Close() error { return f.f.Close() }
