// Command cluster runs raft clusters whose servers keep their log, stable
// store and cluster configuration in raftbolt stores, with file snapshots
// wrapped by raftbolt.WrapSnapshotStore and the state machine (a key-value
// map set by "key=value" commands) wrapped by raftbolt.NewFSM.
//
// Without flags (or with only -dir and -v) it runs a demo in one process: a
// 3-node cluster on 127.0.0.1 that applies commands, loses its leader,
// elects a new one, truncates its logs, adds a fourth node (caught up by a
// snapshot install), removes the stopped node, and prints every node's
// stored configuration and state. It exits 0 when all of that worked.
//
//	go run ./examples/cluster
//
// With -id it runs one node per process, with a small HTTP API:
//
//	go run ./examples/cluster -id node-1 -raft-addr 127.0.0.1:7001 -http-addr 127.0.0.1:8001
//	go run ./examples/cluster -id node-2 -raft-addr 127.0.0.1:7002 -http-addr 127.0.0.1:8002 -join 127.0.0.1:8001
//	go run ./examples/cluster -id node-3 -raft-addr 127.0.0.1:7003 -http-addr 127.0.0.1:8003 -join 127.0.0.1:8001
//	curl -X POST 127.0.0.1:8001/apply -d color=blue
//	curl 127.0.0.1:8002/state
//
// A node with no state bootstraps a new cluster, or, with -join, asks the
// members at those HTTP addresses to add it (POST /join). A node with state
// in its -dir recovers from it and never bootstraps again; -raft-addr may
// then be left out (the store recorded it). POST /join and POST /apply must
// reach the leader: another node answers 421 Misdirected Request with the
// leader's ID and raft address (raft knows no HTTP addresses, so nothing is
// forwarded); -join may list several addresses, tried in turn. GET /state
// answers on any node. SIGINT or SIGTERM stops the node cleanly.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); errors.Is(err, flag.ErrHelp) {
		return // -h: flag printed the usage
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

// options are the command line's.
type options struct {
	id, raftAddr, httpAddr, join, dir string
	verbose                           bool
}

func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.id, "id", "", "process mode: this node's raft server ID (without -id the demo runs)")
	fs.StringVar(&o.raftAddr, "raft-addr", "", "process mode: raft TCP address to listen on and advertise, e.g. 127.0.0.1:7001 (a restarted node may leave it out: its store recorded it)")
	fs.StringVar(&o.httpAddr, "http-addr", "", "process mode: HTTP API address, e.g. 127.0.0.1:8001")
	fs.StringVar(&o.join, "join", "", "process mode: comma-separated HTTP addresses of members to ask to add this node (only used by a node with no state)")
	fs.StringVar(&o.dir, "dir", "", "data directory (demo: default a new temporary directory, removed after a successful run; process mode: default $TMPDIR/raftbolt-cluster/<id>)")
	fs.BoolVar(&o.verbose, "v", false, "show raft's logs at info level")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.id == "" && (o.raftAddr != "" || o.httpAddr != "" || o.join != "") {
		return o, fmt.Errorf("-raft-addr, -http-addr and -join need -id (process mode); without them the demo runs")
	}
	if o.id != "" && o.httpAddr == "" {
		return o, fmt.Errorf("process mode needs -http-addr")
	}
	return o, nil
}

// processConfig turns process-mode options into the node's configuration.
func (o options) processConfig(stderr io.Writer) processConfig {
	level := hclog.Warn
	if o.verbose {
		level = hclog.Info
	}
	c := processConfig{
		id:       raft.ServerID(o.id),
		raftAddr: o.raftAddr,
		httpAddr: o.httpAddr,
		dir:      o.dir,
		logger:   hclog.New(&hclog.LoggerOptions{Name: o.id, Level: level, Output: stderr}),
	}
	if c.dir == "" {
		c.dir = filepath.Join(os.TempDir(), "raftbolt-cluster", o.id)
	}
	for _, a := range strings.Split(o.join, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.join = append(c.join, a)
		}
	}
	return c
}

// run runs the demo, or one node until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	if o.id == "" {
		_, err := runDemo(ctx, demoOptions{dir: o.dir, out: stdout, logs: stderr, verbose: o.verbose})
		return err
	}
	p, err := startProcess(ctx, o.processConfig(stderr), stdout)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return p.close()
}
