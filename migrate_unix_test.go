//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package raftbolt

import (
	"context"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func init() { children["migrate"] = migrateChild }

// migrateChild runs one Migrate and reports its result. args: the source,
// the destination, and a file size limit in bytes (0: none).
func migrateChild(args []string) error {
	src, dst := args[0], args[1]
	if limit, _ := strconv.ParseUint(args[2], 10, 64); limit > 0 {
		// Writes past limit bytes fail with EFBIG, as a full disk fails them
		// with ENOSPC; without the signal ignored they would kill us.
		signal.Ignore(syscall.SIGXFSZ)
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
			return err
		}
	}
	say("started")
	say("result: %v", Migrate(src, dst, migrateOptions()))
	return nil
}

// runMigrate runs migrateChild to its end and returns what it reported.
func runMigrate(t *testing.T, src, dst string, limit int64) string {
	t.Helper()
	lines, err := startChild(t, context.Background(), "migrate", src, dst, strconv.FormatInt(limit, 10)).wait(2 * time.Minute)
	res := strings.Join(lines, "\n")
	require.NoError(t, err, "%s", res)
	return res
}

func TestMigrateDiskFull(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "raft.db")
	boltDBFile{logs: boltDBEntries(1, 2000), stable: raftStableKeys()}.write(t, src)
	before := fileHash(t, src)
	out := t.TempDir()
	dst := filepath.Join(out, "raftbolt.db")

	// The copy needs more than a megabyte; the file system "fills" at 256 KiB.
	res := runMigrate(t, src, dst, 256<<10)
	require.Contains(t, res, "result: raftbolt: migrate "+src)
	require.Contains(t, res, "file too large")
	require.Contains(t, res, "is the file system full?")
	require.Contains(t, res, "the source is untouched")
	requireNoLeftovers(t, out)
	require.Equal(t, before, fileHash(t, src))
}

// TestMigrateCrash kills Migrate at random moments: each time dst is
// either absent or complete, and src is unchanged.
func TestMigrateCrash(t *testing.T) {
	n, runs := uint64(8000), 10
	if testing.Short() {
		n, runs = 5000, 4
	}
	rng := rand.New(rand.NewPCG(testSeed(t), 7))
	dir := t.TempDir()
	src := filepath.Join(dir, "raft.db")
	boltDBFile{logs: boltDBEntries(1, n), stable: raftStableKeys()}.write(t, src)
	before := fileHash(t, src)

	// One run to completion measures how long a migration takes.
	start := time.Now()
	dst := filepath.Join(t.TempDir(), "raftbolt.db")
	require.Contains(t, runMigrate(t, src, dst, 0), "result: <nil>")
	full := time.Since(start)

	complete := 0
	for run := 0; run < runs; run++ {
		dst := filepath.Join(t.TempDir(), "raftbolt.db")
		var lines []string
		_, killed := runToKill(t, rng, kill{after: 1 + time.Duration(rng.Int64N(int64(full))), mayFinish: true},
			func(line string) bool { lines = append(lines, line); return false },
			"migrate", src, dst, "0")
		if !killed {
			// It finished first: then it must have succeeded.
			require.Contains(t, lines, "result: <nil>", "run %d finished before its kill: %s", run, strings.Join(lines, "\n"))
		}
		if _, err := os.Stat(dst); err != nil {
			require.True(t, os.IsNotExist(err), "%v", err)
			require.True(t, killed, "run %d: Migrate succeeded and left no %s", run, dst)
			continue
		}
		complete++
		s := requireMigrated(t, src, dst, 1, n, raftStableKeys())
		require.NoError(t, s.Close())
	}
	t.Logf("%d of %d killed migrations had completed", complete, runs)
	require.Equal(t, before, fileHash(t, src))
}
