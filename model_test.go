package raftbolt_test

// Model-based randomized tests (issue 11): a rapid state machine drives a
// *raftbolt.Store and a plain in-memory model with the same random sequence
// of operations and compares every observable result, op by op. rapid
// shrinks a failure to the shortest sequence it can find and prints the
// seed that reproduces it (-rapid.seed=S). These tests write no rapid fail
// files into testdata/ unless -rapid.failfile or -rapid.nofailfile is given.
//
// Budget: RAFTBOLT_MODEL_N sequences (default 20) spread over TestModel's
// option matrix, at least one per cell; TestModelSync runs a tenth as many,
// TestModelJournal and TestModelConcurrent a quarter. -rapid.checks=N, when
// given, sets the sequences per cell instead; -rapid.steps the average
// number of actions per sequence (30). Every test prints a line
//
//	MODEL-SUMMARY test=<name> sequences=<n> divergences=<d> ...
//
// (visible with -v) that .ci/model adds up.
//
//	short: go test -run TestModel .           (about 60 sequences, ~20 s with -race)
//	long:  .ci/model 1000 [-race] [-rapid.steps=100]
//	again: go test -run 'TestModel/<cell>' -rapid.seed=S -v .
//
// What is compared, after every action: FirstIndex, LastIndex, Stats'
// extent and persisted commit index, GetCommitIndex (both caps of its doc
// comment), LatestConfiguration, and GetLog of both ends; each action then
// compares what it touched (every field of an entry: Index, Term, Type,
// Data and Extensions with nil distinct from empty, AppendedAt with its
// location), and reopening, a backup and the end of a sequence compare
// every entry and every stable key.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
	"pgregory.net/rapid"
)

// ---------------------------------------------------------------------------
// The option matrix and the test entry points.

// modelCacheSizes and modelCacheBytes are the cache bounds every variant
// runs with: off, tiny bounds that most batches exceed, and the defaults.
var (
	modelCacheSizes = []int{-1, 1, 3, 64, 0}
	modelCacheBytes = []int{4096, 0, -1}
)

func modelOptions(cacheSize, cacheBytes int, noSync bool) raftbolt.Options {
	return raftbolt.Options{
		NoSync:          noSync,
		CacheSize:       cacheSize,
		CacheBytes:      cacheBytes,
		Logger:          hclog.NewNullLogger(),
		MetricsInterval: -1,
		NoJournal:       true,
	}
}

func modelCellName(o raftbolt.Options) string {
	name := fmt.Sprintf("CacheSize=%d/CacheBytes=%d/NoSync=%v", o.CacheSize, o.CacheBytes, o.NoSync)
	if !o.NoJournal {
		name += fmt.Sprintf("/Journal=%dKiB/CheckpointInterval=%v", o.JournalSize>>10, o.CheckpointInterval)
	}
	if o.AutoCompactFree != 0 {
		name += fmt.Sprintf("/AutoCompactFree=%d/AutoCompactInterval=%v", o.AutoCompactFree, o.AutoCompactInterval)
	}
	return name
}

// journalOptions are modelOptions with the journal on: small journals, so
// that batches wrap it and some are larger than it (those go to the file).
func journalOptions(cacheSize, cacheBytes int, noSync bool, size int64, interval time.Duration) raftbolt.Options {
	o := modelOptions(cacheSize, cacheBytes, noSync)
	o.NoJournal, o.JournalSize, o.CheckpointInterval = false, size, interval
	return o
}

// TestModel runs the model over every cell of the cache matrix, NoSync on:
// RAFTBOLT_MODEL_N sequences in all, at least one per cell.
func TestModel(t *testing.T) {
	n := perCell(modelN(), len(modelCacheSizes)*len(modelCacheBytes))
	for _, size := range modelCacheSizes {
		for _, bytes := range modelCacheBytes {
			o := modelOptions(size, bytes, true)
			if !t.Run(modelCellName(o), func(t *testing.T) { runModel(t, n, o, 0) }) {
				return // one shrunk divergence is enough (shrinking takes up to -rapid.shrinktime)
			}
		}
	}
}

// TestModelSync runs a tenth as many sequences with fsync on, over a few
// cells.
func TestModelSync(t *testing.T) {
	n := perCell(modelN()/10, 3)
	for _, c := range [][2]int{{0, 0}, {3, 4096}, {-1, -1}} {
		o := modelOptions(c[0], c[1], false)
		if !t.Run(modelCellName(o), func(t *testing.T) { runModel(t, n, o, 0) }) {
			return
		}
	}
}

// TestModelJournal runs the model with the journal: the defaults (a 16
// MiB journal; only NoSync differs), small journals that wrap, and one cell
// with automatic compaction at every chance (without the journal): a
// quarter as many sequences.
func TestModelJournal(t *testing.T) {
	autoCompact := modelOptions(3, 0, true)
	autoCompact.AutoCompactFree, autoCompact.AutoCompactInterval = 1, time.Millisecond
	cells := []raftbolt.Options{
		journalOptions(0, 0, true, 0, 0),
		journalOptions(3, 4096, true, 64<<10, time.Millisecond),
		journalOptions(0, 0, true, 1<<20, 0),
		journalOptions(-1, 0, true, 256<<10, 5*time.Millisecond),
		journalOptions(64, -1, false, 256<<10, 0),
		autoCompact,
	}
	n := perCell(modelN()/4, len(cells))
	for _, o := range cells {
		if !t.Run(modelCellName(o), func(t *testing.T) { runModel(t, n, o, 0) }) {
			return
		}
	}
}

// TestModelConcurrent runs the model while reader goroutines check, on
// every read, what a concurrent reader may see (see modelReader): a
// quarter as many sequences.
func TestModelConcurrent(t *testing.T) {
	cells := []raftbolt.Options{
		modelOptions(0, 0, true),
		modelOptions(3, 4096, true),
		modelOptions(64, -1, true),
		modelOptions(-1, 0, true),
		journalOptions(3, 0, true, 64<<10, time.Millisecond),
	}
	n := perCell(modelN()/4, len(cells))
	for _, o := range cells {
		if !t.Run(modelCellName(o), func(t *testing.T) { runModel(t, n, o, 2) }) {
			return
		}
	}
}

// perCell divides n sequences among cells, at least one each.
func perCell(n, cells int) int { return max(1, (n+cells-1)/cells) }

