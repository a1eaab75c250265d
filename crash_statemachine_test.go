package raftbolt

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

func init() { children["smcrashloop"] = smCrashLoopChild }

// smCrashEntry is the entry the state machine crash loop applies at index
// i. Every 11th command fails with an error and every 13th panics; every
// 29th entry is a configuration. The others add i to a counter and mark
// their index.
func smCrashEntry(i uint64) *raft.Log {
	if i%29 == 0 {
		return &raft.Log{Index: i, Term: 1, Type: raft.LogConfiguration,
			Data: raft.EncodeConfiguration(crashConfiguration(i))}
	}
	return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte(strconv.FormatUint(i, 10))}
}

// smCrashApply applies smCrashEntry commands.
func smCrashApply(tx *bbolt.Tx, l *raft.Log) interface{} {
	b, err := tx.CreateBucketIfNotExists([]byte("crash"))
	if err != nil {
		return err
	}
	if err := b.Put([]byte("e"+string(l.Data)), nil); err != nil {
		return err
	}
	sum, _ := strconv.ParseUint(string(b.Get([]byte("sum"))), 10, 64)
	if err := b.Put([]byte("sum"), []byte(strconv.FormatUint(sum+l.Index, 10))); err != nil {
		return err
	}
	switch {
	case l.Index%13 == 0:
		panic("entry " + string(l.Data) + " panics")
	case l.Index%11 == 0:
		return errors.New("entry " + string(l.Data) + " fails")
	}
	return nil
}

// smCrashExpect returns what the state must hold once entries 1..applied
// were applied: the sum of the successful commands and their marks.
func smCrashExpect(applied uint64) (sum uint64, marks int, conf uint64) {
	for i := uint64(1); i <= applied; i++ {
		switch {
		case i%29 == 0:
			conf = i
		case i%13 == 0, i%11 == 0:
		default:
			sum += i
			marks++
		}
	}
	return sum, marks, conf
}

// smCrashLoopChild applies batches of random sizes for ever, starting a few
// entries before the applied index (raft replays from its commit index, not
// from the state's), and reports each batch it applied. args: the state
// file's path, the seed of its choices.
func smCrashLoopChild(args []string) error {
	seed, _ := strconv.ParseUint(args[1], 10, 64)
	m, err := OpenStateMachine(args[0], smCrashApply, &Options{Logger: hclog.NewNullLogger()})
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 4))
	next := m.AppliedIndex() + 1
	next -= min(next-1, rng.Uint64N(8))
	for {
		var batch []*raft.Log
		for n := 1 + rng.IntN(16); n > 0; n-- {
			batch = append(batch, smCrashEntry(next))
			next++
		}
		say("intent %d", next-1)
		before := m.AppliedIndex()
		resp := m.ApplyBatch(batch)
		for k, l := range batch {
			if l.Index <= before {
				continue // skipped: applied before the restart
			}
			failing := l.Type == raft.LogCommand && (l.Index%11 == 0 || l.Index%13 == 0)
			if err, _ := resp[k].(error); (err != nil) != failing {
				return fmt.Errorf("entry %d: response %v", l.Index, resp[k])
			}
		}
		say("ack %d", next-1)
	}
}

// TestStateMachineCrashLoop kills a child applying batches at random
// moments: the applied index never loses an acknowledged batch, and the
// state holds exactly the effects of the entries up to the applied index,
// each applied once, failed entries not at all.
func TestStateMachineCrashLoop(t *testing.T) {
	kills := killCount(20, 2000)
	seed := testSeed(t)
	path := filepath.Join(t.TempDir(), "state.db")
	rng := rand.New(rand.NewPCG(seed, 5))
	var acked uint64
	for k := 0; k < kills; k++ {
		target, inFlight := 1+rng.IntN(30), uint64(0)
		runToKill(t, rng, kill{within: 2 * time.Millisecond}, func(line string) bool {
			f := strings.Fields(line)
			n, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "intent":
				inFlight = n
			case "ack":
				acked = max(acked, n)
				target--
				return target == 0
			}
			return false
		}, "smcrashloop", path, strconv.FormatUint(seed+uint64(k), 10))

		m, err := OpenStateMachine(path, smCrashApply, &Options{Logger: hclog.NewNullLogger()})
		require.NoError(t, err, "after kill %d", k)
		applied := m.AppliedIndex()
		require.GreaterOrEqual(t, applied, acked, "after kill %d: an acknowledged batch was lost", k)
		require.LessOrEqual(t, applied, max(acked, inFlight), "after kill %d: applied past what was sent", k)
		wantSum, wantMarks, wantConf := smCrashExpect(applied)
		var sum uint64
		var marks int
		require.NoError(t, m.View(func(tx *bbolt.Tx) error {
			b := tx.Bucket([]byte("crash"))
			if b == nil {
				return nil
			}
			sum, _ = strconv.ParseUint(string(b.Get([]byte("sum"))), 10, 64)
			return b.ForEach(func(k, _ []byte) error {
				if k[0] == 'e' {
					marks++
				}
				return nil
			})
		}))
		require.Equal(t, wantSum, sum, "after kill %d: applied index %d and data disagree", k, applied)
		require.Equal(t, wantMarks, marks, "after kill %d: applied index %d and data disagree", k, applied)
		if wantConf != 0 {
			index, _, err := m.LatestConfiguration()
			require.NoError(t, err)
			require.Equal(t, wantConf, index, "after kill %d", k)
		}
		require.NoError(t, m.Close())
		acked = applied
	}
	t.Logf("%d kills, applied index %d", kills, acked)
}
