package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// The HTTP API:
//
//	GET    /kv/{key}           the value (404 if unset), linearizable: read on the leader after a barrier
//	GET    /kv/{key}?stale=1   the value in this node's state, which may lag the leader's
//	PUT    /kv/{key}           set it to the request body (through the leader)
//	PUT    /kv/{key}?cas=OLD   set it to the body only if it holds OLD: 200 if swapped, 409 if not
//	DELETE /kv/{key}           delete it (through the leader)
//	GET    /cluster            the committed configuration the state file recorded, and the leader
//	POST   /join               {"id", "raft_addr", "http_addr"}: add a voter (through the leader)
//	GET    /backup             a consistent copy of the log store (raftbolt.Store.Backup)
//
// Writes and reads on a follower are forwarded to the leader and its answer
// relayed. A 503 means the request was not carried out (no leader at the
// moment, or the node asked is no longer it): retrying is safe. A 504 means
// its outcome is unknown (leadership was lost with the write in flight, or
// the forward to the leader broke off): the write may or may not have
// happened, so read before retrying a compare-and-set.
func (n *node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /kv/{key}", n.getKey)
	mux.HandleFunc("PUT /kv/{key}", n.putKey)
	mux.HandleFunc("DELETE /kv/{key}", n.deleteKey)
	mux.HandleFunc("GET /cluster", n.cluster)
	mux.HandleFunc("POST /join", n.joinHandler)
	mux.HandleFunc("GET /backup", n.backup)
	return mux
}

const maxBody = 1 << 20

// barrierTimeout bounds the barrier of a linearizable read.
const barrierTimeout = 5 * time.Second

// forwardedHeader marks a request a follower forwarded. A node that gets
// one and does not lead (leadership moved meanwhile) answers 503 rather than
// forward it again, so requests never go round in circles.
const forwardedHeader = "X-Controller-Forwarded"

// errNotFound is a read of a key that is not set.
var errNotFound = errors.New("not found")

func (n *node) getKey(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if r.URL.Query().Get("stale") != "" {
		val, err := n.readKey(key)
		respond(w, val, err)
		return
	}
	n.onLeader(w, r, nil, func() ([]byte, error) {
		// A leader's own state may miss writes another leader committed
		// (it was deposed and does not know yet, or was elected and has
		// not applied them). The barrier commits an entry of this term
		// through a majority, which a deposed leader cannot do, and
		// returns once the state machine applied everything before it: the
		// read sees every write acknowledged before the request came.
		if err := n.raft.Barrier(barrierTimeout).Error(); err != nil {
			return nil, err
		}
		return n.readKey(key)
	})
}

// readKey reads key from this node's state.
func (n *node) readKey(key string) ([]byte, error) {
	var val []byte
	err := n.sm.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketKV); b != nil {
			if v := b.Get([]byte(key)); v != nil {
				val = append([]byte{}, v...)
			}
		}
		return nil
	})
	if err == nil && val == nil {
		err = errNotFound
	}
	return val, err
}

func (n *node) putKey(w http.ResponseWriter, r *http.Request) {
	val, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(val) > maxBody {
		http.Error(w, "body unreadable or over 1 MiB", http.StatusBadRequest)
		return
	}
	c := command{Op: "set", Key: r.PathValue("key"), Value: val}
	if q := r.URL.Query(); q.Has("cas") {
		c.Op, c.Old = "cas", []byte(q.Get("cas"))
	}
	n.onLeader(w, r, val, func() ([]byte, error) { return nil, n.applyLocal(c) })
}

func (n *node) deleteKey(w http.ResponseWriter, r *http.Request) {
	n.onLeader(w, r, nil, func() ([]byte, error) { return nil, n.applyLocal(command{Op: "delete", Key: r.PathValue("key")}) })
}

func (n *node) joinHandler(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req joinRequest
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, "bad join request: "+err.Error(), http.StatusBadRequest)
		return
	}
	n.onLeader(w, r, body, func() ([]byte, error) { return nil, n.join(req) })
}

// respond writes the answer of a request: the body, or the status that
// says what went wrong.
func respond(w http.ResponseWriter, body []byte, err error) {
	var ae *applyError
	switch {
	case err == nil:
		if body != nil {
			w.Header().Set("Content-Type", "application/octet-stream")
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	case errors.Is(err, errNotFound):
		http.Error(w, "not found", http.StatusNotFound)
	case errors.Is(err, errCASMismatch):
		http.Error(w, err.Error(), http.StatusConflict)
	case errors.As(err, &ae):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout):
		// raft refused the command before it reached the log.
		http.Error(w, "not carried out; retry: "+err.Error(), http.StatusServiceUnavailable)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
		// The entry may be in the log already and commit under the next leader.
		http.Error(w, "outcome unknown: "+err.Error(), http.StatusGatewayTimeout)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// onLeader runs do on the leader and answers with its result: here when
// this node leads, otherwise by forwarding the request (with body) to the
// leader's API.
func (n *node) onLeader(w http.ResponseWriter, r *http.Request, body []byte, do func() ([]byte, error)) {
	if n.raft.State() == raft.Leader {
		out, err := do()
		respond(w, out, err)
		return
	}
	if r.Header.Get(forwardedHeader) != "" {
		http.Error(w, "not the leader (any more); retry", http.StatusServiceUnavailable)
		return
	}
	leader, err := n.leaderHTTP()
	if err != nil {
		http.Error(w, err.Error()+"; retry", http.StatusServiceUnavailable)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+leader+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header.Set(forwardedHeader, n.cfg.id)
	req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	resp, err := n.client.Do(req)
	if err != nil {
		// A leader that could not be dialled got nothing; one that was
		// sent the request may have carried it out.
		status := http.StatusGatewayTimeout
		if isDialError(err) {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, fmt.Sprintf("forwarding to the leader at %s: %v", leader, err), status)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("X-Controller-Leader", leader)
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// serverInfo is one server of GET /cluster.
type serverInfo struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr,omitempty"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

func (n *node) cluster(w http.ResponseWriter, _ *http.Request) {
	index, cfg, err := n.sm.LatestConfiguration()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, leader := n.raft.LeaderWithID()
	out := struct {
		Index   uint64       `json:"index"`
		Applied uint64       `json:"applied_index"`
		Leader  string       `json:"leader"`
		Servers []serverInfo `json:"servers"`
	}{Index: index, Applied: n.sm.AppliedIndex(), Leader: string(leader)}
	_ = n.sm.View(func(tx *bbolt.Tx) error {
		nodes := tx.Bucket(bucketNodes)
		for _, s := range cfg.Servers {
			info := serverInfo{ID: string(s.ID), RaftAddr: string(s.Address), Suffrage: s.Suffrage.String(), Leader: s.ID == leader}
			if nodes != nil {
				info.HTTPAddr = string(nodes.Get([]byte(s.ID)))
			}
			out.Servers = append(out.Servers, info)
		}
		return nil
	})
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

func (n *node) backup(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="raft-backup.db"`)
	if _, err := n.store.Backup(w); err != nil {
		// The status line is gone already; the client sees a short body.
		n.cfg.logger.Error("backup failed", "error", err)
	}
}

// isDialError tells whether err is a failure to connect: the request was
// never sent.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return string(bytes.TrimSpace(b))
}
