package powerloss_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
	"github.com/raftbolt/raftbolt/internal/powerloss"
	"go.etcd.io/bbolt"
)

// Workloads run in a child process under strace (the test binary re-executed
// with childEnv set to "workload:NAME", dirEnv naming the empty directory to
// work in). Each announces an operation with a mark "intent OP" before it
// starts and "ack" once it returned; the checker (childEnv "check:NAME")
// rebuilds from the marks before a crash point what must be there.

const (
	childEnv = "RAFTBOLT_POWERLOSS_CHILD"
	dirEnv   = "RAFTBOLT_POWERLOSS_DIR"
	seedEnv  = "RAFTBOLT_SEED"
	opsEnv   = "RAFTBOLT_POWERLOSS_OPS" // operations per workload
)

// workload is one scenario: run performs it in dir, check verifies a
// crash state of it given the acknowledged operations and the one in flight.
type workload struct {
	run   func(dir string, rng *rand.Rand, nops int) error
	check func(dir string, acked []string, inflight string) (class, detail string)
}

var workloads = map[string]workload{
	"store":        {run: func(d string, r *rand.Rand, n int) error { return storeRun(d, r, n, false, false) }, check: storeCheck},
	"compact":      {run: func(d string, r *rand.Rand, n int) error { return storeRun(d, r, n, true, false) }, check: storeCheck},
	"nosync":       {run: func(d string, r *rand.Rand, n int) error { return storeRun(d, r, n, false, true) }, check: storeCheck},
	"statemachine": {run: smRun, check: smCheck},
	"migrate":      {run: migrateRun, check: storeCheck},
	"planted":      {run: func(d string, _ *rand.Rand, _ int) error { return plantedRun(d, false) }, check: plantedCheck},
	"planted-sync": {run: func(d string, _ *rand.Rand, _ int) error { return plantedRun(d, true) }, check: plantedCheck},
}

const (
	classOK      = "ok"
	classLost    = "lost"
	classOpenErr = "openerr"
	classCrash   = "crash"
)

// mark tells the explorer where the workload is: one write system call.
func mark(format string, args ...any) {
	_, _ = os.Stdout.WriteString(powerloss.MarkPrefix + fmt.Sprintf(format, args...) + "\n")
}

// workDir is the traced directory of the running workload.
var workDir string

// ack marks the end of an operation, with the digest of the files as this
// process sees them, against which the explorer checks its model.
func ack() {
	files := map[string][]byte{}
	entries, err := os.ReadDir(workDir)
	if err == nil {
		for _, e := range entries {
			if b, err := os.ReadFile(filepath.Join(workDir, e.Name())); err == nil {
				files[e.Name()] = b
			}
		}
	}
	mark("ack %s", digest(files))
}

// digest names each file and a hash of its content, in name order.
func digest(files map[string][]byte) string {
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		h := sha256.Sum256(files[n])
		parts = append(parts, fmt.Sprintf("%s:%d:%x", n, len(files[n]), h[:6]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

// storeOptions are the workloads' options: without the journal
// (Options.NoJournal), unless RAFTBOLT_POWERLOSS_JOURNAL=1 turns it on
// with a journal small enough to wrap within a workload (the default would
// make every crash state a 16 MiB file).
func storeOptions(noSync bool) *raftbolt.Options {
	o := &raftbolt.Options{Logger: hclog.NewNullLogger(), MetricsInterval: -1, RestoreReplayLimit: -1, NoSync: noSync, NoJournal: true}
	if os.Getenv("RAFTBOLT_POWERLOSS_JOURNAL") == "1" {
		o.NoJournal, o.JournalSize = false, 64<<10
	}
	return o
}

const storeName = "raft.db"

// entry is the log entry at index i in term term: every field derives from
// the two, so the checker knows what must be there.
func entry(i, term uint64) *raft.Log {
	r := rand.New(rand.NewPCG(i, term))
	l := &raft.Log{Index: i, Term: term, Type: raft.LogCommand, AppendedAt: time.Unix(int64(i), int64(term)).UTC()}
	l.Data = make([]byte, r.IntN(700))
	for k := range l.Data {
		l.Data[k] = byte(r.Uint32())
	}
	if i%5 == 0 {
		l.Extensions = []byte(fmt.Sprintf("ext-%d-%d", i, term))
	}
	return l
}

func configuration(index uint64) raft.Configuration {
	return raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "a", Address: raft.ServerAddress(fmt.Sprintf("a-%d", index%7))},
		{Suffrage: raft.Nonvoter, ID: "b", Address: "b"},
	}}
}

