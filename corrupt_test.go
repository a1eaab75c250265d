package raftbolt

import (
	"bytes"
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
	"github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/journal"
	"github.com/raftbolt/raftbolt/internal/layout"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

var corruptTrials = flag.Int("corrupt.trials", 0, "trials in TestCorruptionTrials (default 200, 60 under -race, 3000 with -soak)")

var journalCorruptTrials = flag.Int("corrupt.journal.trials", 0,
	"trials in TestJournalCorruptionTrials (default 200, 100 under -race, 3000 with -soak)")

func init() { children["readall"] = readAllChild }

// trialCount is how many trials a corruption test runs: the flag's value
// if set, else 3000 with -soak, underRace under -race, and 200.
func trialCount(flagValue, underRace int) int {
	switch {
	case flagValue != 0:
		return flagValue
	case *soak:
		return 3000
	case raceEnabled:
		return underRace
	}
	return 200
}

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
	if len(args) > 2 { // the journal trials: "journal" (writable) or "readonly"
		o.Journal, o.CheckpointInterval = true, time.Hour
		o.ReadOnly = args[2] == "readonly"
	}
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
	last, _ := s.LastIndex()
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
	say("result ok=%d corrupt=%d missing=%d wrong=%d other=%d check=%s last=%d",
		count["ok"], count["corrupt"], count["missing"], count["wrong"], count["other"], check, last)
	return nil
}

// TestCorruptionTrials damages copies of a real store in hundreds of ways
// and reads each in a child process with a timeout: never a panic, a crash
// or a hang; damage is reported as ErrCorrupt, or what is read is exactly
// what was written. A missing key or entry is acceptable only when Check
// (or Open) reports the damage.
func TestCorruptionTrials(t *testing.T) {
	trials := trialCount(*corruptTrials, 60) // each child is a race-instrumented binary
	clean, crashed := buildCorruptBase(t)
	quickChildExit(t)
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
		last, r := readAllTrial(t, desc, path, mode)
		switch {
		case strings.HasPrefix(last, "open corrupt"), strings.HasPrefix(last, "open notstore"):
			stats["refused at open"]++
		case r == nil:
			t.Fatalf("%s: unexpected report\n%s", desc, last)
		default:
			if r["missing"] != "0" {
				require.Equal(t, "corrupt", r["check"], "%s: data vanished and Check did not notice\n%s", desc, last)
			}
			switch {
			case r["corrupt"] != "0" || r["missing"] != "0":
				stats["damage reported on read"]++
			case r["check"] == "corrupt":
				stats["damage reported by Check only"]++
			default:
				stats["no visible damage (free page or slack)"]++
			}
		}
		_ = os.Remove(path)
	}
	t.Logf("%d trials (seed %d): %v", trials, seed, stats)
}

