package raftbolt

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/raftbolt/raftbolt/internal/layout"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// Get serves the stable keys from a mirror in memory; these tests hold it
// to what the file says through overwrites, misses, Compact and reopen.
func TestStableMirrorFollowsTheFile(t *testing.T) {
	s := openTest(t)
	key := []byte("LastVoteCand")
	requireStable := func(s *Store, want []byte) {
		t.Helper()
		got, err := s.Get(key)
		if want == nil {
			require.True(t, err == ErrKeyNotFound, "want ErrKeyNotFound itself, got %v", err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, want, got)
	}

	requireStable(s, nil) // the miss is mirrored too
	requireStable(s, nil)
	require.NoError(t, s.Set(key, []byte("node-1")))
	requireStable(s, []byte("node-1"))
	val := []byte("node-2")
	require.NoError(t, s.Set(key, val))
	val[0] = 'X' // Set's argument stays the caller's
	requireStable(s, []byte("node-2"))
	require.NoError(t, s.Set(key, nil))
	requireStable(s, []byte{})

	require.NoError(t, s.Set(key, []byte("node-3")))
	require.NoError(t, s.StoreLogs(entries(1, 100)))
	require.NoError(t, s.DeleteRange(1, 90))
	require.NoError(t, s.Compact())
	requireStable(s, []byte("node-3"))
	require.NoError(t, s.Set(key, []byte("node-4")))
	requireStable(s, []byte("node-4"))

	s = reopen(t, s)
	requireStable(s, []byte("node-4"))
	require.NoError(t, s.Close())
	_, err := s.Get(key)
	require.ErrorIs(t, err, ErrClosed)
	_, err = s.GetUint64(key)
	require.ErrorIs(t, err, ErrClosed)

	ro := testOptions()
	ro.ReadOnly = true
	s = openAt(t, s.Path(), ro)
	requireStable(s, []byte("node-4"))
}

// A damaged value is ErrCorrupt on every read, not only the first: a value
// that failed its check is never mirrored. A later Set replaces it.
func TestStableDamagedValueIsNeverMirrored(t *testing.T) {
	s := openTest(t)
	key := []byte("CurrentTerm")
	require.NoError(t, s.SetUint64(key, 7))
	require.NoError(t, s.Close())

	db, err := bbolt.Open(s.Path(), 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		st := tx.Bucket(layout.StableBucket)
		rec := bytes.Clone(st.Get(key))
		rec[2] ^= 1
		return st.Put(key, rec)
	}))
	require.NoError(t, db.Close())

	s = openAt(t, s.Path())
	for range 2 {
		_, err := s.GetUint64(key)
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, "CurrentTerm")
		_, err = s.Get(key)
		require.ErrorIs(t, err, ErrCorrupt)
	}
	require.NoError(t, s.SetUint64(key, 8))
	n, err := s.GetUint64(key)
	require.NoError(t, err)
	require.EqualValues(t, 8, n)
}

// Keys past the mirror's bounds (too many, or too large a value) are read
// from the file, and still follow every Set.
func TestStableMirrorBounds(t *testing.T) {
	s := openTest(t)
	big := bytes.Repeat([]byte("v"), maxMirroredValue+1)
	for round := 0; round < 2; round++ {
		for k := 0; k < 2*maxMirroredKeys; k++ {
			key := []byte(fmt.Sprintf("key-%d", k))
			require.NoError(t, s.Set(key, []byte(fmt.Sprintf("value-%d-%d", k, round))))
			got, err := s.Get(key)
			require.NoError(t, err)
			require.Equal(t, fmt.Sprintf("value-%d-%d", k, round), string(got))
		}
		key := []byte("LastVoteCand")
		require.NoError(t, s.Set(key, []byte("small")))
		require.NoError(t, s.Set(key, big)) // drops the mirrored "small"
		got, err := s.Get(key)
		require.NoError(t, err)
		require.Equal(t, big, got)
	}
	if vals := s.stable.vals.Load(); vals != nil {
		require.LessOrEqual(t, len(*vals), maxMirroredKeys)
		for k, v := range *vals {
			require.LessOrEqual(t, len(v.val), maxMirroredValue, "key %q", k)
		}
	}
	for k := 0; k < 2*maxMirroredKeys; k++ {
		got, err := s.Get([]byte(fmt.Sprintf("key-%d", k)))
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("value-%d-1", k), string(got))
	}
}

// Readers racing with a writer see each key's values in the order they were
// set, and a Set that returned is seen by every read after it. Run with
// -race.
func TestStableConcurrentReadersAndWriter(t *testing.T) {
	s := openTest(t)
	keys := [][]byte{[]byte("CurrentTerm"), []byte("LastVoteTerm")}
	const sets = 300
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := make([]uint64, len(keys))
			for {
				select {
				case <-stop:
					return
				default:
				}
				for k, key := range keys {
					n, err := s.GetUint64(key)
					if err == ErrKeyNotFound && seen[k] == 0 {
						continue
					}
					if err != nil {
						t.Errorf("GetUint64(%s): %v", key, err)
						return
					}
					if n < seen[k] {
						t.Errorf("%s went back from %d to %d", key, seen[k], n)
						return
					}
					seen[k] = n
				}
			}
		}()
	}
	for i := uint64(1); i <= sets; i++ {
		key := keys[i%2]
		require.NoError(t, s.SetUint64(key, i))
		n, err := s.GetUint64(key)
		require.NoError(t, err)
		require.Equal(t, i, n)
	}
	close(stop)
	wg.Wait()
}
