package raftbolt

import (
	"github.com/raftbolt/raftbolt/internal/codec"
	"go.etcd.io/bbolt"
)

// This file holds the raft.StableStore methods of Store. Values are kept
// as value records (internal/codec) whose checksum covers their key.

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
	return s.update(op, func(tx *bbolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		return b.stable.Put(key, rec)
	})
}

// Get returns the value of a StableStore key: a copy the caller keeps. A
// key that was never set returns ErrKeyNotFound itself.
func (s *Store) Get(key []byte) ([]byte, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.dbMu.RUnlock()
	if err := checkKey(key); err != nil {
		return nil, opError("get", s.path, err)
	}
	var val []byte
	err := s.view("get", func(tx *bbolt.Tx) error {
		b, err := openBuckets(tx)
		if err != nil {
			return err
		}
		rec := b.stable.Get(key)
		if rec == nil {
			return ErrKeyNotFound
		}
		v, err := codec.DecodeValue(key, rec)
		if err != nil {
			return corruptf("stable key %q: %v", key, err)
		}
		val = append(make([]byte, 0, len(v)), v...)
		return nil
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
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	n, ok := codec.Uint64(v)
	if !ok {
		return 0, opError("get uint64", s.path, corruptf("stable key %q holds %d bytes, not an 8-byte integer", key, len(v)))
	}
	return n, nil
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