// quickChildExit makes the trials' children exit at once under the race
// detector, which otherwise sleeps a second at every exit (GORACE's
// atexit_sleep_ms) and makes a trial take ten times as long. Races are
// still reported: a child that finds one exits with a failure status.
func quickChildExit(t *testing.T) {
	if raceEnabled {
		t.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
}

// readAllTrial runs the readall child on the damaged store at path, with a
// timeout: it must exit cleanly (no panic, fault or hang), and report
// either a refusal at Open or a result with no wrong data and no error
// that does not wrap ErrCorrupt. It returns the child's last line and,
// for a result, its fields.
func readAllTrial(t *testing.T, desc, path string, args ...string) (string, map[string]string) {
	t.Helper()
	lines, err := startChild(t, context.Background(), "readall", append([]string{path}, args...)...).wait(time.Minute)
	require.NoError(t, err, "%s\n%s", desc, strings.Join(lines, "\n"))
	require.NotEmpty(t, lines, desc)
	last := lines[len(lines)-1]
	switch {
	case strings.HasPrefix(last, "open "):
		return last, nil
	case strings.HasPrefix(last, "result "):
		r := map[string]string{}
		for _, kv := range strings.Fields(last)[1:] {
			k, v, _ := strings.Cut(kv, "=")
			r[k] = v
		}
		require.Equal(t, "0", r["wrong"], "%s: wrong data read without an error\n%s", desc, strings.Join(lines, "\n"))
		require.Equal(t, "0", r["other"], "%s: errors that do not say ErrCorrupt\n%s", desc, strings.Join(lines, "\n"))
		return last, r
	}
	t.Fatalf("%s: unexpected report\n%s", desc, strings.Join(lines, "\n"))
	return "", nil
}

// journalFrame is one of the pending frames of the journal trials' base:
// its span of the journal file and the entries it holds.
type journalFrame struct {
	off, end    int64
	first, last uint64
}

// buildJournalCorruptBase writes, with the journal, the store the journal
// trials damage, holding what readAllChild reads back (buildCorruptBase's
// store): entries 1-1350 checkpointed into the file through a 256 KiB
// journal (its ring wrapped: stale frames of earlier passes lie around),
// then 1351-1500 in three batches pending in the journal, as a crash
// leaves them. It returns both files' bytes as they stood, and the
// pending frames.
func buildJournalCorruptBase(t *testing.T) (db, jrnl []byte, frames []journalFrame) {
	path := filepath.Join(t.TempDir(), "base.db")
	o := &Options{NoSync: true, Logger: hclog.NewNullLogger(), MetricsInterval: -1,
		JournalSize: 256 << 10, CheckpointInterval: time.Hour}
	s := openAt(t, path, o)
	// No background checkpoint: each runs when StoreLogs needs one (the
	// ring full, or too much pending), so what stays pending at the end,
	// and the copy, do not depend on timing.
	s.checkpoints.halt()
	batch := func(from, to uint64) []*raft.Log {
		var b []*raft.Log
		for j := from; j <= to; j++ {
			b = append(b, corruptEntry(j))
		}
		return b
	}
	for i := uint64(1); i <= 1350; i += 50 {
		require.NoError(t, s.StoreLogs(batch(i, i+49)))
	}
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 42))
	require.NoError(t, s.Set([]byte("LastVoteCand"), []byte("node-7")))
	require.NoError(t, s.StoreConfiguration(1000, testConfiguration("a", "b", "c")))
	require.NoError(t, s.DeleteRange(1, 10)) // checkpoints what the journal holds
	for i := uint64(1351); i <= corruptEntries; i += 50 {
		require.NoError(t, s.StoreLogs(batch(i, i+49)))
	}
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, 3, st.JournalBatches, "the last three batches must be pending")
	db, err = os.ReadFile(path)
	require.NoError(t, err)
	jrnl, err = os.ReadFile(path + journalSuffix)
	require.NoError(t, err)

	// Where the pending frames lie: read back from the checkpoint record.
	var raw []byte
	require.NoError(t, s.view("test", func(tx *bbolt.Tx) error {
		meta, err := layout.LogStore.Bucket(tx, layout.MetaBucket)
		if err == nil {
			raw = append(raw, meta.Get(layout.KeyJournal)...)
		}
		return err
	}))
	v, err := codec.DecodeValue(layout.KeyJournal, raw)
	require.NoError(t, err)
	rec, err := journal.DecodeRecord(v)
	require.NoError(t, err)
	copyPath := filepath.Join(t.TempDir(), "j")
	require.NoError(t, os.WriteFile(copyPath, jrnl, 0o600))
	j, fs, err := journal.Open(copyPath, rec.ID, rec.Pos, true, true)
	require.NoError(t, err)
	require.NoError(t, j.Close())
	require.Len(t, fs, 3)
	stale := 0
	for k, f := range fs {
		size := (journal.FrameHeader + int64(len(f.Payload)) + 7) &^ 7
		first := 1351 + 50*uint64(k)
		frames = append(frames, journalFrame{off: f.End.Off - size, end: f.End.Off, first: first, last: first + 49})
	}
	for off := frames[2].end; off+4 <= int64(len(jrnl)); off += 8 {
		if string(jrnl[off:off+4]) == "RBJF" {
			stale++
		}
	}
	t.Logf("base: pending frames %+v; %d stale frame headers after them", frames, stale)
	require.Positive(t, stale, "the ring must have wrapped")
	return db, jrnl, frames
}

