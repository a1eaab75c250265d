package main

// A Jepsen-style test of the controller, the way etcd's robustness tests
// test etcd: three node processes on loopback, concurrent clients doing
// puts, deletes, compare-and-sets and reads over HTTP while a nemesis
// SIGKILLs and restarts nodes and SIGSTOPs them, every operation's
// invocation and response recorded, and the history checked with porcupine
// against a sequential key-value model. Linearizability covers both
// promises a user relies on: an acknowledged write never vanishes, and a
// read never goes back in time.
//
//	RAFTBOLT_LIN_SECONDS=600 RAFTBOLT_SEED=42 go test -run 'TestLinearizability$' -v -timeout 30m ./examples/controller
//
// or .ci/linearizability 600. The last line of the log is the figures:
// "linearizability: H histories, O operations, F faults, V violations".

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"
)

// linConfig is one run: its length and load, and how clients read.
type linConfig struct {
	duration time.Duration // the clients' run, after the cluster settled
	epoch    time.Duration // keys are fresh every epoch, so each history stays small
	clients  int
	keys     int   // per epoch
	seed     int64 // picks operations, nodes, keys and faults
	// stale makes clients read with ?stale=1, each node's own state: the
	// planted defect that the checker must catch.
	stale bool
}

// linResult is what a run did and what the checker found.
type linResult struct {
	histories, ops, faults, violations int
	unknownOutcome, dropped            int // writes whose outcome is not known; operations that failed with no effect
	undecided                          int // histories the checker gave up on (timeout)
	visualizations                     []string
}

func (r linResult) String() string {
	return fmt.Sprintf("linearizability: %d histories, %d operations, %d faults, %d violations",
		r.histories, r.ops, r.faults, r.violations)
}

// kvInput and kvOutput are an operation of the model and its result.
type kvInput struct {
	op       string // "get", "put", "del", "cas"
	key      string
	val, old string // put and cas; cas
}

type kvOutput struct {
	val     string // get: the value, "" when unset (the test never writes "")
	swapped bool   // cas
	unknown bool   // a write that timed out or failed ambiguously: it may or may not have happened
}

// kvModel is a register per key (porcupine checks each key's history on
// its own: keys are independent). The state is the key's value, "" when
// unset. A write of unknown outcome is pending until the end of the
// history, so the checker may place it anywhere after its invocation —
// including after everything, where it changes nothing observed: that is
// the write that never happened.
var kvModel = porcupine.Model{
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		st, in, out := state.(string), input.(kvInput), output.(kvOutput)
		switch in.op {
		case "get":
			return out.val == st, st
		case "put":
			return true, in.val
		case "del":
			return true, ""
		case "cas":
			if out.unknown {
				if st == in.old {
					return true, in.val
				}
				return true, st
			}
			if out.swapped {
				return st == in.old, in.val
			}
			return st != in.old, st
		}
		return false, st
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(kvInput), output.(kvOutput)
		res := ""
		switch {
		case out.unknown:
			res = " -> ?"
		case in.op == "get":
			res = fmt.Sprintf(" -> %q", out.val)
		case in.op == "cas":
			res = fmt.Sprintf(" -> %v", out.swapped)
		}
		switch in.op {
		case "put":
			return fmt.Sprintf("put(%q)%s", in.val, res)
		case "cas":
			return fmt.Sprintf("cas(%q, %q)%s", in.old, in.val, res)
		default:
			return in.op + "()" + res
		}
	},
	DescribeState: func(state interface{}) string { return fmt.Sprintf("%q", state) },
}

func envInt(t *testing.T, name string, def int64) int64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseInt(s, 10, 64)
	require.NoError(t, err, "%s=%q", name, s)
	return v
}

// TestLinearizability runs clients against the controller while the
// nemesis kills, restarts and pauses nodes, and requires every key's
// history to be linearizable. RAFTBOLT_LIN_SECONDS sets the length (10 s
// by default), RAFTBOLT_SEED the seed (logged); RAFTBOLT_LIN_STALE_READS=1
// plants the stale-read defect, to see a failing run end to end.
func TestLinearizability(t *testing.T) {
	cfg := linConfig{
		duration: time.Duration(envInt(t, "RAFTBOLT_LIN_SECONDS", 10)) * time.Second,
		epoch:    10 * time.Second,
		clients:  4,
		keys:     3,
		seed:     envInt(t, "RAFTBOLT_SEED", time.Now().UnixNano()),
		stale:    os.Getenv("RAFTBOLT_LIN_STALE_READS") != "",
	}
	res := runLinearizability(t, cfg)
	// A run in which nothing got through checks nothing.
	require.Positive(t, res.ops-res.unknownOutcome, "no operation completed")
	require.Zero(t, res.violations, "non-linearizable histories; visualizations: %v (seed %d)", res.visualizations, cfg.seed)
}

