package raftbolt

import (
	"os"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"go.etcd.io/bbolt"
)

// Metric names, emitted through go-metrics' global sink (the one raft uses;
// set it up with metrics.NewGlobal). Each name is defined once, here, and
// listed in Metrics, which the README's table is checked against.
var (
	metricStoreLogs          = []string{"raftbolt", "store_logs"}
	metricStoreLogsEntries   = []string{"raftbolt", "store_logs", "entries"}
	metricStoreLogsBytes     = []string{"raftbolt", "store_logs", "bytes"}
	metricGetLog             = []string{"raftbolt", "get_log"}
	metricGetLogCacheHit     = []string{"raftbolt", "get_log", "cache_hit"}
	metricGetLogCacheMiss    = []string{"raftbolt", "get_log", "cache_miss"}
	metricDeleteRange        = []string{"raftbolt", "delete_range"}
	metricDeleteRangeEntries = []string{"raftbolt", "delete_range", "entries"}
	metricFileSize           = []string{"raftbolt", "file", "size_bytes"}
	metricFreeBytes          = []string{"raftbolt", "file", "free_bytes"}
	metricCompact            = []string{"raftbolt", "compact"}
	metricCompactPause       = []string{"raftbolt", "compact", "pause"}
	metricConfigRecordFailed = []string{"raftbolt", "fsm", "configuration_record_failed"}
)

// MetricInfo describes one metric the package emits.
type MetricInfo struct {
	Name string // dot-joined, as most sinks print it
	Type string // "timer" (milliseconds), "sample", "counter" or "gauge"
	Help string
}

// Metrics lists every metric the package emits.
func Metrics() []MetricInfo {
	return []MetricInfo{
		{join(metricStoreLogs), "timer", "duration of a successful StoreLogs, fsync included"},
		{join(metricStoreLogsEntries), "sample", "entries per StoreLogs batch"},
		{join(metricStoreLogsBytes), "sample", "encoded bytes per StoreLogs batch"},
		{join(metricGetLog), "timer", "duration of a GetLog served from the file (cache misses)"},
		{join(metricGetLogCacheHit), "counter", "GetLog calls served from the entry cache"},
		{join(metricGetLogCacheMiss), "counter", "GetLog calls that read the file"},
		{join(metricDeleteRange), "timer", "duration of a DeleteRange that deleted entries"},
		{join(metricDeleteRangeEntries), "sample", "entries deleted per DeleteRange"},
		{join(metricFileSize), "gauge", "size of the store file, every MetricsInterval"},
		{join(metricFreeBytes), "gauge", "bytes of free pages in the file (reclaimable by Compact), every MetricsInterval"},
		{join(metricCompact), "timer", "duration of a Compact"},
		{join(metricCompactPause), "timer", "time writers were blocked during a Compact"},
		{join(metricConfigRecordFailed), "counter", "failures of the FSM adapter to record a committed configuration (retried)"},
	}
}

func join(name []string) string {
	s := name[0]
	for _, p := range name[1:] {
		s += "." + p
	}
	return s
}

// startMetrics starts the loop that emits the file gauges.
func (s *Store) startMetrics() {
	if s.opts.MetricsInterval < 0 || s.opts.ReadOnly {
		return
	}
	s.stopMetrics = make(chan struct{})
	s.metricsDone.Add(1)
	go func() {
		defer s.metricsDone.Done()
		t := time.NewTicker(s.opts.MetricsInterval)
		defer t.Stop()
		for {
			s.emitGauges()
			select {
			case <-t.C:
			case <-s.stopMetrics:
				return
			}
		}
	}()
}

// stopMetricsLoop stops the gauge loop; the caller holds dbMu exclusively,
// which emitGauges never waits for.
func (s *Store) stopMetricsLoop() {
	if s.stopMetrics != nil {
		close(s.stopMetrics)
		s.metricsDone.Wait()
		s.stopMetrics = nil
	}
}

func (s *Store) emitGauges() {
	if !s.dbMu.TryRLock() {
		return // closing or swapping files: skip this tick
	}
	defer s.dbMu.RUnlock()
	if s.closed.Load() {
		return
	}
	if fi, err := os.Stat(s.path); err == nil {
		metrics.SetGauge(metricFileSize, float32(fi.Size()))
	}
	st := s.db.Stats()
	metrics.SetGauge(metricFreeBytes, float32((st.FreePageN+st.PendingPageN)*pageSize(s.db)))
}

// pageSize returns the file's page size. bbolt's DB.Info reads the memory
// map without a lock, racing with a commit that remaps the file (and
// asserting, that is panicking, in the moment the map is gone); inside a
// read transaction bbolt cannot remap.
func pageSize(db *bbolt.DB) (n int) {
	_ = db.View(func(tx *bbolt.Tx) error {
		n = tx.DB().Info().PageSize
		return nil
	})
	return n
}
