package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
)

// processConfig is process mode's configuration: one node per process.
type processConfig struct {
	id       raft.ServerID
	raftAddr string   // "" = the address this node's store recorded for id
	httpAddr string   // the HTTP API
	join     []string // HTTP addresses of members to ask to add this node; only for a node with no state
	dir      string
	logger   hclog.Logger

	joinTimeout time.Duration // 0 = 30s
	tune        func(*raft.Config)
}

// process is a running node with its HTTP API.
type process struct {
	node *node
	out  io.Writer
	ln   net.Listener
	srv  *http.Server
	done chan error // the HTTP server's result
}

// startProcess starts a node and its HTTP API, then, if the node has no
// state yet, bootstraps a new cluster (no -join) or asks the -join
// addresses to add it. A node with state recovers from its directory and
// ignores -join. It returns once the node is part of a cluster.
func startProcess(ctx context.Context, c processConfig, out io.Writer) (p *process, err error) {
	if c.logger == nil {
		c.logger = hclog.NewNullLogger()
	}
	if c.raftAddr == "" {
		addr, err := recordedAddress(c.dir, c.id)
		if err != nil {
			return nil, err
		}
		c.raftAddr = string(addr)
	}
	ln, err := net.Listen("tcp", c.httpAddr)
	if err != nil {
		return nil, fmt.Errorf("HTTP API: %w", err)
	}
	n, err := startNode(nodeConfig{id: c.id, bind: c.raftAddr, dir: c.dir, logger: c.logger, tune: c.tune})
	if err != nil {
		ln.Close()
		return nil, err
	}
	p = &process{node: n, out: out, ln: ln, done: make(chan error, 1)}
	p.srv = &http.Server{Handler: p.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() { p.done <- p.srv.Serve(ln) }()
	defer func() {
		if err != nil {
			_ = p.close()
			p = nil
		}
	}()
	fmt.Fprintf(out, "%s: raft on %s, HTTP API on http://%s, data in %s\n", n.id, n.addr, ln.Addr(), n.dir)

	switch {
	case n.hadState:
		// No bootstrap, no join: raft recovers from the store and the
		// snapshots, and the store already knows the cluster.
		index, cfg, err := n.store.LatestConfiguration()
		if err != nil {
			return p, fmt.Errorf("recovering from %s: %w", n.dir, err)
		}
		fmt.Fprintf(out, "%s: recovered; the store recorded the configuration %s at index %d\n", n.id, servers(cfg), index)
		if len(c.join) > 0 {
			fmt.Fprintf(out, "%s: ignoring -join: this node already belongs to a cluster\n", n.id)
		}
	case len(c.join) == 0:
		cfg := raft.Configuration{Servers: []raft.Server{{ID: n.id, Address: n.addr}}}
		if err := n.raft.BootstrapCluster(cfg).Error(); err != nil {
			return p, fmt.Errorf("bootstrap: %w", err)
		}
		fmt.Fprintf(out, "%s: bootstrapped a new cluster %s\n", n.id, servers(cfg))
	default:
		via, err := join(ctx, c.join, n.id, n.addr, c.joinTimeout)
		if err != nil {
			return p, err
		}
		fmt.Fprintf(out, "%s: joined the cluster through %s\n", n.id, via)
	}
	return p, nil
}

// recordedAddress returns the raft address the store in dir recorded for
// id, so a restarted node needs no -raft-addr.
func recordedAddress(dir string, id raft.ServerID) (raft.ServerAddress, error) {
	path := filepath.Join(dir, "raft.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("-raft-addr is required for a new node (%s does not exist)", path)
	}
	s, err := raftbolt.Open(path, &raftbolt.Options{ReadOnly: true})
	if err != nil {
		return "", err
	}
	defer s.Close()
	_, cfg, err := s.LatestConfiguration()
	if err != nil {
		return "", fmt.Errorf("-raft-addr is required: %s: %w", path, err)
	}
	for _, srv := range cfg.Servers {
		if srv.ID == id {
			return srv.Address, nil
		}
	}
	return "", fmt.Errorf("-raft-addr is required: %s is not in the configuration %s recorded in %s", id, servers(cfg), path)
}

// close stops the HTTP API, then raft, the transport and the store.
func (p *process) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errs := []error{p.srv.Shutdown(ctx)}
	if err := <-p.done; !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, err)
	}
	errs = append(errs, p.node.stop())
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintf(p.out, "%s: stopped\n", p.node.id)
	return nil
}

// httpAddr is the address the HTTP API listens on.
func (p *process) httpAddr() string { return p.ln.Addr().String() }

type joinRequest struct {
	ID   raft.ServerID      `json:"id"`
	Addr raft.ServerAddress `json:"addr"`
}

type indexResponse struct {
	Index uint64 `json:"index"`
}

// errorResponse is every error's body. A node that is not the leader
// answers 421 Misdirected Request and names the leader it knows, by raft
// ID and raft address: raft knows no HTTP addresses, so it cannot forward.
type errorResponse struct {
	Error          string             `json:"error"`
	LeaderID       raft.ServerID      `json:"leader_id,omitempty"`
	LeaderRaftAddr raft.ServerAddress `json:"leader_raft_addr,omitempty"`
}

type serverJSON struct {
	ID       raft.ServerID      `json:"id"`
	Address  raft.ServerAddress `json:"address"`
	Suffrage string             `json:"suffrage"`
}

