package powerloss_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftbolt/raftbolt/internal/powerloss"
)

// The exploration runs only when asked (.ci/powerloss sets the budget):
// every state is a child process, and under plain go test ./... it would
// cost minutes and need strace.

const (
	statesEnv  = "RAFTBOLT_POWERLOSS_STATES"  // the budget of crash states; unset: skip
	requireEnv = "RAFTBOLT_POWERLOSS_REQUIRE" // 1: fail, not skip, without strace
	summaryEnv = "RAFTBOLT_POWERLOSS_SUMMARY" // file to write the summary line to
	keepEnv    = "RAFTBOLT_POWERLOSS_KEEP"    // directory to keep the first failing states in
)

// checkTimeout bounds one check; a check that takes longer is a hang.
const checkTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	if c := os.Getenv(childEnv); c != "" {
		os.Exit(runChild(c))
	}
	os.Exit(m.Run())
}

// runChild is a workload or a check in the child process.
func runChild(c string) int {
	what, name, _ := strings.Cut(c, ":")
	w, ok := workloads[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown workload %q\n", name)
		return 3
	}
	dir := os.Getenv(dirEnv)
	switch what {
	case "workload":
		workDir = dir
		seed, _ := strconv.ParseUint(os.Getenv(seedEnv), 10, 64)
		nops, _ := strconv.Atoi(os.Getenv(opsEnv))
		if nops <= 0 {
			nops = 30
		}
		if err := w.run(dir, rand.New(rand.NewPCG(seed, 7)), nops); err != nil {
			fmt.Fprintf(os.Stderr, "workload %s: %v\n", name, err)
			return 1
		}
		return 0
	case "check":
		marks, err := os.ReadFile(filepath.Join(dir, "marks"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var acked []string
		inflight := ""
		for _, l := range strings.Split(string(marks), "\n") {
			l = strings.TrimPrefix(l, powerloss.MarkPrefix)
			switch {
			case strings.HasPrefix(l, "intent "):
				inflight = strings.TrimPrefix(l, "intent ")
			case l == "ack" || strings.HasPrefix(l, "ack "):
				acked = append(acked, inflight)
				inflight = ""
			}
		}
		class, detail := w.check(filepath.Join(dir, "d"), acked, inflight)
		fmt.Printf("RESULT %s %s\n", class, detail)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown child %q\n", c)
	return 3
}

// budget returns the state budget, or skips the test.
func budget(t *testing.T) int {
	s := os.Getenv(statesEnv)
	if s == "" || testing.Short() {
		t.Skipf("power-loss exploration runs only with %s set (see .ci/powerloss)", statesEnv)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number of states", statesEnv, s)
	}
	if _, err := exec.LookPath("strace"); err != nil {
		if os.Getenv(requireEnv) == "1" {
			t.Fatalf("strace is required: %v", err)
		}
		t.Skipf("strace not installed (%v); .ci/powerloss installs it", err)
	}
	return n
}

// runSeed is the run's seed: RAFTBOLT_SEED, or the time, the same for
// every test of the run.
var runSeed = sync.OnceValue(func() uint64 { return uint64(time.Now().UnixNano()) })

func seed(t *testing.T) uint64 {
	if s := os.Getenv(seedEnv); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", seedEnv, s, err)
		}
		return n
	}
	return runSeed()
}

// result counts the states of one exploration by class.
type result struct {
	states, points, ops int
	count               map[string]int
	examples            map[string][]string
}

func (r *result) add(o result) {
	r.states += o.states
	for k, v := range o.count {
		r.count[k] += v
	}
}

func (r result) summary() string {
	return fmt.Sprintf("powerloss: %d states, %d lost, %d open errors, %d panics/crashes/hangs",
		r.states, r.count[classLost], r.count[classOpenErr], r.count[classCrash])
}

func (r result) failures() int {
	return r.count[classLost] + r.count[classOpenErr] + r.count[classCrash]
}

// explore runs workload name under strace and checks up to states crash
// states of it, stopping at the first failure when stopEarly.
func explore(t *testing.T, name string, states int, seed uint64, stopEarly bool) result {
	t.Helper()
	start := time.Now()
	tmp := t.TempDir()
	tmp, err := filepath.EvalSymlinks(tmp)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(tmp, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=workload:"+name, dirEnv+"="+root, seedEnv+"="+strconv.FormatUint(seed, 10))
	if os.Getenv(opsEnv) == "" { // a longer workload for a larger budget
		cmd.Env = append(cmd.Env, opsEnv+"="+strconv.Itoa(min(200, max(30, states/8))))
	}
	cmd.Dir = tmp
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ops, _, _, err := powerloss.Record(ctx, root, cmd, filepath.Join(tmp, "trace"))
	if err != nil {
		t.Fatalf("recording %s: %v", name, err)
	}
	fi, _ := os.Stat(filepath.Join(tmp, "trace"))
	marks := 0
	for _, op := range ops {
		if op.Kind == powerloss.Mark {
			marks++
		}
	}
	t.Logf("%s: %d file operations, %d marks (trace %d bytes, recorded in %v)", name, len(ops)-marks, marks, fi.Size(), time.Since(start).Round(time.Millisecond))
	_ = os.Remove(filepath.Join(tmp, "trace"))
	// The model must agree with what the workload itself read at each ack.
	err = powerloss.Verify(ops, func(files map[string][]byte, mark string) bool {
		want, ok := strings.CutPrefix(mark, powerloss.MarkPrefix+"ack ")
		return !ok || digest(files) == want
	})
	if err != nil {
		t.Fatalf("%s: the trace model diverges from the file system: %v", name, err)
	}

	res := result{ops: len(ops), count: map[string]int{}, examples: map[string][]string{}}
	var mu sync.Mutex
	stop := make(chan struct{})
	var stopOnce sync.Once
	work := make(chan *powerloss.State)
	var wg sync.WaitGroup
	workers := max(1, runtime.GOMAXPROCS(0))
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				s, ok := <-work
				if !ok {
					return
				}
				class, detail := checkState(filepath.Join(tmp, fmt.Sprintf("state-%d-%d", w, n)), name, s)
				mu.Lock()
				res.count[class]++
				if class != classOK && len(res.examples[class]) < 5 {
					kept := ""
					if k := os.Getenv(keepEnv); k != "" {
						kept = filepath.Join(k, fmt.Sprintf("%s-%s-%d", name, class, len(res.examples[class])))
						_ = os.RemoveAll(kept)
						if err := keep(kept, s); err != nil {
							kept = err.Error()
						}
						kept = "\n\t\tkept in " + kept
					}
					res.examples[class] = append(res.examples[class], fmt.Sprintf("%s\n\t\tstate: %s%s", detail, s.Desc, kept))
				}
				if class != classOK && stopEarly {
					stopOnce.Do(func() { close(stop) })
				}
				mu.Unlock()
			}
		}()
	}
	rng := rand.New(rand.NewPCG(seed, 11))
	res.points = powerloss.Explore(ops, states, rng, func(s *powerloss.State) bool {
		select {
		case work <- s:
			res.states++
			return true
		case <-stop:
			return false
		}
	})
	close(work)
	wg.Wait()
	t.Logf("%s: %d crash points, %d states checked in %v: %d ok, %d lost, %d open errors, %d panics/crashes/hangs",
		name, res.points, res.states, time.Since(start).Round(time.Millisecond), res.count[classOK],
		res.count[classLost], res.count[classOpenErr], res.count[classCrash])
	for _, c := range []string{classLost, classOpenErr, classCrash} {
		for _, e := range res.examples[c] {
			t.Logf("%s %s: %s", name, c, e)
		}
	}
	return res
}

