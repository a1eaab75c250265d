package powerloss

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// SectorSize is the granularity at which a pending write may be torn.
const SectorSize = 512

// inode is one file's content as far as a power cut is concerned.
type inode struct {
	durable []byte // as of its last fsync/fdatasync
	gen     int    // how many times durable changed: names it in state keys
	pending []*Op  // Writes and Truncates since
}

// FS is the durable state of the traced directory at one point of the
// trace, and what is pending on top of it.
type FS struct {
	inodes       map[int]*inode
	names        map[string]int // durable names, as of each directory's last fsync
	pendingNames []*Op          // Link, Unlink, Rename since, in order
	label        map[int]string // the newest name of each inode, for descriptions
}

// NewFS returns the model of an empty directory.
func NewFS() *FS {
	return &FS{inodes: map[int]*inode{}, names: map[string]int{}, label: map[int]string{}}
}

func (fs *FS) inode(n int) *inode {
	in := fs.inodes[n]
	if in == nil {
		in = &inode{}
		fs.inodes[n] = in
	}
	return in
}

// Apply records op as having happened (in the page cache).
func (fs *FS) Apply(op *Op) {
	switch op.Kind {
	case Write, Truncate:
		in := fs.inode(op.Inode)
		in.pending = append(in.pending, op)
	case Sync:
		in := fs.inode(op.Inode)
		if len(in.pending) > 0 {
			in.durable = applyData(in.durable, in.pending)
			in.pending = nil
			in.gen++
		}
	case DirSync:
		var keep []*Op
		for _, n := range fs.pendingNames {
			if n.Dir() == op.Name {
				applyName(fs.names, n)
			} else {
				keep = append(keep, n)
			}
		}
		fs.pendingNames = keep
	case SyncAll:
		for _, in := range fs.inodes {
			if len(in.pending) > 0 {
				in.durable = applyData(in.durable, in.pending)
				in.pending = nil
				in.gen++
			}
		}
		for _, n := range fs.pendingNames {
			applyName(fs.names, n)
		}
		fs.pendingNames = nil
	case Link, Unlink, Rename:
		fs.pendingNames = append(fs.pendingNames, op)
		switch op.Kind {
		case Link:
			fs.label[op.Inode] = op.Name
		case Rename:
			for ino, l := range fs.label {
				if l == op.Name {
					fs.label[ino] = op.New
				}
			}
		}
	}
}

func applyName(names map[string]int, op *Op) {
	switch op.Kind {
	case Link:
		names[op.Name] = op.Inode
	case Unlink:
		delete(names, op.Name)
	case Rename:
		if ino, ok := names[op.Name]; ok {
			names[op.New] = ino
			delete(names, op.Name)
		}
	}
}

func applyData(base []byte, ops []*Op) []byte {
	c := append([]byte(nil), base...)
	for _, op := range ops {
		c = applyOne(c, op)
	}
	return c
}

func applyOne(c []byte, op *Op) []byte {
	switch op.Kind {
	case Write:
		if end := op.Off + int64(len(op.Data)); end > int64(len(c)) {
			c = append(c, make([]byte, end-int64(len(c)))...)
		}
		copy(c[op.Off:], op.Data)
	case Truncate:
		if op.Size <= int64(len(c)) {
			c = c[:op.Size]
		} else {
			c = append(c, make([]byte, op.Size-int64(len(c)))...)
		}
	}
	return c
}

// sectors splits a write at sector boundaries of the file.
func sectors(op *Op) []*Op {
	var out []*Op
	for off := op.Off; off < op.Off+int64(len(op.Data)); {
		end := min((off/SectorSize+1)*SectorSize, op.Off+int64(len(op.Data)))
		out = append(out, &Op{Kind: Write, Line: op.Line, Sys: op.Sys, Inode: op.Inode, Off: off,
			Data: op.Data[off-op.Off : end-op.Off]})
		off = end
	}
	return out
}

// State is one directory a power cut may leave.
type State struct {
	Point int               // the operations before this index happened
	Files map[string][]byte // name -> content
	Marks []string          // the workload's marks before the crash point
	Desc  string            // the crash point and what was dropped or torn
	key   [32]byte          // for deduplication (FS.plan)
}

// Materialise writes the state's files under dir.
func (s *State) Materialise(dir string) error {
	for name, data := range s.Files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := writeSparse(p, data); err != nil {
			return err
		}
	}
	return nil
}

