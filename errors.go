package raftbolt

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/errs"
)

// Sentinel errors. Every error the package returns wraps one of them with
// the operation, the path and the index or key involved, except these,
// which are returned as they are: raft.ErrLogNotFound from GetLog and
// ErrKeyNotFound from Get and GetUint64 (raft compares them directly), and
// ErrClosed, ErrReadOnly and ErrNoConfiguration, which need no context.
var (
	// ErrKeyNotFound is returned, unwrapped, by Get and GetUint64 for a key
	// that was never set. Its text is exactly "not found": raft compares
	// the error's text, not its identity, when it reads its current term.
	ErrKeyNotFound = errors.New("not found")

	// ErrNoConfiguration is returned by LatestConfiguration when no cluster
	// configuration has been recorded yet.
	ErrNoConfiguration = errors.New("raftbolt: no configuration recorded")

	// ErrNotContiguous is returned when a write would leave the log with a
	// gap or an overlap: a batch whose indexes are not consecutive, or does
	// not start right after the last index, or a deletion in the middle of
	// the log.
	ErrNotContiguous = errors.New("log indexes not contiguous")

	// ErrCorrupt is returned when stored bytes fail their checksum, do not
	// decode, contradict their key, or bbolt finds its own structures
	// damaged. The message names what was damaged and where.
	ErrCorrupt = errs.ErrCorrupt

	// ErrClosed is returned by every method of a closed Store (Close excepted).
	ErrClosed = errs.ErrClosed

	// ErrReadOnly is returned by every write to a Store opened with ReadOnly.
	ErrReadOnly = errs.ErrReadOnly

	// ErrLocked is returned by Open when another handle, in this process or
	// another, still holds the file after LockTimeout.
	ErrLocked = errs.ErrLocked

	// ErrNotStore is returned by Open for a file that is not a raftbolt log
	// store: not a bbolt database, a bbolt database with someone else's
	// buckets, a raftbolt state machine file, or a hashicorp/raft-boltdb
	// store (which Migrate converts).
	ErrNotStore = errs.ErrNotStore

	// ErrUnsupportedVersion is returned by Open for a store written by a
	// newer format version than this build reads.
	ErrUnsupportedVersion = errs.ErrUnsupportedVersion

	// ErrInvalid is returned for arguments a method cannot accept: a nil
	// entry, index 0, an empty key, a value over bbolt's size limits, an
	// invalid configuration. Nothing is written.
	ErrInvalid = errs.ErrInvalid
)

// errLogNotFound is raft's sentinel, named here for readability.
var errLogNotFound = raft.ErrLogNotFound

// opError prefixes err with the package, the operation and the store path,
// keeping err wrapped: "raftbolt: get log 42 (/data/raft.db): store corrupt: ...".
func opError(op, path string, err error) error {
	return &pathError{op: op, path: path, err: err}
}

// pathError is what opError returns; wrapOp adds no second prefix to one.
type pathError struct {
	op, path string
	err      error
}

func (e *pathError) Error() string { return fmt.Sprintf("raftbolt: %s (%s): %v", e.op, e.path, e.err) }
func (e *pathError) Unwrap() error { return e.err }

// corruptf returns an error wrapping ErrCorrupt with a formatted detail.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// invalidf returns an error wrapping ErrInvalid with a formatted detail.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
