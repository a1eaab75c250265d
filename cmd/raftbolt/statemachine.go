package main

// The commands that read a file (info, check, dump, config) take either
// kind of raftbolt file: a log store (raftbolt.Open) or a state machine
// (raftbolt.OpenStateMachine). This file tells them apart and reads the
// state machine's side.

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
	"github.com/raftbolt/raftbolt/internal/boltfile"
	"go.etcd.io/bbolt"
)

// The kinds of file, as -json prints them.
const (
	kindLogStore     = "log_store"
	kindStateMachine = "state_machine"
)

// kindText is a kind as the text output says it.
func kindText(kind string) string { return strings.ReplaceAll(kind, "_", " ") }

// reservedBucket is the state machine's own bucket (its format, applied
// and configuration records; README "Durable state machine"). info and
// dump list the application's buckets, not this one: what it holds they
// show as the applied index and the configuration.
const reservedBucket = "_raftbolt"

// file is a raftbolt file open read-only: one of store and sm is set.
type file struct {
	store *raftbolt.Store
	sm    *raftbolt.StateMachine
}

func (f *file) kind() string {
	if f.sm != nil {
		return kindStateMachine
	}
	return kindLogStore
}

func (f *file) Close() error {
	if f.sm != nil {
		return f.sm.Close()
	}
	return f.store.Close()
}

// kindError is an error opening a file whose kind is known: a state
// machine that is damaged or of a newer format.
type kindError struct {
	kind string
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

// openFile opens path read-only as a log store or, when Open says it is
// none (ErrNotStore), as a state machine. verify makes the open check every
// page first. A file of neither kind gets the log store's error, which
// names what the file is (and, for a hashicorp/raft-boltdb file, the
// migration).
func (c *ctx) openFile(path string, verify bool) (*file, error) {
	s, err := c.openStore(path, false, verify)
	if err == nil {
		return &file{store: s}, nil
	}
	if !errors.Is(err, raftbolt.ErrNotStore) {
		return nil, err
	}
	sm, smErr := raftbolt.OpenStateMachine(path, nil, c.smOptions(verify))
	switch {
	case smErr == nil:
		return &file{sm: sm}, nil
	case errors.Is(smErr, raftbolt.ErrNotStore):
		return nil, err
	}
	return nil, &kindError{kind: kindStateMachine, err: smErr}
}

// probeKind is the kind of the file at path, opened without checking
// every page, or "" when that open fails too. check calls it when the
// check of every page failed before the file's kind was read.
func (c *ctx) probeKind(path string) string {
	f, err := c.openFile(path, false)
	if err == nil {
		k := f.kind()
		_ = f.Close()
		return k
	}
	var ke *kindError
	if errors.As(err, &ke) {
		return ke.kind
	}
	return ""
}

// smOptions are the options of a read-only state machine; a nil ApplyFunc
// is fine then.
func (c *ctx) smOptions(verify bool) *raftbolt.Options {
	return &raftbolt.Options{
		ReadOnly:     true,
		VerifyOnOpen: verify,
		LockTimeout:  c.lockTimeout,
		Logger:       c.logger(hclog.Off),
	}
}

// view runs fn in a read transaction of sm. The tool's own functions do
// not panic, so a panic there is bbolt failing on a damaged page: it is
// reported as damage (exit status 1), with the way to find out more.
func view(sm *raftbolt.StateMachine, fn func(tx *bbolt.Tx) error) error {
	err := sm.View(fn)
	if errors.Is(err, raftbolt.ErrPanic) {
		return fmt.Errorf("%w: bbolt failed reading the file (raftbolt check %s verifies every page): %v",
			raftbolt.ErrCorrupt, sm.Path(), err)
	}
	return err
}

// scanBuckets lists the application's top-level buckets in tx: each one's
// keys and nested buckets. deep also reads every value of every nested
// bucket, so that a page bbolt cannot read shows up as an error.
func scanBuckets(tx *bbolt.Tx, deep bool) ([]bucketJSON, error) {
	out := []bucketJSON{}
	err := tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
		if string(name) == reservedBucket {
			return nil
		}
		bj := bucketJSON{Name: printable(name)}
		cur := b.Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			if v != nil { // bbolt: v is nil for a nested bucket
				bj.Keys++
				continue
			}
			bj.Buckets++
			if deep {
				if err := walkBucket(b.Bucket(k), nil, func([]string, []byte, []byte, bool) error { return nil }); err != nil {
					return err
				}
			}
		}
		out = append(out, bj)
		return nil
	})
	return out, err
}

// walkBucket calls fn for every key of b and of its nested buckets, in
// order; path names b, value is nil and nested true for a nested bucket.
func walkBucket(b *bbolt.Bucket, path []string, fn func(path []string, key, value []byte, nested bool) error) error {
	cur := b.Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		if v != nil {
			if err := fn(path, k, v, false); err != nil {
				return err
			}
			continue
		}
		if err := fn(path, k, nil, true); err != nil {
			return err
		}
		sub := b.Bucket(k)
		if sub == nil {
			return fmt.Errorf("bucket %s: key %s is neither a value nor a bucket: %w",
				strings.Join(path, "/"), printable(k), raftbolt.ErrCorrupt)
		}
		if err := walkBucket(sub, append(path[:len(path):len(path)], printable(k)), fn); err != nil {
			return err
		}
	}
	return nil
}

func keyTotal(buckets []bucketJSON) int {
	n := 0
	for _, b := range buckets {
		n += b.Keys
	}
	return n
}

