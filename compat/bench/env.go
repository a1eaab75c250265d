package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// printHeader prints what the numbers were measured with: the machine, the
// file system of the temp dirs, Go, and the module versions linked into
// this binary.
func (b *bench) printHeader() {
	w := b.cfg.out
	mode := "full"
	if b.cfg.short {
		mode = "short (sizes too small to mean anything)"
	}
	fmt.Fprintf(w, "## raftbolt vs raft-boltdb/v2 vs raft-wal\n\n")
	fmt.Fprintf(w, "- run: %s, %d rounds, %s, took %v\n", mode, b.cfg.rounds, time.Now().Format(time.RFC3339), time.Since(b.start).Round(time.Second))
	fmt.Fprintf(w, "- machine: %s, %d CPUs (GOMAXPROCS %d), %s/%s, load average at start %s\n",
		cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, b.loadAtStart)
	fmt.Fprintf(w, "- temp dir: %s on %s\n", b.base, fsType(b.base))
	fmt.Fprintf(w, "- %s\n", runtime.Version())
	if info, ok := debug.ReadBuildInfo(); ok {
		fmt.Fprintf(w, "- modules:")
		want := []string{"github.com/raftbolt/raftbolt", "github.com/hashicorp/raft", "go.etcd.io/bbolt",
			"github.com/hashicorp/raft-boltdb/v2", "github.com/hashicorp/raft-wal", "github.com/hashicorp/go-metrics"}
		for _, path := range want {
			for _, d := range info.Deps {
				if d.Path != path {
					continue
				}
				v := d.Version
				if d.Replace != nil {
					v += " => " + d.Replace.Path
					if d.Replace.Version != "" {
						v += " " + d.Replace.Version
					}
				}
				if path == "github.com/raftbolt/raftbolt" {
					v += gitHead()
				}
				fmt.Fprintf(w, " %s %s;", path, v)
			}
		}
		fmt.Fprintln(w)
	}
}

// gitHead describes the raftbolt checkout the harness was built from, when
// git can tell.
func gitHead() string {
	out, err := exec.Command("git", "-C", "..", "describe", "--always", "--dirty", "--exclude=*").Output()
	if err != nil {
		return ""
	}
	return " (git " + strings.TrimSpace(string(out)) + ")"
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "n/a"
	}
	return strings.Join(f[:3], " ")
}

// fsType names the file system holding dir, from /proc/mounts (the
// longest mount point that is a prefix of dir).
func fsType(dir string) string {
	dir, _ = filepath.EvalSymlinks(dir)
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "unknown file system"
	}
	defer f.Close()
	best, typ, dev := "", "unknown file system", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		mp := fields[1]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, typ, dev = mp, fields[2], fields[0]
		}
	}
	return fmt.Sprintf("%s (%s, mounted at %s)", typ, dev, best)
}
