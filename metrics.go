package raftbolt

import (
	"os"

	metrics "github.com/hashicorp/go-metrics"
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
	metricCompactAuto        = []string{"raftbolt", "compact", "auto"}
	metricCheckpoint         = []string{"raftbolt", "journal", "checkpoint"}
	metricCheckpointBatches  = []string{"raftbolt", "journal", "checkpoint", "batches"}
)

// metricLabelStore names the label of the per-file gauges, whose value is
// Options.MetricsName: a gauge holds one value, so without it two stores in
// one process would overwrite each other's.
const metricLabelStore = "store"

// MetricInfo describes one metric the package emits.
type MetricInfo struct {
	Name   string   // dot-joined, as most sinks print it
	Type   string   // "timer" (milliseconds), "sample", "counter" or "gauge"
	Labels []string // names of the go-metrics labels it carries
	Help   string
}

// Metrics lists every metric the package emits.
func Metrics() []MetricInfo {
	return []MetricInfo{
		{join(metricStoreLogs), "timer", nil, "duration of a successful StoreLogs, fsync included"},
		{join(metricStoreLogsEntries), "sample", nil, "entries per StoreLogs batch"},
		{join(metricStoreLogsBytes), "sample", nil, "encoded bytes per StoreLogs batch"},
		{join(metricGetLog), "timer", nil, "duration of a GetLog served from the file (cache misses)"},
		{join(metricGetLogCacheHit), "counter", nil, "GetLog calls served from the entry cache"},
		{join(metricGetLogCacheMiss), "counter", nil, "GetLog calls that read the file"},
		{join(metricDeleteRange), "timer", nil, "duration of a DeleteRange that deleted entries"},
		{join(metricDeleteRangeEntries), "sample", nil, "entries deleted per DeleteRange"},
		{join(metricFileSize), "gauge", []string{metricLabelStore}, "size of the store file, every MetricsInterval"},
		{join(metricFreeBytes), "gauge", []string{metricLabelStore}, "bytes of free pages in the file (reclaimable by Compact), every MetricsInterval"},
		{join(metricCompact), "timer", nil, "duration of a Compact"},
		{join(metricCompactPause), "timer", nil, "time writers were blocked during a Compact"},
		{join(metricConfigRecordFailed), "counter", nil, "failures of the FSM adapter to record a committed configuration (retried)"},
		{join(metricCompactAuto), "counter", nil, "Compacts the store started itself (Options.AutoCompactFree)"},
		{join(metricCheckpoint), "timer", nil, "duration of a checkpoint of the journal into the file"},
		{join(metricCheckpointBatches), "sample", nil, "journaled batches written per checkpoint"},
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
	s.gauges.start(s.opts.MetricsInterval, true, s.emitGauges)
}

func (s *Store) emitGauges() {
	if !s.dbMu.TryRLock() {
		return // closing or swapping files: skip this tick
	}
	defer s.runlock()
	if s.closed.Load() {
		return
	}
	labels := []metrics.Label{{Name: metricLabelStore, Value: s.metricsName()}}
	if fi, err := os.Stat(s.path); err == nil {
		metrics.SetGaugeWithLabels(metricFileSize, float32(fi.Size()), labels)
	}
	st := s.file.DB().Stats()
	metrics.SetGaugeWithLabels(metricFreeBytes, float32((st.FreePageN+st.PendingPageN)*s.pageSize), labels)
}

// metricsName is the value of the gauges' store label.
func (s *Store) metricsName() string {
	if s.opts.MetricsName != "" {
		return s.opts.MetricsName
	}
	return s.path
}
