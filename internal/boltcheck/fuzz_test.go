package boltcheck

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// boltFile returns the bytes of a small bbolt database with nested and
// inline buckets, closed with and without a synced freelist.
func boltFile(t testing.TB, syncFreelist bool) []byte {
	path := filepath.Join(t.TempDir(), "seed.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: !syncFreelist, PageSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, _ := tx.CreateBucket([]byte("big"))
		for i := 0; i < 200; i++ {
			_ = b.Put([]byte{byte(i >> 8), byte(i)}, bytes.Repeat([]byte{byte(i)}, i%40))
		}
		_ = b.Put([]byte("huge"), make([]byte, 3000))
		nested, _ := b.CreateBucket([]byte("nested"))
		_ = nested.Put([]byte("k"), []byte("v"))
		small, _ := tx.CreateBucket([]byte("small"))
		return small.Put([]byte("a"), []byte("b"))
	})
	if err == nil {
		err = db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("big")).Delete([]byte{0, 5}) })
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestWalkAcceptsRealFiles(t *testing.T) {
	for _, synced := range []bool{true, false} {
		data := boltFile(t, synced)
		rep, err := Inspect(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Meta.FreelistSynced() != synced {
			t.Fatalf("freelist synced = %v", rep.Meta.FreelistSynced())
		}
		if err := Walk(bytes.NewReader(data), rep); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInspectRefusesForeignAndShortFiles(t *testing.T) {
	text := bytes.Repeat([]byte("not a database "), 1000)
	if _, err := Inspect(bytes.NewReader(text), int64(len(text))); err != ErrNotBolt {
		t.Fatalf("text file: %v", err)
	}
	data := boltFile(t, true)
	rep, err := Inspect(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	// Slack past the high water mark may go; a page below it may not.
	used := int(rep.Meta.HighMark) * rep.Meta.PageSize
	if _, err := Inspect(bytes.NewReader(data[:used]), int64(used)); err != nil {
		t.Fatalf("cut at the high water mark: %v", err)
	}
	if _, err := Inspect(bytes.NewReader(data[:used-1]), int64(used-1)); !errors.Is(err, ErrDamaged) {
		t.Fatalf("a truncated file passed: %v", err)
	}
}

// FuzzInspectWalk feeds damaged bbolt files to Inspect and Walk: they may
// refuse them, never panic.
func FuzzInspectWalk(f *testing.F) {
	f.Add(boltFile(f, true))
	f.Add(boltFile(f, false))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := Inspect(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		_ = Walk(bytes.NewReader(data), rep)
	})
}
