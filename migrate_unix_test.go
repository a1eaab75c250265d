//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package raftbolt

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The child side of the tests below: the test binary re-executed runs one
// Migrate and reports its result on stdout.
const migrateChildEnv = "RAFTBOLT_MIGRATE_CHILD"

func TestMigrateChild(t *testing.T) {
	args := os.Getenv(migrateChildEnv)
	if args == "" {
		t.Skip("only run as the child of another test")
	}
	parts := strings.Split(args, "|")
	src, dst := parts[0], parts[1]
	if limit, _ := strconv.ParseUint(parts[2], 10, 64); limit > 0 {
		// Writes past limit bytes fail with EFBIG, as a full disk fails them
		// with ENOSPC; without the signal ignored they would kill us.
		signal.Ignore(syscall.SIGXFSZ)
		require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}))
	}
	fmt.Println("started")
	err := Migrate(src, dst, migrateOptions())
	fmt.Printf("result: %v\n", err)
}

func migrateChild(t *testing.T, src, dst string, limit int64) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestMigrateChild$", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%d", migrateChildEnv, src, dst, limit))
	return cmd
}

func TestMigrateDiskFull(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "raft.db")
	boltDBFile{logs: boltDBEntries(1, 2000), stable: raftStableKeys()}.write(t, src)
	before := fileHash(t, src)
	out := t.TempDir()
	dst := filepath.Join(out, "raftbolt.db")

	// The copy needs more than a megabyte; the file system "fills" at 256 KiB.
	res, err := migrateChild(t, src, dst, 256<<10).CombinedOutput()
	require.NoError(t, err, "%s", res)
	require.Contains(t, string(res), "result: raftbolt: migrate "+src)
	require.Contains(t, string(res), "file too large")
	require.Contains(t, string(res), "is the file system full?")
	require.Contains(t, string(res), "the source is untouched")
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
	dir := t.TempDir()
	src := filepath.Join(dir, "raft.db")
	boltDBFile{logs: boltDBEntries(1, n), stable: raftStableKeys()}.write(t, src)
	before := fileHash(t, src)

	// One run to completion measures how long a migration takes.
	start := time.Now()
	dst := filepath.Join(t.TempDir(), "raftbolt.db")
	res, err := migrateChild(t, src, dst, 0).CombinedOutput()
	require.NoError(t, err, "%s", res)
	require.Contains(t, string(res), "result: <nil>")
	full := time.Since(start)

	complete := 0
	for run := 0; run < runs; run++ {
		dst := filepath.Join(t.TempDir(), "raftbolt.db")
		cmd := migrateChild(t, src, dst, 0)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		require.NoError(t, cmd.Start())
		timer := time.AfterFunc(rand.N(full), func() { _ = cmd.Process.Kill() })
		_ = cmd.Wait()
		timer.Stop()
		if _, err := os.Stat(dst); err != nil {
			require.True(t, os.IsNotExist(err), "%v", err)
			continue
		}
		complete++
		s := requireMigrated(t, src, dst, 1, n, raftStableKeys())
		require.NoError(t, s.Close())
	}
	t.Logf("%d of %d killed migrations had completed", complete, runs)
	require.Equal(t, before, fileHash(t, src))
}
