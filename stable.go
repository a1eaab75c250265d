package raftbolt

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// This file holds the raft.StableStore methods of Store. Values are kept
// as value records (internal/codec) whose checksum covers their key.
//
// raft reads its few stable keys (CurrentTerm, LastVoteTerm, LastVoteCand)
// on every election and vote, and writes them rarely, so Get serves them
// from stableMirror, a copy in memory, rather than beginning a bbolt
// transaction for each (which allocates about twenty objects).

// Bounds of the mirror: raft uses three keys; an application that keeps
// many, or large values, in the stable store reads the rest from the file.
const (
	maxMirroredKeys  = 64
	maxMirroredValue = 4 << 10 // bytes
)

// stableMirror holds the committed values of some stable keys, and which
// keys the file does not hold. A key it lacks is read from the file.
type stableMirror struct {
	// vals is never changed once published: a change publishes a new map,
	// so readers load it without a lock.
	vals atomic.Pointer[map[string]mirroredValue]
	// mu serializes every change of vals: Set's, after its transaction
	// committed, and the first read of a key, which holds it from the
	// transaction that reads the file until the value is published. So a
	// read that began before a Set committed cannot publish its older value
	// after the Set published the new one.
	mu sync.Mutex
}

type mirroredValue struct {
	val []byte // the value, never changed; nil when !ok
	ok  bool   // false: the file does not hold the key
}

// get returns the mirrored value of key, if the mirror has one.
func (m *stableMirror) get(key []byte) (mirroredValue, bool) {
	vals := m.vals.Load()
	if vals == nil {
		return mirroredValue{}, false
	}
	v, ok := (*vals)[string(key)]
	return v, ok
}

// set publishes v as the value of key; a nil v, a value over
// maxMirroredValue, or a new key when the mirror is full drops key from it
// instead. The caller holds mu.
func (m *stableMirror) set(key []byte, v *mirroredValue) {
	var old map[string]mirroredValue
	if p := m.vals.Load(); p != nil {
		old = *p
	}
	_, had := old[string(key)]
	if v != nil && (len(v.val) > maxMirroredValue || !had && len(old) >= maxMirroredKeys) {
		v = nil
	}
	if v == nil && !had {
		return
	}
	vals := make(map[string]mirroredValue, len(old)+1)
	maps.Copy(vals, old)
	if v == nil {
		delete(vals, string(key))
	} else {
		vals[string(key)] = *v
	}
	m.vals.Store(&vals)
}

// Set stores a StableStore key. The key must be non-empty and at most
// bbolt.MaxKeySize bytes.
func (s *Store) Set(key, val []byte) error {
	const op = "set"
	if err := s.lockWrite(); err != nil {
		return err
	}
	defer s.unlockWrite()
	if err := checkKey(key); err != nil {
		return opError(op, s.path, err)
	}
	if len(val) > bbolt.MaxValueSize {
		return opError(op, s.path, invalidf("value of key %q is %d bytes, over bbolt's limit of %d", key, len(val), bbolt.MaxValueSize))
	}
	rec := codec.AppendValue(nil, key, val)
	err := s.update(op, func(tx *bbolt.Tx) error {
		b, err := layout.LogStore.Buckets(tx)
		if err != nil {
			return err
		}
		return b.Stable.Put(key, rec)
	})
	s.stable.mu.Lock()
	defer s.stable.mu.Unlock()
	if err != nil {
		// The mirror still holds what bbolt holds, but a failed commit
		// may leave the file unsure: let the next read ask bbolt.
		s.stable.set(key, nil)
		return err
	}
	s.stable.set(key, &mirroredValue{val: append(make([]byte, 0, len(val)), val...), ok: true})
	return nil
}

// Get returns the value of a StableStore key: a copy the caller keeps. A
// key that was never set returns ErrKeyNotFound itself.
func (s *Store) Get(key []byte) ([]byte, error) {
	var val []byte
	err := s.getStable("get", key, func(v []byte) {
		val = append(make([]byte, 0, len(v)), v...)
	})
	return val, err
}

// SetUint64 stores a StableStore key holding a uint64 (8 bytes, big-endian,
// as hashicorp/raft-boltdb stores them).
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, codec.PutUint64(val))
}

// GetUint64 returns a uint64 stored with SetUint64. A key that was never
// set returns (0, ErrKeyNotFound); a value that is not 8 bytes long is
// ErrCorrupt.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	var n uint64
	var size int
	ok := true
	err := s.getStable("get", key, func(v []byte) {
		size = len(v)
		n, ok = codec.Uint64(v)
	})
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, opError("get uint64", s.path, corruptf("stable key %q holds %d bytes, not an 8-byte integer", key, size))
	}
	return n, nil
}

// getStable calls fn with the committed value of key, which fn must not
// keep, from the mirror or else from the file. A value read from the file
// is mirrored only once it decoded, so a damaged one is ErrCorrupt on
// every read.
func (s *Store) getStable(op string, key []byte, fn func(v []byte)) error {
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.runlock()
	if err := checkKey(key); err != nil {
		return opError(op, s.path, err)
	}
	if v, ok := s.stable.get(key); ok {
		return v.answer(fn)
	}
	s.stable.mu.Lock()
	defer s.stable.mu.Unlock()
	if v, ok := s.stable.get(key); ok {
		return v.answer(fn) // another reader or a Set was first
	}
	var v mirroredValue
	err := s.view(op, func(tx *bbolt.Tx) error {
		b, err := layout.LogStore.Buckets(tx)
		if err != nil {
			return err
		}
		rec := b.Stable.Get(key)
		if rec == nil {
			return nil
		}
		val, err := codec.DecodeValue(key, rec)
		if err != nil {
			return corruptf("stable key %q: %v", key, err)
		}
		// bbolt's bytes are only valid inside the transaction.
		v = mirroredValue{val: append(make([]byte, 0, len(val)), val...), ok: true}
		return nil
	})
	if err != nil {
		return err
	}
	s.stable.set(key, &v)
	return v.answer(fn)
}

func (v mirroredValue) answer(fn func(v []byte)) error {
	if !v.ok {
		return ErrKeyNotFound
	}
	fn(v.val)
	return nil
}

func checkKey(key []byte) error {
	if len(key) == 0 {
		return invalidf("empty key")
	}
	if len(key) > bbolt.MaxKeySize {
		return invalidf("key of %d bytes, over bbolt's limit of %d", len(key), bbolt.MaxKeySize)
	}
	return nil
}
