package raftbolt

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBackupUnderAppendsAndTruncations takes backups while a writer keeps
// appending and truncating the head of the log, as raft does. Every backup
// opens, passes Check, and holds a contiguous run of acknowledged entries
// that reaches at least the last one acknowledged before it began.
func TestBackupUnderAppendsAndTruncations(t *testing.T) {
	backups := 20
	if testing.Short() {
		backups = 6
	}
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 100)))
	// acked is the last index StoreLogs acknowledged; written, the last
	// one it was asked to store (set before the call).
	var acked, written atomic.Uint64
	acked.Store(100)
	written.Store(100)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for next := uint64(101); ; next += 50 {
			select {
			case <-stop:
				return
			default:
			}
			written.Store(next + 49)
			if err := s.StoreLogs(entries(next, next+49)); err != nil {
				t.Error(err)
				return
			}
			acked.Store(next + 49)
			// Keep about 500 entries, as raft's TrailingLogs would.
			if next > 500 {
				if err := s.DeleteRange(0, next-500); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()

	dir := t.TempDir()
	for i := 0; i < backups; i++ {
		before := acked.Load()
		var buf bytes.Buffer
		_, err := s.Backup(&buf)
		require.NoError(t, err)
		after := written.Load()

		p := filepath.Join(dir, "backup.db")
		require.NoError(t, os.WriteFile(p, buf.Bytes(), 0o600))
		o := testOptions()
		o.ReadOnly = true
		b := openAt(t, p, o)
		require.NoError(t, b.Check())
		first, _ := b.FirstIndex()
		last, _ := b.LastIndex()
		require.GreaterOrEqual(t, last, before, "backup %d misses acknowledged entries", i)
		require.LessOrEqual(t, last, after, "backup %d holds entries never written", i)
		requireLog(t, b, first, last)
		require.NoError(t, b.Close())
		require.NoError(t, os.Remove(p))
	}
	close(stop)
	wg.Wait()
}
