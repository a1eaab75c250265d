// Command raftbolt inspects, checks, dumps, compacts, backs up and migrates
// raftbolt stores, the files github.com/raftbolt/raftbolt keeps raft's log
// in.
//
//	raftbolt info    PATH                  summary: indexes, sizes, term, vote, configuration
//	raftbolt check   PATH                  verify every page and entry, and the journal; the first bad index
//	raftbolt dump    [-from N] [-to M] PATH print entries
//	raftbolt config  PATH                  the latest cluster configuration
//	raftbolt compact PATH                  reclaim free space (store not in use)
//	raftbolt backup  PATH DEST             consistent copy (store not in use); DEST - is stdout
//	raftbolt migrate SRC DST               convert a hashicorp/raft-boltdb file
//
// info, check, dump and config also read a state-machine file (the one
// raftbolt.OpenStateMachine keeps an application's state in): its applied
// index, configuration and buckets; dump prints its keys. They tell the
// two kinds apart by themselves and say which one they read (-json: the
// "kind" field, "log_store" or "state_machine").
//
// Every command takes -h, -json (machine-readable output) and -lock-timeout;
// flags may come before or after the paths. Only compact and migrate (its
// destination) write; the others open the store read-only. A store in use
// by a running process is locked: the command says so after -lock-timeout.
// A running process takes backups itself, with Store.Backup.
//
// Exit status: 0 ok, 1 a problem was found (damage, a failed check, no
// configuration), 2 usage or I/O error (including a locked store or a file
// of neither kind).
//
// The command reads stores through the package's public API; besides it,
// it takes file helpers from internal/boltfile, and check verifies a log
// store's journal file (PATH.journal) with internal/journal's Inspect, the
// checks the store's Open makes, given the checkpoint record it reads from
// the store file (internal/layout, internal/codec).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// Exit codes.
const (
	exitOK      = 0
	exitProblem = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command is one subcommand.
type command struct {
	name, args, summary, help string
	nargs                     int
	// flags adds the command's own flags to fs.
	flags func(fs *flag.FlagSet, c *ctx)
	run   func(c *ctx, args []string) error
}

var commands = []*command{infoCmd, checkCmd, dumpCmd, configCmd, compactCmd, backupCmd, migrateCmd}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// ctx is what a command runs with.
type ctx struct {
	stdout, stderr io.Writer
	json           bool
	lockTimeout    time.Duration
	verbose        bool
	from, to       uint64 // dump's range; 0: the log's first, last
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "raftbolt: inspect and maintain raftbolt stores (raft logs in bbolt files)\n\n")
	fmt.Fprintf(w, "Usage:\n  raftbolt <command> [flags] ARGS\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %-22s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintf(w, "\ninfo, check, dump and config also read a state-machine file (OpenStateMachine).\n")
	fmt.Fprintf(w, "Every command takes -h, -json and -lock-timeout; flags may come before or after the paths.\n")
	fmt.Fprintf(w, "Exit status: 0 ok, 1 problem found, 2 usage or I/O error.\n")
	fmt.Fprintf(w, "Run 'raftbolt <command> -h' for a command's flags.\n")
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 {
			if c := lookup(args[1]); c != nil {
				return runCommand(c, []string{"-h"}, stdout, stderr)
			}
		}
		usage(stdout)
		return exitOK
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "raftbolt: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitUsage
	}
	return runCommand(c, args[1:], stdout, stderr)
}

func runCommand(c *command, args []string, stdout, stderr io.Writer) int {
	x := &ctx{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("raftbolt "+c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&x.json, "json", false, "print JSON instead of text")
	fs.DurationVar(&x.lockTimeout, "lock-timeout", 500*time.Millisecond,
		"how long to wait for a store another process holds before giving up")
	fs.BoolVar(&x.verbose, "v", false, "log what the library does (to stderr)")
	if c.flags != nil {
		c.flags(fs, x)
	}
	printUsage := func(w io.Writer) {
		fs.SetOutput(w)
		fmt.Fprintf(w, "Usage: raftbolt %s [flags] %s\n\n%s\n\nFlags:\n", c.name, c.args, c.help)
		fs.PrintDefaults()
	}
	fs.Usage = func() {} // printed below, to stdout for -h
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr) // the flag package printed the error
		printUsage(stderr)
		return exitUsage
	}
	if len(pos) != c.nargs {
		fmt.Fprintf(stderr, "raftbolt %s: want %d argument(s) (%s), got %d\n\n", c.name, c.nargs, c.args, len(pos))
		printUsage(stderr)
		return exitUsage
	}
	if x.lockTimeout <= 0 {
		fmt.Fprintf(stderr, "raftbolt %s: -lock-timeout must be positive\n", c.name)
		return exitUsage
	}
	if err := c.run(x, pos); err != nil {
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintf(stderr, "raftbolt %s: %v\n", c.name, err)
			return exitUsage
		}
		var p problem
		if errors.As(err, &p) {
			// The command already printed what it found.
			return exitProblem
		}
		fmt.Fprintf(stderr, "raftbolt %s: %s\n", c.name, describe(err))
		return exitCode(err)
	}
	return exitOK
}

// parseInterspersed parses flags wherever they are among the positional
// arguments ("dump PATH -from 5" as well as "dump -from 5 PATH"); after
// "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError is a mistake in the command line found after parsing.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// problem is returned by a command that found a problem and printed it.
type problem struct{}

func (problem) Error() string { return "problem found" }

// printJSON writes v as indented JSON.
func (c *ctx) printJSON(v any) error {
	return writeJSON(c.stdout, v, true)
}
