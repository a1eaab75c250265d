package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
)

type bench struct {
	cfg         config
	rep         *report
	base        string // every temp dir of the run lives under it
	start       time.Time
	loadAtStart string
	payload     []byte // random bytes every entry's Data is cut from
}

func (b *bench) setup() error {
	b.start = time.Now()
	b.loadAtStart = loadAverage()
	base, err := os.MkdirTemp(b.cfg.dir, "raftbolt-bench-")
	if err != nil {
		return err
	}
	b.base = base
	b.payload = make([]byte, 64<<10)
	_, _ = rand.Read(b.payload)
	return nil
}

func (b *bench) cleanup() { _ = os.RemoveAll(b.base) }

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.cfg.log, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// freshDir returns a new empty directory for one store.
func (b *bench) freshDir(name string) (string, error) {
	return os.MkdirTemp(b.base, strings.NewReplacer("/", "-", " ", "-", "+", "").Replace(name)+"-")
}

// batch returns n entries of size bytes each, for StoreLogs after
// setIndexes. The entries share their Data: every store copies it.
func (b *bench) batch(n, size int) []*raft.Log {
	at := time.Now()
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: b.payload[:size], AppendedAt: at}
	}
	return logs
}

func setIndexes(logs []*raft.Log, first uint64) {
	for i, l := range logs {
		l.Index = first + uint64(i)
	}
}

// fill appends entries first..first+n-1 of size bytes in batches of batch.
func (b *bench) fill(s logStore, first uint64, n, size, batch int) error {
	logs := b.batch(batch, size)
	for done := 0; done < n; {
		k := min(batch, n-done)
		setIndexes(logs[:k], first+uint64(done))
		if err := s.StoreLogs(logs[:k]); err != nil {
			return fmt.Errorf("store %d entries at %d: %w", k, first+uint64(done), err)
		}
		done += k
	}
	return nil
}

// rotated returns impls rotated left by r: round r starts with a
// different store, so that none always runs right after another.
func rotated(impls []impl, r int) []impl {
	r %= len(impls)
	return append(append([]impl(nil), impls[r:]...), impls[:r]...)
}

// opened is a store of one impl with its directory.
type opened struct {
	impl
	dir  string
	s    logStore
	next uint64 // next index to append
}

func (b *bench) openFresh(impls []impl, label string) (map[string]*opened, error) {
	m := map[string]*opened{}
	for _, im := range impls {
		dir, err := b.freshDir(im.name + "-" + label)
		if err != nil {
			return m, err
		}
		s, err := im.open(dir)
		if err != nil {
			return m, fmt.Errorf("open %s: %w", im.name, err)
		}
		m[im.name] = &opened{impl: im, dir: dir, s: s, next: 1}
	}
	return m, nil
}

func closeAll(m map[string]*opened) error {
	var errs []error
	for name, o := range m {
		if o.s != nil {
			if err := o.s.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", name, err))
			}
			o.s = nil
		}
		_ = os.RemoveAll(o.dir)
	}
	return errors.Join(errs...)
}

// appends measures the latency of one StoreLogs call, fsync included,
// for the stores and the two floors.
func (b *bench) appends() error {
	specs := []struct {
		name       string
		n, size    int
		ops        int
		vsV2, vsFl float64 // targets
	}{
		{"StoreLogs 1×256 B", 1, 256, b.cfg.appendOps, 1.12, 1.1},
		{"StoreLogs 64×4 KiB", 64, 4096, b.cfg.bigOps, 1.4, 0},
	}
	impls := append(append([]impl(nil), peers...), floors...)
	for _, sp := range specs {
		b.progress("%s: %d rounds × %d ops × %d stores", sp.name, b.cfg.rounds, sp.ops, len(impls))
		m, err := b.openFresh(impls, "append")
		if err != nil {
			return errors.Join(err, closeAll(m))
		}
		row := b.rep.row(sp.name, unitDuration)
		logs := b.batch(sp.n, sp.size)
		step := func(o *opened) (time.Duration, error) {
			setIndexes(logs, o.next)
			start := time.Now()
			err := o.s.StoreLogs(logs)
			d := time.Since(start)
			o.next += uint64(sp.n)
			return d, err
		}
		for _, im := range impls {
			for i := 0; i < b.cfg.warmup; i++ {
				if _, err := step(m[im.name]); err != nil {
					return errors.Join(fmt.Errorf("%s: %w", im.name, err), closeAll(m))
				}
			}
		}
		// One append per store in turn, the order rotated at each step:
		// the finest interleaving, so that a slow spell of the disk (other
		// tenants, a journal commit) falls on every store alike.
		for r := 0; r < b.cfg.rounds; r++ {
			for i := 0; i < sp.ops; i++ {
				for _, im := range rotated(impls, r+i) {
					d, err := step(m[im.name])
					if err != nil {
						return errors.Join(fmt.Errorf("%s: %w", im.name, err), closeAll(m))
					}
					row.add(im.name, r, float64(d))
				}
			}
		}
		if err := closeAll(m); err != nil {
			return err
		}
		b.rep.speedup(sp.name, nameDirect, nameBoltDB, sp.vsV2)
		// Issue 12's targets for the default (the journal): at least
		// raft-wal's speed.
		b.rep.speedup(sp.name, nameRaftbolt, nameWAL, 1)
		if sp.vsFl > 0 {
			b.rep.within(sp.name, nameDirect, sp.name, nameBoltTx, sp.vsFl)
		}
	}
	return nil
}

