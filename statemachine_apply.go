package raftbolt

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// How a batch is applied, and why it costs what it costs.
//
// A batch runs optimistically in one write transaction: every entry's
// apply, the configuration entries, and the applied record of the last
// entry, then one commit (one fsync for the batch). bbolt has no savepoints,
// so when an entry fails (its apply returns an error or panics), the
// transaction is rolled back and the entries before the failed one are run
// again in a new transaction, which also records the failed entry's index
// (and term); then the rest of the batch runs optimistically again. A batch
// with f failed entries thus costs f+1 commits at most, and apply runs
// twice for the entries that precede a failure in their transaction:
// that is why ApplyFunc must be deterministic and keep its effects in tx.
// An entry whose re-run fails although its first run did not (apply is not
// deterministic after all) is handled as the failed one: nothing applied
// is ever lost or kept half.
//
// The file keeps the log store's freelist mode (openBolt: NoFreelistSync,
// hashmap freelist), deliberately. In bbolt v1.5 a transaction whose
// function returns an error rolls back cheaply in either mode (it only
// forgets the transaction's allocations); only a panic escaping the
// function, or a failed commit, makes bbolt rebuild an unsynced freelist by
// walking every page of the file. Measured on a 440 MB file (1.6M keys):
// a rollback by error 45 µs with or without a synced freelist, a rollback
// by panic 213 ms without one (0.2 ms with one). Every panic of an apply is
// therefore recovered inside the transaction's function, which then
// returns an error: failures always take the cheap path. A synced
// freelist, on the other hand, would be rewritten at every commit, in full:
// after the application deletes much of its data that is the cost that
// makes hashicorp/raft-boltdb slow after a truncation. Close writes the
// freelist once, so a clean reopen does not walk the file.

// errEntryFailed makes runTx's transaction function roll back.
var errEntryFailed = errors.New("entry failed")

