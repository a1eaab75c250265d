package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// The RSS probe runs each store in a child process of its own (this
// binary, or the test binary, re-executed with these variables), so that
// one store's memory is not counted against another's.
const (
	envChild = "RAFTBOLT_BENCH_CHILD"
	envImpl  = "RAFTBOLT_BENCH_IMPL"
	envBytes = "RAFTBOLT_BENCH_BYTES"
	envDir   = "RAFTBOLT_BENCH_DIR"
)

// memory is what the child reports, in bytes, from /proc/self/status.
type memory struct {
	RSSWritten, AnonWritten, FileWritten int64 // after writing the log
	RSSRead, AnonRead, FileRead          int64 // after reading every entry once with GetLog
	HWM                                  int64 // peak RSS
	HeapInuse                            int64 // Go heap in use at the end
	Entries                              int
	WriteTime, ReadTime                  time.Duration
}

// runChild runs the RSS probe when this process is one, and reports
// whether it was.
func runChild() bool {
	if os.Getenv(envChild) != "rss" {
		return false
	}
	m, err := rssChild(os.Getenv(envImpl), os.Getenv(envBytes), os.Getenv(envDir))
	if err != nil {
		fmt.Fprintln(os.Stderr, "rss child:", err)
		os.Exit(1)
	}
	out, _ := json.Marshal(m)
	fmt.Printf("RSS %s\n", out)
	return true
}

func rssChild(name, size, dir string) (memory, error) {
	var m memory
	total, err := strconv.ParseInt(size, 10, 64)
	if err != nil {
		return m, err
	}
	var im *impl
	for i := range peers {
		if peers[i].name == name {
			im = &peers[i]
		}
	}
	if im == nil {
		return m, fmt.Errorf("unknown store %q", name)
	}
	s, err := im.open(dir)
	if err != nil {
		return m, err
	}
	defer s.Close()
	b := &bench{payload: make([]byte, 4096)}
	for i := range b.payload {
		b.payload[i] = byte(i * 7)
	}
	const size4k, batch = 4096, 64
	m.Entries = int(total / size4k)
	start := time.Now()
	if err := b.fill(s, 1, m.Entries, size4k, batch); err != nil {
		return m, err
	}
	m.WriteTime = time.Since(start)
	runtime.GC()
	st := procStatus()
	m.RSSWritten, m.AnonWritten, m.FileWritten = st["VmRSS"], st["RssAnon"], st["RssFile"]
	start = time.Now()
	var l raft.Log
	for i := 1; i <= m.Entries; i++ {
		if err := s.GetLog(uint64(i), &l); err != nil {
			return m, fmt.Errorf("get log %d: %w", i, err)
		}
	}
	m.ReadTime = time.Since(start)
	runtime.GC()
	st = procStatus()
	m.RSSRead, m.AnonRead, m.FileRead, m.HWM = st["VmRSS"], st["RssAnon"], st["RssFile"], st["VmHWM"]
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.HeapInuse = int64(ms.HeapInuse)
	return m, nil
}

// procStatus returns the kB fields of /proc/self/status, in bytes.
func procStatus() map[string]int64 {
	out := map[string]int64{}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 2 && fields[1] == "kB" {
			n, _ := strconv.ParseInt(fields[0], 10, 64)
			out[k] = n << 10
		}
	}
	return out
}

// rss runs the probe for each store: write a log of rssBytes in 4 KiB
// entries (batches of 64), then read every entry once.
func (b *bench) rss() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var t strings.Builder
	fmt.Fprintf(&t, "### Memory (a log of %s in 4 KiB entries, each store in a process of its own; not a target)\n\n", formatBytes(float64(b.cfg.rssBytes)))
	fmt.Fprintf(&t, "RSS counts the pages of the file a store has mapped and touched (RssFile: page cache, given back under memory pressure) "+
		"besides its own memory (RssAnon).\n\n")
	fmt.Fprintf(&t, "| Store | RSS after writing | of which anon | RSS after reading all | of which anon | of which file | peak RSS | Go heap in use | write | read all |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, im := range peers {
		dir, err := b.freshDir(im.name + "-rss")
		if err != nil {
			return err
		}
		b.progress("RSS: %s, %s log", im.name, formatBytes(float64(b.cfg.rssBytes)))
		cmd := exec.Command(exe, childArgs()...)
		cmd.Env = append(os.Environ(), envChild+"=rss", envImpl+"="+im.name,
			envBytes+"="+strconv.FormatInt(b.cfg.rssBytes, 10), envDir+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		_ = os.RemoveAll(dir)
		if err != nil {
			return fmt.Errorf("%s: rss child: %w: %s", im.name, err, stderr.String())
		}
		var m memory
		_, line, ok := strings.Cut(string(out), "RSS ")
		if !ok {
			return fmt.Errorf("%s: rss child printed %q", im.name, out)
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(line)), &m); err != nil {
			return fmt.Errorf("%s: rss child printed %q: %w", im.name, out, err)
		}
		f := func(v int64) string { return formatBytes(float64(v)) }
		fmt.Fprintf(&t, "| %s | %s | %s | %s | %s | %s | %s | %s | %v | %v |\n", im.name,
			f(m.RSSWritten), f(m.AnonWritten), f(m.RSSRead), f(m.AnonRead), f(m.FileRead), f(m.HWM), f(m.HeapInuse),
			m.WriteTime.Round(time.Millisecond), m.ReadTime.Round(time.Millisecond))
	}
	b.rep.extra = append(b.rep.extra, t.String())
	return nil
}

// childArgs are the arguments the child is started with: none for the
// command, and for a test binary a filter that runs no test (TestMain
// intercepts the child before that matters).
func childArgs() []string {
	if strings.HasSuffix(os.Args[0], ".test") {
		return []string{"-test.run=^$"}
	}
	return nil
}
