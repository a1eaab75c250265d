package raftbolt

import (
	"errors"

	metrics "github.com/hashicorp/go-metrics"
)

// The automatic Compact policy (Options.AutoCompactFree): the store runs
// Compact when the file holds more free space than AutoCompactFree and
// than live data. bbolt reuses free pages but never shrinks its file, and
// raft truncates its log after every snapshot, so without it a store that
// once held a long log keeps its size for ever (users of raft-boltdb have
// filled disks waiting for an offline compact).

// startAutoCompact starts the policy's loop (writable stores only).
func (s *Store) startAutoCompact() {
	if s.opts.ReadOnly || s.opts.AutoCompactFree < 0 {
		return
	}
	s.autoCompact.start(s.opts.AutoCompactInterval, false, s.maybeCompact)
}

// shouldCompact reports whether the policy compacts a file of size bytes
// with free bytes free.
func (s *Store) shouldCompact(size, free int64) bool {
	return free >= s.opts.AutoCompactFree && free > size/2
}

// maybeCompact compacts when the policy says so.
func (s *Store) maybeCompact() {
	st, err := s.Stats()
	if err != nil || !s.shouldCompact(st.FileSize, st.FreeBytes) {
		return
	}
	s.logger.Info("compacting: the file is mostly free space", "file_size", st.FileSize, "free_bytes", st.FreeBytes)
	metrics.IncrCounter(metricCompactAuto, 1)
	if err := s.Compact(); err != nil && !errors.Is(err, ErrClosed) {
		s.logger.Error("automatic compaction failed; will retry", "error", err)
	}
}