// readBlocks times rounds of blocks of GetLog calls on every store, the
// same indexes for all, and counts the allocations of each block.
func (b *bench) readBlocks(m map[string]*opened, rowName string, lo, hi uint64) error {
	row := b.rep.row(rowName, unitDuration)
	allocs := b.rep.row(rowName+", allocs/op", unitCount)
	idx := make([]uint64, b.cfg.readBlock)
	var l raft.Log
	var ms runtime.MemStats
	for r := 0; r < b.cfg.rounds; r++ {
		rng := mrand.New(mrand.NewPCG(uint64(r), 42))
		for i := range idx {
			idx[i] = lo + rng.Uint64N(hi-lo+1)
		}
		for _, im := range rotated(peers, r) {
			s := m[im.name].s
			runtime.ReadMemStats(&ms)
			mallocs := ms.Mallocs
			start := time.Now()
			for _, i := range idx {
				if err := s.GetLog(i, &l); err != nil {
					return fmt.Errorf("%s: get log %d: %w", im.name, i, err)
				}
			}
			d := time.Since(start)
			runtime.ReadMemStats(&ms)
			if l.Index != idx[len(idx)-1] {
				return fmt.Errorf("%s: get log %d returned index %d", im.name, idx[len(idx)-1], l.Index)
			}
			row.add(im.name, r, float64(d)/float64(len(idx)))
			allocs.add(im.name, r, float64(ms.Mallocs-mallocs)/float64(len(idx)))
		}
	}
	return nil
}