// TestLinearizabilityCatchesStaleReads plants a defect, reads from each
// node's own state (?stale=1), and requires the checker to find it. A
// follower applies an entry only after the leader acknowledged it (it learns
// the commit index with the next append), and a node killed or paused serves
// its old state after it comes back until the leader catches it up; either
// is a read that goes back in time. It is found in every history of every
// run so far, even runs too short for a fault.
func TestLinearizabilityCatchesStaleReads(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	cfg := linConfig{
		duration: time.Duration(envInt(t, "RAFTBOLT_LIN_STALE_SECONDS", 10)) * time.Second,
		epoch:    5 * time.Second,
		clients:  4,
		keys:     3,
		seed:     envInt(t, "RAFTBOLT_SEED", time.Now().UnixNano()),
		stale:    true,
	}
	res := runLinearizability(t, cfg)
	require.Positive(t, res.violations, "stale reads went unnoticed (seed %d)", cfg.seed)
	if len(res.visualizations) > 0 {
		_ = os.RemoveAll(filepath.Dir(res.visualizations[0])) // expected ones
	}
}

// linCluster is the three nodes. slots[i] is the process of node i now;
// only the nemesis replaces one, and the clients use the fixed addresses.
type linCluster struct {
	slots []*proc
	http  []string
}

// linClock is the history's clock: nanoseconds since the run began,
// monotonic.
type linClock struct{ t0 time.Time }

func (c linClock) now() int64 { return time.Since(c.t0).Nanoseconds() }

// linRecorder collects the history of a run.
type linRecorder struct {
	mu      sync.Mutex
	ops     []porcupine.Operation
	dropped int
	last    map[string]string // key -> a value it was seen or written with, for cas to expect
}

func (r *linRecorder) add(op porcupine.Operation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	in, out := op.Input.(kvInput), op.Output.(kvOutput)
	switch {
	case out.unknown:
	case in.op == "get" && out.val != "":
		r.last[in.key] = out.val
	case in.op == "put", in.op == "cas" && out.swapped:
		r.last[in.key] = in.val
	}
}

func (r *linRecorder) lastValue(key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[key]
}

// opTimeout bounds each request: a node that is stopped or dead answers
// nothing, and the client moves on (the write's outcome unknown).
const opTimeout = 2 * time.Second

// checkTimeout bounds porcupine on one history; a history it gives up on
// counts as undecided, not as a violation.
const checkTimeout = 30 * time.Second

var linHTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}

// call does one operation on node addr and returns its output, or ok false
// for an operation that certainly had no effect (a failed read, a write the
// node refused), which the history can drop.
func call(ctx context.Context, addr string, in kvInput, stale bool) (out kvOutput, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	u := "http://" + addr + "/kv/" + in.key
	method, body := http.MethodGet, ""
	switch in.op {
	case "get":
		if stale {
			u += "?stale=1"
		}
	case "put":
		method, body = http.MethodPut, in.val
	case "cas":
		method, body = http.MethodPut, in.val
		u += "?cas=" + url.QueryEscape(in.old)
	case "del":
		method = http.MethodDelete
	}
	code, respBody := 0, ""
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err == nil {
		var resp *http.Response
		if resp, err = linHTTP.Do(req); err == nil {
			b, rerr := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			code, respBody, err = resp.StatusCode, string(b), rerr
		}
	}
	switch {
	case in.op == "get":
		switch {
		case err == nil && code == http.StatusOK:
			return kvOutput{val: respBody}, true
		case err == nil && code == http.StatusNotFound:
			return kvOutput{}, true
		}
		return kvOutput{}, false
	case err == nil && code == http.StatusOK:
		return kvOutput{swapped: true}, true
	case err == nil && code == http.StatusConflict && in.op == "cas":
		return kvOutput{}, true
	case err == nil && (code == http.StatusServiceUnavailable || code == http.StatusBadRequest), err != nil && isDialError(err):
		// Not carried out: the node said so, or was never reached.
		return kvOutput{}, false
	}
	// A timeout, a reset connection, a 504 (leadership lost with the entry
	// in flight, a forward that broke off), a 500: the write may commit.
	return kvOutput{unknown: true}, true
}