// storeOps performs n random store operations on s, marking each.
func storeOps(s *raftbolt.Store, rng *rand.Rand, n int, compact bool, term uint64) error {
	for op := 0; op < n; op++ {
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		var err error
		switch r := rng.IntN(100); {
		case compact && op%6 == 5:
			mark("intent compact")
			err = s.Compact()
		case r < 50:
			start, count := last+1, 1+rng.IntN(12)
			var commit uint64
			if last > 0 && rng.IntN(2) == 0 {
				commit = first + rng.Uint64N(last-first+1)
				if err := s.StageCommitIndex(commit); err != nil {
					return err
				}
			}
			var batch []*raft.Log
			for i := start; i < start+uint64(count); i++ {
				batch = append(batch, entry(i, term))
			}
			mark("intent append %d %d %d %d", start, start+uint64(count)-1, term, commit)
			err = s.StoreLogs(batch)
		case r < 60:
			k, v := fmt.Sprintf("k%d", rng.IntN(4)), fmt.Sprintf("v%d-%d", op, rng.Uint32())
			mark("intent set %s %s", k, v)
			err = s.Set([]byte(k), []byte(v))
		case r < 68:
			k, v := fmt.Sprintf("u%d", rng.IntN(3)), rng.Uint64()
			mark("intent setu %s %d", k, v)
			err = s.SetUint64([]byte(k), v)
		case r < 76:
			if last == 0 {
				continue
			}
			mark("intent config %d", last)
			err = s.StoreConfiguration(last, configuration(last))
		case r < 88:
			if last-first < 12 {
				continue
			}
			to := first + rng.Uint64N((last-first)/2)
			mark("intent head %d", to)
			err = s.DeleteRange(first, to)
		default:
			if last-first < 12 {
				continue
			}
			from := last - rng.Uint64N(6)
			mark("intent tail %d", from)
			err = s.DeleteRange(from, last)
			term++ // a new leader rewrites the tail in a later term
		}
		if err != nil {
			return err
		}
		ack()
	}
	return nil
}

// storeRun: create a store, then random operations (with Compact every
// sixth when compact is set), then close.
func storeRun(dir string, rng *rand.Rand, n int, compact, noSync bool) error {
	mark("begin")
	mark("intent open")
	s, err := raftbolt.Open(filepath.Join(dir, storeName), storeOptions(noSync))
	if err != nil {
		return err
	}
	ack()
	if err := storeOps(s, rng, n, compact, 1); err != nil {
		return err
	}
	mark("intent close")
	if err := s.Close(); err != nil {
		return err
	}
	ack()
	return nil
}

// storeModel is what the acknowledged operations left in the store.
type storeModel struct {
	exists      bool
	terms       map[uint64]uint64
	first, last uint64
	stable      map[string]string
	uints       map[string]uint64
	conf        uint64
	commit      uint64
}

func newStoreModel() *storeModel {
	return &storeModel{terms: map[uint64]uint64{}, stable: map[string]string{}, uints: map[string]uint64{}}
}

func (m *storeModel) clone() *storeModel {
	c := *m
	c.terms, c.stable, c.uints = map[uint64]uint64{}, map[string]string{}, map[string]uint64{}
	for k, v := range m.terms {
		c.terms[k] = v
	}
	for k, v := range m.stable {
		c.stable[k] = v
	}
	for k, v := range m.uints {
		c.uints[k] = v
	}
	return &c
}

