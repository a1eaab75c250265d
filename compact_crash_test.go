package raftbolt

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

func init() { children["compactloop"] = compactLoopChild }

// compactEntry is a 1 KiB entry, so that the live log takes a while to copy.
func compactEntry(i uint64) *raft.Log {
	l := entry(i)
	l.Data = []byte(strings.Repeat(strconv.FormatUint(i, 10)+";", 1024)[:1024])
	return l
}

// compactLoopChild compacts the store over and over while a writer appends
// and truncates the head, reporting every acknowledged append.
func compactLoopChild(args []string) error {
	s, err := Open(args[0], &Options{Logger: hclog.NewNullLogger(), MetricsInterval: -1, NoJournal: !testJournal})
	if err != nil {
		return err
	}
	errs := make(chan error, 1)
	go func() {
		for {
			last, _ := s.LastIndex()
			if err := s.StoreLogs([]*raft.Log{compactEntry(last + 1), compactEntry(last + 2)}); err != nil {
				errs <- err
				return
			}
			say("ack %d", last+2)
			if (last+2)%200 == 0 {
				first, _ := s.FirstIndex()
				if err := s.DeleteRange(first, first+99); err != nil {
					errs <- err
					return
				}
				say("head %d", first+100)
			}
		}
	}()
	for {
		say("compacting")
		if err := s.Compact(); err != nil {
			return err
		}
		select {
		case err := <-errs:
			return err
		default:
		}
	}
}

// TestCompactCrash kills a child at random moments while it compacts the
// store and appends to it: after each kill the store opens, holds every
// acknowledged entry, checks clean, and no partial copy is left.
func TestCompactCrash(t *testing.T) {
	kills := killCount(8, 200)
	seed := testSeed(t)
	path := filepath.Join(t.TempDir(), "raft.db")
	s := openAt(t, path)
	for i := uint64(1); i <= 40000; i += 500 {
		var batch []*raft.Log
		for j := i; j < i+500; j++ {
			batch = append(batch, compactEntry(j))
		}
		require.NoError(t, s.StoreLogs(batch))
	}
	require.NoError(t, s.DeleteRange(1, 30000)) // 10 MiB live in a 40 MiB file
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 11))
	require.NoError(t, s.StoreConfiguration(30001, testConfiguration("a", "b")))
	require.NoError(t, s.Close())

	rng := rand.New(rand.NewPCG(seed, 6))
	first, acked := uint64(30001), uint64(40000)
	compactions, midCopy := 0, 0
	for k := 0; k < kills; k++ {
		// Every line counts, also those written after the kill, before
		// the child died: what it acknowledged then survives too.
		after := time.Duration(50+rng.IntN(400)) * time.Millisecond
		runToKill(t, rng, kill{after: after}, func(line string) bool {
			f := strings.Fields(line)
			switch f[0] {
			case "ack":
				acked, _ = strconv.ParseUint(f[1], 10, 64)
			case "head":
				first, _ = strconv.ParseUint(f[1], 10, 64)
			case "compacting":
				compactions++
			}
			return false
		}, "compactloop", path)
		if _, err := os.Stat(path + compactSuffix); err == nil {
			midCopy++ // killed while the copy was being built
		}

		s := openAt(t, path)
		require.NoFileExists(t, path+compactSuffix, "the partial copy was not removed")
		require.NoError(t, s.Check(), "after kill %d", k)
		gotFirst, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		require.GreaterOrEqual(t, last, acked, "after kill %d: acknowledged entries lost", k)
		// A head truncation the child had not reported yet may have
		// happened: it deletes exactly the first 100 entries.
		require.Contains(t, []uint64{first, first + 100}, gotFirst, "after kill %d: entries lost at the head", k)
		for i := gotFirst; i <= last; i++ {
			var l raft.Log
			require.NoError(t, s.GetLog(i, &l), "after kill %d", k)
			require.Equal(t, compactEntry(i).Data, l.Data, "after kill %d, entry %d", k, i)
		}
		term, err := s.GetUint64([]byte("CurrentTerm"))
		require.NoError(t, err)
		require.EqualValues(t, 11, term)
		index, _, err := s.LatestConfiguration()
		require.NoError(t, err)
		require.EqualValues(t, 30001, index)
		first, acked = gotFirst, last
		require.NoError(t, s.Close())
	}
	fi, err := os.Stat(path)
	require.NoError(t, err)
	t.Logf("%d kills during %d compactions, %d of them while the copy was being built; file %d bytes, log %d-%d",
		kills, compactions, midCopy, fi.Size(), first, acked)
}