// runClient runs operations on random nodes and keys until stop, one at a
// time, and records them.
func runClient(ctx context.Context, id int, rng *rand.Rand, cl *linCluster, keys []string, cfg linConfig, clock linClock, rec *linRecorder, stop <-chan struct{}) {
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		key := keys[rng.Intn(len(keys))]
		in := kvInput{key: key}
		switch p := rng.Intn(100); {
		case p < 45:
			in.op = "get"
		case p < 75:
			in.op, in.val = "put", fmt.Sprintf("c%d.%d", id, seq)
		case p < 95:
			in.op, in.val = "cas", fmt.Sprintf("c%d.%d", id, seq)
			if in.old = rec.lastValue(key); in.old == "" {
				in.old = "none"
			}
		default:
			in.op = "del"
		}
		addr := cl.http[rng.Intn(len(cl.http))]
		callAt := clock.now()
		out, ok := call(ctx, addr, in, cfg.stale)
		returnAt := clock.now()
		if ok {
			rec.add(porcupine.Operation{ClientId: id, Input: in, Call: callAt, Output: out, Return: returnAt, Metadata: addr})
		} else {
			rec.mu.Lock()
			rec.dropped++
			rec.mu.Unlock()
		}
		if !ok || out.unknown {
			// Back off while the cluster recovers: a client spinning on
			// refusals fills the history with nothing, and every unknown
			// outcome widens the checker's search.
			backoff := time.NewTimer(time.Duration(20+rng.Intn(80)) * time.Millisecond)
			select {
			case <-backoff.C:
			case <-stop:
				backoff.Stop()
			}
		}
	}
}

// leaderSlot asks the nodes for the leader and returns its slot, or -1.
func (cl *linCluster) leaderSlot(ctx context.Context) int {
	for _, addr := range cl.http {
		var v clusterView
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+addr+"/cluster", nil)
		resp, err := linHTTP.Do(req)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&v)
			_ = resp.Body.Close()
		}
		cancel()
		for i, p := range cl.slots {
			if err == nil && p.id == v.Leader {
				return i
			}
		}
	}
	return -1
}

// faultCounts counts the nemesis's faults by kind.
type faultCounts struct{ kills, stops, onLeader int }

func (f faultCounts) total() int { return f.kills + f.stops }

// nemesis injects one fault at a time, every 1-3 s, until ctx ends: a
// SIGKILL and a restart on the node's directory and addresses after 0.5-2
// s (two times in three), or a SIGSTOP and a SIGCONT after 0.5-2 s. Half
// the faults hit the leader. It heals the last fault before it returns, and
// returns the faults it injected, and the error of a restart that failed.
func nemesis(ctx context.Context, t *testing.T, rng *rand.Rand, cl *linCluster, clock linClock) (faultCounts, error) {
	wait := func(min, max time.Duration) {
		timer := time.NewTimer(min + time.Duration(rng.Int63n(int64(max-min))))
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
		}
	}
	var faults faultCounts
	for {
		wait(time.Second, 3*time.Second)
		if ctx.Err() != nil {
			return faults, nil
		}
		i := rng.Intn(len(cl.slots))
		target := "random"
		if rng.Intn(2) == 0 {
			if l := cl.leaderSlot(ctx); l >= 0 {
				i, target = l, "leader"
				faults.onLeader++
			}
		}
		p := cl.slots[i]
		if rng.Intn(3) < 2 {
			faults.kills++
			p.kill()
			t.Logf("nemesis %6.2fs: SIGKILL %s (%s)", float64(clock.now())/1e9, p.id, target)
			wait(500*time.Millisecond, 2*time.Second)
			var err error
			for attempt := 0; attempt < 3; attempt++ {
				var back *proc
				if back, err = spawn(p.id, p.dir, p.raft, p.http, ""); err == nil {
					cl.slots[i] = back
					break
				}
			}
			if err != nil {
				return faults, fmt.Errorf("restarting %s: %w", p.id, err)
			}
			t.Logf("nemesis %6.2fs: restarted %s", float64(clock.now())/1e9, p.id)
		} else {
			faults.stops++
			_ = p.cmd.Process.Signal(syscall.SIGSTOP)
			t.Logf("nemesis %6.2fs: SIGSTOP %s (%s)", float64(clock.now())/1e9, p.id, target)
			wait(500*time.Millisecond, 2*time.Second)
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			t.Logf("nemesis %6.2fs: SIGCONT %s", float64(clock.now())/1e9, p.id)
		}
	}
}