func (m *storeModel) apply(op string) *storeModel {
	c := m.clone()
	f := strings.Fields(op)
	num := func(i int) uint64 { n, _ := strconv.ParseUint(f[i], 10, 64); return n }
	switch f[0] {
	case "open":
		c.exists = true
	case "migrate":
		c.exists = true
		for i := uint64(1); i <= num(1); i++ {
			c.terms[i] = 1
		}
		c.first, c.last = 1, num(1)
		for k, v := range migrateStable {
			c.stable[k] = v
		}
	case "append":
		from, to, term, commit := num(1), num(2), num(3), num(4)
		for i := from; i <= to; i++ {
			c.terms[i] = term
		}
		if c.first == 0 {
			c.first = from
		}
		c.last = to
		if commit != 0 {
			c.commit = commit
		}
	case "set":
		c.stable[f[1]] = f[2]
	case "setu":
		c.uints[f[1]] = num(2)
	case "config":
		c.conf = max(c.conf, num(1))
	case "head":
		for i := c.first; i <= num(1); i++ {
			delete(c.terms, i)
		}
		c.first = num(1) + 1
	case "tail":
		for i := num(1); i <= c.last; i++ {
			delete(c.terms, i)
		}
		c.last = num(1) - 1
	}
	return c
}

// diff returns how s differs from the model, or "".
func (m *storeModel) diff(s *raftbolt.Store) string {
	first, err1 := s.FirstIndex()
	last, err2 := s.LastIndex()
	if err := errors.Join(err1, err2); err != nil {
		return err.Error()
	}
	if m.last < m.first { // every entry deleted
		if last != 0 && last >= first {
			return fmt.Sprintf("log %d-%d, expected empty", first, last)
		}
	} else if first != m.first || last != m.last {
		return fmt.Sprintf("log %d-%d, expected %d-%d", first, last, m.first, m.last)
	}
	for i := m.first; i <= m.last && m.last != 0; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			return fmt.Sprintf("entry %d: %v", i, err)
		}
		want := entry(i, m.terms[i])
		if l.Index != want.Index || l.Term != want.Term || l.Type != want.Type || !bytes.Equal(l.Data, want.Data) ||
			!bytes.Equal(l.Extensions, want.Extensions) || !l.AppendedAt.Equal(want.AppendedAt) {
			return fmt.Sprintf("entry %d: term %d, %d bytes; expected term %d, %d bytes", i, l.Term, len(l.Data), want.Term, len(want.Data))
		}
	}
	for k, v := range m.stable {
		got, err := s.Get([]byte(k))
		if err != nil || string(got) != v {
			return fmt.Sprintf("stable %s = %q (%v), expected %q", k, got, err, v)
		}
	}
	for k, v := range m.uints {
		got, err := s.GetUint64([]byte(k))
		if err != nil || got != v {
			return fmt.Sprintf("stable uint64 %s = %d (%v), expected %d", k, got, err, v)
		}
	}
	if m.conf > 0 {
		idx, c, err := s.LatestConfiguration()
		if err != nil || idx != m.conf || !reflect.DeepEqual(c, configuration(m.conf)) {
			return fmt.Sprintf("configuration at %d (%v), expected at %d", idx, err, m.conf)
		}
	}
	commit, err := s.GetCommitIndex()
	if err != nil {
		return fmt.Sprintf("commit index: %v", err)
	}
	if want := min(m.commit, m.last); commit > want {
		return fmt.Sprintf("commit index %d, expected at most %d", commit, want)
	}
	return ""
}

// replay returns the models after the acknowledged operations and, when
// one was in flight, after it too.
func replay[M interface{ apply(string) M }](zero M, acked []string, inflight string) (M, M, bool) {
	m := zero
	for _, op := range acked {
		m = m.apply(op)
	}
	if inflight == "" {
		return m, m, false
	}
	return m, m.apply(inflight), true
}

func storeCheck(dir string, acked []string, inflight string) (string, string) {
	before, after, flying := replay(newStoreModel(), acked, inflight)
	path := filepath.Join(dir, storeName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if before.exists {
			return classLost, "the store file is gone, though its creation was acknowledged"
		}
		return classOK, ""
	}
	s, err := raftbolt.Open(path, storeOptions(false))
	if err != nil {
		return classOpenErr, "Open: " + err.Error()
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		return classOpenErr, "Check: " + err.Error()
	}
	var diffs []string
	if before.exists {
		if d := before.diff(s); d == "" {
			return classOK, ""
		} else {
			diffs = append(diffs, "as acknowledged: "+d)
		}
	}
	if flying || !before.exists {
		if d := after.diff(s); d == "" {
			return classOK, ""
		} else {
			diffs = append(diffs, "with "+inflight+" done too: "+d)
		}
	}
	return classLost, strings.Join(diffs, "; ")
}

