package raftbolt

import (
	"context"
	"errors"
	"flag"
	"fmt"
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

var corruptTrials = flag.Int("corrupt.trials", 0, "trials in TestCorruptionTrials (default 200, 60 under -race, 3000 with -soak)")

func init() { children["readall"] = readAllChild }

// corruptEntries is the size of the store the corruption trials damage.
const corruptEntries = 1500

// corruptEntry is entry i of that store: sizes vary, so the tree has branch
// pages, leaves of many entries and overflow pages of large ones.
func corruptEntry(i uint64) *raft.Log {
	l := entry(i)
	switch {
	case i%97 == 0:
		l.Data = []byte(strings.Repeat("large-"+strconv.FormatUint(i, 10), 1200))
	case i%3 == 0:
		l.Data = []byte(strings.Repeat("m", int(i%400)))
	}
	return l
}

// buildCorruptBase writes the store the trials damage and returns its
// bytes twice: after a clean Close (bbolt's freelist synced) and as the
// file stood while still open (as after a crash: Open must walk the tree).
func buildCorruptBase(t *testing.T) (clean, crashed []byte) {
	path := filepath.Join(t.TempDir(), "base.db")
	s := openAt(t, path)
	for i := uint64(1); i <= corruptEntries; i += 50 {
		var batch []*raft.Log
		for j := i; j < i+50; j++ {
			batch = append(batch, corruptEntry(j))
		}
		require.NoError(t, s.StoreLogs(batch))
	}
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 42))
	require.NoError(t, s.Set([]byte("LastVoteCand"), []byte("node-7")))
	require.NoError(t, s.StoreConfiguration(1000, testConfiguration("a", "b", "c")))
	require.NoError(t, s.DeleteRange(1, 10)) // some free pages
	require.NoError(t, s.Sync())
	crashed, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	clean, err = os.ReadFile(path)
	require.NoError(t, err)
	return clean, crashed
}

// damage applies one random kind of damage to a copy of base, within its
// first used bytes (past them lie only preallocated zeros).
func damage(rng *rand.Rand, base []byte, used, pageSize int) ([]byte, string) {
	b := append([]byte(nil), base...)
	pages := used / pageSize
	page := func() int { return rng.IntN(pages) }
	switch k := rng.IntN(8); k {
	case 0, 1:
		n := 1 + rng.IntN(16)
		for i := 0; i < n; i++ {
			b[rng.IntN(used)] ^= 1 << rng.IntN(8)
		}
		return b, fmt.Sprintf("%d bits flipped across the file", n)
	case 2:
		p, n := page(), 1+rng.IntN(8)
		for i := 0; i < n; i++ {
			b[p*pageSize+rng.IntN(pageSize)] ^= 1 << rng.IntN(8)
		}
		return b, fmt.Sprintf("%d bits flipped in page %d", n, p)
	case 3:
		p := page()
		clear(b[p*pageSize : (p+1)*pageSize])
		return b, fmt.Sprintf("page %d zeroed", p)
	case 4:
		p := page()
		for i := p * pageSize; i < (p+1)*pageSize; i++ {
			b[i] = byte(rng.Uint32())
		}
		return b, fmt.Sprintf("page %d filled with noise", p)
	case 5:
		n := rng.IntN(used)
		return b[:n], fmt.Sprintf("truncated to %d bytes", n)
	case 6:
		p, q := page(), page()
		copy(b[q*pageSize:(q+1)*pageSize], base[p*pageSize:(p+1)*pageSize])
		return b, fmt.Sprintf("page %d copied over page %d", p, q)
	default:
		m := rng.IntN(2)
		for i := 0; i < 8; i++ {
			b[m*pageSize+16+rng.IntN(64)] ^= 1 << rng.IntN(8)
		}
		return b, fmt.Sprintf("meta page %d damaged", m)
	}
}

