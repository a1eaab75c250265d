package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
	"github.com/raftbolt/raftbolt/internal/boltfile"
)

// raft's StableStore keys (raft/raft.go).
var (
	keyCurrentTerm  = []byte("CurrentTerm")
	keyLastVoteTerm = []byte("LastVoteTerm")
	keyLastVoteCand = []byte("LastVoteCand")
)

// openStore opens the store at path: read-only unless write, in which
// case it must already exist (Open would create a new store). verify makes
// Open check every page first.
func (c *ctx) openStore(path string, write, verify bool) (*raftbolt.Store, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: %w", path, fs.ErrNotExist)
	case err != nil:
		return nil, err
	case fi.IsDir():
		return nil, fmt.Errorf("%s is a directory, not a store file", path)
	case fi.Size() == 0:
		return nil, fmt.Errorf("%s is empty, not a store (%w)", path, raftbolt.ErrNotStore)
	}
	return raftbolt.Open(path, c.options(!write, verify))
}

func (c *ctx) options(readOnly, verify bool) *raftbolt.Options {
	return &raftbolt.Options{
		ReadOnly:     readOnly,
		VerifyOnOpen: verify,
		// A writable open by the tool (compact) checkpoints what a
		// journal holds and leaves no journal behind; the application's
		// next Open makes a new one.
		NoJournal:       true,
		LockTimeout:     c.lockTimeout,
		CacheSize:       -1,
		MetricsInterval: -1,
		Logger:          c.logger(hclog.Off),
	}
}

// logger logs to stderr at level, or at info with -v.
func (c *ctx) logger(level hclog.Level) hclog.Logger {
	if c.verbose {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{Name: "raftbolt", Level: level, Output: c.stderr})
}

// describe turns an error into the message an operator acts on.
func describe(err error) string {
	if errors.Is(err, raftbolt.ErrLocked) {
		return fmt.Sprintf("the store is locked by another process: a running raft node (or another raftbolt command) "+
			"has it open. Stop that process first; a running process takes backups itself with Store.Backup.\n  (%v)", err)
	}
	return err.Error()
}

// exitCode is 1 when err reports damage, else 2.
func exitCode(err error) int {
	if errors.Is(err, raftbolt.ErrCorrupt) {
		return exitProblem
	}
	return exitUsage
}

// ---- info ----

var infoCmd = &command{
	name: "info", args: "PATH", nargs: 1,
	summary: "summary: indexes, sizes, term and vote, configuration",
	help: "Prints the store's format version, first/last/commit index, entry count, file size, free space\n" +
		"(what compact would give back), raft's current term and last vote, and the latest configuration.\n" +
		"Of a state-machine file (OpenStateMachine): the applied index, file size, free space, the\n" +
		"application's buckets with their key counts, and the configuration the state machine applied.\n" +
		"Opens the file read-only.",
	run: runInfo,
}

type infoJSON struct {
	Path          string      `json:"path"`
	Kind          string      `json:"kind"` // kindLogStore
	FormatVersion uint32      `json:"format_version"`
	FirstIndex    uint64      `json:"first_index"`
	LastIndex     uint64      `json:"last_index"`
	CommitIndex   uint64      `json:"commit_index"`
	Entries       uint64      `json:"entries"`
	FileSize      int64       `json:"file_size"`
	FreeBytes     int64       `json:"free_bytes"`
	PageSize      int         `json:"page_size"`
	JournalSize   int64       `json:"journal_size"`    // 0: no journal
	JournalFrames int         `json:"journal_batches"` // batches past the checkpoint
	JournalBytes  int         `json:"journal_bytes"`
	CurrentTerm   *uint64     `json:"current_term"`
	LastVoteTerm  *uint64     `json:"last_vote_term"`
	LastVoteCand  *string     `json:"last_vote_candidate"`
	Configuration *configJSON `json:"configuration"`
}

