// Command controller is a small replicated key-value controller in the
// style of hraftd: three of them make a raft cluster you can curl.
//
// The log, raft's stable store and the cluster configuration live in a
// raftbolt Store (raft.db); the data model lives in a raftbolt
// StateMachine (state.db), a bbolt file whose buckets the application
// writes in the transactions raftbolt opens for each committed command. The
// application has no index, configuration or snapshot code.
//
//	controller -id n1 -raft-addr 127.0.0.1:7001 -http-addr 127.0.0.1:8001 -dir data/n1
//	controller -id n2 -raft-addr 127.0.0.1:7002 -http-addr 127.0.0.1:8002 -dir data/n2 -join 127.0.0.1:8001
//	controller -id n3 -raft-addr 127.0.0.1:7003 -http-addr 127.0.0.1:8003 -dir data/n3 -join 127.0.0.1:8001
//
//	curl -X PUT --data-binary blue 127.0.0.1:8002/kv/color   # any node; followers forward writes
//	curl 127.0.0.1:8003/kv/color                             # linearizable: read on the leader after a barrier
//	curl '127.0.0.1:8003/kv/color?stale=1'                   # this node's own state, which may lag
//	curl -X PUT --data-binary red '127.0.0.1:8001/kv/color?cas=blue' # compare-and-set: 200 swapped, 409 not
//	curl 127.0.0.1:8001/cluster                              # the configuration the state file recorded
//	curl -o raft-backup.db 127.0.0.1:8001/backup             # a consistent copy of the log store
//
// The first node (no -join, empty -dir) bootstraps a cluster of itself;
// the others ask any member to add them. A node restarted on its -dir
// resumes where it stopped.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.id, "id", "", "this node's server ID (required)")
	flag.StringVar(&cfg.raftAddr, "raft-addr", "127.0.0.1:7000", "address for raft traffic (port 0: any free port)")
	flag.StringVar(&cfg.httpAddr, "http-addr", "127.0.0.1:8000", "address of the HTTP API (port 0: any free port)")
	flag.StringVar(&cfg.join, "join", "", "HTTP address of a cluster member to join through (first start only)")
	flag.StringVar(&cfg.dir, "dir", "", "data directory (default: $TMPDIR/raftbolt-controller-<id>)")
	verbose := flag.Bool("v", false, "show raft's and raftbolt's logs")
	flag.Parse()
	if cfg.id == "" {
		fmt.Fprintln(os.Stderr, "controller: -id is required")
		flag.Usage()
		os.Exit(2)
	}
	if cfg.dir == "" {
		cfg.dir = filepath.Join(os.TempDir(), "raftbolt-controller-"+cfg.id)
	}
	level := hclog.Warn
	if *verbose {
		level = hclog.Info
	}
	cfg.logger = hclog.New(&hclog.LoggerOptions{Name: "controller-" + cfg.id, Level: level})
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

type config struct {
	id, raftAddr, httpAddr, join, dir string
	logger                            hclog.Logger
}

func run(cfg config) error {
	ln, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return err
	}
	cfg.httpAddr = ln.Addr().String()
	n, err := openNode(cfg)
	if err != nil {
		_ = ln.Close()
		return err
	}
	defer n.close()

	srv := &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	// The test and the README's walkthrough read this line.
	fmt.Printf("controller %s: http=%s raft=%s dir=%s\n", cfg.id, cfg.httpAddr, n.raftAddr(), cfg.dir)

	if cfg.join != "" && !n.hadState {
		if err := n.joinVia(cfg.join, 60*time.Second); err != nil {
			_ = srv.Close()
			return err
		}
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	select {
	case sig := <-stop:
		cfg.logger.Info("shutting down", "signal", sig)
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}
