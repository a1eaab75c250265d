package raftbolt

import (
	"fmt"
	"strings"

	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// The layouts of both file kinds (buckets, keys, the format record, the
// init transaction, the classification of an opened file) are
// internal/layout's. This file turns its classification into the
// package's errors where they name what to do with a file that is not of
// the kind opened.

// inspectStore classifies the file open in tx as a log store
// (layout.LogStore.Inspect): layout.Empty, layout.Complete, or an error. A
// hashicorp/raft-boltdb file is ErrNotStore with the commands that convert
// it.
func inspectStore(tx *bbolt.Tx) (layout.Class, error) {
	c, err := layout.LogStore.Inspect(tx)
	if c == layout.RaftBoltDB {
		return c, fmt.Errorf("%w: %s", ErrNotStore, migrateHint(tx.DB().Path()))
	}
	return c, err
}

// inspectStateFile classifies the file open in tx as a state machine file
// (layout.StateMachine.Inspect): layout.Empty, layout.Complete, or an
// error, a hashicorp/raft-boltdb file among them.
func inspectStateFile(tx *bbolt.Tx) (layout.Class, error) {
	c, err := layout.StateMachine.Inspect(tx)
	if c == layout.RaftBoltDB {
		return c, fmt.Errorf("%w: this is a hashicorp/raft-boltdb store (buckets \"logs\" and \"conf\"), not a state machine", ErrNotStore)
	}
	return c, err
}

// migrateHint tells the owner of the hashicorp/raft-boltdb file at path
// the exact commands that convert it.
func migrateHint(path string) string {
	p, q := shellQuote(path), shellQuote(path+".raftbolt")
	return fmt.Sprintf("%s is a hashicorp/raft-boltdb store (buckets \"logs\" and \"conf\"); "+
		"with the process that uses it stopped, convert it with `raftbolt migrate %s %s` (or raftbolt.Migrate) "+
		"and open %s, or move the copy into place with `mv %s %s.boltdb && mv %s %s`",
		path, p, q, q, p, p, q, p)
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// characters that are safe unquoted.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@%", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