// modelN is the number of sequences TestModel runs.
func modelN() int {
	if v := os.Getenv("RAFTBOLT_MODEL_N"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return 20
}

var modelFlags struct {
	once                sync.Once
	checks, failfileSet bool
}

// runModel runs checks sequences of the model against a store with opts
// (and readers concurrent readers), then prints the summary line.
func runModel(t *testing.T, checks int, opts raftbolt.Options, readers int) {
	modelFlags.once.Do(func() {
		flag.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "rapid.checks":
				modelFlags.checks = true
			case "rapid.failfile", "rapid.nofailfile":
				modelFlags.failfileSet = true
			}
		})
	})
	if !modelFlags.checks {
		if err := flag.Set("rapid.checks", strconv.Itoa(checks)); err != nil {
			t.Fatal(err)
		}
	}
	if !modelFlags.failfileSet {
		// No testdata/rapid files in the package: the seed reproduces.
		if err := flag.Set("rapid.nofailfile", "true"); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	stats := &modelStats{}
	var runs int
	failed := false
	start := time.Now()
	defer func() {
		d := 0
		if t.Failed() {
			d = 1
		}
		fmt.Printf("MODEL-SUMMARY test=%s sequences=%d divergences=%d wall=%s actions=%d entries=%d bytes=%d maxbatch=%d overbound=%d reads=%d\n",
			t.Name(), runs, d, time.Since(start).Round(time.Millisecond), stats.actions, stats.entries, stats.bytes,
			stats.maxBatch, stats.overBound, stats.reads)
	}()
	rapid.Check(t, func(rt *rapid.T) {
		if !failed {
			runs++ // the sequences before the first failure, and that one; not the shrinking reruns
		}
		ok := false
		defer func() {
			if !ok || rt.Failed() {
				failed = true
			}
		}()
		// One directory for every sequence (each removes it when it ends):
		// rapid shrinks only failures that reproduce with the same message,
		// which names the path.
		mc := newMachine(rt, filepath.Join(dir, "seq"), opts, readers)
		mc.stats = stats
		if failed {
			mc.stats = &modelStats{} // shrinking reruns are not counted
		}
		rt.Repeat(mc.actions())
		mc.finish(rt)
		ok = true
	})
}

// modelStats describes what a test's sequences did (summary line).
type modelStats struct {
	actions, entries, bytes, maxBatch int
	overBound                         int // batches over the cache's entry or byte bound
	reads                             int64
}

// ---------------------------------------------------------------------------
// The model.

// model is what a store must hold after the operations so far.
type model struct {
	mu sync.RWMutex // guards everything below; the concurrent readers read it

	log            []*raft.Log // the entries first..last: log[k].Index == first+k
	commit, staged uint64      // persisted and staged commit index
	// snapIndex and snapConf are the marks of the snapshots recorded
	// through WrapSnapshotStore (index, configuration index).
	snapIndex, snapConf uint64
	hasConfig           bool
	configIndex         uint64
	config              raft.Configuration
	stable              map[string][]byte
	// versions holds every entry ever stored at each index (tail
	// truncation lets an index be written again); deleted tracks the
	// indexes most recently deleted, for GetLog to try.
	versions map[uint64][]*raft.Log
	deleted  []uint64
}

func (m *model) first() uint64 {
	if len(m.log) == 0 {
		return 0
	}
	return m.log[0].Index
}

func (m *model) last() uint64 {
	if len(m.log) == 0 {
		return 0
	}
	return m.log[len(m.log)-1].Index
}

func (m *model) at(i uint64) *raft.Log {
	f := m.first()
	if f == 0 || i < f || i > m.last() {
		return nil
	}
	return m.log[i-f]
}

// isConfigEntry: the entry types raft loads a configuration from.
func isConfigEntry(t raft.LogType) bool {
	return t == raft.LogConfiguration || t == raft.LogAddPeerDeprecated || t == raft.LogRemovePeerDeprecated
}

// commitIndex is GetCommitIndex as its doc comment describes it.
func (m *model) commitIndex(replayLimit int) uint64 {
	c := min(m.commit, m.last())
	if c == 0 {
		return 0
	}
	if replayLimit == 0 {
		replayLimit = raftbolt.DefaultRestoreReplayLimit
	}
	if replayLimit > 0 && c > m.snapIndex+uint64(replayLimit) {
		c = m.snapIndex + uint64(replayLimit)
	}
	for i := c; i >= m.first() && i > 0; i-- {
		if l := m.at(i); l != nil && isConfigEntry(l.Type) {
			if i > m.snapConf {
				c = i - 1
			}
			break
		}
	}
	return c
}

// recordConfig is StoreConfiguration's rule: the newest index wins, an
// equal index replaces.
func (m *model) recordConfig(index uint64, c raft.Configuration) {
	if !m.hasConfig || index >= m.configIndex {
		m.hasConfig, m.configIndex, m.config = true, index, cloneConfig(c)
	}
}

func cloneConfig(c raft.Configuration) raft.Configuration {
	return raft.Configuration{Servers: slices.Clone(c.Servers)}
}