// keep writes a state as checkState gives it to the check child, with its
// description, so that a failure can be looked at (and re-checked by running
// the test binary with RAFTBOLT_POWERLOSS_CHILD=check:WORKLOAD and
// RAFTBOLT_POWERLOSS_DIR=dir).
func keep(dir string, s *powerloss.State) error {
	if err := s.Materialise(filepath.Join(dir, "d")); err != nil {
		return err
	}
	return errors.Join(
		os.WriteFile(filepath.Join(dir, "marks"), []byte(strings.Join(s.Marks, "\n")), 0o600),
		os.WriteFile(filepath.Join(dir, "state"), []byte(s.Desc+"\n"), 0o600))
}

// checkState materialises s under dir and checks it in a child process.
func checkState(dir, name string, s *powerloss.State) (class, detail string) {
	defer os.RemoveAll(dir)
	if err := s.Materialise(filepath.Join(dir, "d")); err != nil {
		return classCrash, "materialise: " + err.Error()
	}
	if err := os.MkdirAll(filepath.Join(dir, "d"), 0o755); err != nil {
		return classCrash, err.Error()
	}
	if err := os.WriteFile(filepath.Join(dir, "marks"), []byte(strings.Join(s.Marks, "\n")), 0o600); err != nil {
		return classCrash, err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=check:"+name, dirEnv+"="+dir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		return classCrash, fmt.Sprintf("hang: no result after %v", checkTimeout)
	}
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if r, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok && err == nil {
			class, detail, _ = strings.Cut(r, " ")
			return class, detail
		}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		e := errb.String()
		if len(e) > 600 {
			e = e[:600] + "..."
		}
		return classCrash, fmt.Sprintf("check exited with %v: %s", err, e)
	}
	return classCrash, fmt.Sprintf("check gave no result (%v): %s", err, errb.String())
}

