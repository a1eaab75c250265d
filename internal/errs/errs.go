// Package errs holds the sentinel errors that the root package exports and
// its internal packages return, so that an internal package can fail with
// raftbolt.ErrCorrupt (say) without importing the root package. It owns
// the values only: their documentation is the root package's errors.go,
// and nothing here wraps, logs or formats an error.
package errs

import "errors"

// The sentinels, exported by the root package under the same names.
var (
	ErrCorrupt  = errors.New("store corrupt")
	ErrClosed   = errors.New("raftbolt: store closed")
	ErrReadOnly = errors.New("raftbolt: store opened read-only")
	ErrLocked   = errors.New("store locked by another process or handle")
	ErrNotStore = errors.New("not a raftbolt store")
	ErrInvalid  = errors.New("invalid argument")

	ErrUnsupportedVersion = errors.New("unsupported format version")
)
