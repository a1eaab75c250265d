package raftbolt

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault tests run parts of themselves in a child process: the test binary
// re-executed with RAFTBOLT_CHILD naming the part, so that a kill -9, a
// resource limit or a crash hits the child, never the test process.

const childEnv = "RAFTBOLT_CHILD"

// children maps a child mode to its body. A body reports to its parent
// through stdout, one line per fact, and exits 0 when it finishes.
var children = map[string]func(args []string) error{}

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		body, ok := children[mode]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown child mode %q\n", mode)
			os.Exit(3)
		}
		if err := body(strings.Fields(os.Getenv(childEnv + "_ARGS"))); err != nil {
			fmt.Fprintf(os.Stderr, "child %s: %v\n", mode, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a running child process and the lines it reported.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser // closing it tells children that wait on it to finish
	lines chan string
	done  chan struct{}
	err   error // exit status, once done is closed
	errb  strings.Builder
}

// startChild starts the test binary in the given child mode.
func startChild(t testing.TB, ctx context.Context, mode string, args ...string) *child {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childEnv+"_ARGS="+strings.Join(args, " "))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 1024), done: make(chan struct{})}
	cmd.Stderr = &c.errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
		close(c.lines)
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c
}

// crashKills overrides how many times each crash loop kills its child.
var crashKills = flag.Int("crash.kills", 0,
	"kills in each crash loop: TestCrashLoop, TestStateMachineCrashLoop, TestCompactCrash (default 20, 20, 8; 2000, 2000, 200 with -soak)")

// killCount is how many times a crash loop kills its child: -crash.kills,
// else def, or soakDef with -soak.
func killCount(def, soakDef int) int {
	switch {
	case *crashKills != 0:
		return *crashKills
	case *soak:
		return soakDef
	}
	return def
}

// kill says when a crash test kills its child.
type kill struct {
	// within: the kill lands at a random moment up to within after the
	// first line for which the test's onLine returns true.
	within time.Duration
	// after: the kill lands this long after the start (0: no such limit).
	after time.Duration
	// mayFinish: the child may finish before its kill lands. Otherwise a
	// child that exits by itself fails the test.
	mayFinish bool
}

// childHang is how long a crash test's child may run before the test gives
// up on it.
const childHang = 2 * time.Minute

// runToKill starts the test binary in the given child mode and kills it at
// a random moment, as k says, so that the kill lands at a random point of
// whatever it is doing. Every line the child reports goes to onLine, those
// written between the kill and the child's death included. It returns once
// the child is dead (its exit status in c.err), and whether the kill landed
// before the child exited by itself.
func runToKill(t testing.TB, rng *rand.Rand, k kill, onLine func(line string) (kill bool), mode string, args ...string) (c *child, killed bool) {
	t.Helper()
	c = startChild(t, context.Background(), mode, args...)
	var once sync.Once
	var sent atomic.Bool
	doKill := func() {
		once.Do(func() {
			sent.Store(true)
			_ = c.cmd.Process.Kill()
		})
	}
	if k.after > 0 {
		defer time.AfterFunc(k.after, doKill).Stop()
	}
	hang := time.NewTimer(childHang)
	defer hang.Stop()
	asked := false
	for lines := c.lines; lines != nil; {
		select {
		case line, ok := <-lines:
			if !ok {
				lines = nil
				break
			}
			if onLine(line) && !asked {
				asked = true
				var d time.Duration
				if k.within > 0 {
					d = time.Duration(rng.Int64N(int64(k.within)))
				}
				defer time.AfterFunc(d, doKill).Stop()
			}
		case <-hang.C:
			doKill()
			for range c.lines {
			}
			<-c.done
			t.Fatalf("child %s ran for %v without being killed or exiting; stderr: %s", mode, childHang, c.errb.String())
		}
	}
	once.Do(func() {}) // its output closed: it died, a later kill would miss
	<-c.done
	killed = sent.Load()
	if !killed && !k.mayFinish {
		t.Fatalf("the child stopped by itself: %v\n%s", c.err, c.errb.String())
	}
	return c, killed
}

// next returns the child's next line, or fails the test after timeout.
func (c *child) next(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			<-c.done
			t.Fatalf("child exited (%v) before reporting; stderr: %s", c.err, c.errb.String())
		}
		return l
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		t.Fatalf("child reported nothing for %v; stderr: %s", timeout, c.errb.String())
	}
	return ""
}

// wait waits for the child to exit and returns its remaining lines.
func (c *child) wait(timeout time.Duration) ([]string, error) {
	var lines []string
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				<-c.done
				if c.err != nil {
					return lines, fmt.Errorf("%w; stderr: %s", c.err, c.errb.String())
				}
				return lines, nil
			}
			lines = append(lines, l)
		case <-deadline:
			_ = c.cmd.Process.Kill()
			return lines, fmt.Errorf("child hung for %v; stderr: %s", timeout, c.errb.String())
		}
	}
}

// say writes one report line to the parent, unbuffered: what it says has
// happened before the line is written.
func say(format string, args ...any) {
	_, _ = fmt.Fprintf(os.Stdout, format+"\n", args...)
}
