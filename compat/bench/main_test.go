package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	if runChild() { // the RSS probe re-executes the test binary
		return
	}
	os.Exit(m.Run())
}

// TestHarnessShort runs every workload with tiny sizes, so that the
// harness keeps building and running (CI runs it). It checks the report's
// shape, never a speed.
func TestHarnessShort(t *testing.T) {
	cfg := shortConfig()
	cfg.dir = t.TempDir()
	var out, log bytes.Buffer
	cfg.out, cfg.log = &out, &log
	require.NoError(t, run(cfg), "progress:\n%s", log.String())
	report := out.String()
	t.Log(report)
	for _, want := range []string{
		"### Medians", "### Targets", "### Appends while checkpoints run", "### Spread", "### Truncation", "### Compact", "### Memory",
		"StoreLogs 1×256 B", "StoreLogs 64×4 KiB", "GetLog cold", "GetLog recent", "Open, 5k entries",
		"raft cluster, 3 nodes, 8 clients: time per commit", "### Raft cluster",
		"go.etcd.io/bbolt v1.5.0", "github.com/hashicorp/raft-wal v0.4.0",
	} {
		require.Contains(t, report, want)
	}
	require.NotContains(t, report, "NaN")
	entries, err := os.ReadDir(cfg.dir)
	require.NoError(t, err)
	require.Empty(t, entries, "the harness removes its temp dirs")
}

func TestUnknownWorkload(t *testing.T) {
	cfg := shortConfig()
	cfg.only = map[string]bool{"nope": true}
	err := run(cfg)
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "unknown workload"))
}
