package powerloss

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Record runs cmd under strace, writing the trace to traceFile, and parses
// the operations on files under root. cmd must not have been started; its
// Path, Args, Env and Dir are used, and its stdout and stderr are returned.
func Record(ctx context.Context, root string, cmd *exec.Cmd, traceFile string) (ops []Op, stdout, stderr []byte, err error) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("powerloss needs strace: %w", err)
	}
	root, err = filepath.EvalSymlinks(root)
	if err != nil {
		return nil, nil, nil, err
	}
	args := append(StraceArgs(traceFile), "--", cmd.Path)
	args = append(args, cmd.Args[1:]...)
	sc := exec.CommandContext(ctx, strace, args...)
	sc.Env, sc.Dir = cmd.Env, cmd.Dir
	var out, errb bytes.Buffer
	sc.Stdout, sc.Stderr = &out, &errb
	if err := sc.Run(); err != nil {
		return nil, out.Bytes(), errb.Bytes(), fmt.Errorf("workload under strace: %w; stderr: %s", err, errb.String())
	}
	cwd := cmd.Dir
	if cwd == "" {
		if cwd, err = os.Getwd(); err != nil {
			return nil, nil, nil, err
		}
	}
	f, err := os.Open(traceFile)
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	ops, err = Parse(f, root, cwd)
	return ops, out.Bytes(), errb.Bytes(), err
}