func runInfo(c *ctx, args []string) error {
	f, err := c.openFile(args[0], false)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.sm != nil {
		return runInfoStateMachine(c, args[0], f.sm)
	}
	s := f.store
	st, err := s.Stats()
	if err != nil {
		return err
	}
	out := infoJSON{
		Path: args[0], Kind: kindLogStore, FormatVersion: st.FormatVersion, FirstIndex: st.FirstIndex, LastIndex: st.LastIndex,
		CommitIndex: st.CommitIndex, Entries: entryCount(st.FirstIndex, st.LastIndex),
		FileSize: st.FileSize, FreeBytes: st.FreeBytes, PageSize: st.PageSize,
		JournalSize: st.JournalSize, JournalFrames: st.JournalBatches, JournalBytes: st.JournalBytes,
	}
	if out.CurrentTerm, err = stableUint64(s, keyCurrentTerm); err != nil {
		return err
	}
	if out.LastVoteTerm, err = stableUint64(s, keyLastVoteTerm); err != nil {
		return err
	}
	switch v, err := s.Get(keyLastVoteCand); {
	case err == nil:
		text := printable(v)
		out.LastVoteCand = &text
	case !errors.Is(err, raftbolt.ErrKeyNotFound):
		return err
	}
	if out.Configuration, err = latestConfiguration(s); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(out)
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "path:\t%s\n", out.Path)
	fmt.Fprintf(w, "kind:\t%s\n", kindText(out.Kind))
	fmt.Fprintf(w, "format version:\t%d\n", out.FormatVersion)
	fmt.Fprintf(w, "first index:\t%d\n", out.FirstIndex)
	fmt.Fprintf(w, "last index:\t%d\n", out.LastIndex)
	fmt.Fprintf(w, "commit index:\t%d\n", out.CommitIndex)
	fmt.Fprintf(w, "entries:\t%d\n", out.Entries)
	fmt.Fprintf(w, "file size:\t%s\n", humanBytes(out.FileSize))
	fmt.Fprintf(w, "free space:\t%s\n", humanBytes(out.FreeBytes))
	if out.JournalSize > 0 {
		fmt.Fprintf(w, "journal:\t%s, %d batch(es) (%s) past the checkpoint\n",
			humanBytes(out.JournalSize), out.JournalFrames, humanBytes(int64(out.JournalBytes)))
	}
	fmt.Fprintf(w, "current term:\t%s\n", optUint(out.CurrentTerm))
	fmt.Fprintf(w, "last vote term:\t%s\n", optUint(out.LastVoteTerm))
	fmt.Fprintf(w, "last vote for:\t%s\n", optString(out.LastVoteCand))
	if out.Configuration == nil {
		fmt.Fprintf(w, "configuration:\tnone recorded\n")
	} else {
		fmt.Fprintf(w, "configuration:\tindex %d, %d server(s)\n", out.Configuration.Index, len(out.Configuration.Servers))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if out.Configuration != nil {
		return printServers(c, out.Configuration.Servers, "  ")
	}
	return nil
}

// smInfoJSON is info -json of a state machine.
type smInfoJSON struct {
	Path          string       `json:"path"`
	Kind          string       `json:"kind"` // kindStateMachine
	AppliedIndex  uint64       `json:"applied_index"`
	FileSize      int64        `json:"file_size"`
	FreeBytes     int64        `json:"free_bytes"`
	PageSize      int          `json:"page_size"`
	Buckets       []bucketJSON `json:"buckets"`
	Configuration *configJSON  `json:"configuration"`
}

// bucketJSON is one of the application's top-level buckets.
type bucketJSON struct {
	Name    string `json:"name"`
	Keys    int    `json:"keys"`
	Buckets int    `json:"buckets,omitempty"`
}

func entryCount(first, last uint64) uint64 {
	if last == 0 {
		return 0
	}
	return last - first + 1
}

