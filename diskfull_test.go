//go:build linux

package raftbolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

func init() { children["fill"] = fillChild }

// fillEntry is the entry the fill child writes at index i: 4 KiB.
func fillEntry(i uint64) *raft.Log {
	l := entry(i)
	l.Data = []byte(strings.Repeat(strconv.FormatUint(i, 10)+",", 4096)[:4096])
	return l
}

// fillChild appends until the disk (or RLIMIT_FSIZE, when args[1] is a
// byte limit) refuses a write, checks that the store still reads and still
// refuses cleanly, then (with a limit) lifts the limit and writes on.
func fillChild(args []string) error {
	path := args[0]
	s, err := Open(path, &Options{Logger: hclog.NewNullLogger(), MetricsInterval: -1})
	if err != nil {
		return err
	}
	limited := len(args) > 1
	var rl syscall.Rlimit
	if limited {
		limit, _ := strconv.ParseUint(args[1], 10, 64)
		if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
			return err
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: rl.Max}); err != nil {
			return err
		}
	}
	var full error
	next := uint64(1)
	for next < 1<<20 {
		batch := []*raft.Log{}
		for i := next; i < next+8; i++ {
			batch = append(batch, fillEntry(i))
		}
		if full = s.StoreLogs(batch); full != nil {
			break
		}
		next += 8
	}
	if full == nil {
		return errors.New("the disk never filled")
	}
	say("full %d %s", next-1, strings.ReplaceAll(full.Error(), "\n", " "))
	if err := verifyFill(s, next-1); err != nil {
		return fmt.Errorf("reading while full: %w", err)
	}
	if err := s.Set([]byte("k"), make([]byte, 1<<20)); err == nil {
		return errors.New("a 1 MiB Set succeeded on a full disk")
	}
	if err := s.StoreLogs([]*raft.Log{fillEntry(next)}); err == nil {
		next++ // a smaller write may fit in the pages the failed one left free
	}
	if limited {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
			return err
		}
		for i := 0; i < 10; i++ {
			batch := []*raft.Log{}
			for j := next; j < next+8; j++ {
				batch = append(batch, fillEntry(j))
			}
			if err := s.StoreLogs(batch); err != nil {
				return fmt.Errorf("after the limit was lifted: %w", err)
			}
			next += 8
		}
		if err := verifyFill(s, next-1); err != nil {
			return fmt.Errorf("after the limit was lifted: %w", err)
		}
	}
	say("last %d", next-1)
	return s.Close()
}

func verifyFill(s *Store, last uint64) error {
	if l, _ := s.LastIndex(); l != last {
		return fmt.Errorf("last index %d, expected %d", l, last)
	}
	for i := uint64(1); i <= last; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			return err
		}
		if string(l.Data) != string(fillEntry(i).Data) {
			return fmt.Errorf("entry %d differs", i)
		}
	}
	return nil
}

// runFill runs fillChild and returns its report lines.
func runFill(t *testing.T, args ...string) (full, last uint64) {
	t.Helper()
	lines, err := startChild(t, context.Background(), "fill", args...).wait(2 * time.Minute)
	require.NoError(t, err, "the child crashed or failed:\n%s", strings.Join(lines, "\n"))
	for _, l := range lines {
		f := strings.Fields(l)
		n, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "full":
			full = n
			t.Logf("write refused after entry %d: %s", n, strings.Join(f[2:], " "))
		case "last":
			last = n
		}
	}
	require.NotZero(t, full)
	return full, last
}

// TestFileSizeLimit fills a store up to RLIMIT_FSIZE (the process gets EFBIG;
// Go ignores SIGXFSZ), then lifts the limit and writes on.
func TestFileSizeLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	_, last := runFill(t, path, strconv.Itoa(4<<20))
	s := openAt(t, path)
	require.NoError(t, s.Check())
	require.NoError(t, verifyFill(s, last))
}

// TestDiskFull fills a small tmpfs, where the machine lets the test mount
// one (it needs CAP_SYS_ADMIN).
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=6m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	path := filepath.Join(dir, "raft.db")
	full, last := runFill(t, path)
	require.GreaterOrEqual(t, last, full)

	// Everything acknowledged survives a reopen on the still-full disk.
	s := openAt(t, path)
	require.NoError(t, verifyFill(s, last))
	require.NoError(t, s.Check())
	require.NoError(t, s.Close())

	// Free the disk by moving the file to a larger one: writing resumes.
	big := filepath.Join(t.TempDir(), "raft.db")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(big, data, 0o600))
	s = openAt(t, big)
	require.NoError(t, s.StoreLogs([]*raft.Log{fillEntry(last + 1)}))
	require.NoError(t, verifyFill(s, last+1))
}