// Apply applies one committed entry (raft.FSM). raft calls ApplyBatch
// instead, since *StateMachine is a BatchingFSM; Apply is ApplyBatch of one
// entry.
func (m *StateMachine) Apply(l *raft.Log) interface{} {
	return m.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies a batch of committed entries in order and returns one
// response per entry (raft.BatchingFSM).
//
//   - A raft.LogCommand runs the ApplyFunc; its response is what apply
//     returned. An entry whose apply returns an error or panics keeps none
//     of its writes, its response is that error (a panic: an error wrapping
//     ErrPanic), its index still advances and the later entries still
//     apply.
//   - A raft.LogConfiguration records the configuration, atomically with the
//     applied index (raft delivers configuration entries to a BatchingFSM
//     here and never calls StoreConfiguration). Its response is nil.
//   - Other types only advance the applied index.
//   - An entry at or below the applied index is skipped (response nil): it
//     is already in the state, applied before a restart.
//
// Normally the whole batch is one transaction and one fsync. See the note
// above on the batches in which an entry fails.
//
// When the machine cannot write (closed, read-only, or stopped by a storage
// failure), no entry is applied and each response is the error
// (ErrClosed, ErrReadOnly, or the failure).
func (m *StateMachine) ApplyBatch(logs []*raft.Log) []interface{} {
	resp := make([]interface{}, len(logs))
	if err := m.lockWrite(); err != nil {
		fill(resp, err)
		return resp
	}
	defer m.unlockWrite()
	if err := m.file.Broken(); err != nil {
		fill(resp, wrapOp("apply", m.path, err))
		return resp
	}

	last := m.applied.Load()
	todo := make([]*raft.Log, 0, len(logs))
	at := make([]int, 0, len(logs)) // position in logs of each todo entry
	var skipped int
	for i, l := range logs {
		switch {
		case l == nil:
			resp[i] = opError("apply", m.path, invalidf("entry %d of the batch is nil", i))
		case l.Index <= last:
			skipped++
		default:
			todo = append(todo, l)
			at = append(at, i)
			last = l.Index
		}
	}
	if skipped > 0 {
		m.logger.Debug("skipped entries the state already holds", "entries", skipped, "applied_index", m.applied.Load())
	}
	if len(todo) == 0 {
		return resp
	}
	out := make([]interface{}, len(todo))
	m.applyEntries(todo, out)
	for k, i := range at {
		resp[i] = out[k]
	}
	return resp
}

func fill(resp []interface{}, v interface{}) {
	for i := range resp {
		resp[i] = v
	}
}

// applyEntries applies logs (increasing indexes, all above the applied
// index), writing their responses to resp. The caller holds writeMu.
func (m *StateMachine) applyEntries(logs []*raft.Log, resp []interface{}) {
	// pending is a failed entry whose index no committed transaction has
	// recorded yet; the next transaction records it.
	var pending *raft.Log
	for pos := 0; pos < len(logs); {
		k, ferr, err := m.runTx(logs[pos:], resp[pos:], pending)
		if err != nil {
			fill(resp[pos:], err)
			return
		}
		if k < 0 {
			return // the rest of the batch committed
		}
		// Entry pos+k failed. Keep the entries before it: run them again,
		// in a transaction that also records the failed entry's index.
		for k > 0 {
			k2, ferr2, err := m.runTx(logs[pos:pos+k], resp[pos:pos+k], logs[pos+k])
			if err != nil {
				fill(resp[pos:], err)
				return
			}
			if k2 < 0 {
				break
			}
			m.logger.Warn("an entry failed when applied again although it succeeded the first time: "+
				"the ApplyFunc is not deterministic", "index", logs[pos+k2].Index, "error", ferr2)
			k, ferr = k2, ferr2
		}
		resp[pos+k] = ferr
		if k == 0 {
			pending = logs[pos] // nothing committed: the next transaction records it
		} else {
			pending = nil
		}
		pos += k + 1
	}
	if pending != nil {
		// The batch ended with a failed entry: record its index alone.
		if _, _, err := m.runTx(nil, nil, pending); err != nil {
			m.logger.Error("could not record the index of a failed entry", "index", pending.Index, "error", err)
		}
	}
}

// runTx applies logs in one write transaction, writing their responses to
// resp, and records as applied the last of them, or advance when that is
// later (a failed entry before them whose index is still to be recorded).
//
// When every entry succeeds it commits and returns failed = -1. When one
// fails it rolls the transaction back, nothing of it kept, and returns the
// entry's position and response. err is a storage failure (nothing
// committed; the machine is now broken).
func (m *StateMachine) runTx(logs []*raft.Log, resp []interface{}, advance *raft.Log) (failed int, ferr error, err error) {
	failed = -1
	rec := advance
	if n := len(logs); n > 0 && (rec == nil || logs[n-1].Index > rec.Index) {
		rec = logs[n-1]
	}
	err = m.update("apply", func(tx *bbolt.Tx) error {
		for i, l := range logs {
			switch l.Type {
			case raft.LogCommand:
				r, ok, fatal := m.applyEntry(tx, l)
				if fatal != nil {
					return fatal
				}
				if !ok {
					failed, ferr = i, r.(error)
					return errEntryFailed
				}
				resp[i] = r
			case raft.LogConfiguration:
				resp[i] = nil
				c, err := decodeConfiguration(l.Data)
				if err == nil {
					err = checkConfiguration(c)
				}
				if err != nil {
					// raft never commits one; record nothing, say so.
					m.logger.Error("cannot record a committed configuration entry", "index", l.Index, "error", err)
					resp[i] = opError("apply", m.path, fmt.Errorf("configuration entry %d: %w", l.Index, err))
					continue
				}
				if err := layout.StateMachine.PutConfiguration(tx, l.Index, c); err != nil {
					return fmt.Errorf("configuration entry %d: %w", l.Index, err)
				}
			default:
				resp[i] = nil
			}
		}
		return layout.StateMachine.PutApplied(tx, rec.Index, rec.Term)
	})
	if failed >= 0 {
		return failed, ferr, nil
	}
	if err != nil {
		m.file.Break(err)
		m.logger.Error("the state machine stopped applying after a storage failure: it applies nothing until "+
			"reopened (raft then replays the entries from its log)", "first_index", firstIndex(logs, advance), "error", err)
		return -1, nil, err
	}
	m.applied.Store(rec.Index)
	m.appliedTerm.Store(rec.Term)
	return -1, nil, nil
}

func firstIndex(logs []*raft.Log, advance *raft.Log) uint64 {
	if advance != nil {
		return advance.Index
	}
	if len(logs) > 0 {
		return logs[0].Index
	}
	return 0
}

// applyEntry runs the ApplyFunc for command l in tx. ok is false when the
// entry failed: resp is then the error (apply's own, or one wrapping
// ErrPanic). fatal is a memory fault in the mapped file: damage, not the
// entry's failure.
func (m *StateMachine) applyEntry(tx *bbolt.Tx, l *raft.Log) (resp interface{}, ok bool, fatal error) {
	defer func() {
		if r := recover(); r != nil {
			err := m.userPanic("apply", fmt.Sprintf(" of entry %d", l.Index), r)
			if isMemoryFault(r) {
				resp, ok, fatal = nil, false, err
				return
			}
			resp, ok = err, false
		}
	}()
	resp = m.apply(tx, l)
	if err, isErr := resp.(error); isErr && err != nil {
		return err, false, nil
	}
	if tx.Bucket(layout.StateBucket) == nil {
		return opError("apply", m.path, invalidf("entry %d: apply deleted the reserved bucket %q", l.Index, layout.StateBucket)), false, nil
	}
	return resp, true, nil
}