// runLinearizability starts a cluster, runs the clients and the nemesis
// for cfg.duration, reads every key once more through the healed cluster,
// and checks each key's history.
func runLinearizability(t *testing.T, cfg linConfig) linResult {
	t.Logf("seed %d (RAFTBOLT_SEED=%d reproduces the choices, not the timing), %v, stale reads %v",
		cfg.seed, cfg.seed, cfg.duration, cfg.stale)
	master := rand.New(rand.NewSource(cfg.seed))

	n1 := start(t, "n1", t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", "")
	n2 := start(t, "n2", t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", n1.http)
	n3 := start(t, "n3", t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", n1.http)
	settled(t, 3, n1, n2, n3)
	cl := &linCluster{slots: []*proc{n1, n2, n3}}
	for _, p := range cl.slots {
		cl.http = append(cl.http, p.http)
	}
	// The nodes the nemesis restarts are not the ones start registered.
	t.Cleanup(func() {
		for _, p := range cl.slots {
			p.kill()
			if t.Failed() {
				t.Logf("stderr of %s (last start):\n%s", p.id, p.stderr.String())
			}
		}
	})

	clock := linClock{t0: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration)
	defer cancel()
	var faults faultCounts
	nemesisErr := make(chan error, 1)
	nemesisRng := rand.New(rand.NewSource(master.Int63()))
	go func() {
		var err error
		faults, err = nemesis(ctx, t, nemesisRng, cl, clock)
		nemesisErr <- err
	}()

	rec := &linRecorder{last: map[string]string{}}
	var allKeys []string
	for epoch := 0; ctx.Err() == nil; epoch++ {
		var keys []string
		for k := 0; k < cfg.keys; k++ {
			keys = append(keys, fmt.Sprintf("e%dk%d", epoch, k))
		}
		allKeys = append(allKeys, keys...)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for c := 0; c < cfg.clients; c++ {
			rng := rand.New(rand.NewSource(master.Int63()))
			wg.Add(1)
			go func() {
				defer wg.Done()
				// In-flight requests finish (bounded by opTimeout) even
				// after the run ends: a cancelled one would be an unknown.
				runClient(context.Background(), c, rng, cl, keys, cfg, clock, rec, stop)
			}()
		}
		epochEnd := time.NewTimer(cfg.epoch)
		select {
		case <-epochEnd.C:
		case <-ctx.Done():
			epochEnd.Stop()
		}
		close(stop)
		wg.Wait()
	}
	require.NoError(t, <-nemesisErr) // and faults is the nemesis's now
	t.Logf("faults: %d SIGKILL and restart, %d SIGSTOP and SIGCONT, %d of them on the leader", faults.kills, faults.stops, faults.onLeader)

	// The healed cluster must still hold every acknowledged write: one
	// linearizable read of every key, retried until the cluster answers.
	settled(t, 3, cl.slots...)
	for _, key := range allKeys {
		var out kvOutput
		var callAt int64
		require.Eventually(t, func() bool {
			var ok bool
			callAt = clock.now()
			out, ok = call(context.Background(), cl.http[0], kvInput{op: "get", key: key}, false)
			return ok
		}, 60*time.Second, 100*time.Millisecond, "final read of %s", key)
		rec.add(porcupine.Operation{ClientId: cfg.clients, Input: kvInput{op: "get", key: key}, Call: callAt, Output: out, Return: clock.now(), Metadata: "final"})
	}

	res := linResult{ops: len(rec.ops), faults: faults.total(), dropped: rec.dropped}
	end := clock.now() + 1
	byKey := map[string][]porcupine.Operation{}
	for _, op := range rec.ops {
		if op.Output.(kvOutput).unknown {
			op.Return = end // pending: it may take effect at any time after its call
			res.unknownOutcome++
		}
		key := op.Input.(kvInput).key
		byKey[key] = append(byKey[key], op)
	}
	sort.Strings(allKeys)
	var visDir string
	for _, key := range allKeys {
		history := byKey[key]
		res.histories++
		result, info := porcupine.CheckOperationsVerbose(kvModel, history, checkTimeout)
		switch result {
		case porcupine.Unknown:
			res.undecided++
			t.Logf("history of %s (%d operations): the checker timed out", key, len(history))
		case porcupine.Illegal:
			res.violations++
			if visDir == "" {
				visDir, _ = os.MkdirTemp("", "raftbolt-linearizability-")
			}
			path := filepath.Join(visDir, key+".html")
			if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
				t.Logf("visualizing %s: %v", key, err)
			} else {
				res.visualizations = append(res.visualizations, path)
			}
			t.Logf("history of %s (%d operations) is not linearizable; visualization: %s", key, len(history), path)
		}
	}
	t.Logf("%d operations: %d of unknown outcome; %d more failed with no effect (dropped); %d histories undecided (checker timeout); seed %d",
		res.ops, res.unknownOutcome, res.dropped, res.undecided, cfg.seed)
	// Last, for .ci/linearizability.
	t.Log(res.String())
	return res
}
