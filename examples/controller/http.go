package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// The HTTP API:
//
//	GET    /kv/{key}   the value (404 if unset), read from this node's state
//	PUT    /kv/{key}   set it to the request body (through the leader)
//	DELETE /kv/{key}   delete it (through the leader)
//	GET    /cluster    the committed configuration the state file recorded, and the leader
//	POST   /join       {"id", "raft_addr", "http_addr"}: add a voter (through the leader)
//	GET    /backup     a consistent copy of the log store (raftbolt.Store.Backup)
//
// Writes on a follower are forwarded to the leader and its answer relayed.
// Reads are local: a follower may lag the leader by a few entries.
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

// forwardedHeader marks a request a follower forwarded. A node that gets
// one and does not lead (leadership moved meanwhile) answers 503 rather than
// forward it again, so requests never go round in circles.
const forwardedHeader = "X-Controller-Forwarded"

func (n *node) getKey(w http.ResponseWriter, r *http.Request) {
	var val []byte
	var found bool
	err := n.sm.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketKV); b != nil {
			if v := b.Get([]byte(r.PathValue("key"))); v != nil {
				val, found = append([]byte(nil), v...), true
			}
		}
		return nil
	})
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	case !found:
		http.Error(w, "not found", http.StatusNotFound)
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(val)
	}
}

func (n *node) putKey(w http.ResponseWriter, r *http.Request) {
	val, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(val) > maxBody {
		http.Error(w, "body unreadable or over 1 MiB", http.StatusBadRequest)
		return
	}
	n.write(w, r, val, func() error { return n.applyLocal(command{Op: "set", Key: r.PathValue("key"), Value: val}) })
}

func (n *node) deleteKey(w http.ResponseWriter, r *http.Request) {
	n.write(w, r, nil, func() error { return n.applyLocal(command{Op: "delete", Key: r.PathValue("key")}) })
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
	n.write(w, r, body, func() error { return n.join(req) })
}

// write runs do on the leader: here when this node leads, otherwise by
// forwarding the request (with body) to the leader's API.
func (n *node) write(w http.ResponseWriter, r *http.Request, body []byte, do func() error) {
	if n.raft.State() == raft.Leader {
		err := do()
		var ae *applyError
		switch {
		case err == nil:
			w.WriteHeader(http.StatusOK)
		case errors.As(err, &ae):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
			http.Error(w, "leadership changed; retry: "+err.Error(), http.StatusServiceUnavailable)
		default:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
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
		http.Error(w, fmt.Sprintf("forwarding to the leader at %s: %v; retry", leader, err), http.StatusServiceUnavailable)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("X-Controller-Leader", leader)
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

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return string(bytes.TrimSpace(b))
}