// ---- info ----

func runInfoStateMachine(c *ctx, path string, sm *raftbolt.StateMachine) error {
	out := smInfoJSON{Path: path, Kind: kindStateMachine, AppliedIndex: sm.AppliedIndex(), FileSize: statSize(path)}
	err := view(sm, func(tx *bbolt.Tx) (err error) {
		out.PageSize = tx.DB().Info().PageSize
		out.FreeBytes = boltfile.FreeBytes(tx) // a read-only handle has no freelist
		out.Buckets, err = scanBuckets(tx, false)
		return err
	})
	if err != nil {
		return err
	}
	if out.Configuration, err = latestConfiguration(sm); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(out)
	}
	line := func(label, format string, args ...any) {
		fmt.Fprintf(c.stdout, "%-16s%s\n", label+":", fmt.Sprintf(format, args...))
	}
	line("path", "%s", out.Path)
	line("kind", "%s", kindText(out.Kind))
	line("applied index", "%d", out.AppliedIndex)
	line("file size", "%s", humanBytes(out.FileSize))
	line("free space", "%s", humanBytes(out.FreeBytes))
	if len(out.Buckets) == 0 {
		line("buckets", "none")
	} else {
		line("buckets", "%d, %d keys", len(out.Buckets), keyTotal(out.Buckets))
		w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "  NAME\tKEYS\tBUCKETS\n")
		for _, b := range out.Buckets {
			fmt.Fprintf(w, "  %s\t%d\t%d\n", b.Name, b.Keys, b.Buckets)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	if out.Configuration == nil {
		line("configuration", "none recorded")
		return nil
	}
	line("configuration", "index %d, %d server(s)", out.Configuration.Index, len(out.Configuration.Servers))
	return printServers(c, out.Configuration.Servers, "  ")
}

// statSize is the size of the file at path, 0 when it cannot be read.
func statSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// ---- check ----

// checkStateMachine completes out for a state machine opened with every
// page verified (the open also verified the applied and configuration
// records): it reads the configuration record again and walks every key of
// every bucket, nested ones included.
func checkStateMachine(out *checkJSON, sm *raftbolt.StateMachine) error {
	applied := sm.AppliedIndex() // the applied record, read and verified by the open
	out.AppliedIndex = &applied
	conf, err := latestConfiguration(sm)
	if err != nil {
		return err
	}
	if conf != nil {
		out.ConfigIndex = &conf.Index
	}
	var buckets []bucketJSON
	if err := view(sm, func(tx *bbolt.Tx) (err error) {
		buckets, err = scanBuckets(tx, true)
		return err
	}); err != nil {
		return err
	}
	nb, nk := len(buckets), keyTotal(buckets)
	out.Buckets, out.Keys = &nb, &nk
	return nil
}

func reportStateMachineOK(w io.Writer, out checkJSON) {
	conf := "no configuration recorded"
	if out.ConfigIndex != nil {
		conf = fmt.Sprintf("configuration at index %d", *out.ConfigIndex)
	}
	fmt.Fprintf(w, "%s: ok: state machine, applied index %d, %s; %d buckets, %d keys; every page and record verified\n",
		out.Path, *out.AppliedIndex, conf, *out.Buckets, *out.Keys)
}

// ---- dump ----

// dumpStateMachine prints every key of the application's buckets, one
// per line, in bbolt's order: the bucket's path, the key and the value,
// each as text when printable, else base64. A nested bucket gets a line of
// its own (nested_bucket) before its keys.
func dumpStateMachine(c *ctx, sm *raftbolt.StateMachine) error {
	if c.from != 0 || c.to != 0 {
		return usagef("-from and -to choose log entries; %s is a state machine, whose dump is its buckets' keys", sm.Path())
	}
	w := bufio.NewWriter(c.stdout)
	err := view(sm, func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			if string(name) == reservedBucket {
				return nil
			}
			return walkBucket(b, []string{printable(name)}, func(path []string, k, v []byte, nested bool) error {
				if c.json {
					return writeJSON(w, newKeyJSON(path, k, v, nested), false)
				}
				writeKey(w, path, k, v, nested)
				return nil
			})
		})
	})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func newKeyJSON(path []string, k, v []byte, nested bool) keyJSON {
	e := keyJSON{Bucket: path, Nested: nested}
	if isText(k) {
		s := string(k)
		e.Key = &s
	} else {
		e.KeyBase64 = base64.StdEncoding.EncodeToString(k)
	}
	if nested {
		return e
	}
	if isText(v) {
		s := string(v)
		e.Value = &s
	} else {
		e.ValueBase64 = base64.StdEncoding.EncodeToString(v)
	}
	return e
}

// writeKey writes one line of dump's text output of a state machine:
//
//	bucket=kv key="color" value="blue"
//	bucket=kv key="archive" nested_bucket
//	bucket=kv/archive key="old" value_base64=/wAB
func writeKey(w io.Writer, path []string, k, v []byte, nested bool) {
	var b strings.Builder
	b.WriteString("bucket=" + strings.Join(path, "/"))
	payload(&b, "key", k)
	if nested {
		b.WriteString(" nested_bucket")
	} else {
		payload(&b, "value", v)
	}
	b.WriteByte('\n')
	_, _ = io.WriteString(w, b.String())
}

// configurationSource is what info and config read the configuration
// from: a *raftbolt.Store or a *raftbolt.StateMachine.
type configurationSource interface {
	LatestConfiguration() (uint64, raft.Configuration, error)
}