// stableUint64 reads a uint64 StableStore key, nil when it is not set.
func stableUint64(s *raftbolt.Store, key []byte) (*uint64, error) {
	v, err := s.GetUint64(key)
	if errors.Is(err, raftbolt.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// ---- check ----

var checkCmd = &command{
	name: "check", args: "PATH", nargs: 1,
	summary: "verify every page and entry; print the first bad index",
	help: "Checks every page of the file's B+tree before opening it, then reads every entry (checksum,\n" +
		"decoding, index, no holes) and the store's records. A log store's journal (PATH.journal) is\n" +
		"verified too: its header, that it is the journal the store names, that the batches past the\n" +
		"last checkpoint chain and continue the log, and that no damage in the middle of it hides\n" +
		"batches written after. Of a state-machine file: every page, the applied and configuration\n" +
		"records, and every key of the application's buckets. Exit status 1 when anything is damaged,\n" +
		"with the kind of file, the first bad index and what is wrong. Opens the files read-only.",
	run: runCheck,
}

type checkJSON struct {
	Path          string  `json:"path"`
	Kind          string  `json:"kind,omitempty"` // empty when the damage hides it
	OK            bool    `json:"ok"`
	AppliedIndex  *uint64 `json:"applied_index,omitempty"`       // a state machine's
	ConfigIndex   *uint64 `json:"configuration_index,omitempty"` // a state machine's, when it has one
	Buckets       *int    `json:"buckets,omitempty"`             // a state machine's application buckets
	Keys          *int    `json:"keys,omitempty"`                // and their keys (top level)
	FirstIndex    uint64  `json:"first_index,omitempty"`
	LastIndex     uint64  `json:"last_index,omitempty"`
	FirstBadIndex *uint64 `json:"first_bad_index,omitempty"`
	Problem       string  `json:"problem,omitempty"`
	Error         string  `json:"error,omitempty"`
	// Journal is what check found in a log store's journal file; absent
	// when there is none.
	Journal *journalJSON `json:"journal,omitempty"`
}

func runCheck(c *ctx, args []string) error {
	out := checkJSON{Path: args[0]}
	jr, err := c.inspectJournal(args[0])
	if err != nil {
		return err
	}
	out.Journal = jr
	f, err := c.openFile(args[0], true)
	if errors.Is(err, raftbolt.ErrCorrupt) {
		var ke *kindError
		switch {
		case errors.As(err, &ke):
			out.Kind = ke.kind
		case jr != nil:
			out.Kind = kindLogStore // inspectJournal read its records
			if jr.OK && strings.Contains(err.Error(), jr.Path) {
				// What Open found in the journal beyond its frames:
				// batches that do not decode or do not continue the log.
				jr.OK, jr.Problem = false, err.Error()
			}
		default:
			// The damage was found before the file said what it is.
			out.Kind = c.probeKind(args[0])
		}
		out.Error = err.Error()
		return c.reportCheck(out)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	out.Kind = f.kind()
	if f.sm != nil {
		switch err := checkStateMachine(&out, f.sm); {
		case errors.Is(err, raftbolt.ErrCorrupt):
			out.Error = err.Error()
		case err != nil:
			return err
		default:
			out.OK = true
		}
		return c.reportCheck(out)
	}
	s := f.store
	out.FirstIndex, _ = s.FirstIndex()
	out.LastIndex, _ = s.LastIndex()
	err = s.Check()
	if err == nil {
		out.OK = jr == nil || jr.OK
		return c.reportCheck(out)
	}
	if !errors.Is(err, raftbolt.ErrCorrupt) {
		return err
	}
	out.Error = err.Error()
	if jr != nil && jr.OK && strings.Contains(err.Error(), "journal: ") {
		jr.OK, jr.Problem = false, err.Error() // Check of the replayed batches
	}
	// Check names the first bad index in its message; find it as a number
	// by reading the entries in order.
	for i := out.FirstIndex; i != 0 && i <= out.LastIndex; i++ {
		var l raft.Log
		if gerr := s.GetLog(i, &l); gerr != nil {
			out.FirstBadIndex = &i
			if errors.Is(gerr, raft.ErrLogNotFound) {
				out.Problem = fmt.Sprintf("entry %d is missing (a hole in the log)", i)
			} else {
				out.Problem = gerr.Error()
			}
			break
		}
	}
	return c.reportCheck(out)
}

func (c *ctx) reportCheck(out checkJSON) error {
	if c.json {
		if err := c.printJSON(out); err != nil {
			return err
		}
	} else if out.OK && out.Kind == kindStateMachine {
		reportStateMachineOK(c.stdout, out)
	} else if out.OK {
		fmt.Fprintf(c.stdout, "%s: ok: %d entries (%d-%d); every page and entry verified\n",
			out.Path, entryCount(out.FirstIndex, out.LastIndex), out.FirstIndex, out.LastIndex)
		if out.Journal != nil {
			reportJournal(c.stdout, out.Journal)
		}
	} else {
		kind := "of unknown kind: the damage hides whether it is a log store or a state machine"
		if out.Kind != "" {
			kind = kindText(out.Kind)
		}
		fmt.Fprintf(c.stdout, "%s: DAMAGED (%s)\n", out.Path, kind)
		if out.Journal != nil {
			reportJournal(c.stdout, out.Journal)
		}
		if out.FirstBadIndex != nil {
			fmt.Fprintf(c.stdout, "first bad index: %d\n", *out.FirstBadIndex)
			fmt.Fprintf(c.stdout, "problem: %s\n", out.Problem)
		}
		if out.Error != "" {
			fmt.Fprintf(c.stdout, "check: %s\n", out.Error)
		}
	}
	if !out.OK {
		return problem{}
	}
	return nil
}

// ---- dump ----

var dumpCmd = &command{
	name: "dump", args: "PATH", nargs: 1,
	summary: "print entries (-from N -to M)",
	help: "Prints the entries from -from to -to (default: the whole log), one per line: index, term, type,\n" +
		"appended-at, and data as quoted text when it is printable, else base64. Configuration entries\n" +
		"also show their servers. Of a state-machine file: every key of the application's buckets, one\n" +
		"per line (bucket, key, value); -from and -to do not apply. With -json, one JSON object per\n" +
		"line. Opens the file read-only.",
	flags: func(fs *flag.FlagSet, c *ctx) {
		fs.Uint64Var(&c.from, "from", 0, "first index to print (default: the first index)")
		fs.Uint64Var(&c.to, "to", 0, "last index to print (default: the last index)")
	},
	run: runDump,
}

func runDump(c *ctx, args []string) error {
	if c.from != 0 && c.to != 0 && c.from > c.to {
		return usagef("-from %d is after -to %d", c.from, c.to)
	}
	f, err := c.openFile(args[0], false)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.sm != nil {
		return dumpStateMachine(c, f.sm)
	}
	s := f.store
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	from, to := max(first, c.from), last
	if c.to != 0 {
		to = min(c.to, last)
	}
	w := bufio.NewWriter(c.stdout)
	for i := from; last != 0 && i <= to; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			_ = w.Flush()
			if errors.Is(err, raft.ErrLogNotFound) {
				err = fmt.Errorf("entry %d is missing (a hole in the log): %w", i, raftbolt.ErrCorrupt)
			}
			return err
		}
		if c.json {
			if err := writeJSON(w, newEntryJSON(&l), false); err != nil {
				return err
			}
		} else {
			writeEntry(w, &l)
		}
	}
	return w.Flush()
}

// ---- config ----

var configCmd = &command{
	name: "config", args: "PATH", nargs: 1,
	summary: "the latest cluster configuration",
	help: "Prints the latest cluster configuration the store recorded (each server's ID, address and\n" +
		"suffrage) and the index it was committed at; of a state-machine file, the one it applied.\n" +
		"Exit status 1 when none is recorded. Opens the file read-only.",
	run: runConfig,
}

func runConfig(c *ctx, args []string) error {
	f, err := c.openFile(args[0], false)
	if err != nil {
		return err
	}
	defer f.Close()
	var src configurationSource = f.store
	if f.sm != nil {
		src = f.sm
	}
	conf, err := latestConfiguration(src)
	if err != nil {
		return err
	}
	if conf == nil {
		fmt.Fprintf(c.stderr, "raftbolt config: %s: no configuration recorded (%s)\n", args[0], kindText(f.kind()))
		return problem{}
	}
	if c.json {
		return c.printJSON(struct {
			Kind string `json:"kind"`
			*configJSON
		}{f.kind(), conf})
	}
	fmt.Fprintf(c.stdout, "configuration at index %d\n", conf.Index)
	return printServers(c, conf.Servers, "")
}

func latestConfiguration(s configurationSource) (*configJSON, error) {
	index, conf, err := s.LatestConfiguration()
	if errors.Is(err, raftbolt.ErrNoConfiguration) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return newConfigJSON(index, conf), nil
}

func printServers(c *ctx, servers []serverJSON, prefix string) error {
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "%sID\tADDRESS\tSUFFRAGE\n", prefix)
	for _, srv := range servers {
		fmt.Fprintf(w, "%s%s\t%s\t%s\n", prefix, srv.ID, srv.Address, srv.Suffrage)
	}
	return w.Flush()
}