// damageJournal applies one random kind of damage to a copy of the
// journal, mostly where the pending frames lie.
func damageJournal(rng *rand.Rand, base []byte, frames []journalFrame) ([]byte, string) {
	b := append([]byte(nil), base...)
	lo, hi := int(frames[0].off), int(frames[len(frames)-1].end)
	inFrames := func() int { return lo + rng.IntN(hi-lo) }
	noise := func(p []byte) {
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
	}
	switch k := rng.IntN(9); k {
	case 0, 1:
		n := 1 + rng.IntN(16)
		for i := 0; i < n; i++ {
			b[inFrames()] ^= 1 << rng.IntN(8)
		}
		return b, fmt.Sprintf("%d bits flipped in the pending frames", n)
	case 2:
		n := 1 + rng.IntN(16)
		for i := 0; i < n; i++ {
			b[rng.IntN(len(b))] ^= 1 << rng.IntN(8)
		}
		return b, fmt.Sprintf("%d bits flipped across the file", n)
	case 3:
		p := inFrames() &^ 4095
		if rng.IntN(4) == 0 {
			p = rng.IntN(len(b)/4096) * 4096
		}
		clear(b[p : p+4096])
		return b, fmt.Sprintf("4 KiB block at %d zeroed", p)
	case 4:
		n := rng.IntN(len(b))
		return b[:n], fmt.Sprintf("truncated to %d bytes", n)
	case 5:
		p, n := inFrames(), 1+rng.IntN(8192)
		n = min(n, len(b)-p)
		noise(b[p : p+n])
		return b, fmt.Sprintf("%d bytes of garbage at %d", n, p)
	case 6:
		p, n := hi+rng.IntN(64)*8, 1+rng.IntN(8192)
		n = min(n, len(b)-p)
		noise(b[p : p+n])
		return b, fmt.Sprintf("%d bytes of garbage at %d, after the last frame", n, p)
	case 7:
		f := frames[len(frames)-1]
		p := int(f.off) + rng.IntN(int(f.end-f.off))
		clear(b[p:f.end])
		return b, fmt.Sprintf("the last frame torn at %d (zeros from there)", p)
	default:
		n := 1 + rng.IntN(4)
		for i := 0; i < n; i++ {
			b[rng.IntN(36)] ^= 1 << rng.IntN(8)
		}
		return b, fmt.Sprintf("%d bits flipped in the header", n)
	}
}

// TestJournalCorruptionTrials damages the journal of a store written with
// it, holding acknowledged batches not yet checkpointed, in many ways
// (bit flips, zeroed 4 KiB blocks, truncation, garbage, a damaged header;
// the store file stays intact), and reads each in a readall child with a
// timeout, writable or read-only: never a panic, a crash or a hang, and
// every acknowledged entry is read back intact or the damage is reported
// (Open, a read or Check returns ErrCorrupt). The one loss allowed
// unreported is the journal's inherent limit (internal/journal): damage
// that left no intact frame after the break looks like a torn tail, so
// the lost entries must all be in frames the damage touched.
func TestJournalCorruptionTrials(t *testing.T) {
	trials := trialCount(*journalCorruptTrials, 100)
	db, base, frames := buildJournalCorruptBase(t)
	quickChildExit(t)
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 5))
	stats := map[string]int{}
	root := t.TempDir()
	for trial := 0; trial < trials; trial++ {
		dir := filepath.Join(root, strconv.Itoa(trial))
		require.NoError(t, os.Mkdir(dir, 0o700))
		path := filepath.Join(dir, "raft.db")
		damaged, what := damageJournal(rng, base, frames)
		require.NoError(t, os.WriteFile(path, db, 0o600))
		require.NoError(t, os.WriteFile(path+journalSuffix, damaged, 0o600))
		mode := "journal"
		if trial%3 == 2 {
			mode = "readonly"
		}
		desc := fmt.Sprintf("trial %d (seed %d): journal %s, %s open", trial, seed, what, mode)
		last, r := readAllTrial(t, desc, path, "plain", mode)
		require.NoError(t, os.RemoveAll(dir))
		if r == nil {
			require.True(t, strings.HasPrefix(last, "open corrupt"), "%s: Open failed without ErrCorrupt\n%s", desc, last)
			if strings.Contains(last, "acknowledged entries would be lost") {
				stats["refused at open: damage mid-journal"]++
			} else {
				stats["refused at open: header, size or id"]++
			}
			continue
		}
		end, err := strconv.ParseUint(r["last"], 10, 64)
		require.NoError(t, err, "%s: %s", desc, last)
		missing, err := strconv.Atoi(r["missing"])
		require.NoError(t, err)
		switch {
		case r["check"] == "corrupt":
			stats["damage reported by Check"]++
		case r["corrupt"] != "0":
			stats["damage reported on read"]++
		case missing == 0:
			stats["no loss (damage in slack or stale frames)"]++
		default:
			// Unreported loss: only whole frames at the end, each touched
			// by the damage.
			require.EqualValues(t, corruptEntries-end, missing, "%s: entries missing inside the log, unreported\n%s", desc, last)
			for _, f := range frames {
				if f.last <= end {
					continue
				}
				require.Equal(t, f.first, max(end+1, f.first), "%s: the log ends inside a frame\n%s", desc, last)
				require.False(t, bytes.Equal(base[f.off:f.end], damaged[f.off:min(f.end, int64(len(damaged)))]),
					"%s: entries %d-%d lost, unreported, though their frame is intact\n%s", desc, f.first, f.last, last)
			}
			stats["tail frames lost with their damage (a torn tail to Open)"]++
		}
	}
	t.Logf("%d trials (seed %d): %v", trials, seed, stats)
}
