package raftbolt

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

func init() { children["crashloop"] = crashLoopChild }

// crashOptions are the durable options of the crash loop's store. The replay
// bound is off so that GetCommitIndex is the persisted commit index (with
// its configuration cap, which the model computes).
func crashOptions() *Options {
	return &Options{Logger: hclog.NewNullLogger(), MetricsInterval: -1, RestoreReplayLimit: -1, NoJournal: !testJournal}
}

// crashEntry is the entry the crash loop writes at index i in term term:
// every field derives from the two, so the parent can tell what is there.
func crashEntry(i, term uint64) *raft.Log {
	r := rand.New(rand.NewPCG(i, term))
	l := &raft.Log{Index: i, Term: term, Type: raft.LogCommand, AppendedAt: time.Unix(int64(i), int64(term%1e9))}
	if i%17 == 0 {
		l.Type = raft.LogConfiguration // exercises the configuration index
	}
	l.Data = make([]byte, r.IntN(600))
	for k := range l.Data {
		l.Data[k] = byte(r.Uint32())
	}
	if i%5 == 0 {
		l.Extensions = []byte(fmt.Sprintf("ext-%d-%d", i, term))
	}
	return l
}

func crashConfiguration(index uint64) raft.Configuration {
	return testConfiguration("a", strconv.FormatUint(index%7, 10)+"b")
}

// crashLoopChild writes to the store until it is killed, announcing each
// operation before it starts ("intent ...") and after it returned ("ack").
// args: the store's path, the seed of its choices, the term it writes in.
func crashLoopChild(args []string) error {
	path := args[0]
	seed, _ := strconv.ParseUint(args[1], 10, 64)
	term, _ := strconv.ParseUint(args[2], 10, 64)
	s, err := Open(path, crashOptions())
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	for n := 0; ; n++ {
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		switch r := rng.IntN(100); {
		case r < 55:
			start := last + 1
			count := 1 + rng.IntN(32)
			var commit uint64
			if last > 0 && rng.IntN(3) == 0 {
				commit = first + rng.Uint64N(last-first+1)
				if err := s.StageCommitIndex(commit); err != nil {
					return err
				}
			}
			var batch []*raft.Log
			for i := start; i < start+uint64(count); i++ {
				batch = append(batch, crashEntry(i, term))
			}
			say("intent append %d %d %d %d", start, start+uint64(count)-1, term, commit)
			err = s.StoreLogs(batch)
		case r < 65:
			key, val := fmt.Sprintf("k%d", rng.IntN(8)), fmt.Sprintf("v%d-%d", seed, n)
			say("intent set %s %s", key, val)
			err = s.Set([]byte(key), []byte(val))
		case r < 70:
			if last == 0 {
				continue
			}
			say("intent config %d", last)
			err = s.StoreConfiguration(last, crashConfiguration(last))
		case r < 82:
			if last-first < 20 {
				continue
			}
			to := first + rng.Uint64N((last-first)/2)
			say("intent head %d", to)
			err = s.DeleteRange(first, to)
		case r < 92:
			if last-first < 20 {
				continue
			}
			from := last - rng.Uint64N(10)
			say("intent tail %d", from)
			err = s.DeleteRange(from, last)
			term++ // a new leader rewrites the tail in a later term
		default:
			continue
		}
		if err != nil {
			return err
		}
		say("ack")
	}
}

// crashModel is what the parent knows was acknowledged.
type crashModel struct {
	terms       map[uint64]uint64 // index -> term of the entry there
	first, last uint64
	stable      map[string]string
	confIndex   uint64
	commit      uint64
}

func (m *crashModel) clone() *crashModel {
	c := *m
	c.terms = make(map[uint64]uint64, len(m.terms))
	for k, v := range m.terms {
		c.terms[k] = v
	}
	c.stable = make(map[string]string, len(m.stable))
	for k, v := range m.stable {
		c.stable[k] = v
	}
	return &c
}

// apply returns the model after the operation an intent line announced.
func (m *crashModel) apply(intent string) *crashModel {
	c := m.clone()
	f := strings.Fields(intent)
	num := func(i int) uint64 { n, _ := strconv.ParseUint(f[i], 10, 64); return n }
	switch f[1] {
	case "append":
		from, to, term, commit := num(2), num(3), num(4), num(5)
		for i := from; i <= to; i++ {
			c.terms[i] = term
		}
		if c.first == 0 {
			c.first = from
		}
		c.last = to
		if commit != 0 {
			c.commit = commit
		}
	case "set":
		c.stable[f[2]] = f[3]
	case "config":
		c.confIndex = max(c.confIndex, num(2))
	case "head":
		for i := c.first; i <= num(2); i++ {
			delete(c.terms, i)
		}
		c.first = num(2) + 1
	case "tail":
		for i := num(2); i <= c.last; i++ {
			delete(c.terms, i)
		}
		c.last = num(2) - 1
	}
	return c
}

