package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
	"github.com/stretchr/testify/require"
)

// TestDemo runs the demo and checks, from the stores on disk, that every
// node recorded the configuration the demo expects.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	res, err := runDemo(context.Background(), demoOptions{dir: t.TempDir(), out: &out, logs: io.Discard, timeout: 30 * time.Second})
	t.Log("\n" + out.String())
	require.NoError(t, err)
	require.Contains(t, out.String(), "node-4 was caught up by a snapshot install")

	// The first leader was stopped, then removed; node-4 took its place.
	require.Len(t, res.nodes, 4)
	require.Len(t, res.bootstrap.Servers, 3)
	var wantIDs []raft.ServerID
	for _, s := range res.bootstrap.Servers {
		if s.ID != res.stopped {
			wantIDs = append(wantIDs, s.ID)
		}
	}
	wantIDs = append(wantIDs, "node-4")
	var gotIDs []raft.ServerID
	for _, s := range res.final.Servers {
		gotIDs = append(gotIDs, s.ID)
		require.Equal(t, raft.Voter, s.Suffrage)
	}
	require.Equal(t, wantIDs, gotIDs)

	for id, n := range res.nodes {
		require.False(t, n.running(), "%s still runs after the demo", id)
		// Read every store from disk, read-only, as an operator would.
		s, err := raftbolt.Open(filepath.Join(n.dir, "raft.db"), &raftbolt.Options{ReadOnly: true})
		require.NoError(t, err)
		index, cfg, err := s.LatestConfiguration()
		require.NoError(t, err, "%s", id)
		require.NoError(t, s.Check(), "%s", id)
		require.NoError(t, s.Close())
		if id == res.stopped {
			require.EqualValues(t, 1, index, "%s was stopped before any change", id)
			require.Equal(t, res.bootstrap, cfg, "%s", id)
			continue
		}
		require.Equal(t, res.final, cfg, "%s", id)
		require.Greater(t, index, uint64(1), "%s", id)
		require.Equal(t, res.want, n.fsm.state(), "%s: FSM state", id)
	}
	require.Len(t, res.want, 65)

	// node-4 started empty after every log was truncated: its FSM was
	// restored from the snapshot the leader sent, and its snapshot store
	// holds it.
	n4 := res.nodes["node-4"]
	require.Positive(t, n4.fsm.restored())
	files, err := raft.NewFileSnapshotStoreWithLogger(n4.dir, 2, hclog.NewNullLogger())
	require.NoError(t, err)
	list, err := files.List()
	require.NoError(t, err)
	require.NotEmpty(t, list)
}

func TestDemoRefusesANonEmptyDir(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "x"), nil, 0o600))
	err := run(context.Background(), []string{"-dir", dir}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "is not empty")
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"-join", "127.0.0.1:8001"}, "need -id"},
		{[]string{"-raft-addr", "127.0.0.1:7001"}, "need -id"},
		{[]string{"-id", "node-1"}, "needs -http-addr"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		_, err := parseArgs(tc.args, io.Discard)
		require.ErrorContains(t, err, tc.err, "%q", tc.args)
	}
	o, err := parseArgs([]string{"-id", "n", "-http-addr", "127.0.0.1:0", "-join", "a:1, b:2"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{"a:1", "b:2"}, o.processConfig(io.Discard).join)
}

// syncBuffer is a bytes.Buffer safe for the HTTP handlers' writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one run of the program in process mode, through run, exactly
// as main calls it.
type proc struct {
	t      *testing.T
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
	http   string
}

var httpLine = regexp.MustCompile(`HTTP API on http://([^\s,]+)`)

// startProc runs the program with args and waits until it printed want.
func startProc(t *testing.T, want string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{t: t, out: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- run(ctx, args, p.out, io.Discard) }()
	t.Cleanup(func() { p.stop() })
	require.Eventually(t, func() bool {
		select {
		case err := <-p.done:
			p.done <- err
			return true // it failed: reported below
		default:
		}
		return strings.Contains(p.out.String(), want)
	}, 30*time.Second, 10*time.Millisecond, "%q never printed %q:\n%s", args, want, p.out)
	require.Contains(t, p.out.String(), want, "%q failed:\n%s", args, p.out)
	p.http = httpLine.FindStringSubmatch(p.out.String())[1]
	return p
}

// stop cancels the run, as SIGINT does, and returns its error.
func (p *proc) stop() error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		p.t.Errorf("the node did not stop:\n%s", p.out)
		return nil
	}
}

