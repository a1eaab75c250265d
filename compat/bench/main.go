// Command bench runs the same workloads against raftbolt (with its
// defaults, and with Options.NoJournal),
// hashicorp/raft-boltdb/v2 and hashicorp/raft-wal in one process, with each
// store's default (durable) options, and prints a markdown report: the
// medians, the ratios, the targets met or not, and the spread.
//
// The stores take turns (A B C A B C …, the order rotated each round), so
// that whatever else the machine does hits all of them alike; every store
// starts in a fresh temporary directory. Two floors are measured in the
// same run: one bare bbolt transaction with raftbolt's options (bbolt syncs
// twice per commit) and one write plus fdatasync of the same bytes.
//
//	cd compat && go run ./bench            # the full run (about a minute here, a few GiB of temp files, and two more minutes for cluster)
//	cd compat && go run ./bench -short     # seconds; what CI runs through TestHarnessShort
//	cd compat && go run ./bench -only append,get
//	cd compat && go run ./bench -only cluster -rounds 5
//
// Workloads (-only): append, get, trunc (includes Compact), open, rss,
// cluster (commits through a 3-node raft cluster on loopback TCP, a new
// cluster per store and round: about 4 s each, so it runs fewer rounds
// than the others unless -rounds says otherwise), ckpt (raftbolt's appends
// while its journal's checkpoints run: 20 s).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"
)

// config sizes a run.
type config struct {
	short  bool
	rounds int    // interleaved rounds per workload
	dir    string // parent of the temp dirs
	only   map[string]bool
	out    io.Writer // the report
	log    io.Writer // progress

	warmup    int // appends per store before the timed rounds
	appendOps int // timed 1×256 B appends per store per round
	bigOps    int // timed 64×4 KiB appends per store per round

	getN      int // entries in the GetLog stores
	recentN   int // entries appended after reopening, read by "GetLog recent"
	readBlock int // GetLog calls per timed block

	truncN, truncKeep int // the truncation scenario: write truncN, keep truncKeep
	truncOps          int // timed single appends per store per round

	openN    int   // entries in the Open stores
	rssBytes int64 // log size of the RSS probe

	clusterRounds  int           // rounds of the cluster workload (-rounds sets it too)
	clusterClients int           // concurrent Apply callers on the leader
	clusterDur     time.Duration // how long they run per store and round

	ckptDur time.Duration // how long each size appends in the checkpoint workload
}

func fullConfig() config {
	return config{
		rounds: 31, warmup: 50, appendOps: 40, bigOps: 10,
		getN: 100_000, recentN: 1000, readBlock: 500,
		truncN: 300_000, truncKeep: 1000, truncOps: 10,
		openN: 1_000_000, rssBytes: 1 << 30,
		clusterRounds: 7, clusterClients: 64, clusterDur: 3 * time.Second,
		ckptDur: 10 * time.Second,
	}
}

func shortConfig() config {
	return config{
		short: true, rounds: 3, warmup: 3, appendOps: 3, bigOps: 2,
		getN: 2000, recentN: 100, readBlock: 50,
		truncN: 3000, truncKeep: 100, truncOps: 3,
		openN: 5000, rssBytes: 4 << 20,
		clusterRounds: 2, clusterClients: 8, clusterDur: 200 * time.Millisecond,
		ckptDur: 300 * time.Millisecond,
	}
}

var workloads = []string{"append", "get", "trunc", "open", "rss", "cluster", "ckpt"}

func main() {
	if runChild() {
		return
	}
	short := flag.Bool("short", false, "tiny sizes: checks that the harness works, measures nothing")
	rounds := flag.Int("rounds", 0, "interleaved rounds per workload (0: 31, cluster 7; or 3, cluster 2, with -short)")
	only := flag.String("only", "", "comma-separated workloads to run: "+strings.Join(workloads, ","))
	dir := flag.String("dir", "", "where to create the temp dirs (default: the system's)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()

	cfg := fullConfig()
	if *short {
		cfg = shortConfig()
	}
	if *rounds > 0 {
		cfg.rounds = *rounds
		cfg.clusterRounds = *rounds
	}
	cfg.dir = *dir
	cfg.out, cfg.log = os.Stdout, os.Stderr
	if *only != "" {
		cfg.only = map[string]bool{}
		for _, w := range strings.Split(*only, ",") {
			cfg.only[strings.TrimSpace(w)] = true
		}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// run runs the selected workloads and prints the report to cfg.out.
func run(cfg config) error {
	for w := range cfg.only {
		if !contains(workloads, w) {
			return fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(workloads, ","))
		}
	}
	b := &bench{cfg: cfg, rep: &report{}}
	if err := b.setup(); err != nil {
		return err
	}
	defer b.cleanup()
	steps := []struct {
		name string
		fn   func() error
	}{
		{"append", b.appends},
		{"get", b.getLogs},
		{"trunc", b.truncation},
		{"open", b.opens},
		{"rss", b.rss},
		{"cluster", b.cluster},
		{"ckpt", b.checkpoints},
	}
	for _, s := range steps {
		if cfg.only != nil && !cfg.only[s.name] {
			continue
		}
		if err := s.fn(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	b.rep.notes = append(b.rep.notes,
		"Every store runs with its defaults, durable: StoreLogs returns once its batch is synced. raftbolt: `raftbolt.Open(path, nil)` (the journal: one fdatasync per batch); "+
			"raftbolt NoJournal: `Options{NoJournal: true}` (one bbolt transaction per batch, two fsyncs); "+
			"raft-boltdb/v2: `NewBoltStore(path)`; raft-wal: `wal.Open(dir)` (with its meta store passed explicitly so the harness can close it).",
		"bbolt tx floor: one bare bbolt transaction per StoreLogs with raftbolt's bbolt options (hashmap freelist, not synced; "+
			"bucket packed full), putting each entry's Data under its index. bbolt syncs twice per commit (the pages, then the meta page).",
		"write+fdatasync floor: one write of the batch's Data into a preallocated file and one fdatasync: what a write-ahead log pays at least.",
		"GetLog recent: raftbolt serves the newest entries from its cache; raft-boltdb and raft-wal read them from the file "+
			"(raft-boltdb users usually wrap it in raft.LogCache, which would hide raftbolt's CommitTrackingLogStore).",
		"Allocations are counted with runtime.MemStats around each block of reads (all goroutines of the process).",
		"Timings on a shared machine are noisy: compare ratios from the same run, and look at the per-round spread.")
	b.printHeader()
	b.rep.print(cfg.out)
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
