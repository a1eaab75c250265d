package raftbolt

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// inmemMetrics makes an in-memory sink go-metrics' global one for the test.
func inmemMetrics(t *testing.T) *metrics.InmemSink {
	t.Helper()
	sink := metrics.NewInmemSink(time.Hour, time.Hour)
	conf := metrics.DefaultConfig("")
	conf.EnableHostname = false
	conf.EnableRuntimeMetrics = false
	_, err := metrics.NewGlobal(conf, sink)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = metrics.NewGlobal(conf, &metrics.BlackholeSink{}) })
	return sink
}

// gauges returns the values of gauge name in sink, by the value of its
// "store" label ("" for a gauge without it).
func gauges(sink *metrics.InmemSink, name string) map[string]float32 {
	got := map[string]float32{}
	data := sink.Data()
	for _, g := range data[len(data)-1].Gauges {
		if g.Name != name {
			continue
		}
		store := ""
		for _, l := range g.Labels {
			if l.Name == "store" {
				store = l.Value
			}
		}
		got[store] = g.Value
	}
	return got
}

// Two stores in one process keep a file-size gauge each (issue 10: both set
// the same unlabelled gauge, the last one overwriting the other's). Their
// files have the same base name, as two raft nodes in one test process do.
func TestTwoStoresKeepSeparateGauges(t *testing.T) {
	sink := inmemMetrics(t)
	o := testOptions()
	o.NoJournal = true // the stores are told apart by their files' sizes
	a := openAt(t, filepath.Join(t.TempDir(), "raft.db"), o)
	b := openAt(t, filepath.Join(t.TempDir(), "raft.db"), o)
	data := make([]byte, 64<<10)
	for i := uint64(1); i <= 32; i++ {
		require.NoError(t, a.StoreLogs([]*raft.Log{{Index: i, Term: 1, Data: data}}))
	}
	a.emitGauges()
	b.emitGauges()

	size := func(s *Store) float32 {
		fi, err := os.Stat(s.Path())
		require.NoError(t, err)
		return float32(fi.Size())
	}
	require.NotEqual(t, size(a), size(b))
	require.Equal(t, map[string]float32{a.Path(): size(a), b.Path(): size(b)},
		gauges(sink, "raftbolt.file.size_bytes"))
	free := gauges(sink, "raftbolt.file.free_bytes")
	require.Len(t, free, 2)
	require.Contains(t, free, a.Path())
	require.Contains(t, free, b.Path())
}

// Options.MetricsName, when set, is the gauges' store label.
func TestMetricsNameLabelsTheGauges(t *testing.T) {
	sink := inmemMetrics(t)
	o := testOptions()
	o.MetricsName = "node-1"
	s := openTest(t, o)
	s.emitGauges()
	got := gauges(sink, "raftbolt.file.size_bytes")
	require.Len(t, got, 1)
	require.Contains(t, got, "node-1")
	require.Contains(t, gauges(sink, "raftbolt.file.free_bytes"), "node-1")
}