// The state machine workload applies batches and restores snapshots of
// another state machine that applied the same entries further.

const smName = "state.db"

func smData(i uint64) []byte {
	return []byte(fmt.Sprintf("cmd-%d-%s", i, strings.Repeat("x", int(i%300))))
}

func smApply(tx *bbolt.Tx, l *raft.Log) interface{} {
	b, err := tx.CreateBucketIfNotExists([]byte("pl"))
	if err != nil {
		return err
	}
	if err := b.Put([]byte(fmt.Sprintf("e%08d", l.Index)), l.Data); err != nil {
		return err
	}
	sum, _ := strconv.ParseUint(string(b.Get([]byte("sum"))), 10, 64)
	return b.Put([]byte("sum"), []byte(strconv.FormatUint(sum+l.Index, 10)))
}

func smBatch(from, to uint64) []*raft.Log {
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: smData(i)})
	}
	return logs
}

type sink struct{ bytes.Buffer }

func (*sink) ID() string    { return "mem" }
func (*sink) Cancel() error { return nil }
func (*sink) Close() error  { return nil }

// snapshotUpTo returns the snapshot stream of a state machine (outside the
// traced directory) that applied entries 1..index.
func snapshotUpTo(dir string, index uint64) ([]byte, error) {
	path := filepath.Join(dir, fmt.Sprintf("src-%d.db", index))
	m, err := raftbolt.OpenStateMachine(path, smApply, &raftbolt.Options{Logger: hclog.NewNullLogger(), NoSync: true, MetricsInterval: -1})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	for _, r := range m.ApplyBatch(smBatch(1, index)) {
		if err, ok := r.(error); ok {
			return nil, err
		}
	}
	snap, err := m.Snapshot()
	if err != nil {
		return nil, err
	}
	defer snap.Release()
	var s sink
	if err := snap.Persist(&s); err != nil {
		return nil, err
	}
	return s.Bytes(), nil
}

func smRun(dir string, rng *rand.Rand, n int) error {
	src := dir + ".src"
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	mark("begin")
	mark("intent open")
	m, err := raftbolt.OpenStateMachine(filepath.Join(dir, smName), smApply, storeOptions(false))
	if err != nil {
		return err
	}
	ack()
	applied := uint64(0)
	for op := 0; op < n; op++ {
		if op%7 == 4 {
			to := applied + 5 + rng.Uint64N(40)
			stream, err := snapshotUpTo(src, to)
			if err != nil {
				return err
			}
			mark("intent restore %d", to)
			if err := m.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
				return err
			}
			applied = to
		} else {
			to := applied + 1 + rng.Uint64N(8)
			mark("intent apply %d %d", applied+1, to)
			for _, r := range m.ApplyBatch(smBatch(applied+1, to)) {
				if err, ok := r.(error); ok {
					return err
				}
			}
			applied = to
		}
		ack()
	}
	mark("intent close")
	if err := m.Close(); err != nil {
		return err
	}
	ack()
	return nil
}

type smModel struct {
	exists  bool
	applied uint64
}

func (m smModel) apply(op string) smModel {
	f := strings.Fields(op)
	switch f[0] {
	case "open":
		m.exists = true
	case "apply":
		m.applied, _ = strconv.ParseUint(f[2], 10, 64)
	case "restore":
		m.applied, _ = strconv.ParseUint(f[1], 10, 64)
	}
	return m
}

// smDiff checks the applied index and that the data holds exactly the
// effects of entries 1..applied.
func smDiff(m *raftbolt.StateMachine, want uint64) string {
	if got := m.AppliedIndex(); got != want {
		return fmt.Sprintf("applied index %d, expected %d", got, want)
	}
	var d string
	err := m.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("pl"))
		if b == nil {
			if want != 0 {
				d = "no data bucket"
			}
			return nil
		}
		n := uint64(0)
		err := b.ForEach(func(k, v []byte) error {
			if k[0] != 'e' {
				return nil
			}
			n++
			i, _ := strconv.ParseUint(string(k[1:]), 10, 64)
			if i == 0 || i > want || !bytes.Equal(v, smData(i)) {
				d = fmt.Sprintf("entry %d's data wrong or beyond the applied index", i)
			}
			return nil
		})
		if sum := string(b.Get([]byte("sum"))); d == "" && sum != strconv.FormatUint(want*(want+1)/2, 10) {
			d = fmt.Sprintf("sum %s, expected %d", sum, want*(want+1)/2)
		}
		if d == "" && n != want {
			d = fmt.Sprintf("%d entries applied, expected %d", n, want)
		}
		return err
	})
	if err != nil {
		return "View: " + err.Error()
	}
	return d
}