// TestPowerLoss explores the real workloads: nothing acknowledged may be
// lost in any state a power cut can leave.
func TestPowerLoss(t *testing.T) {
	total := budget(t)
	sd := seed(t)
	t.Logf("seed %d (%s=%d repeats it); %d states", sd, seedEnv, sd, total)
	names := []string{"store", "compact", "statemachine", "migrate"}
	all := result{count: map[string]int{}}
	for i, name := range names {
		share := total / len(names)
		if i < total%len(names) {
			share++
		}
		var r result
		t.Run(name, func(t *testing.T) { r = explore(t, name, share, sd, false) })
		if r.count == nil { // recording or verifying the trace failed: count it
			r = result{count: map[string]int{classCrash: 1}}
		}
		all.add(r)
	}
	line := all.summary()
	t.Log(line)
	if f := os.Getenv(summaryEnv); f != "" {
		if err := os.WriteFile(f, []byte(line+"\n"), 0o644); err != nil {
			t.Error(err)
		}
	}
	if all.failures() > 0 {
		t.Errorf("%s (seed %d)", line, sd)
	}
}

// TestPowerLossFindsFaults proves the explorer can fail: a store with
// NoSync must lose acknowledged writes, and a file renamed into place with
// no directory fsync must be flagged; the same file with the directory
// synced must not.
func TestPowerLossFindsFaults(t *testing.T) {
	total := budget(t)
	sd := seed(t)
	t.Logf("seed %d (%s=%d repeats it)", sd, seedEnv, sd)
	n := max(20, min(total/4, 150))
	for _, c := range []struct {
		name     string
		wantFail bool
	}{{"nosync", true}, {"planted", true}, {"planted-sync", false}} {
		t.Run(c.name, func(t *testing.T) {
			r := explore(t, c.name, n, sd, c.wantFail)
			switch {
			case c.wantFail && r.count[classLost] == 0:
				t.Errorf("%s: the explorer found no lost write in %d states", c.name, r.states)
			case !c.wantFail && r.failures() > 0:
				t.Errorf("%s: the explorer flagged a correct workload: %s", c.name, r.summary())
			}
		})
	}
}