// validConfig is raft's rule for a configuration (and the store's).
func validConfig(c raft.Configuration) bool {
	if len(c.Servers) == 0 {
		return false
	}
	ids, addrs, voters := map[raft.ServerID]bool{}, map[raft.ServerAddress]bool{}, 0
	for _, s := range c.Servers {
		if s.ID == "" || s.Address == "" || ids[s.ID] || addrs[s.Address] || s.Suffrage > raft.Staging {
			return false
		}
		ids[s.ID], addrs[s.Address] = true, true
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	return voters > 0
}

// ---------------------------------------------------------------------------
// The machine: the store, the model, and the actions that drive both.

type machine struct {
	dir, path string
	opts      raftbolt.Options
	s         *raftbolt.Store
	ro        bool // s was opened read-only
	m         *model
	budget    int // bytes of entry payload the sequence may still write
	snaps     raft.SnapshotStore
	stats     *modelStats
	saved     *savedBackup // the last Backup, for RestoreBackup

	// The concurrent readers (0 for none). gen is odd while a mutation
	// runs: it is incremented before the store is changed and after the
	// model is (see modelReader).
	readers   int
	gen       atomic.Uint64
	stop      chan struct{}
	wg        sync.WaitGroup
	readerErr atomic.Pointer[string]
	reads     atomic.Int64
	readSeed  uint64
}

const modelBudget = 64 << 20

func newMachine(t *rapid.T, dir string, opts raftbolt.Options, readers int) *machine {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mc := &machine{
		dir:     dir,
		path:    filepath.Join(dir, "raft.db"),
		opts:    opts,
		budget:  modelBudget,
		readers: readers,
		m:       &model{stable: map[string][]byte{}, versions: map[uint64][]*raft.Log{}},
	}
	// The replay bound of GetCommitIndex: the default, one small enough
	// for short logs to reach, or none.
	mc.opts.RestoreReplayLimit = rapid.SampledFrom([]int{0, 0, 7, 50, -1}).Draw(t, "RestoreReplayLimit")
	if readers > 0 {
		mc.readSeed = rapid.Uint64().Draw(t, "readerSeed")
	}
	t.Cleanup(func() {
		mc.stopReaders()
		if mc.s != nil {
			_ = mc.s.Close()
		}
		_ = os.RemoveAll(dir)
	})
	mc.open(t, false)
	return mc
}

func (mc *machine) open(t *rapid.T, ro bool) {
	o := mc.opts
	o.ReadOnly = ro
	s, err := raftbolt.Open(mc.path, &o)
	if err != nil {
		t.Fatalf("open (read-only %v): %v", ro, err)
	}
	mc.s, mc.ro = s, ro
	mc.snaps = raftbolt.WrapSnapshotStore(mc.s, raft.NewInmemSnapshotStore())
	mc.startReaders()
}

// finish ends a sequence: the last comparison, of everything, and the
// readers' verdict.
func (mc *machine) finish(t *rapid.T) {
	mc.stopReaders()
	mc.checkReaders(t)
	mc.verifyAll(t, mc.s, "end of sequence")
	mc.stats.reads += mc.reads.Load()
}

// mutate runs fn, which changes the store and then the model, with gen
// odd and the model locked.
func (mc *machine) mutate(fn func()) {
	mc.gen.Add(1)
	mc.m.mu.Lock()
	defer func() {
		mc.m.mu.Unlock()
		mc.gen.Add(1)
	}()
	fn()
}

func (mc *machine) actions() map[string]func(*rapid.T) {
	acts := map[string]func(*rapid.T){
		"StoreLogs":          mc.storeLogs,
		"StoreLogs2":         mc.storeLogs, // twice the weight
		"StoreLogsInvalid":   mc.storeLogsInvalid,
		"GetLog":             mc.getLog,
		"DeleteRange":        mc.deleteRange,
		"Set":                mc.set,
		"SetMany":            mc.setMany,
		"Get":                mc.get,
		"StageCommitIndex":   mc.stageCommit,
		"StoreConfiguration": mc.storeConfiguration,
		"Snapshot":           mc.snapshot,
		"Compact":            mc.compact,
		"Check":              mc.checkStore,
		"Backup":             mc.backup,
		"Reopen":             mc.reopen,
		"RestoreBackup":      mc.restoreBackup,
	}
	for name, act := range acts {
		acts[name] = func(t *rapid.T) { mc.stats.actions++; act(t) }
	}
	acts[""] = mc.check
	return acts
}

// check runs after every action: the cheap observables.
func (mc *machine) check(t *rapid.T) {
	mc.checkReaders(t)
	mc.compareCheap(t, mc.s, "after the action")
}

func (mc *machine) checkReaders(t *rapid.T) {
	if p := mc.readerErr.Load(); p != nil {
		t.Fatalf("concurrent reader: %s", *p)
	}
}

// compareCheap compares extent, commit index, configuration and the end
// entries of s with the model.
func (mc *machine) compareCheap(t *rapid.T, s *raftbolt.Store, when string) {
	m := mc.m
	first, err := s.FirstIndex()
	if err != nil || first != m.first() {
		t.Fatalf("%s: FirstIndex = %d, %v; model %d", when, first, err, m.first())
	}
	last, err := s.LastIndex()
	if err != nil || last != m.last() {
		t.Fatalf("%s: LastIndex = %d, %v; model %d", when, last, err, m.last())
	}
	st, err := s.Stats()
	if err != nil || st.FirstIndex != m.first() || st.LastIndex != m.last() || st.CommitIndex != m.commit {
		t.Fatalf("%s: Stats = first %d last %d commit %d, %v; model %d %d %d", when,
			st.FirstIndex, st.LastIndex, st.CommitIndex, err, m.first(), m.last(), m.commit)
	}
	c, err := s.GetCommitIndex()
	if want := m.commitIndex(mc.opts.RestoreReplayLimit); err != nil || c != want {
		t.Fatalf("%s: GetCommitIndex = %d, %v; model %d (persisted %d, last %d, snapshot %d/%d, replay limit %d)",
			when, c, err, want, m.commit, m.last(), m.snapIndex, m.snapConf, mc.opts.RestoreReplayLimit)
	}
	mc.compareConfig(t, s, when)
	if m.last() != 0 {
		mc.compareGetLog(t, s, m.first(), when)
		mc.compareGetLog(t, s, m.last(), when)
	}
}

func (mc *machine) compareConfig(t *rapid.T, s *raftbolt.Store, when string) {
	m := mc.m
	idx, c, err := s.LatestConfiguration()
	if !m.hasConfig {
		if !errors.Is(err, raftbolt.ErrNoConfiguration) {
			t.Fatalf("%s: LatestConfiguration = %d, %v, %v; model: none (ErrNoConfiguration)", when, idx, c, err)
		}
		return
	}
	if err != nil || idx != m.configIndex || !slices.Equal(c.Servers, m.config.Servers) {
		t.Fatalf("%s: LatestConfiguration = %d, %v, %v; model %d, %v", when, idx, c, err, m.configIndex, m.config)
	}
}

// compareGetLog reads index i from s into a dirty raft.Log (every field
// must be overwritten) and compares it with the model.
func (mc *machine) compareGetLog(t *rapid.T, s *raftbolt.Store, i uint64, when string) {
	got := raft.Log{Index: 99, Term: 99, Type: raft.LogBarrier, Data: []byte("dirty"),
		Extensions: []byte("dirty"), AppendedAt: time.Unix(5, 5)}
	err := s.GetLog(i, &got)
	want := mc.m.at(i)
	if want == nil {
		if err != raft.ErrLogNotFound {
			t.Fatalf("%s: GetLog(%d) = %v, %s; model: raft.ErrLogNotFound itself (log %d-%d)", when, i, err, describe(&got), mc.m.first(), mc.m.last())
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: GetLog(%d) = %v; model %s (log %d-%d)", when, i, err, describe(want), mc.m.first(), mc.m.last())
	}
	if d := diffLog(want, &got); d != "" {
		t.Fatalf("%s: GetLog(%d): %s", when, i, d)
	}
}

// verifyAll compares everything observable of s with the model: every
// entry, the stable keys (and some never set), and compareCheap.
func (mc *machine) verifyAll(t *rapid.T, s *raftbolt.Store, when string) {
	m := mc.m
	mc.compareCheap(t, s, when)
	for i := m.first(); i != 0 && i <= m.last(); i++ {
		mc.compareGetLog(t, s, i, when)
	}
	for _, i := range []uint64{0, m.first() - 1, m.last() + 1, math.MaxUint64} {
		mc.compareGetLog(t, s, i, when)
	}
	for _, i := range m.deleted {
		mc.compareGetLog(t, s, i, when)
	}
	for _, k := range modelKeys {
		mc.compareGet(t, s, k, when)
	}
}

// ---------------------------------------------------------------------------
// Entries.

// entrySpec describes a batch: its entries derive from it deterministically,
// so that rapid draws (and shrinks) a few numbers, not megabytes.
type entrySpec struct {
	n     int
	term  uint64
	class int // payload sizes: 0 tiny, 1 up to 8 KiB, 2 up to 2 MiB
	mix   bool
	seed  int64
}

func drawSpec(t *rapid.T, mc *machine) entrySpec {
	sp := entrySpec{
		n: rapid.OneOf(rapid.IntRange(1, 3), rapid.IntRange(1, 3), rapid.IntRange(1, 3),
			rapid.IntRange(1, 64), rapid.IntRange(1, 2000)).Draw(t, "n"),
		term:  rapid.Uint64Range(1, 6).Draw(t, "term"),
		class: rapid.SampledFrom([]int{0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2}).Draw(t, "class"),
		mix:   rapid.Bool().Draw(t, "mix"),
		seed:  rapid.Int64().Draw(t, "seed"),
	}
	if sp.class == 2 {
		// Up to 40 entries of up to 2 MiB: often over the default 32 MiB
		// byte bound of the cache.
		sp.n = rapid.IntRange(1, 40).Draw(t, "largeN")
	}
	return sp
}

// build makes the batch's entries from index start; it spends the
// sequence's payload budget.
func (sp entrySpec) build(mc *machine, start uint64) []*raft.Log {
	r := rand.New(rand.NewSource(sp.seed))
	batch := make([]*raft.Log, sp.n)
	for k := range batch {
		batch[k] = genEntry(r, start+uint64(k), sp.term, sp.class, sp.mix, &mc.budget)
	}
	return batch
}

// modelNow is a time with a monotonic reading, as raft's AppendedAt has;
// one for the whole run, so that a failure's message is the same when rapid
// reproduces it (it shrinks only such failures).
var modelNow = time.Now()

func genEntry(r *rand.Rand, index, term uint64, class int, mix bool, budget *int) *raft.Log {
	l := &raft.Log{Index: index, Term: term, Type: raft.LogCommand}
	if mix {
		switch p := r.Intn(100); {
		case p < 15:
			l.Type = raft.LogNoop
		case p < 25:
			l.Type = raft.LogBarrier
		case p < 45:
			l.Type = raft.LogConfiguration
		case p < 48:
			l.Type = raft.LogAddPeerDeprecated
		case p < 50:
			l.Type = raft.LogRemovePeerDeprecated
		}
	}
	if l.Type == raft.LogConfiguration {
		l.Data = raft.EncodeConfiguration(genConfig(r))
	} else {
		switch p := r.Intn(10); {
		case p == 0: // nil
		case p == 1:
			l.Data = []byte{}
		default:
			var n int
			switch class {
			case 0:
				n = r.Intn(65)
			case 1:
				n = r.Intn(8193)
			default:
				n = r.Intn(2<<20 + 1)
			}
			if n > *budget {
				n = min(r.Intn(65), *budget)
			}
			*budget -= n
			l.Data = make([]byte, n)
			r.Read(l.Data)
		}
	}
	switch p := r.Intn(10); {
	case p < 4: // nil
	case p < 5:
		l.Extensions = []byte{}
	default:
		l.Extensions = make([]byte, 1+r.Intn(32))
		r.Read(l.Extensions)
	}
	sec, nsec := 1_600_000_000+r.Int63n(400_000_000), r.Int63n(1_000_000_000)
	switch p := r.Intn(20); {
	case p < 4: // the zero time
	case p < 5:
		l.AppendedAt = time.Time{}.In(time.Local) // zero instant, not UTC
	case p < 10:
		l.AppendedAt = time.Unix(sec, nsec).UTC()
	case p < 14:
		l.AppendedAt = time.Unix(sec, nsec) // Local
	case p < 17:
		names := []string{"", "XYZ", "UTC+5:45"}
		l.AppendedAt = time.Unix(sec, nsec).In(time.FixedZone(names[r.Intn(len(names))], (r.Intn(26*60)-12*60)*60))
	default:
		l.AppendedAt = modelNow // with a monotonic reading, which is not stored
	}
	return l
}

// genConfig makes a configuration; about one in eight has no voter (so
// it is not valid, and a bootstrap entry holding it is not recorded).
func genConfig(r *rand.Rand) raft.Configuration {
	var c raft.Configuration
	n := 1 + r.Intn(5)
	noVoter := r.Intn(8) == 0
	for k := range n {
		s := raft.Server{
			Suffrage: raft.ServerSuffrage(r.Intn(3)),
			ID:       raft.ServerID(fmt.Sprintf("node%d", k)),
			Address:  raft.ServerAddress(fmt.Sprintf("10.0.0.%d:%d", k, 7000+r.Intn(100))),
		}
		if k == 0 {
			s.Suffrage = raft.Voter
		}
		if noVoter {
			s.Suffrage = raft.Nonvoter
		}
		c.Servers = append(c.Servers, s)
	}
	return c
}

func diffLog(want, got *raft.Log) string {
	switch {
	case got.Index != want.Index:
		return fmt.Sprintf("Index %d, model %d", got.Index, want.Index)
	case got.Term != want.Term:
		return fmt.Sprintf("Term %d, model %d", got.Term, want.Term)
	case got.Type != want.Type:
		return fmt.Sprintf("Type %v, model %v", got.Type, want.Type)
	case !sameBytes(got.Data, want.Data):
		return fmt.Sprintf("Data %s, model %s", describeBytes(got.Data), describeBytes(want.Data))
	case !sameBytes(got.Extensions, want.Extensions):
		return fmt.Sprintf("Extensions %s, model %s", describeBytes(got.Extensions), describeBytes(want.Extensions))
	case !sameTime(got.AppendedAt, want.AppendedAt):
		return fmt.Sprintf("AppendedAt %v (%s), model %v (%s)", got.AppendedAt, got.AppendedAt.Location(), want.AppendedAt, want.AppendedAt.Location())
	}
	return ""
}

// sameBytes: equal contents, and nil only for nil (the README: nil and
// empty Data/Extensions stay distinct).
func sameBytes(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

// sameTime: the same instant in the same location (UTC and Local are the
// very same *time.Location; another zone keeps its name and offset). The
// monotonic reading is not stored.
func sameTime(a, b time.Time) bool {
	if !a.Equal(b) || a.IsZero() != b.IsZero() {
		return false
	}
	la, lb := a.Location(), b.Location()
	if la == time.UTC || la == time.Local || lb == time.UTC || lb == time.Local {
		return la == lb
	}
	na, oa := a.Zone()
	nb, ob := b.Zone()
	return na == nb && oa == ob
}

func describeBytes(b []byte) string {
	if b == nil {
		return "nil"
	}
	if len(b) <= 16 {
		return fmt.Sprintf("%d bytes %x", len(b), b)
	}
	return fmt.Sprintf("%d bytes %x…", len(b), b[:16])
}

func describe(l *raft.Log) string {
	return fmt.Sprintf("{Index %d Term %d Type %v Data %s Extensions %s AppendedAt %v}",
		l.Index, l.Term, l.Type, describeBytes(l.Data), describeBytes(l.Extensions), l.AppendedAt)
}

// ---------------------------------------------------------------------------
// Log actions.

func (mc *machine) storeLogs(t *rapid.T) {
	m := mc.m
	start := m.last() + 1
	boot := false
	if m.last() == 0 {
		// An empty log takes any start index; 1 is the bootstrap's.
		start = rapid.OneOf(rapid.Just[uint64](1), rapid.Just[uint64](1), rapid.Uint64Range(2, 1<<40)).Draw(t, "start")
		boot = start == 1 && rapid.Bool().Draw(t, "bootstrap")
	}
	sp := drawSpec(t, mc)
	batch := sp.build(mc, start)
	if boot {
		r := rand.New(rand.NewSource(sp.seed))
		batch[0].Term, batch[0].Type = 1, raft.LogConfiguration
		batch[0].Data = raft.EncodeConfiguration(genConfig(r))
	}
	t.Logf("StoreLogs %d-%d (%d entries, class %d, mix %v, bootstrap %v)", start, start+uint64(sp.n)-1, sp.n, sp.class, sp.mix, boot)
	mc.mutate(func() {
		var err error
		if len(batch) == 1 && sp.seed%2 == 0 {
			err = mc.s.StoreLog(batch[0])
		} else {
			err = mc.s.StoreLogs(batch)
		}
		if mc.ro {
			if !errors.Is(err, raftbolt.ErrReadOnly) {
				t.Fatalf("StoreLogs on a read-only store = %v, want ErrReadOnly", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("StoreLogs %d-%d: %v", start, start+uint64(sp.n)-1, err)
		}
		if b := batch[0]; b.Index == 1 && b.Term == 1 && b.Type == raft.LogConfiguration && !m.hasConfig {
			if c := raft.DecodeConfiguration(b.Data); validConfig(c) {
				m.hasConfig, m.configIndex, m.config = true, 1, c
			}
		}
		m.log = append(m.log, batch...)
		for _, l := range batch {
			m.versions[l.Index] = append(m.versions[l.Index], l)
		}
		m.commit = m.staged
		size := 0
		for _, l := range batch {
			size += len(l.Data) + len(l.Extensions)
		}
		st := mc.stats
		st.entries, st.bytes, st.maxBatch = st.entries+len(batch), st.bytes+size, max(st.maxBatch, len(batch))
		cs, cb := mc.opts.CacheSize, mc.opts.CacheBytes
		if cs == 0 {
			cs = raftbolt.DefaultCacheSize
		}
		if cb == 0 {
			cb = raftbolt.DefaultCacheBytes
		}
		if cs > 0 && len(batch) > cs || cs > 0 && cb > 0 && size > cb {
			st.overBound++
		}
	})
	// The batch's newest and oldest entries, and one in between.
	mc.compareGetLog(t, mc.s, start, "after StoreLogs")
	mc.compareGetLog(t, mc.s, start+uint64(sp.n)/2, "after StoreLogs")
}

func (mc *machine) storeLogsInvalid(t *rapid.T) {
	m := mc.m
	kind := rapid.SampledFrom([]string{"empty", "start", "gap", "repeat", "nil", "zero"}).Draw(t, "kind")
	if kind == "start" && m.last() == 0 {
		kind = "gap" // an empty log takes any start
	}
	start := m.last() + 1
	if m.last() == 0 {
		start = rapid.Uint64Range(1, 100).Draw(t, "start")
	}
	n := rapid.IntRange(2, 10).Draw(t, "n")
	at := rapid.IntRange(1, n-1).Draw(t, "at")
	r := rand.New(rand.NewSource(rapid.Int64().Draw(t, "seed")))
	budget := 1 << 20 // not spent: nothing is written
	batch := make([]*raft.Log, n)
	for k := range batch {
		batch[k] = genEntry(r, start+uint64(k), 1, 0, true, &budget)
	}
	var want error = raftbolt.ErrNotContiguous
	switch kind {
	case "empty":
		batch, want = []*raft.Log{}, nil
		if rapid.Bool().Draw(t, "nilBatch") {
			batch = nil
		}
	case "start": // not last+1: past it, at it, or before it
		off := rapid.SampledFrom([]int64{1, -1, -2, -int64(m.last())}).Draw(t, "offset")
		s := uint64(int64(start) + off)
		if s == 0 {
			s = start + 5
		}
		for k, l := range batch {
			l.Index = s + uint64(k)
		}
	case "gap": // an index skipped inside the batch
		for k := at; k < n; k++ {
			batch[k].Index++
		}
	case "repeat": // an index repeated, or going back
		for k := at; k < n; k++ {
			batch[k].Index -= uint64(rapid.IntRange(1, 2).Draw(t, "back"))
			if batch[k].Index == 0 {
				batch[k].Index = start
			}
		}
	case "nil":
		batch[rapid.IntRange(0, n-1).Draw(t, "nilAt")] = nil
		want = raftbolt.ErrInvalid
	case "zero":
		batch[0].Index, want = 0, raftbolt.ErrInvalid
		if m.last() == 0 {
			for k, l := range batch { // 0, 1, 2...: contiguous from 0
				l.Index = uint64(k)
			}
		}
	}
	t.Logf("StoreLogs invalid (%s), %d entries", kind, len(batch))
	mc.mutate(func() {
		err := mc.s.StoreLogs(batch)
		switch {
		case mc.ro:
			if !errors.Is(err, raftbolt.ErrReadOnly) {
				t.Fatalf("StoreLogs on a read-only store = %v, want ErrReadOnly", err)
			}
		case want == nil:
			if err != nil {
				t.Fatalf("StoreLogs of an empty batch = %v, want nil", err)
			}
		case !errors.Is(err, want):
			t.Fatalf("StoreLogs invalid (%s) = %v, want an error wrapping %v", kind, err, want)
		}
		// Nothing written: not the entries, not the staged commit index.
	})
	for _, l := range batch {
		if l != nil {
			mc.compareGetLog(t, mc.s, l.Index, "after an invalid StoreLogs")
		}
	}
}

func (mc *machine) getLog(t *rapid.T) {
	m := mc.m
	first, last := m.first(), m.last()
	kinds := []string{"absent"}
	if last != 0 {
		kinds = append(kinds, "recent", "recent", "old", "any")
	}
	if len(m.deleted) > 0 {
		kinds = append(kinds, "truncated", "truncated")
	}
	var i uint64
	switch kind := rapid.SampledFrom(kinds).Draw(t, "kind"); kind {
	case "recent":
		i = last - min(last-first, rapid.Uint64Range(0, 10).Draw(t, "back"))
	case "old":
		i = first + min(last-first, rapid.Uint64Range(0, 10).Draw(t, "ahead"))
	case "any":
		i = rapid.Uint64Range(first, last).Draw(t, "index")
	case "truncated":
		i = rapid.SampledFrom(m.deleted).Draw(t, "index")
	default:
		i = rapid.SampledFrom([]uint64{0, first - 1, last + 1, last + 1000, math.MaxUint64}).Draw(t, "index")
	}
	mc.compareGetLog(t, mc.s, i, "GetLog")
	if err := mc.s.GetLog(i, nil); !errors.Is(err, raftbolt.ErrInvalid) {
		t.Fatalf("GetLog(%d, nil) = %v, want ErrInvalid", i, err)
	}
}

func (mc *machine) deleteRange(t *rapid.T) {
	m := mc.m
	first, last := m.first(), m.last()
	kinds := []string{"all", "invalid", "outside"}
	if last != 0 {
		kinds = append(kinds, "head", "head", "tail", "tail", "tail")
	}
	if last-first >= 2 && last != 0 {
		kinds = append(kinds, "hole")
	}
	var from, to uint64
	kind := rapid.SampledFrom(kinds).Draw(t, "kind")
	switch kind {
	case "head":
		from = rapid.SampledFrom([]uint64{0, first, first / 2}).Draw(t, "from")
		to = first + rapid.Uint64Range(0, last-first).Draw(t, "count")
	case "tail":
		from = last - rapid.Uint64Range(0, min(last-first, 30)).Draw(t, "count")
		to = rapid.SampledFrom([]uint64{last, last + 10, math.MaxUint64}).Draw(t, "to")
	case "all":
		switch rapid.IntRange(0, 2).Draw(t, "range") {
		case 0:
			from, to = 0, math.MaxUint64
		case 1:
			from, to = first, last
		default:
			from, to = 1, last+1
		}
	case "invalid":
		to = rapid.Uint64Range(0, last+2).Draw(t, "to")
		from = to + rapid.Uint64Range(1, 5).Draw(t, "over")
	case "outside":
		if rapid.Bool().Draw(t, "below") && first > 1 {
			from, to = 0, first-1
		} else {
			from, to = last+1, last+1+rapid.Uint64Range(0, 5).Draw(t, "len")
		}
	case "hole":
		from = rapid.Uint64Range(first+1, last-1).Draw(t, "from")
		to = rapid.Uint64Range(from, last-1).Draw(t, "to")
	}
	t.Logf("DeleteRange(%d, %d) %s on log %d-%d", from, to, kind, first, last)
	mc.mutate(func() {
		err := mc.s.DeleteRange(from, to)
		if mc.ro {
			if !errors.Is(err, raftbolt.ErrReadOnly) {
				t.Fatalf("DeleteRange on a read-only store = %v, want ErrReadOnly", err)
			}
			return
		}
		lo, hi := max(from, first), min(to, last)
		switch {
		case from > to || last == 0 || lo > hi:
			if err != nil {
				t.Fatalf("DeleteRange(%d, %d) on log %d-%d = %v, want nil (no-op)", from, to, first, last, err)
			}
		case lo > first && hi < last:
			if !errors.Is(err, raftbolt.ErrNotContiguous) {
				t.Fatalf("DeleteRange(%d, %d) on log %d-%d = %v, want ErrNotContiguous (a hole)", from, to, first, last, err)
			}
		default:
			if err != nil {
				t.Fatalf("DeleteRange(%d, %d) on log %d-%d: %v", from, to, first, last, err)
			}
			if lo == first {
				m.log = m.log[hi-first+1:]
			} else {
				m.log = m.log[:lo-first]
			}
			if len(m.log) == 0 {
				m.log = nil
			}
			m.deleted = m.deleted[:0]
			for _, i := range []uint64{lo, lo + 1, (lo + hi) / 2, hi - 1, hi} {
				if i >= lo && i <= hi {
					m.deleted = append(m.deleted, i)
				}
			}
		}
	})
	for _, i := range []uint64{from, to, first, last} {
		mc.compareGetLog(t, mc.s, i, "after DeleteRange")
	}
}

func (mc *machine) stageCommit(t *rapid.T) {
	last := mc.m.last()
	i := rapid.OneOf(rapid.Uint64Range(max(last, 10)-10, last+10), rapid.Just[uint64](0),
		rapid.Uint64Range(0, last+3000)).Draw(t, "index")
	t.Logf("StageCommitIndex(%d)", i)
	mc.mutate(func() {
		err := mc.s.StageCommitIndex(i)
		if mc.ro {
			if !errors.Is(err, raftbolt.ErrReadOnly) {
				t.Fatalf("StageCommitIndex on a read-only store = %v, want ErrReadOnly", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("StageCommitIndex(%d): %v", i, err)
		}
		mc.m.staged = i
	})
}

// ---------------------------------------------------------------------------
// Stable store actions.

var modelKeys = func() []string {
	keys := []string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"}
	for k := range 80 {
		keys = append(keys, fmt.Sprintf("k%02d", k))
	}
	return keys
}()

func drawKey(t *rapid.T) string {
	if rapid.IntRange(0, 3).Draw(t, "rareKey") == 0 {
		return rapid.SampledFrom(modelKeys).Draw(t, "key")
	}
	return rapid.SampledFrom(modelKeys[:8]).Draw(t, "key")
}

func drawValue(t *rapid.T) []byte {
	switch rapid.IntRange(0, 9).Draw(t, "valueKind") {
	case 0:
		return nil
	case 1:
		return []byte{}
	case 2: // over the mirror's 4 KiB bound
		v := make([]byte, 4097+rapid.IntRange(0, 5000).Draw(t, "large"))
		rand.New(rand.NewSource(int64(len(v)))).Read(v)
		return v
	default:
		return rapid.SliceOfN(rapid.Byte(), 0, 24).Draw(t, "value")
	}
}

func (mc *machine) set(t *rapid.T) {
	key := drawKey(t)
	asUint := rapid.Bool().Draw(t, "uint64")
	var val []byte
	var n uint64
	if asUint {
		n = rapid.Uint64().Draw(t, "n")
		val = binary.BigEndian.AppendUint64(nil, n)
	} else {
		val = drawValue(t)
	}
	if rapid.IntRange(0, 15).Draw(t, "emptyKey") == 0 {
		key = ""
	}
	mc.mutate(func() {
		var err error
		if asUint {
			err = mc.s.SetUint64([]byte(key), n)
		} else {
			err = mc.s.Set([]byte(key), val)
		}
		switch {
		case mc.ro:
			if !errors.Is(err, raftbolt.ErrReadOnly) {
				t.Fatalf("Set on a read-only store = %v, want ErrReadOnly", err)
			}
		case key == "":
			if !errors.Is(err, raftbolt.ErrInvalid) {
				t.Fatalf("Set of the empty key = %v, want ErrInvalid", err)
			}
		case err != nil:
			t.Fatalf("Set(%q): %v", key, err)
		default:
			mc.m.stable[key] = slices.Clone(val)
			if val == nil {
				mc.m.stable[key] = []byte{}
			}
			if asUint || len(val) > 0 {
				val[0] ^= 0xff // the store must have copied it
			}
		}
	})
	if key != "" {
		mc.compareGet(t, mc.s, key, "after Set")
	}
}

// setMany sets more keys than the stable mirror holds.
func (mc *machine) setMany(t *rapid.T) {
	base := rapid.Uint64().Draw(t, "base")
	mc.mutate(func() {
		for k, key := range modelKeys {
			err := mc.s.SetUint64([]byte(key), base+uint64(k))
			if mc.ro {
				if !errors.Is(err, raftbolt.ErrReadOnly) {
					t.Fatalf("SetUint64 on a read-only store = %v, want ErrReadOnly", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("SetUint64(%q): %v", key, err)
			}
			mc.m.stable[key] = binary.BigEndian.AppendUint64(nil, base+uint64(k))
		}
	})
}

func (mc *machine) get(t *rapid.T) {
	key := drawKey(t)
	if rapid.IntRange(0, 15).Draw(t, "emptyKey") == 0 {
		for _, err := range []error{
			func() error { _, err := mc.s.Get(nil); return err }(),
			func() error { _, err := mc.s.GetUint64([]byte{}); return err }(),
		} {
			if !errors.Is(err, raftbolt.ErrInvalid) {
				t.Fatalf("Get of the empty key = %v, want ErrInvalid", err)
			}
		}
		return
	}
	mc.compareGet(t, mc.s, key, "Get")
}

func (mc *machine) compareGet(t *rapid.T, s *raftbolt.Store, key, when string) {
	want, ok := mc.m.stable[key]
	v, err := s.Get([]byte(key))
	n, errU := s.GetUint64([]byte(key))
	if !ok {
		if err != raftbolt.ErrKeyNotFound || errU != raftbolt.ErrKeyNotFound || v != nil || n != 0 {
			t.Fatalf("%s: Get(%q) = %x, %v; GetUint64 = %d, %v; want nil/0 and ErrKeyNotFound itself", when, key, v, err, n, errU)
		}
		return
	}
	if err != nil || !bytes.Equal(v, want) {
		t.Fatalf("%s: Get(%q) = %s, %v; model %s", when, key, describeBytes(v), err, describeBytes(want))
	}
	if len(want) != 8 {
		if !errors.Is(errU, raftbolt.ErrCorrupt) {
			t.Fatalf("%s: GetUint64(%q) of a %d-byte value = %d, %v; want ErrCorrupt", when, key, len(want), n, errU)
		}
	} else if errU != nil || n != binary.BigEndian.Uint64(want) {
		t.Fatalf("%s: GetUint64(%q) = %d, %v; model %d", when, key, n, errU, binary.BigEndian.Uint64(want))
	}
	if len(v) > 0 {
		v[0] ^= 0xff // the caller's to keep: must not change the store
	}
}

// ---------------------------------------------------------------------------
// Configuration actions.

func (mc *machine) storeConfiguration(t *rapid.T) {
	m := mc.m
	index := rapid.OneOf(rapid.Uint64Range(max(m.configIndex, 3)-3, m.configIndex+3),
		rapid.Uint64Range(0, m.last()+5)).Draw(t, "index")
	c := genConfig(rand.New(rand.NewSource(rapid.Int64().Draw(t, "seed"))))
	if rapid.IntRange(0, 7).Draw(t, "duplicate") == 0 && len(c.Servers) > 1 {
		c.Servers[1].ID = c.Servers[0].ID
	}
	t.Logf("StoreConfiguration(%d, %v)", index, c)
	mc.mutate(func() {
		err := mc.s.StoreConfiguration(index, c)
		switch {
		case mc.ro:
			if !errors.Is(err, raftbolt.ErrReadOnly) {
				t.Fatalf("StoreConfiguration on a read-only store = %v, want ErrReadOnly", err)
			}
		case index == 0 || !validConfig(c):
			if !errors.Is(err, raftbolt.ErrInvalid) {
				t.Fatalf("StoreConfiguration(%d, %v) = %v, want ErrInvalid", index, c, err)
			}
		case err != nil:
			t.Fatalf("StoreConfiguration(%d, %v): %v", index, c, err)
		default:
			m.recordConfig(index, c)
		}
	})
}

// modelTransport is what raft's in-memory snapshot store encodes peers with.
var _, modelTransport = raft.NewInmemTransport("")

// snapshot records a snapshot through WrapSnapshotStore (an in-memory
// inner store): it raises the marks GetCommitIndex's caps compare with.
func (mc *machine) snapshot(t *rapid.T) {
	m := mc.m
	last := m.last()
	index := rapid.Uint64Range(1, max(last, 1)+2).Draw(t, "index")
	confIndex := rapid.Uint64Range(1, index).Draw(t, "configurationIndex")
	c := genConfig(rand.New(rand.NewSource(rapid.Int64().Draw(t, "seed"))))
	for !validConfig(c) {
		c.Servers[0].Suffrage = raft.Voter
	}
	t.Logf("snapshot at %d, configuration index %d", index, confIndex)
	mc.mutate(func() {
		sink, err := mc.snaps.Create(raft.SnapshotVersionMax, index, 1, c, confIndex, modelTransport)
		if err != nil {
			t.Fatalf("snapshot Create: %v", err)
		}
		if _, err := sink.Write([]byte("state")); err != nil {
			t.Fatalf("snapshot Write: %v", err)
		}
		err = sink.Close()
		if mc.ro {
			if !errors.Is(err, raftbolt.ErrReadOnly) {
				t.Fatalf("snapshot Close on a read-only store = %v, want ErrReadOnly", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("snapshot Close: %v", err)
		}
		m.snapIndex, m.snapConf = max(m.snapIndex, index), max(m.snapConf, confIndex)
		m.recordConfig(confIndex, c)
	})
}

// ---------------------------------------------------------------------------
// Maintenance and lifecycle actions.

func (mc *machine) compact(t *rapid.T) {
	err := mc.s.Compact()
	if mc.ro {
		if !errors.Is(err, raftbolt.ErrReadOnly) {
			t.Fatalf("Compact on a read-only store = %v, want ErrReadOnly", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Compact: %v", err)
	}
}

func (mc *machine) checkStore(t *rapid.T) {
	if err := mc.s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

// backup streams a copy, opens it (read-only or not) and compares it with
// the model.
func (mc *machine) backup(t *rapid.T) {
	var buf bytes.Buffer
	n, err := mc.s.Backup(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("Backup = %d, %v; wrote %d bytes", n, err, buf.Len())
	}
	mc.saved = &savedBackup{data: buf.Bytes(), model: mc.m.clone()}
	path := filepath.Join(mc.dir, "backup.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	o := mc.opts
	o.ReadOnly = rapid.Bool().Draw(t, "readOnly")
	cp, err := raftbolt.Open(path, &o)
	if err != nil {
		t.Fatalf("open the backup: %v", err)
	}
	defer func() {
		if err := cp.Close(); err != nil {
			t.Fatalf("Close of the backup: %v", err)
		}
		// A journal the copy made is its own: the next copy must not find it.
		for _, p := range []string{path, path + ".journal"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		}
	}()
	mc.verifyAll(t, cp, "the backup")
	if err := cp.Check(); err != nil {
		t.Fatalf("Check of the backup: %v", err)
	}
}

// savedBackup is the last Backup's copy and the model at that time.
type savedBackup struct {
	data  []byte
	model *model
}

// clone copies the model (versions stay shared: they only grow).
func (m *model) clone() *model {
	return &model{
		log: slices.Clone(m.log), commit: m.commit, staged: m.commit,
		snapIndex: m.snapIndex, snapConf: m.snapConf,
		hasConfig: m.hasConfig, configIndex: m.configIndex, config: cloneConfig(m.config),
		stable: maps.Clone(m.stable), versions: m.versions,
	}
}

// restoreBackup puts the last backup in place of the store, as the README
// says (close, replace the file, remove PATH.journal), and opens it: the
// store is then what it was at the backup.
func (mc *machine) restoreBackup(t *rapid.T) {
	if mc.saved == nil {
		t.Skip("no backup yet")
	}
	t.Logf("restore the backup (log %d-%d)", mc.saved.model.first(), mc.saved.model.last())
	mc.stopReaders()
	mc.checkReaders(t)
	if err := mc.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	mc.s = nil
	tmp := mc.path + ".restore"
	if err := os.WriteFile(tmp, mc.saved.data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, mc.path); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(mc.path + ".journal"); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	m := mc.saved.model.clone()
	m.versions = mc.m.versions
	mc.m = m
	mc.open(t, false)
	mc.verifyAll(t, mc.s, "after restoring the backup")
}

// reopen closes the store, checks that it behaves closed, and opens it
// again, read-only one time in four.
func (mc *machine) reopen(t *rapid.T) {
	ro := rapid.IntRange(0, 3).Draw(t, "readOnly") == 0
	t.Logf("reopen (read-only %v)", ro)
	mc.stopReaders()
	mc.checkReaders(t)
	if err := mc.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := mc.s.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	var l raft.Log
	if err := mc.s.GetLog(mc.m.last(), &l); !errors.Is(err, raftbolt.ErrClosed) {
		t.Fatalf("GetLog after Close = %v, want ErrClosed", err)
	}
	if _, err := mc.s.LastIndex(); !errors.Is(err, raftbolt.ErrClosed) {
		t.Fatalf("LastIndex after Close = %v, want ErrClosed", err)
	}
	if err := mc.s.StoreLogs([]*raft.Log{{Index: mc.m.last() + 1}}); !errors.Is(err, raftbolt.ErrClosed) && !errors.Is(err, raftbolt.ErrReadOnly) {
		t.Fatalf("StoreLogs after Close = %v, want ErrClosed", err)
	}
	mc.s = nil
	mc.m.staged = mc.m.commit // staged values are not persisted
	mc.open(t, ro)
	mc.verifyAll(t, mc.s, "after reopen")
}

// ---------------------------------------------------------------------------
// Concurrent readers.

func (mc *machine) startReaders() {
	if mc.readers == 0 {
		return
	}
	mc.stop = make(chan struct{})
	for k := range mc.readers {
		mc.wg.Add(1)
		go mc.modelReader(mc.s, rand.New(rand.NewSource(int64(mc.readSeed)+int64(k))))
	}
}

func (mc *machine) stopReaders() {
	if mc.stop == nil {
		return
	}
	close(mc.stop)
	mc.wg.Wait()
	mc.stop = nil
}

func (mc *machine) readerFail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	mc.readerErr.CompareAndSwap(nil, &msg)
}

// modelReader reads s until stopped, and checks on every read:
//   - a Stats() reports first <= last (both 0, or neither);
//   - GetLog returns an entry or raft.ErrLogNotFound, nothing else;
//   - a returned entry holds the index asked for, and is one the model
//     says was stored there at some point;
//   - when at most one mutation overlapped the read, the index lies in
//     [first, last] of the Stats read before or of the one after;
//   - when none did, the answer is exactly the model's.
func (mc *machine) modelReader(s *raftbolt.Store, r *rand.Rand) {
	defer mc.wg.Done()
	var got raft.Log
	for {
		select {
		case <-mc.stop:
			return
		default:
		}
		g0 := mc.gen.Load()
		st0, err := s.Stats()
		if err != nil {
			mc.readerFail("Stats: %v", err)
			return
		}
		if st0.FirstIndex > st0.LastIndex || (st0.FirstIndex == 0) != (st0.LastIndex == 0) {
			mc.readerFail("Stats: first %d, last %d", st0.FirstIndex, st0.LastIndex)
			return
		}
		var i uint64
		switch p := r.Intn(10); {
		case p < 5 && st0.LastIndex > 0:
			i = st0.LastIndex - min(st0.LastIndex-st0.FirstIndex, uint64(r.Intn(4)))
		case p < 7 && st0.LastIndex > 0:
			i = st0.FirstIndex + uint64(r.Intn(3))
		default:
			lo := max(st0.FirstIndex, 3) - 2
			i = lo + uint64(r.Int63n(int64(st0.LastIndex+2-lo)+1))
		}
		err = s.GetLog(i, &got)
		st1, err1 := s.Stats()
		g1 := mc.gen.Load()
		mc.reads.Add(1)
		if err1 != nil {
			mc.readerFail("Stats: %v", err1)
			return
		}
		if err != nil && err != raft.ErrLogNotFound {
			mc.readerFail("GetLog(%d) = %v (log %d-%d before, %d-%d after)", i, err, st0.FirstIndex, st0.LastIndex, st1.FirstIndex, st1.LastIndex)
			return
		}
		in := func(st raftbolt.Stats) bool { return st.LastIndex != 0 && i >= st.FirstIndex && i <= st.LastIndex }
		oneMutation := g1-g0 <= 1 || g0%2 == 0 && g1-g0 <= 2
		if err == nil {
			if got.Index != i {
				mc.readerFail("GetLog(%d) returned entry %d", i, got.Index)
				return
			}
			if oneMutation && !in(st0) && !in(st1) {
				mc.readerFail("GetLog(%d) returned an entry outside the log %d-%d before and %d-%d after", i,
					st0.FirstIndex, st0.LastIndex, st1.FirstIndex, st1.LastIndex)
				return
			}
		}
		mc.m.mu.RLock()
		if err == nil {
			match := false
			for _, v := range mc.m.versions[i] {
				if diffLog(v, &got) == "" {
					match = true
					break
				}
			}
			if !match {
				mc.m.mu.RUnlock()
				mc.readerFail("GetLog(%d) = %s, which was never stored there (%d versions)", i, describe(&got), len(mc.m.versions[i]))
				return
			}
		}
		if g0 == g1 && g0%2 == 0 && mc.gen.Load() == g0 {
			// Quiescent: the model is the store's state.
			want := mc.m.at(i)
			if st0.FirstIndex != st1.FirstIndex || st0.LastIndex != st1.LastIndex ||
				st0.FirstIndex != mc.m.first() || st0.LastIndex != mc.m.last() {
				mc.m.mu.RUnlock()
				mc.readerFail("quiescent Stats: %d-%d then %d-%d; model %d-%d", st0.FirstIndex, st0.LastIndex,
					st1.FirstIndex, st1.LastIndex, mc.m.first(), mc.m.last())
				return
			}
			if (want == nil) != (err == raft.ErrLogNotFound) || want != nil && diffLog(want, &got) != "" {
				mc.m.mu.RUnlock()
				mc.readerFail("quiescent GetLog(%d) = %v, %s; model %v", i, err, describe(&got), want)
				return
			}
		}
		mc.m.mu.RUnlock()
	}
}
