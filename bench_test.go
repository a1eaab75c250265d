package raftbolt

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// Benchmarks of raftbolt alone. Writes use the durable defaults (an fsync
// per commit), as a user gets them; fixtures are built with NoSync, which
// changes nothing in the file. The side-by-side comparison with
// hashicorp/raft-boltdb and hashicorp/raft-wal is in compat/bench.
//
//	go test -run '^$' -bench . -benchmem
//
// Every benchmark uses b.Loop, so its setup (the 1M-entry store of
// BenchmarkOpen included) runs once per -count.

// benchOptions are the defaults, quiet: durable unless noSync.
func benchOptions(noSync bool) *Options {
	return &Options{NoSync: noSync, Logger: hclog.NewNullLogger(), MetricsInterval: -1}
}

// benchLogs returns n entries of size bytes of data, indexes to be set.
func benchLogs(n, size int) []*raft.Log {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + 3)
	}
	at := time.Now()
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: at}
	}
	return logs
}

// benchFill appends n entries of size bytes after the store's last index,
// in batches of batch.
func benchFill(b *testing.B, s *Store, n, size, batch int) {
	b.Helper()
	logs := benchLogs(batch, size)
	next, err := s.LastIndex()
	require.NoError(b, err)
	for done := 0; done < n; done += batch {
		k := min(batch, n-done)
		for i, l := range logs[:k] {
			l.Index = next + 1 + uint64(i)
		}
		require.NoError(b, s.StoreLogs(logs[:k]))
		next += uint64(k)
	}
}

// benchStore opens a store in b's temp dir holding n entries of size bytes.
func benchStore(b *testing.B, opts *Options, n, size int) *Store {
	b.Helper()
	s := openAt(b, filepath.Join(b.TempDir(), "raft.db"), opts)
	benchFill(b, s, n, size, 4096)
	return s
}