type stateResponse struct {
	ID       raft.ServerID      `json:"id"`
	RaftAddr raft.ServerAddress `json:"raft_addr"`
	State    string             `json:"state"`
	Leader   struct {
		ID   raft.ServerID      `json:"id"`
		Addr raft.ServerAddress `json:"addr"`
	} `json:"leader"`
	Term         uint64            `json:"term"`
	AppliedIndex uint64            `json:"applied_index"`
	FirstIndex   uint64            `json:"first_index"` // of the stored log: above 1 once truncated
	LastIndex    uint64            `json:"last_index"`
	FSM          map[string]string `json:"fsm"`
	// StoredConfiguration is what store.LatestConfiguration returns.
	StoredConfiguration struct {
		Index   uint64       `json:"index"`
		Servers []serverJSON `json:"servers"`
	} `json:"stored_configuration"`
}

func (p *process) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /join", p.handleJoin)
	mux.HandleFunc("POST /apply", p.handleApply)
	mux.HandleFunc("GET /state", p.handleState)
	return mux
}

// handleJoin adds the server in the body ({"id": ..., "addr": ...}) as a
// voter. Only the leader can; others answer 421 naming the leader.
func (p *process) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req joinRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil || req.ID == "" || req.Addr == "" {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: `the body must be {"id": "<raft server ID>", "addr": "<raft address>"}`})
		return
	}
	if !p.leading(w) {
		return
	}
	f := p.node.raft.AddVoter(req.ID, req.Addr, 0, 10*time.Second)
	if err := f.Error(); err != nil {
		p.raftError(w, fmt.Errorf("add voter %s at %s: %w", req.ID, req.Addr, err))
		return
	}
	fmt.Fprintf(p.out, "%s: added %s at %s as a voter (configuration index %d)\n", p.node.id, req.ID, req.Addr, f.Index())
	writeJSON(w, http.StatusOK, indexResponse{Index: f.Index()})
}

// handleApply applies the body, a command "key=value".
func (p *process) handleApply(w http.ResponseWriter, r *http.Request) {
	cmd, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: err.Error()})
		return
	}
	cmd = bytes.TrimSpace(cmd)
	if _, _, err := parseCommand(cmd); err != nil {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: err.Error()})
		return
	}
	if !p.leading(w) {
		return
	}
	f := p.node.raft.Apply(cmd, 5*time.Second)
	if err := f.Error(); err != nil {
		p.raftError(w, err)
		return
	}
	if err, ok := f.Response().(error); ok {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, indexResponse{Index: f.Index()})
}

// handleState shows the node's raft state, its FSM and the configuration
// its store recorded.
func (p *process) handleState(w http.ResponseWriter, _ *http.Request) {
	n := p.node
	var s stateResponse
	s.ID, s.RaftAddr = n.id, n.addr
	s.State = n.raft.State().String()
	s.Leader.Addr, s.Leader.ID = n.raft.LeaderWithID()
	s.Term = n.raft.CurrentTerm()
	s.AppliedIndex = n.raft.AppliedIndex()
	s.FSM = n.fsm.state()
	var err error
	if s.FirstIndex, err = n.store.FirstIndex(); err == nil {
		s.LastIndex, err = n.store.LastIndex()
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, errorResponse{Error: err.Error()})
		return
	}
	index, cfg, err := n.store.LatestConfiguration()
	if err != nil && !errors.Is(err, raftbolt.ErrNoConfiguration) { // none yet: a node waiting to be added
		writeJSON(w, http.StatusInternalServerError, errorResponse{Error: err.Error()})
		return
	}
	s.StoredConfiguration.Index = index
	s.StoredConfiguration.Servers = []serverJSON{}
	for _, srv := range cfg.Servers {
		s.StoredConfiguration.Servers = append(s.StoredConfiguration.Servers,
			serverJSON{ID: srv.ID, Address: srv.Address, Suffrage: srv.Suffrage.String()})
	}
	writeJSON(w, http.StatusOK, s)
}

// leading reports whether this node leads; if not, it answers 421 naming
// the leader.
func (p *process) leading(w http.ResponseWriter) bool {
	if p.node.raft.State() == raft.Leader {
		return true
	}
	p.notLeader(w)
	return false
}

func (p *process) notLeader(w http.ResponseWriter) {
	addr, id := p.node.raft.LeaderWithID()
	resp := errorResponse{LeaderID: id, LeaderRaftAddr: addr}
	if id == "" {
		resp.Error = fmt.Sprintf("%s is not the leader and knows no leader yet", p.node.id)
	} else {
		resp.Error = fmt.Sprintf("%s is not the leader; the leader is %s at raft address %s", p.node.id, id, addr)
	}
	writeJSON(w, http.StatusMisdirectedRequest, resp)
}

// raftError answers a failed raft operation: 421 when leadership moved
// meanwhile, 503 otherwise.
func (p *process) raftError(w http.ResponseWriter, err error) {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		p.notLeader(w)
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, errorResponse{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// join asks each of the HTTP addresses in turn to add this node, until
// one (the leader) does. The others answer 421 while they are not the
// leader (the first node may still be electing itself), so it keeps
// trying, every 250ms, until timeout.
func join(ctx context.Context, addrs []string, id raft.ServerID, raftAddr raft.ServerAddress, timeout time.Duration) (string, error) {
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	body, err := json.Marshal(joinRequest{ID: id, Addr: raftAddr})
	if err != nil {
		return "", err
	}
	client := &http.Client{Timeout: 15 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := map[string]string{} // each address's last answer, for the error
	for {
		for _, a := range addrs {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+a+"/join", bytes.NewReader(body))
			if err != nil {
				return "", err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				last[a] = err.Error()
				continue
			}
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return a, nil
			}
			var e errorResponse
			if json.Unmarshal(msg, &e) == nil && e.Error != "" {
				last[a] = fmt.Sprintf("%s: %s", resp.Status, e.Error)
			} else {
				last[a] = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(msg))
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("join: no member added %s within %s (each address's last answer: %v): %w", id, timeout, last, ctx.Err())
		case <-tick.C:
		}
	}
}