// writeSparse writes data to a new file at p, leaving holes for runs of
// zeros: bbolt files grown by ftruncate are mostly zeros.
func writeSparse(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	const chunk = 4096
	for off := 0; off < len(data); off += chunk {
		b := data[off:min(off+chunk, len(data))]
		if allZero(b) {
			continue
		}
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Data modes: which of an inode's pending writes reach the disk.
const (
	keepNone   = "none"
	keepAll    = "all"
	keepSubset = "subset" // each pending operation independently
	keepPrefix = "prefix" // the first k, in order
	keepTorn   = "torn"   // the first k, then one torn, then none
	keepTornSS = "torn+subset"
)

var randomModes = []string{keepSubset, keepTorn, keepPrefix, keepTornSS}

// build makes the state for a crash now: the first nameCount of the
// pending name operations applied (a negative count -k-1: all but the k-th),
// each inode's pending data chosen by mode.
func (fs *FS) build(point int, marks []string, nameCount int, mode string, rng *rand.Rand) *State {
	return fs.plan(point, marks, nameCount, mode, rng, true)
}

// plan is build; without files it only describes the state and computes
// its key, which names each file's durable generation and the pending
// operations (or sectors of them) applied on top, not its bytes.
func (fs *FS) plan(point int, marks []string, nameCount int, mode string, rng *rand.Rand, files bool) *State {
	h := sha256.New()
	names := make(map[string]int, len(fs.names))
	for k, v := range fs.names {
		names[k] = v
	}
	applied, skipped := fs.pendingNames[:max(nameCount, 0)], fs.pendingNames[max(nameCount, 0):]
	if nameCount < 0 {
		k := -nameCount - 1
		applied = append(append([]*Op(nil), fs.pendingNames[:k]...), fs.pendingNames[k+1:]...)
		skipped = fs.pendingNames[k : k+1]
	}
	for _, n := range applied {
		applyName(names, n)
	}
	var desc []string
	contents := map[int][]byte{}
	inos := make([]int, 0, len(fs.inodes))
	for ino := range fs.inodes {
		inos = append(inos, ino)
	}
	sort.Ints(inos)
	for _, ino := range inos {
		in := fs.inodes[ino]
		ops, d := choose(in.pending, mode, rng)
		fmt.Fprintf(h, "ino %d gen %d:", ino, in.gen)
		for _, op := range ops {
			fmt.Fprintf(h, " %d/%d/%d/%d", op.Line, op.Kind, op.Off, len(op.Data))
		}
		h.Write([]byte("\n"))
		if files {
			contents[ino] = applyData(in.durable, ops)
		}
		if len(in.pending) > 0 {
			desc = append(desc, fmt.Sprintf("%s (ino %d): %s", fs.label[ino], ino, d))
		}
	}
	s := &State{Point: point, Files: map[string][]byte{}, Marks: marks}
	nl := make([]string, 0, len(names))
	for name, ino := range names {
		s.Files[name] = contents[ino]
		nl = append(nl, fmt.Sprintf("%q=%d", name, ino))
	}
	sort.Strings(nl)
	fmt.Fprintf(h, "names %s\nmarks %d %s", strings.Join(nl, " "), len(marks), strings.Join(marks, "\n"))
	copy(s.key[:], h.Sum(nil))
	if len(fs.pendingNames) > 0 {
		var not []string
		for _, n := range skipped {
			not = append(not, fmt.Sprintf("%s@%d", n, n.Line))
		}
		d := fmt.Sprintf("names: %d of %d pending applied", len(applied), len(fs.pendingNames))
		if len(not) > 0 {
			d += ", not applied: " + strings.Join(not, ", ")
		}
		desc = append(desc, d)
	}
	if len(desc) == 0 {
		desc = append(desc, "nothing pending")
	}
	s.Desc = strings.Join(desc, "; ")
	return s
}

// choose picks the pending operations that reach the disk under mode and
// describes the choice by trace line.
func choose(pending []*Op, mode string, rng *rand.Rand) ([]*Op, string) {
	n := len(pending)
	if n == 0 {
		return nil, ""
	}
	keep := make([]bool, n)
	torn := -1
	switch mode {
	case keepNone:
	case keepAll:
		for i := range keep {
			keep[i] = true
		}
	case keepSubset:
		for i := range keep {
			keep[i] = rng.IntN(2) == 0
		}
	case keepPrefix:
		for i := range rng.IntN(n + 1) {
			keep[i] = true
		}
	case keepTorn, keepTornSS:
		var tearable []int
		for i, op := range pending {
			if op.Kind == Write && len(sectors(op)) > 1 {
				tearable = append(tearable, i)
			}
		}
		if len(tearable) == 0 {
			return choose(pending, keepSubset, rng)
		}
		torn = tearable[rng.IntN(len(tearable))]
		for i := range keep {
			keep[i] = i < torn || (mode == keepTornSS && i > torn && rng.IntN(2) == 0)
		}
	}
	var ops []*Op
	var dropped []string
	tornDesc := ""
	for i, op := range pending {
		switch {
		case i == torn:
			secs := sectors(op)
			// a proper, non-empty subset of the sectors
			k := make([]bool, len(secs))
			any, all := false, true
			for j := range k {
				k[j] = rng.IntN(2) == 0
				any = any || k[j]
				all = all && k[j]
			}
			if !any {
				k[rng.IntN(len(k))] = true
			} else if all {
				k[rng.IntN(len(k))] = false
			}
			var kept []string
			for j, s := range secs {
				if k[j] {
					ops = append(ops, s)
					kept = append(kept, fmt.Sprint(j))
				}
			}
			tornDesc = fmt.Sprintf(", torn %s@%d keeping sectors %s of %d", op, op.Line, strings.Join(kept, ","), len(secs))
		case keep[i]:
			ops = append(ops, op)
		default:
			dropped = append(dropped, fmt.Sprintf("%s@%d", op, op.Line))
		}
	}
	d := fmt.Sprintf("%s, %d of %d pending kept", mode, len(ops), n)
	if torn >= 0 {
		d = fmt.Sprintf("%s, %d of %d pending kept whole", mode, countTrue(keep), n)
	}
	if len(dropped) > 0 {
		if len(dropped) > 8 {
			dropped = append(dropped[:8], fmt.Sprintf("... %d more", len(dropped)-8))
		}
		d += ", dropped " + strings.Join(dropped, " ")
	}
	return ops, d + tornDesc
}

func countTrue(b []bool) int {
	n := 0
	for _, x := range b {
		if x {
			n++
		}
	}
	return n
}

// BeginMark is the mark after which crash points are explored; what comes
// before it is the workload's setup. Without it, the whole trace is.
const BeginMark = MarkPrefix + "begin"

// crashPoint reports whether a power cut just before ops[p] is worth
// exploring: the edges of syncs, name operations and marks.
func crashPoint(ops []Op, p int) bool {
	edge := func(i int) bool {
		if i < 0 || i >= len(ops) {
			return true
		}
		switch ops[i].Kind {
		case Sync, DirSync, SyncAll, Mark, Link, Unlink, Rename:
			return true
		}
		return false
	}
	return edge(p-1) || edge(p)
}

// Explore generates up to budget distinct crash states of the trace and
// passes each to emit, in trace order; emit returns false to stop. Crash
// points are the edges of every sync, name operation and mark, plus a few
// chosen at random. The budget goes to the harshest states first: at every
// point, only what was synced (no pending name operation, no pending data);
// then the pending names without the data, and the data without the names;
// then one random state per point (a subset, prefix or torn version of the
// pending data, a random prefix of the name operations); then each prefix of
// the name operations, and all of them but one, with all data (all pending
// kept is what a process crash leaves); then more rounds of random states. A tier
// that does not fit whole is sampled at random.
func Explore(ops []Op, budget int, rng *rand.Rand, emit func(*State) bool) (points int) {
	begin := 0
	for i, op := range ops {
		if op.Kind == Mark && op.Text == BeginMark {
			begin = i + 1
			break
		}
	}
	var chosen []int
	for p := begin; p <= len(ops); p++ {
		if crashPoint(ops, p) || rng.IntN(20) == 0 {
			chosen = append(chosen, p)
		}
	}
	if len(chosen) == 0 || budget <= 0 {
		return 0
	}
	rounds := min(64, 2+(2*budget+len(chosen)-1)/len(chosen))

	// Pass 1: every candidate state's recipe, deduplicated by content.
	var tiers [][]recipe
	add := func(tier int, r recipe) {
		for len(tiers) <= tier {
			tiers = append(tiers, nil)
		}
		tiers[tier] = append(tiers[tier], r)
	}
	seen := map[[32]byte]bool{}
	sweep(ops, chosen, func(fs *FS, p int, marks []string) bool {
		n := len(fs.pendingNames)
		try := func(tier int, r recipe) {
			if k := fs.plan(p, marks, r.names, r.mode, r.rng(), false).key; !seen[k] {
				seen[k] = true
				add(tier, r)
			}
		}
		try(0, recipe{point: p, names: 0, mode: keepNone})
		try(1, recipe{point: p, names: n, mode: keepNone})
		try(1, recipe{point: p, names: 0, mode: keepAll})
		random := func(tier int) {
			nc := n
			if n > 0 && rng.IntN(2) == 0 {
				nc = rng.IntN(n + 1)
			}
			try(tier, recipe{point: p, names: nc, mode: randomModes[rng.IntN(len(randomModes))], seed: rng.Uint64()})
		}
		if fs.anyPending() {
			random(2)
		}
		for k := 1; k <= n; k++ {
			try(3, recipe{point: p, names: k, mode: keepAll})
		}
		for k := 0; k < n-1; k++ { // each one left out (the last: a prefix)
			try(3, recipe{point: p, names: -k - 1, mode: keepAll})
		}
		if fs.anyPending() {
			for r := 1; r < rounds; r++ {
				random(3 + r)
			}
		}
		return true
	})

	// The budget, harshest tier first.
	var pick []recipe
	for _, t := range tiers {
		if len(pick)+len(t) > budget {
			rng.Shuffle(len(t), func(i, j int) { t[i], t[j] = t[j], t[i] })
			t = t[:budget-len(pick)]
		}
		pick = append(pick, t...)
	}
	byPoint := map[int][]recipe{}
	for _, r := range pick {
		byPoint[r.point] = append(byPoint[r.point], r)
	}

	// Pass 2: build and emit them.
	sweep(ops, chosen, func(fs *FS, p int, marks []string) bool {
		at := "the end of the trace"
		if p < len(ops) {
			at = fmt.Sprintf("before trace line %d (%s)", ops[p].Line, &ops[p])
		}
		for _, r := range byPoint[p] {
			s := fs.build(p, marks, r.names, r.mode, r.rng())
			s.Desc = fmt.Sprintf("crash %s, after %d marks: %s", at, len(marks), s.Desc)
			if !emit(s) {
				return false
			}
		}
		return true
	})
	return len(chosen)
}

// recipe says how to build one state, so that pass 2 rebuilds what pass 1
// chose without keeping every state's files in memory.
type recipe struct {
	point, names int // names: as build's nameCount
	mode         string
	seed         uint64
}

func (r recipe) rng() *rand.Rand { return rand.New(rand.NewPCG(r.seed, 0x9e3779b97f4a7c15)) }

// sweep applies ops in order and calls at with the model at each chosen
// crash point (ascending) and the marks before it, until at returns false.
func sweep(ops []Op, chosen []int, at func(fs *FS, p int, marks []string) bool) {
	fs := NewFS()
	var marks []string
	next := 0
	for p := 0; p <= len(ops) && next < len(chosen); p++ {
		if p == chosen[next] {
			next++
			if !at(fs, p, marks) {
				return
			}
		}
		if p < len(ops) {
			fs.Apply(&ops[p])
			if ops[p].Kind == Mark {
				marks = append(marks[:len(marks):len(marks)], ops[p].Text)
			}
		}
	}
}

func (fs *FS) anyPending() bool {
	if len(fs.pendingNames) > 0 {
		return true
	}
	for _, in := range fs.inodes {
		if len(in.pending) > 0 {
			return true
		}
	}
	return false
}

// Verify checks the model against the process's own view. A workload that
// reads its files just before a Mark (after the Mark before it) passes what
// it read to check through the mark; check(files, mark) tells whether files
// agree with it. Threads of the workload may write while it reads, so the
// read may have seen the files at any point between the two marks: Verify
// fails only when none of those points agrees.
func Verify(ops []Op, check func(files map[string][]byte, mark string) bool) error {
	fs := NewFS()
	prev := 0 // the first point after the previous Mark
	for p := range ops {
		if ops[p].Kind == Mark {
			if !check(fs.build(p, nil, len(fs.pendingNames), keepAll, nil).Files, ops[p].Text) && !verifyWindow(ops, prev, p, check) {
				return fmt.Errorf("before trace line %d: no state since trace line %d agrees with %q", ops[p].Line, ops[prev].Line, ops[p].Text)
			}
			prev = p + 1
		}
		fs.Apply(&ops[p])
	}
	return nil
}

func verifyWindow(ops []Op, from, to int, check func(map[string][]byte, string) bool) bool {
	fs := NewFS()
	for p := 0; p < to; p++ {
		if p >= from && check(fs.build(p, nil, len(fs.pendingNames), keepAll, nil).Files, ops[to].Text) {
			return true
		}
		fs.Apply(&ops[p])
	}
	return false
}
