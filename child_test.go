package raftbolt

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
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

// killWithin kills the child after a random delay of up to d, so that the
// kill lands at a random point of whatever it is doing.
func (c *child) killWithin(rng *rand.Rand, d time.Duration) {
	time.Sleep(time.Duration(rng.Int64N(int64(d))))
	_ = c.cmd.Process.Kill()
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
