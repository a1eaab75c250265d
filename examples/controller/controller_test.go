package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary run as a controller: the test starts its
// nodes as child processes of itself, so that it can kill one with SIGKILL.
func TestMain(m *testing.M) {
	if args := os.Getenv("CONTROLLER_TEST_ARGS"); args != "" {
		os.Args = append([]string{"controller"}, strings.Split(args, "\n")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// proc is a controller running in a child process.
type proc struct {
	id, dir, http, raft string
	cmd                 *exec.Cmd
	stderr              *syncBuffer
}

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

var ready = regexp.MustCompile(`^controller (\S+): http=(\S+) raft=(\S+) dir=`)

// start starts a controller and waits for it to listen; the test kills
// it at its end.
func start(t *testing.T, id, dir, raftAddr, httpAddr, join string) *proc {
	t.Helper()
	p, err := spawn(id, dir, raftAddr, httpAddr, join)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("stderr of %s:\n%s", id, p.stderr.String())
		}
	})
	return p
}

// spawn starts a controller and waits for it to listen. It does not touch
// a testing.T, so that a nemesis goroutine can restart nodes with it.
func spawn(id, dir, raftAddr, httpAddr, join string) (*proc, error) {
	args := []string{"-id", id, "-dir", dir, "-raft-addr", raftAddr, "-http-addr", httpAddr}
	if join != "" {
		args = append(args, "-join", join)
	}
	p := &proc{id: id, dir: dir, stderr: &syncBuffer{}}
	p.cmd = exec.Command(os.Args[0])
	p.cmd.Env = append(os.Environ(), "CONTROLLER_TEST_ARGS="+strings.Join(args, "\n"))
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	line := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := ready.FindStringSubmatch(sc.Text()); m != nil {
				line <- m
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case m := <-line:
		p.http, p.raft = m[2], m[3]
		return p, nil
	case <-time.After(60 * time.Second):
		p.kill()
		return nil, fmt.Errorf("%s did not start:\n%s", id, p.stderr.String())
	}
}

// kill kills the process with SIGKILL: no shutdown of any kind.
func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// stop stops the process with SIGTERM, as an operator would, and waits
// for it to close raft and its files.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, "%s did not exit cleanly:\n%s", p.id, p.stderr.String())
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-exited
		t.Fatalf("%s did not stop within 60s of SIGTERM:\n%s", p.id, p.stderr.String())
	}
}

// requireConfiguration opens the files of a stopped node read-only and
// requires that the log store and the state machine both record the
// configuration of the servers ids, the one the state machine applied.
func requireConfiguration(t *testing.T, p *proc, ids ...string) {
	t.Helper()
	ro := &raftbolt.Options{ReadOnly: true}
	store, err := raftbolt.Open(filepath.Join(p.dir, "raft.db"), ro)
	require.NoError(t, err)
	defer store.Close()
	index, conf, err := store.LatestConfiguration()
	require.NoError(t, err)
	var got []string
	for _, s := range conf.Servers {
		got = append(got, string(s.ID))
	}
	require.ElementsMatch(t, ids, got, "%s: the log store's configuration (index %d)", p.id, index)

	sm, err := raftbolt.OpenStateMachine(filepath.Join(p.dir, "state.db"), nil, ro)
	require.NoError(t, err)
	defer sm.Close()
	smIndex, smConf, err := sm.LatestConfiguration()
	require.NoError(t, err)
	require.Equal(t, []any{smIndex, smConf}, []any{index, conf},
		"%s: the log store and the state machine disagree on the configuration", p.id)
	for _, s := range conf.Servers {
		require.Equal(t, raft.Voter, s.Suffrage, "%s: %s", p.id, s.ID)
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

func do(method, url, body string) (int, string, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// write retries a write until a node answers 200 (503 while leadership moves).
func write(t *testing.T, p *proc, method, key, value string) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		code, body, err := do(method, "http://"+p.http+"/kv/"+key, value)
		assert.NoError(c, err)
		assert.Equal(c, http.StatusOK, code, "answer: %s", body)
	}, 60*time.Second, 100*time.Millisecond, "%s %s via %s", method, key, p.id)
}

// reads waits until p's own state holds key with value (or 404 for ""):
// a stale read, which p answers itself.
func reads(t *testing.T, p *proc, key, value string) {
	t.Helper()
	require.Eventually(t, func() bool {
		code, body, err := do("GET", "http://"+p.http+"/kv/"+key+"?stale=1", "")
		if value == "" {
			return err == nil && code == http.StatusNotFound
		}
		return err == nil && code == http.StatusOK && body == value
	}, 60*time.Second, 50*time.Millisecond, "%s: %s != %q", p.id, key, value)
}

type clusterView struct {
	Index   uint64
	Leader  string
	Servers []struct {
		ID       string `json:"id"`
		RaftAddr string `json:"raft_addr"`
		HTTPAddr string `json:"http_addr"`
	}
}