// getLogs measures GetLog of random old entries from a reopened store (no
// cache can hold them) and of the newest entries (raftbolt's cache).
func (b *bench) getLogs() error {
	n := b.cfg.getN
	b.progress("GetLog: filling %d entries × 256 B per store", n)
	m, err := b.openFresh(peers, "get")
	if err != nil {
		return errors.Join(err, closeAll(m))
	}
	defer closeAll(m)
	for _, o := range m {
		if err := b.fill(o.s, 1, n, 256, 1000); err != nil {
			return fmt.Errorf("%s: %w", o.name, err)
		}
		if err := o.s.Close(); err != nil {
			return fmt.Errorf("%s: close: %w", o.name, err)
		}
		o.s = nil
	}
	for _, o := range m {
		if o.s, err = o.open(o.dir); err != nil {
			return fmt.Errorf("%s: reopen: %w", o.name, err)
		}
	}
	runtime.GC()
	cold := "GetLog cold, random of " + count(n)
	b.progress("%s: %d rounds × %d reads × %d stores", cold, b.cfg.rounds, b.cfg.readBlock, len(peers))
	if err := b.readBlocks(m, cold, 1, uint64(n)); err != nil {
		return err
	}
	recent := fmt.Sprintf("GetLog recent, newest %d", b.cfg.recentN)
	for _, o := range m {
		if err := b.fill(o.s, uint64(n)+1, b.cfg.recentN, 256, 100); err != nil {
			return fmt.Errorf("%s: %w", o.name, err)
		}
	}
	runtime.GC()
	b.progress("%s: %d rounds × %d reads × %d stores", recent, b.cfg.rounds, b.cfg.readBlock, len(peers))
	if err := b.readBlocks(m, recent, uint64(n)+1, uint64(n+b.cfg.recentN)); err != nil {
		return err
	}
	b.rep.speedup(cold, nameRaftbolt, nameBoltDB, 2)
	b.rep.speedup(cold, nameRaftbolt, nameWAL, 1)
	b.rep.atMost(cold+": raftbolt allocs/op (median)", b.rep.median(cold+", allocs/op", nameRaftbolt), 10)
	b.rep.atMost(recent+": raftbolt allocs/op (median)", b.rep.median(recent+", allocs/op", nameRaftbolt), 1)
	return closeAll(m)
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// truncation measures single-entry appends on a store that held truncN
// entries of 1 KiB and was truncated to its newest truncKeep, against an
// identical store that was not truncated; then compacts raftbolt's.
func (b *bench) truncation() error {
	n, keep := b.cfg.truncN, b.cfg.truncKeep
	b.progress("truncation: filling 2 × %d entries × 1 KiB per store", n)
	trunc, err := b.openFresh(peers, "truncated")
	if err != nil {
		return errors.Join(err, closeAll(trunc))
	}
	defer closeAll(trunc)
	full, err := b.openFresh(peers, "untruncated")
	if err != nil {
		return errors.Join(err, closeAll(full))
	}
	defer closeAll(full)
	sizes := map[string][3]int64{} // untruncated, truncated, truncated after the appends
	for _, im := range peers {
		for _, o := range []*opened{trunc[im.name], full[im.name]} {
			if err := b.fill(o.s, 1, n, 1024, 256); err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			o.next = uint64(n) + 1
		}
		start := time.Now()
		if err := trunc[im.name].s.DeleteRange(1, uint64(n-keep)); err != nil {
			return fmt.Errorf("%s: truncate: %w", im.name, err)
		}
		b.progress("  %s: DeleteRange of %d entries took %v", im.name, n-keep, time.Since(start).Round(time.Millisecond))
	}
	runtime.GC()
	rowFull := fmt.Sprintf("StoreLogs 1×1 KiB, log of %s", count(n))
	rowTrunc := fmt.Sprintf("StoreLogs 1×1 KiB, %s truncated to %s", count(n), count(keep))
	b.progress("truncation: %d rounds × %d appends × %d stores", b.cfg.rounds, b.cfg.truncOps, 2*len(peers))
	logs := b.batch(1, 1024)
	for r := 0; r < b.cfg.rounds; r++ {
		for _, im := range rotated(peers, r) {
			pair := []struct {
				o   *opened
				row string
			}{{trunc[im.name], rowTrunc}, {full[im.name], rowFull}}
			if r%2 == 1 {
				pair[0], pair[1] = pair[1], pair[0]
			}
			for _, p := range pair {
				row := b.rep.row(p.row, unitDuration)
				for i := 0; i < b.cfg.truncOps; i++ {
					setIndexes(logs, p.o.next)
					start := time.Now()
					if err := p.o.s.StoreLogs(logs); err != nil {
						return fmt.Errorf("%s: %w", im.name, err)
					}
					row.add(im.name, r, float64(time.Since(start)))
					p.o.next++
				}
			}
		}
	}
	var t strings.Builder
	fmt.Fprintf(&t, "### Truncation\n\n%d entries of 1 KiB written in batches of 256, then all but the newest %d deleted (one DeleteRange); "+
		"the same single-entry appends go to that store and to an identical one that was not truncated.\n\n", n, keep)
	fmt.Fprintf(&t, "| Store | append, untruncated | append, truncated | truncated ÷ untruncated | file, untruncated | file, truncated |\n|---|---|---|---|---|---|\n")
	for _, im := range peers {
		ft, fu := b.rep.median(rowTrunc, im.name), b.rep.median(rowFull, im.name)
		sizes[im.name] = [3]int64{dirSize(full[im.name].dir), dirSize(trunc[im.name].dir)}
		fmt.Fprintf(&t, "| %s | %s | %s | %.2fx | %s | %s |\n", im.name, format(fu, unitDuration), format(ft, unitDuration), ft/fu,
			formatBytes(float64(sizes[im.name][0])), formatBytes(float64(sizes[im.name][1])))
	}
	b.rep.within(rowTrunc, nameRaftbolt, rowFull, nameRaftbolt, 1.3)
	b.rep.extra = append(b.rep.extra, t.String())
	return b.compact(trunc[nameRaftbolt])
}

// writer appends 1 KiB entries to s in a goroutine until stopped, and
// records their latencies.
type writer struct {
	wg   sync.WaitGroup
	stop chan struct{}
	lat  samples
	err  error
}

func (b *bench) startWriter(s logStore, o *opened) *writer {
	w := &writer{stop: make(chan struct{})}
	logs := b.batch(1, 1024)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			setIndexes(logs, o.next)
			start := time.Now()
			if w.err = s.StoreLogs(logs); w.err != nil {
				return
			}
			w.lat = append(w.lat, float64(time.Since(start)))
			o.next++
		}
	}()
	return w
}