// expectedCommit is what GetCommitIndex must return for the model: the
// commit index, at most the last index, below the newest configuration
// entry at or below it (no snapshot is ever recorded here).
func (m *crashModel) expectedCommit() uint64 {
	c := min(m.commit, m.last)
	for i := c; i >= m.first && i > 0; i-- {
		if i%17 == 0 {
			return i - 1
		}
	}
	return c
}

// diff returns how the store differs from the model, or "".
func (m *crashModel) diff(s *Store) string {
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != m.first || last != m.last {
		return fmt.Sprintf("log %d-%d, expected %d-%d", first, last, m.first, m.last)
	}
	for i := first; i <= last && last != 0; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			return fmt.Sprintf("entry %d: %v", i, err)
		}
		want := crashEntry(i, m.terms[i])
		if l.Term != want.Term || l.Type != want.Type || string(l.Data) != string(want.Data) ||
			string(l.Extensions) != string(want.Extensions) || !l.AppendedAt.Equal(want.AppendedAt) {
			return fmt.Sprintf("entry %d differs (term %d, expected term %d)", i, l.Term, want.Term)
		}
	}
	for k, v := range m.stable {
		got, err := s.Get([]byte(k))
		if err != nil || string(got) != v {
			return fmt.Sprintf("stable %s = %q (%v), expected %q", k, got, err, v)
		}
	}
	if m.confIndex != 0 {
		index, cfg, err := s.LatestConfiguration()
		if err != nil || index != m.confIndex || !equalConfiguration(cfg, crashConfiguration(index)) {
			return fmt.Sprintf("configuration at %d (%v), expected %d", index, err, m.confIndex)
		}
	}
	if c, err := s.GetCommitIndex(); err != nil || c != m.expectedCommit() {
		return fmt.Sprintf("commit index %d (%v), expected %d", c, err, m.expectedCommit())
	}
	return ""
}

// TestCrashLoop kills a writing child at random moments and checks, after
// each kill, that everything it acknowledged is there, exactly, that the one
// operation in flight happened entirely or not at all, and that the store
// checks clean; then it goes on writing to the same file.
func TestCrashLoop(t *testing.T) {
	kills := killCount(20, 2000)
	seed := testSeed(t)
	path := t.TempDir() + "/raft.db"
	model := &crashModel{terms: map[uint64]uint64{}, stable: map[string]string{}}
	rng := rand.New(rand.NewPCG(seed, 2))
	term := uint64(1)
	acks, inFlightDone := 0, 0
	for k := 0; k < kills; k++ {
		target := 1 + rng.IntN(40)
		var pending string
		runToKill(t, rng, kill{within: 3 * time.Millisecond}, func(line string) bool {
			switch {
			case strings.HasPrefix(line, "intent "):
				pending = line
				if f := strings.Fields(line); f[1] == "append" {
					n, _ := strconv.ParseUint(f[4], 10, 64)
					term = max(term, n+1)
				}
				if f := strings.Fields(line); f[1] == "tail" {
					term++
				}
			case line == "ack":
				model = model.apply(pending)
				pending = ""
				acks++
				target--
				return target == 0
			}
			return false
		}, "crashloop", path, strconv.FormatUint(seed+uint64(k), 10), strconv.FormatUint(term, 10))

		s, err := Open(path, crashOptions())
		require.NoError(t, err, "after kill %d", k)
		require.NoError(t, s.Check(), "after kill %d", k)
		d := model.diff(s)
		if d != "" && pending != "" {
			if d2 := model.apply(pending).diff(s); d2 == "" {
				model, d = model.apply(pending), ""
				inFlightDone++
			} else {
				d += "; with the operation in flight (" + pending + "): " + d2
			}
		}
		require.NoError(t, s.Close())
		require.Empty(t, d, "after kill %d: an acknowledged operation was lost or torn", k)
	}
	t.Logf("%d kills, %d acknowledged operations verified, %d in-flight operations found complete, log %d-%d",
		kills, acks, inFlightDone, model.first, model.last)
}