func clusterOf(p *proc) (clusterView, error) {
	var v clusterView
	code, body, err := do("GET", "http://"+p.http+"/cluster", "")
	if err != nil {
		return v, err
	}
	if code != http.StatusOK {
		return v, fmt.Errorf("%d %s", code, body)
	}
	return v, json.Unmarshal([]byte(body), &v)
}

// settled waits until every node of ps reports the same leader and a
// configuration of n servers whose HTTP addresses are all known.
func settled(t *testing.T, n int, ps ...*proc) string {
	t.Helper()
	var leader string
	require.Eventually(t, func() bool {
		leader = ""
		for _, p := range ps {
			v, err := clusterOf(p)
			if err != nil || len(v.Servers) != n || v.Leader == "" || (leader != "" && v.Leader != leader) {
				return false
			}
			for _, s := range v.Servers {
				if s.HTTPAddr == "" {
					return false
				}
			}
			leader = v.Leader
		}
		return true
	}, 60*time.Second, 100*time.Millisecond, "the cluster did not settle")
	return leader
}

func TestThreeNodesOverHTTP(t *testing.T) {
	n1 := start(t, "n1", t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", "")
	n2 := start(t, "n2", t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", n1.http)
	n3 := start(t, "n3", t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", n2.http) // joins through whoever n2 is
	nodes := map[string]*proc{"n1": n1, "n2": n2, "n3": n3}
	leaderID := settled(t, 3, n1, n2, n3)
	leader := nodes[leaderID]
	var followers []*proc
	for _, p := range []*proc{n1, n2, n3} {
		if p != leader {
			followers = append(followers, p)
		}
	}

	// Writes through a follower are forwarded to the leader; every node reads them.
	write(t, followers[0], "PUT", "color", "blue")
	write(t, followers[1], "PUT", "tmp", "x")
	write(t, followers[0], "DELETE", "tmp", "")
	for _, p := range nodes {
		reads(t, p, "color", "blue")
		reads(t, p, "tmp", "")
	}

	// Compare-and-set swaps only from the expected value; a read without
	// ?stale=1 goes through the leader, so it sees the swap at once on
	// any node.
	for _, step := range []struct {
		url  string
		code int
	}{
		{"/kv/color?cas=blue", http.StatusOK},       // blue -> green
		{"/kv/color?cas=blue", http.StatusConflict}, // not blue any more
		{"/kv/unset?cas=blue", http.StatusConflict}, // not set at all
	} {
		code, body, err := do("PUT", "http://"+followers[1].http+step.url, "green")
		require.NoError(t, err)
		require.Equal(t, step.code, code, "PUT %s: %s", step.url, body)
	}
	for _, p := range nodes {
		code, body, err := do("GET", "http://"+p.http+"/kv/color", "")
		require.NoError(t, err)
		require.Equal(t, []any{http.StatusOK, "green"}, []any{code, body}, "linearizable read via %s", p.id)
		code, _, err = do("GET", "http://"+p.http+"/kv/unset", "")
		require.NoError(t, err)
		require.Equal(t, http.StatusNotFound, code, "linearizable read via %s", p.id)
	}

	// Kill the leader: the other two elect a new one and go on.
	leader.kill()
	write(t, followers[0], "PUT", "size", "large")
	write(t, followers[1], "PUT", "shape", "round")
	for _, p := range followers {
		reads(t, p, "color", "green")
		reads(t, p, "size", "large")
		reads(t, p, "shape", "round")
	}
	newLeader := settled(t, 3, followers...)
	require.NotEqual(t, leaderID, newLeader)

	// The log store's backup is a raftbolt store.
	code, body, err := do("GET", "http://"+followers[0].http+"/backup", "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	path := filepath.Join(t.TempDir(), "backup.db")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	backup, err := raftbolt.Open(path, &raftbolt.Options{ReadOnly: true})
	require.NoError(t, err)
	require.NoError(t, backup.Check())
	last, err := backup.LastIndex()
	require.NoError(t, err)
	require.Greater(t, last, uint64(5))
	require.NoError(t, backup.Close())

	// The killed leader comes back on its directory and catches up.
	back := start(t, leader.id, leader.dir, leader.raft, leader.http, "")
	reads(t, back, "color", "green")
	reads(t, back, "shape", "round")
	write(t, back, "PUT", "after", "restart")
	for _, p := range append(followers, back) {
		reads(t, p, "after", "restart")
	}

	// Stopped, every node's log store knows the cluster of three (what
	// raftbolt config raft.db prints), not only the bootstrap
	// configuration: the FSM adapter recorded the configurations raft
	// committed when the others joined.
	for _, p := range append(followers, back) {
		p.stop(t)
	}
	for _, p := range append(followers, back) {
		requireConfiguration(t, p, "n1", "n2", "n3")
	}
}
