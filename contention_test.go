package raftbolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
)

func init() {
	children["hold"] = holdChild
	children["tryopen"] = tryOpenChild
}

// holdChild opens the store (read-only when args[1] is "ro"), reports
// "held", and keeps it open until its stdin closes.
func holdChild(args []string) error {
	s, err := Open(args[0], &Options{ReadOnly: args[1] == "ro", Logger: hclog.NewNullLogger(), MetricsInterval: -1})
	if err != nil {
		return err
	}
	say("held")
	_, _ = os.Stdin.Read(make([]byte, 1))
	return s.Close()
}

// tryOpenChild opens the store once with the given mode and lock timeout
// (milliseconds) and reports the outcome and how long it waited.
func tryOpenChild(args []string) error {
	ms, _ := strconv.Atoi(args[2])
	start := time.Now()
	s, err := Open(args[0], &Options{ReadOnly: args[1] == "ro", LockTimeout: time.Duration(ms) * time.Millisecond,
		Logger: hclog.NewNullLogger(), MetricsInterval: -1})
	waited := time.Since(start).Milliseconds()
	switch {
	case err == nil:
		say("opened %d", waited)
		return s.Close()
	case errors.Is(err, ErrLocked):
		say("locked %d %s", waited, err)
	default:
		say("error %d %s", waited, err)
	}
	return nil
}

func tryOpen(t *testing.T, path, mode string, timeout time.Duration) (outcome string, waited time.Duration, msg string) {
	t.Helper()
	lines, err := startChild(t, context.Background(), "tryopen", path, mode, strconv.Itoa(int(timeout.Milliseconds()))).wait(time.Minute)
	require.NoError(t, err)
	require.Len(t, lines, 1)
	f := strings.SplitN(lines[0], " ", 3)
	ms, _ := strconv.Atoi(f[1])
	if len(f) > 2 {
		msg = f[2]
	}
	return f[0], time.Duration(ms) * time.Millisecond, msg
}

func TestSecondProcessGetsErrLocked(t *testing.T) {
	s := openTest(t)
	require.NoError(t, s.StoreLogs(entries(1, 3)))
	for _, mode := range []string{"rw", "ro"} {
		outcome, waited, msg := tryOpen(t, s.Path(), mode, 300*time.Millisecond)
		require.Equal(t, "locked", outcome, "%s open: %s", mode, msg)
		require.GreaterOrEqual(t, waited, 300*time.Millisecond, "gave up before LockTimeout")
		require.Contains(t, msg, s.Path())
		require.Contains(t, msg, "another")
	}

	// And the other way round: a process holds it, this one waits.
	require.NoError(t, s.Close())
	holder := startChild(t, context.Background(), "hold", s.Path(), "rw")
	require.Equal(t, "held", holder.next(t, time.Minute))
	_, err := Open(s.Path(), &Options{LockTimeout: 200 * time.Millisecond, Logger: hclog.NewNullLogger()})
	require.ErrorIs(t, err, ErrLocked)
	require.ErrorContains(t, err, s.Path())
	require.NoError(t, holder.stdin.Close())
	_, err = holder.wait(time.Minute)
	require.NoError(t, err)
	s = openAt(t, s.Path())
	requireLog(t, s, 1, 3)
}

func TestReadOnlyInspectionBesideOtherReaders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s := openAt(t, path)
	require.NoError(t, s.StoreLogs(entries(1, 50)))
	require.NoError(t, s.Close())

	var readers []*child
	for i := 0; i < 2; i++ {
		c := startChild(t, context.Background(), "hold", path, "ro")
		require.Equal(t, "held", c.next(t, time.Minute))
		readers = append(readers, c)
	}
	outcome, _, msg := tryOpen(t, path, "ro", time.Second)
	require.Equal(t, "opened", outcome, msg)
	ro, err := Open(path, &Options{ReadOnly: true, Logger: hclog.NewNullLogger()})
	require.NoError(t, err)
	requireLog(t, ro, 1, 50)
	require.NoError(t, ro.Check())
	require.NoError(t, ro.Close())

	// A writer waits for the readers.
	outcome, _, msg = tryOpen(t, path, "rw", 200*time.Millisecond)
	require.Equal(t, "locked", outcome, msg)
	for _, c := range readers {
		require.NoError(t, c.stdin.Close())
		_, err := c.wait(time.Minute)
		require.NoError(t, err)
	}
	outcome, _, msg = tryOpen(t, path, "rw", time.Second)
	require.Equal(t, "opened", outcome, fmt.Sprint(msg))
}