// ---- compact ----

var compactCmd = &command{
	name: "compact", args: "PATH", nargs: 1,
	summary: "reclaim free space (store not in use)",
	help: "Rewrites the store to its live data and gives the free space back to the file system. The store\n" +
		"must not be in use (a running process calls Store.Compact itself). A crash leaves the old file\n" +
		"or the new one, each complete.",
	run: runCompact,
}

func runCompact(c *ctx, args []string) error {
	s, err := c.openStore(args[0], true, false)
	if err != nil {
		return err
	}
	if err := s.Compact(); err != nil {
		_ = s.Close()
		return err
	}
	st, err := s.Stats()
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	lc := st.LastCompaction
	if c.json {
		return c.printJSON(map[string]any{
			"path": args[0], "size_before": lc.SizeBefore, "size_after": lc.SizeAfter,
			"duration_ms": lc.Duration.Milliseconds(),
		})
	}
	fmt.Fprintf(c.stdout, "compacted %s: %s -> %s in %v\n", args[0],
		humanBytes(lc.SizeBefore), humanBytes(lc.SizeAfter), lc.Duration.Round(time.Millisecond))
	return nil
}

// ---- backup ----

var backupCmd = &command{
	name: "backup", args: "PATH DEST", nargs: 2,
	summary: "consistent copy (store not in use); DEST - is stdout",
	help: "Copies the store to DEST, a new file (never replaced), synced and verified, or to stdout when\n" +
		"DEST is -. The store must not be in use: a running process takes backups itself with\n" +
		"Store.Backup (a consistent copy while raft keeps running). Opens the store read-only.",
	run: runBackup,
}