func (w *writer) finish() error {
	close(w.stop)
	w.wg.Wait()
	return w.err
}

// compact compacts the truncated raftbolt store while a writer appends
// single entries, and reports the sizes and the pause the writer saw, next
// to the same writer's latencies over a window of the same length just
// before.
func (b *bench) compact(o *opened) error {
	s := o.s.(*raftbolt.Store)
	b.progress("Compact of the truncated raftbolt store, with a writer appending")
	w := b.startWriter(s, o)
	start := time.Now()
	err := s.Compact()
	took := time.Since(start)
	if werr := w.finish(); err == nil && werr != nil {
		err = fmt.Errorf("append during compact: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	during := w.lat
	w = b.startWriter(s, o)
	time.Sleep(took) // a window as long as the compaction, for comparison
	if err := w.finish(); err != nil {
		return fmt.Errorf("append after compact: %w", err)
	}
	after := w.lat
	st, err := s.Stats()
	if err != nil {
		return err
	}
	if err := s.Check(); err != nil {
		return fmt.Errorf("check after compact: %w", err)
	}
	c := st.LastCompaction
	if c == nil {
		return errors.New("Stats().LastCompaction is nil after Compact")
	}
	var t strings.Builder
	fmt.Fprintf(&t, "### Compact (raftbolt, the truncated store above, while one goroutine appends 1 KiB entries)\n\n")
	fmt.Fprintf(&t, "| File before | File after | After ÷ before | Compact took | Writers blocked (Stats().LastCompaction.Pause) |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&t, "| %s | %s | %.1f%% | %v | %v |\n\n",
		formatBytes(float64(c.SizeBefore)), formatBytes(float64(c.SizeAfter)), 100*float64(c.SizeAfter)/float64(c.SizeBefore),
		took.Round(time.Microsecond), c.Pause.Round(time.Microsecond))
	fmt.Fprintf(&t, "What the writer saw (append latency):\n\n| Window | Appends | median | p99 | slowest |\n|---|---|---|---|---|\n")
	for _, x := range []struct {
		name string
		lat  samples
	}{{"during Compact", during}, {"as long, right after", after}} {
		fmt.Fprintf(&t, "| %s | %d | %s | %s | %s |\n", x.name, len(x.lat), format(x.lat.median(), unitDuration),
			format(x.lat.quantile(0.99), unitDuration), format(x.lat.quantile(1), unitDuration))
	}
	b.rep.extra = append(b.rep.extra, t.String())
	b.rep.checks = append(b.rep.checks, check{what: "Compact: file after ÷ before", value: float64(c.SizeAfter) / float64(c.SizeBefore),
		bound: 0.2, atMost: true, suffix: ""})
	return nil
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// opens measures Open of a store holding openN entries of 128 B, closed
// cleanly before.
func (b *bench) opens() error {
	n := b.cfg.openN
	b.progress("Open: filling %d entries × 128 B per store", n)
	m, err := b.openFresh(peers, "open")
	if err != nil {
		return errors.Join(err, closeAll(m))
	}
	defer closeAll(m)
	for _, o := range m {
		if err := b.fill(o.s, 1, n, 128, 4096); err != nil {
			return fmt.Errorf("%s: %w", o.name, err)
		}
		if err := o.s.Close(); err != nil {
			return fmt.Errorf("%s: close: %w", o.name, err)
		}
		o.s = nil
	}
	runtime.GC()
	rowName := "Open, " + count(n) + " entries"
	row := b.rep.row(rowName, unitDuration)
	b.progress("%s: %d rounds × %d stores", rowName, b.cfg.rounds, len(peers))
	for r := 0; r < b.cfg.rounds; r++ {
		for _, im := range rotated(peers, r) {
			o := m[im.name]
			start := time.Now()
			s, err := im.open(o.dir)
			d := time.Since(start)
			if err != nil {
				return fmt.Errorf("%s: open: %w", im.name, err)
			}
			last, err := s.LastIndex()
			if err == nil && last != uint64(n) {
				err = fmt.Errorf("last index %d after reopen, want %d", last, n)
			}
			if cerr := s.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			row.add(im.name, r, float64(d))
		}
	}
	b.rep.checks = append(b.rep.checks, check{what: rowName + ": raftbolt, ms (median)",
		value: b.rep.median(rowName, nameRaftbolt) / 1e6, bound: 50, atMost: true})
	return nil
}