func BenchmarkStoreLogs(b *testing.B) {
	for _, c := range []struct {
		name    string
		n, size int
	}{
		{"1x256B", 1, 256},
		{"64x4KiB", 64, 4096},
		{"512x128B", 512, 128},
	} {
		for _, journal := range []bool{true, false} {
			name := c.name
			if !journal {
				name += "-nojournal"
			}
			b.Run(name, func(b *testing.B) {
				o := benchOptions(false)
				o.NoJournal = !journal
				s := openAt(b, filepath.Join(b.TempDir(), "raft.db"), o)
				logs := benchLogs(c.n, c.size)
				next := uint64(1)
				b.SetBytes(int64(c.n * c.size))
				b.ReportAllocs()
				for b.Loop() {
					for i, l := range logs {
						l.Index = next + uint64(i)
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
					next += uint64(c.n)
				}
			})
		}
	}
}

func BenchmarkGetLog(b *testing.B) {
	// recent: the newest entries, which the cache serves.
	b.Run("recent", func(b *testing.B) {
		s := benchStore(b, benchOptions(true), 1000, 256)
		var l raft.Log
		i := uint64(0)
		b.ReportAllocs()
		for b.Loop() {
			if err := s.GetLog(1+i%1000, &l); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	// cold: random entries of a store reopened after it was written, so
	// that no cache holds them (the OS's page cache does).
	b.Run("cold", func(b *testing.B) {
		const n = 100_000
		s := reopen(b, benchStore(b, benchOptions(true), n, 256))
		rng := rand.New(rand.NewPCG(1, 2))
		var l raft.Log
		b.ReportAllocs()
		for b.Loop() {
			if err := s.GetLog(1+rng.Uint64N(n), &l); err != nil {
				b.Fatal(err)
			}
		}
		entries, _ := s.cache.Len()
		require.Zero(b, entries, "cold reads must not fill the cache")
	})
}

func BenchmarkFirstLastIndex(b *testing.B) {
	s := benchStore(b, benchOptions(true), 100, 16)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.FirstIndex(); err != nil {
			b.Fatal(err)
		}
		if _, err := s.LastIndex(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeleteRangeHead times raft's log compaction: deleting the 64
// oldest entries (durable), the appends that replace them not timed.
func BenchmarkDeleteRangeHead(b *testing.B) {
	const k = 64
	s := benchStore(b, benchOptions(false), 10_000, 256)
	logs := benchLogs(k, 256)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		last, _ := s.LastIndex()
		for i, l := range logs {
			l.Index = last + 1 + uint64(i)
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
		first, _ := s.FirstIndex()
		b.StartTimer()
		if err := s.DeleteRange(first, first+k-1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen opens a cleanly closed store of 1M entries of 128 bytes
// (about 190 MB); Close is not timed. Close persists bbolt's freelist, so
// Open reads one page instead of walking the file.
func BenchmarkOpen(b *testing.B) {
	const n = 1_000_000
	path := filepath.Join(b.TempDir(), "raft.db")
	s := openAt(b, path, benchOptions(true))
	benchFill(b, s, n, 128, 4096)
	require.NoError(b, s.Close())
	b.ReportAllocs()
	for b.Loop() {
		s, err := Open(path, benchOptions(false))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if last, _ := s.LastIndex(); last != n {
			b.Fatalf("last index %d, want %d", last, n)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkOpenAfterCrash opens, as after a crash, a store of 1M entries
// to which 14 MiB of batches were appended since: with the journal, they
// are past the last checkpoint, filling the 16 MiB journal (the worst
// case: StoreLogs waits for checkpoints from 4 MiB pending on, so only
// checkpoints failing for a while leave that much), whose commit wrote
// bbolt's freelist, so Open reads the journal and skips the walk of every
// page; without, they are in the file, whose freelist no commit wrote, so
// Open walks every page.
func BenchmarkOpenAfterCrash(b *testing.B) {
	for _, journal := range []bool{false, true} {
		b.Run(map[bool]string{false: "file", true: "journal"}[journal], func(b *testing.B) { benchOpenAfterCrash(b, journal) })
	}
}

func benchOpenAfterCrash(b *testing.B, journal bool) {
	const n = 1_000_000
	dir := b.TempDir()
	path := filepath.Join(dir, "raft.db")
	s := openAt(b, path, benchOptions(true))
	benchFill(b, s, n, 128, 4096)
	require.NoError(b, s.Close())
	o := benchOptions(true)
	o.NoJournal, o.CheckpointInterval = !journal, time.Hour
	s = openAt(b, path, o)
	benchFill(b, s, 64, 4096, 64)
	require.NoError(b, s.checkpointNow()) // as the background checkpoint does
	s.ckpt.trigger, s.ckpt.limit = math.MaxInt, math.MaxInt
	benchFill(b, s, 56*64, 4096, 64)
	st, err := s.Stats()
	require.NoError(b, err)
	files := map[string][]byte{}
	suffixes := []string{""}
	if journal {
		require.Equal(b, 56, st.JournalBatches, "the batches must still be pending")
		suffixes = append(suffixes, journalSuffix)
	}
	for _, suffix := range suffixes {
		files[suffix], err = os.ReadFile(path + suffix)
		require.NoError(b, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		copyPath := filepath.Join(b.TempDir(), "raft.db")
		for suffix, data := range files {
			require.NoError(b, os.WriteFile(copyPath+suffix, data, 0o600))
		}
		b.StartTimer()
		c, err := Open(copyPath, o)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if last, _ := c.LastIndex(); last != n+57*64 {
			b.Fatalf("last index %d, want %d", last, n+57*64)
		}
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// nopFSM counts what it applies.
type nopFSM struct{ applied uint64 }

func (f *nopFSM) Apply(*raft.Log) interface{}         { f.applied++; return nil }
func (f *nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (f *nopFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type nopSnapshot struct{}

func (nopSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (nopSnapshot) Release()                             {}

// BenchmarkRaftApply runs a single-node raft on a durable store and applies
// 256-byte commands: "sequential" waits for each one (commit latency);
// "pipelined" keeps up to 256 in flight with raft.Config.BatchApplyCh set,
// so raft groups up to MaxAppendEntries (64) of them into one StoreLogs
// (throughput). Without BatchApplyCh raft's apply channel is unbuffered and
// one goroutine's commands are never grouped.
func BenchmarkRaftApply(b *testing.B) {
	for _, inflight := range []int{1, 256} {
		name := "sequential"
		if inflight > 1 {
			name = fmt.Sprintf("pipelined-%d", inflight)
		}
		b.Run(name, func(b *testing.B) {
			r := benchRaft(b, inflight > 1)
			cmd := make([]byte, 256)
			var pending []raft.ApplyFuture
			b.ReportAllocs()
			for b.Loop() {
				pending = append(pending, r.Apply(cmd, 10*time.Second))
				if len(pending) == inflight {
					if err := pending[0].Error(); err != nil {
						b.Fatal(err)
					}
					pending = pending[1:]
				}
			}
			for _, f := range pending {
				if err := f.Error(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchRaft(b *testing.B, batch bool) *raft.Raft {
	b.Helper()
	dir := b.TempDir()
	store := openAt(b, filepath.Join(dir, "raft.db"), benchOptions(false))
	conf := raft.DefaultConfig()
	conf.LocalID = "node-1"
	conf.Logger = hclog.NewNullLogger()
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.BatchApplyCh = batch
	_, trans := raft.NewInmemTransport("node-1")
	r, err := raft.NewRaft(conf, NewFSM(store, &nopFSM{}), store, store, raft.NewInmemSnapshotStore(), trans)
	require.NoError(b, err)
	b.Cleanup(func() { _ = r.Shutdown().Error() })
	cfg := raft.Configuration{Servers: []raft.Server{{ID: "node-1", Address: trans.LocalAddr()}}}
	require.NoError(b, r.BootstrapCluster(cfg).Error())
	require.Eventually(b, func() bool { return r.State() == raft.Leader }, 10*time.Second, 5*time.Millisecond)
	return r
}