func runBackup(c *ctx, args []string) error {
	path, dest := args[0], args[1]
	if dest != "-" {
		if _, err := os.Lstat(dest); err == nil {
			return fmt.Errorf("%s: %w (backup never replaces a file)", dest, fs.ErrExist)
		}
	}
	s, err := c.openStore(path, false, false)
	if err != nil {
		return err
	}
	defer s.Close()
	if dest == "-" {
		w := bufio.NewWriter(c.stdout)
		if _, err := s.Backup(w); err != nil {
			return err
		}
		return w.Flush()
	}
	st, err := s.Stats()
	if err != nil {
		return err
	}
	n, err := c.backupFile(s, dest)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(map[string]any{
			"path": path, "dest": dest, "bytes": n, "first_index": st.FirstIndex, "last_index": st.LastIndex,
		})
	}
	fmt.Fprintf(c.stdout, "backed up %s to %s: %s, entries %d-%d; the copy passed check\n",
		path, dest, humanBytes(n), st.FirstIndex, st.LastIndex)
	return nil
}

// backupFile writes the backup to a temporary file next to dest, syncs
// and checks it, then links it to dest, so that dest is only ever a
// complete, verified copy.
func (c *ctx) backupFile(s *raftbolt.Store, dest string) (int64, error) {
	f, err := os.CreateTemp(filepath.Dir(dest), filepath.Base(dest)+".tmp-*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	n, err := s.Backup(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", tmp, err)
	}
	b, err := raftbolt.Open(tmp, c.options(true, true))
	if err != nil {
		return 0, fmt.Errorf("verify the copy: %w", err)
	}
	err = b.Check()
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("verify the copy: %w", err)
	}
	// Linked into place (never replacing a file), the directory synced.
	if err := boltfile.Link(tmp, dest); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return 0, fmt.Errorf("%s appeared during the backup: %w", dest, fs.ErrExist)
		}
		return 0, err
	}
	return n, nil
}

// ---- migrate ----

var migrateCmd = &command{
	name: "migrate", args: "SRC DST", nargs: 2,
	summary: "convert a hashicorp/raft-boltdb file into a new store",
	help: "Copies a hashicorp/raft-boltdb file (v1 or v2) into a new raftbolt store at DST, which must not\n" +
		"exist: the log (its newest contiguous run, after any gap raft left), every stable key (term,\n" +
		"vote) and the latest configuration. The copy is verified entry by entry and put in place only\n" +
		"when complete; SRC is opened read-only and never changed. Stop the process using SRC first.",
	run: runMigrate,
}

func runMigrate(c *ctx, args []string) error {
	src, dst := args[0], args[1]
	o := c.options(false, false)
	o.Logger = c.logger(hclog.Warn) // the skipped range of a gapped log is a warning
	if err := raftbolt.Migrate(src, dst, o); err != nil {
		return err
	}
	s, err := raftbolt.Open(dst, c.options(true, false))
	if err != nil {
		return err
	}
	defer s.Close()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	term, err := stableUint64(s, keyCurrentTerm)
	if err != nil {
		return err
	}
	conf, err := latestConfiguration(s)
	if err != nil {
		return err
	}
	if c.json {
		out := map[string]any{
			"src": src, "dst": dst, "first_index": first, "last_index": last,
			"entries": entryCount(first, last), "current_term": term, "configuration": conf,
		}
		return c.printJSON(out)
	}
	fmt.Fprintf(c.stdout, "migrated %s to %s\n", src, dst)
	fmt.Fprintf(c.stdout, "  entries %d-%d (%d), current term %s, ", first, last, entryCount(first, last), optUint(term))
	if conf == nil {
		fmt.Fprintf(c.stdout, "no configuration in the log\n")
	} else {
		fmt.Fprintf(c.stdout, "configuration at index %d (%d server(s))\n", conf.Index, len(conf.Servers))
	}
	fmt.Fprintf(c.stdout, "  every entry and stable key verified against the source; the source is unchanged\n")
	return nil
}