// readAllChild opens a damaged store, reads all of it and reports what it
// found. Anything but a clean exit (a panic, a fault, a hang) fails the trial.
func readAllChild(args []string) error {
	o := &Options{Logger: hclog.NewNullLogger(), MetricsInterval: -1, VerifyOnOpen: args[1] == "verify"}
	s, err := Open(args[0], o)
	if err != nil {
		kind := "other"
		switch {
		case errors.Is(err, ErrCorrupt):
			kind = "corrupt"
		case errors.Is(err, ErrNotStore):
			kind = "notstore"
		}
		say("open %s %s", kind, strings.ReplaceAll(err.Error(), "\n", " "))
		return nil
	}
	count := map[string]int{}
	note := func(kind, what string, err error) {
		count[kind]++
		if kind != "ok" && kind != "corrupt" {
			say("detail %s %s: %v", kind, what, err)
		}
	}
	classify := func(what string, err error, same bool) {
		switch {
		case err == nil && same:
			note("ok", what, nil)
		case err == nil:
			note("wrong", what, errors.New("different data, no error"))
		case errors.Is(err, ErrCorrupt):
			note("corrupt", what, err)
		case err == raft.ErrLogNotFound || err == ErrKeyNotFound || errors.Is(err, ErrNoConfiguration):
			note("missing", what, err)
		default:
			note("other", what, err)
		}
	}
	readLog := func() {
		for i := uint64(11); i <= corruptEntries; i++ {
			var l raft.Log
			err := s.GetLog(i, &l)
			want := corruptEntry(i)
			classify(fmt.Sprintf("entry %d", i), err, err == nil && l.Term == want.Term && string(l.Data) == string(want.Data) &&
				string(l.Extensions) == string(want.Extensions) && l.AppendedAt.Equal(want.AppendedAt) && l.Type == want.Type)
		}
	}
	readLog()
	term, err := s.GetUint64([]byte("CurrentTerm"))
	classify("CurrentTerm", err, term == 42)
	cand, err := s.Get([]byte("LastVoteCand"))
	classify("LastVoteCand", err, string(cand) == "node-7")
	index, cfg, err := s.LatestConfiguration()
	classify("configuration", err, index == 1000 && equalConfiguration(cfg, testConfiguration("a", "b", "c")))
	check := "clean"
	if err := s.Check(); errors.Is(err, ErrCorrupt) {
		check = "corrupt"
	} else if err != nil {
		check = "other"
		say("detail other check: %v", err)
	}
	// A write must fail cleanly or succeed, and must not make a damaged
	// file return wrong data afterwards.
	if err := s.StoreLogs([]*raft.Log{corruptEntry(corruptEntries + 1)}); err == nil {
		readLog()
	}
	_ = s.Close()
	say("result ok=%d corrupt=%d missing=%d wrong=%d other=%d check=%s",
		count["ok"], count["corrupt"], count["missing"], count["wrong"], count["other"], check)
	return nil
}

// TestCorruptionTrials damages copies of a real store in hundreds of ways
// and reads each in a child process with a timeout: never a panic, a crash
// or a hang; damage is reported as ErrCorrupt, or what is read is exactly
// what was written. A missing key or entry is acceptable only when Check
// (or Open) reports the damage.
func TestCorruptionTrials(t *testing.T) {
	trials := *corruptTrials
	switch {
	case trials != 0:
	case *soak:
		trials = 3000
	case raceEnabled:
		trials = 60 // each child is a race-instrumented binary
	default:
		trials = 200
	}
	clean, crashed := buildCorruptBase(t)
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	dir := t.TempDir()
	stats := map[string]int{}
	for trial := 0; trial < trials; trial++ {
		base, baseName := clean, "clean"
		if trial%3 == 2 {
			base, baseName = crashed, "crashed"
		}
		damaged, what := damage(rng, base, usedBytes(t, base), os.Getpagesize())
		path := filepath.Join(dir, fmt.Sprintf("trial-%d.db", trial))
		require.NoError(t, os.WriteFile(path, damaged, 0o600))
		mode := "plain"
		if trial%4 == 3 {
			mode = "verify"
		}
		desc := fmt.Sprintf("trial %d (seed %d): %s file, %s, %s open", trial, seed, baseName, what, mode)
		lines, err := startChild(t, context.Background(), "readall", path, mode).wait(time.Minute)
		require.NoError(t, err, "%s\n%s", desc, strings.Join(lines, "\n"))
		require.NotEmpty(t, lines, desc)
		last := lines[len(lines)-1]
		switch {
		case strings.HasPrefix(last, "open corrupt"), strings.HasPrefix(last, "open notstore"):
			stats["refused at open"]++
		case strings.HasPrefix(last, "result "):
			r := map[string]string{}
			for _, kv := range strings.Fields(last)[1:] {
				k, v, _ := strings.Cut(kv, "=")
				r[k] = v
			}
			require.Equal(t, "0", r["wrong"], "%s: wrong data read without an error\n%s", desc, strings.Join(lines, "\n"))
			require.Equal(t, "0", r["other"], "%s: errors that do not say ErrCorrupt\n%s", desc, strings.Join(lines, "\n"))
			if r["missing"] != "0" {
				require.Equal(t, "corrupt", r["check"], "%s: data vanished and Check did not notice\n%s", desc, strings.Join(lines, "\n"))
			}
			switch {
			case r["corrupt"] != "0" || r["missing"] != "0":
				stats["damage reported on read"]++
			case r["check"] == "corrupt":
				stats["damage reported by Check only"]++
			default:
				stats["no visible damage (free page or slack)"]++
			}
		default:
			t.Fatalf("%s: unexpected report\n%s", desc, strings.Join(lines, "\n"))
		}
		_ = os.Remove(path)
	}
	t.Logf("%d trials (seed %d): %v", trials, seed, stats)
}
