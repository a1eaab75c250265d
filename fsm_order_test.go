package raftbolt

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// orderFSM is a plain (non-batching) FSM that stores configurations, and
// notes each call it gets together with the configuration index the store
// had recorded at that moment.
type orderFSM struct {
	listFSM
	store  *Store
	events []string
}

func (f *orderFSM) note(what string) {
	recorded := "none"
	if index, _, err := f.store.LatestConfiguration(); err == nil {
		recorded = fmt.Sprint(index)
	} else if !errors.Is(err, ErrNoConfiguration) {
		recorded = err.Error()
	}
	f.events = append(f.events, what+" (store has configuration "+recorded+")")
}

func (f *orderFSM) Apply(l *raft.Log) interface{} {
	f.note(fmt.Sprintf("Apply(%d)", l.Index))
	return f.listFSM.Apply(l)
}

func (f *orderFSM) StoreConfiguration(index uint64, _ raft.Configuration) {
	f.note(fmt.Sprintf("StoreConfiguration(%d)", index))
}

// orderBatchingFSM is a batching FSM that notes the batches it gets and
// the configuration index the store had recorded when each arrived.
type orderBatchingFSM struct {
	orderFSM
}

func (f *orderBatchingFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	what := "ApplyBatch("
	for i, l := range logs {
		if i > 0 {
			what += " "
		}
		what += fmt.Sprint(l.Index)
	}
	f.note(what + ")")
	resp := make([]interface{}, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			resp[i] = f.listFSM.Apply(l)
		}
	}
	return resp
}

// A batch that does not start with its configuration entry reaches a plain
// inner FSM in log order, as raft's applySingle loop would deliver it, and
// the store records each configuration after the commands before it and
// before those after it (issue 10: every configuration was recorded and
// handed on first, then the commands applied).
func TestFSMAdapterKeepsLogOrder(t *testing.T) {
	batch := []*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: []byte("one")},
		{Index: 2, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(testConfiguration("a"))},
		{Index: 3, Type: raft.LogCommand, Data: []byte("three")},
		{Index: 4, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(testConfiguration("a", "b"))},
		{Index: 5, Type: raft.LogCommand, Data: []byte("five")},
	}

	t.Run("plain inner", func(t *testing.T) {
		s := openTest(t)
		inner := &orderFSM{store: s}
		resp := NewFSM(s, inner).ApplyBatch(batch)
		require.Equal(t, []interface{}{1, nil, 2, nil, 3}, resp)
		require.Equal(t, []string{
			"Apply(1) (store has configuration none)",
			"StoreConfiguration(2) (store has configuration 2)",
			"Apply(3) (store has configuration 2)",
			"StoreConfiguration(4) (store has configuration 4)",
			"Apply(5) (store has configuration 4)",
		}, inner.events)
	})

	// raft hands a BatchingFSM the whole batch in one call, configurations
	// included, and never calls StoreConfiguration; the adapter records the
	// batch's configurations just before it, so a crash inside the inner
	// FSM's ApplyBatch cannot lose a committed configuration.
	t.Run("batching inner", func(t *testing.T) {
		s := openTest(t)
		inner := &orderBatchingFSM{orderFSM{store: s}}
		resp := NewFSM(s, inner).ApplyBatch(batch)
		require.Equal(t, []interface{}{1, nil, 2, nil, 3}, resp)
		require.Equal(t, []string{"ApplyBatch(1 2 3 4 5) (store has configuration 4)"}, inner.events)
	})
}

// StoreConfiguration on an adapter without an inner FSM records the
// configuration and does not panic.
func TestFSMAdapterStoreConfigurationWithoutInner(t *testing.T) {
	s := openTest(t)
	cfg := testConfiguration("a")
	require.NotPanics(t, func() { NewFSM(s, nil).StoreConfiguration(3, cfg) })
	index, got, err := s.LatestConfiguration()
	require.NoError(t, err)
	require.EqualValues(t, 3, index)
	require.Equal(t, cfg, got)
}