func smCheck(dir string, acked []string, inflight string) (string, string) {
	before, after, flying := replay(smModel{}, acked, inflight)
	path := filepath.Join(dir, smName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if before.exists {
			return classLost, "the state machine's file is gone, though its creation was acknowledged"
		}
		return classOK, ""
	}
	m, err := raftbolt.OpenStateMachine(path, smApply, storeOptions(false))
	if err != nil {
		return classOpenErr, "OpenStateMachine: " + err.Error()
	}
	defer m.Close()
	d1 := smDiff(m, before.applied)
	if d1 == "" {
		return classOK, ""
	}
	if flying {
		d2 := smDiff(m, after.applied)
		if d2 == "" {
			return classOK, ""
		}
		return classLost, fmt.Sprintf("as acknowledged: %s; with %s done too: %s", d1, inflight, d2)
	}
	return classLost, d1
}

// The migrate workload writes a raft-boltdb file (setup, synced), migrates
// it, then writes on to the new store.

var migrateStable = map[string]string{"CurrentTerm-bytes": "t1", "LastVoteCand": "node-a", "k9": "from raft-boltdb"}

const migrateEntries = 40

func writeBoltDB(path string) error {
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	h := codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: true}}
	err = db.Update(func(tx *bbolt.Tx) error {
		logs, err := tx.CreateBucket([]byte("logs"))
		if err != nil {
			return err
		}
		conf, err := tx.CreateBucket([]byte("conf"))
		if err != nil {
			return err
		}
		for i := uint64(1); i <= migrateEntries; i++ {
			var buf bytes.Buffer
			if err := codec.NewEncoder(&buf, &h).Encode(entry(i, 1)); err != nil {
				return err
			}
			k := make([]byte, 8)
			for b := range 8 {
				k[b] = byte(i >> (56 - 8*b))
			}
			if err := logs.Put(k, buf.Bytes()); err != nil {
				return err
			}
		}
		for k, v := range migrateStable {
			if err := conf.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	return errors.Join(err, db.Close())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

func migrateRun(dir string, rng *rand.Rand, n int) error {
	src := filepath.Join(dir, "old.db")
	if err := writeBoltDB(src); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil { // the source is durable before the test begins
		return err
	}
	mark("begin")
	mark("intent migrate %d", migrateEntries)
	if err := raftbolt.Migrate(src, filepath.Join(dir, storeName), storeOptions(false)); err != nil {
		return err
	}
	ack()
	mark("intent open")
	s, err := raftbolt.Open(filepath.Join(dir, storeName), storeOptions(false))
	if err != nil {
		return err
	}
	ack()
	if err := storeOps(s, rng, n/2, false, 2); err != nil {
		return err
	}
	mark("intent close")
	if err := s.Close(); err != nil {
		return err
	}
	ack()
	return nil
}

// The planted workload creates a file the way one must not: written and
// fsynced under a temporary name, renamed into place, and (unless synced)
// no fsync of the directory. The explorer must flag it; with the directory
// synced it must find nothing.

const plantedName = "planted"

func plantedData() []byte {
	b := make([]byte, 8192)
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	return b
}

func plantedRun(dir string, syncd bool) error {
	mark("begin")
	mark("intent planted")
	tmp := filepath.Join(dir, plantedName+".tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(plantedData()); err != nil {
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, plantedName)); err != nil {
		return err
	}
	if syncd {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	ack()
	return nil
}

func plantedCheck(dir string, acked []string, _ string) (string, string) {
	if len(acked) == 0 {
		return classOK, ""
	}
	b, err := os.ReadFile(filepath.Join(dir, plantedName))
	if err != nil {
		return classLost, err.Error()
	}
	if !bytes.Equal(b, plantedData()) {
		return classLost, fmt.Sprintf("%s holds %d bytes, not what was written", plantedName, len(b))
	}
	return classOK, ""
}
