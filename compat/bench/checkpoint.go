package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	metrics "github.com/hashicorp/go-metrics"
)

// checkpoints measures raftbolt's appends while its journal's background
// checkpoints run (issue 12: the p99 of those appends at most 3x the
// median of all). One store, its defaults, appending back to back for a
// while; the checkpoints' intervals come from the store's own timer
// metric, raftbolt.journal.checkpoint (emitted as each one ends, with its
// duration), caught by a go-metrics sink installed for the run. An append
// counts as "during a checkpoint" when its interval overlaps one.
func (b *bench) checkpoints() error {
	sink := &intervalSink{key: "raftbolt.journal.checkpoint"}
	conf := metrics.DefaultConfig("")
	conf.EnableHostname, conf.EnableRuntimeMetrics, conf.EnableTypePrefix = false, false, false
	if _, err := metrics.NewGlobal(conf, sink); err != nil {
		return err
	}
	defer func() { _, _ = metrics.NewGlobal(conf, &metrics.BlackholeSink{}) }()

	var t strings.Builder
	fmt.Fprintf(&t, "### Appends while checkpoints run (raftbolt, defaults)\n\n"+
		"Back-to-back appends on one store for %v per size; a checkpoint's interval is read off the "+
		"`raftbolt.journal.checkpoint` timer as it ends. An append is *during* a checkpoint when the two overlap.\n\n", b.cfg.ckptDur)
	t.WriteString("| Workload | appends | checkpoints | appends during one | median, all | p99, all | median, during | p99, during | p99 during ÷ median all |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, sp := range []struct {
		name    string
		n, size int
	}{{"StoreLogs 1×256 B", 1, 256}, {"StoreLogs 64×4 KiB", 64, 4096}} {
		dir, err := b.freshDir("ckpt")
		if err != nil {
			return err
		}
		s, err := implRaftbolt.open(dir)
		if err != nil {
			return err
		}
		b.progress("%s while checkpoints run: %v", sp.name, b.cfg.ckptDur)
		sink.reset()
		logs := b.batch(sp.n, sp.size)
		var spans [][2]time.Time
		next := uint64(1)
		deadline := time.Now().Add(b.cfg.ckptDur)
		for time.Now().Before(deadline) {
			setIndexes(logs, next)
			start := time.Now()
			if err := s.StoreLogs(logs); err != nil {
				_ = s.Close()
				return fmt.Errorf("%s: %w", sp.name, err)
			}
			spans = append(spans, [2]time.Time{start, time.Now()})
			next += uint64(sp.n)
		}
		if err := s.Close(); err != nil {
			return err
		}
		ckpts := sink.intervals()
		var all, during samples
		k := 0
		for _, a := range spans {
			d := float64(a[1].Sub(a[0]))
			all = append(all, d)
			for k < len(ckpts) && ckpts[k][1].Before(a[0]) {
				k++
			}
			if k < len(ckpts) && ckpts[k][0].Before(a[1]) {
				during = append(during, d)
			}
		}
		rowName := sp.name + ": p99 during a checkpoint ÷ median"
		ratio := during.quantile(0.99) / all.median()
		b.rep.checks = append(b.rep.checks, check{what: rowName, value: ratio, bound: 3, atMost: true, suffix: "x"})
		fmt.Fprintf(&t, "| %s | %d | %d | %d | %s | %s | %s | %s | %.2fx |\n", sp.name, len(all), len(ckpts), len(during),
			format(all.median(), unitDuration), format(all.quantile(0.99), unitDuration),
			format(during.median(), unitDuration), format(during.quantile(0.99), unitDuration), ratio)
	}
	b.rep.extra = append(b.rep.extra, t.String())
	return nil
}

// intervalSink is a go-metrics sink that keeps, for one timer, the
// interval each sample covers: [now - value ms, now], as MeasureSince
// reports it when the measured thing ends.
type intervalSink struct {
	metrics.BlackholeSink
	key string

	mu   sync.Mutex
	ends [][2]time.Time
}

// AddSample records an interval of the sink's timer.
func (s *intervalSink) AddSample(key []string, val float32) {
	s.AddSampleWithLabels(key, val, nil)
}

// AddSampleWithLabels records an interval of the sink's timer.
func (s *intervalSink) AddSampleWithLabels(key []string, val float32, _ []metrics.Label) {
	if strings.Join(key, ".") != s.key {
		return
	}
	end := time.Now()
	start := end.Add(-time.Duration(float64(val) * float64(time.Millisecond)))
	s.mu.Lock()
	s.ends = append(s.ends, [2]time.Time{start, end})
	s.mu.Unlock()
}

func (s *intervalSink) reset() {
	s.mu.Lock()
	s.ends = nil
	s.mu.Unlock()
}

// intervals returns the recorded intervals, by start.
func (s *intervalSink) intervals() [][2]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.ends)
	slices.SortFunc(out, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	return out
}