// post and get return errors rather than fail the test: they run inside
// require.Eventually's conditions, on another goroutine.
func post(addr, path, body string) (int, errorResponse, error) {
	var e errorResponse
	resp, err := http.Post("http://"+addr+path, "text/plain", strings.NewReader(body))
	if err != nil {
		return 0, e, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e, err
}

func getState(addr string) (stateResponse, error) {
	var s stateResponse
	resp, err := http.Get("http://" + addr + "/state")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /state: %s", resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// applyOnLeader applies cmd through whichever of the nodes leads.
func applyOnLeader(t *testing.T, cmd string, addrs ...string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, a := range addrs {
			if code, _, err := post(a, "/apply", cmd); err == nil && code == http.StatusOK {
				return true
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "no node applied %q", cmd)
}

// TestProcessMode starts two nodes the way the flags do, joins the second
// to the first over HTTP, applies, reads /state, and restarts the second
// from its directory (no -raft-addr, no -join: it recovers).
func TestProcessMode(t *testing.T) {
	d1, d2 := t.TempDir(), t.TempDir()
	p1 := startProc(t, "bootstrapped a new cluster",
		"-id", "node-1", "-raft-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-dir", d1)
	p2 := startProc(t, "joined the cluster through "+p1.http,
		"-id", "node-2", "-raft-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-dir", d2, "-join", p1.http)

	ids := map[string]raft.ServerID{p1.http: "node-1", p2.http: "node-2"}
	applyOnLeader(t, "color=blue", p1.http, p2.http)
	code, e, err := post(p1.http, "/apply", "not a command")
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, e.Error, "not key=value")

	// A follower refuses /apply and /join, naming the leader. (Leadership
	// may move on a loaded machine: whichever node follows answers.)
	var s stateResponse
	for _, path := range []string{"/apply", "/join"} {
		var follower raft.ServerID
		require.Eventually(t, func() bool {
			for addr, id := range ids {
				s, err := getState(addr)
				if err != nil || s.State != "Follower" || s.Leader.ID == "" {
					continue
				}
				body := "probe=" + path // harmless if the node leads by now
				if path == "/join" {    // so is re-adding a member at its own address
					body = fmt.Sprintf(`{"id": %q, "addr": %q}`, id, s.RaftAddr)
				}
				code, e, err = post(addr, path, body)
				if err == nil && code == http.StatusMisdirectedRequest {
					follower = id
					return true
				}
			}
			return false
		}, 30*time.Second, 20*time.Millisecond, "no follower answered %s with 421", path)
		require.NotEqual(t, follower, e.LeaderID)
		require.Contains(t, []raft.ServerID{"node-1", "node-2"}, e.LeaderID)
		require.Contains(t, e.Error, "the leader is "+string(e.LeaderID)+" at raft address "+string(e.LeaderRaftAddr))
	}

	require.Eventually(t, func() bool {
		s, err = getState(p2.http)
		return err == nil && s.FSM["color"] == "blue" && len(s.StoredConfiguration.Servers) == 2 && s.Leader.ID != ""
	}, 30*time.Second, 20*time.Millisecond, "node-2 never caught up")
	require.Equal(t, raft.ServerID("node-2"), s.ID)
	require.Equal(t, raft.ServerID("node-1"), s.StoredConfiguration.Servers[0].ID)
	require.Equal(t, raft.ServerID("node-2"), s.StoredConfiguration.Servers[1].ID)
	require.Equal(t, s.RaftAddr, s.StoredConfiguration.Servers[1].Address)
	require.Equal(t, "Voter", s.StoredConfiguration.Servers[1].Suffrage)
	require.Greater(t, s.StoredConfiguration.Index, uint64(1))

	// Restart node-2 from its directory: it recovers, without -raft-addr
	// (its store recorded the address) and without bootstrapping or joining.
	require.NoError(t, p2.stop())
	require.Contains(t, p2.out.String(), "node-2: stopped")
	p2 = startProc(t, "node-2: recovered",
		"-id", "node-2", "-http-addr", "127.0.0.1:0", "-dir", d2)
	require.NotContains(t, p2.out.String(), "bootstrapped")
	require.NotContains(t, p2.out.String(), "joined")
	applyOnLeader(t, "after=restart", p1.http, p2.http)
	for _, p := range []*proc{p1, p2} {
		require.Eventually(t, func() bool {
			s, err = getState(p.http)
			return err == nil && s.FSM["color"] == "blue" && s.FSM["after"] == "restart" && s.Leader.ID != ""
		}, 30*time.Second, 20*time.Millisecond, "%s did not apply after the restart", p.http)
		require.Len(t, s.StoredConfiguration.Servers, 2)
	}
	require.NoError(t, p2.stop())
	require.NoError(t, p1.stop())
}
