package codec

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

func TestEntryRoundTripsEveryShape(t *testing.T) {
	for _, l := range seedEntries() {
		rec := AppendEntry(nil, l)
		require.Len(t, rec, EntrySize(l))
		var got raft.Log
		require.NoError(t, DecodeEntry(rec, &got))
		require.Equal(t, *l, got)
	}
}

func TestEntryDamageIsDetected(t *testing.T) {
	rec := AppendEntry(nil, &raft.Log{Index: 9, Term: 2, Data: []byte("payload"), AppendedAt: time.Unix(5, 0)})
	for i := range rec {
		for bit := 0; bit < 8; bit++ {
			bad := append([]byte(nil), rec...)
			bad[i] ^= 1 << bit
			var l raft.Log
			require.Error(t, DecodeEntry(bad, &l), "byte %d bit %d", i, bit)
		}
	}
	var l raft.Log
	require.ErrorIs(t, DecodeEntry(rec[:len(rec)-1], &l), ErrChecksum)
	require.ErrorIs(t, DecodeEntry(nil, &l), ErrTruncated)
	future := append([]byte(nil), rec[:len(rec)-4]...)
	future[0] = 2
	require.ErrorIs(t, DecodeEntry(appendSum(future, 0), &l), ErrVersion)
}

func TestConfigurationAndValueRecords(t *testing.T) {
	c := raft.Configuration{Servers: []raft.Server{{ID: "a", Address: "x:1"}, {ID: "b", Address: "y:2", Suffrage: raft.Staging}}}
	index, got, err := DecodeConfiguration(AppendConfiguration(nil, 12, c))
	require.NoError(t, err)
	require.EqualValues(t, 12, index)
	require.Equal(t, c, got)

	rec := AppendUint64Value(nil, []byte("CurrentTerm"), 7)
	n, err := DecodeUint64Value([]byte("CurrentTerm"), rec)
	require.NoError(t, err)
	require.EqualValues(t, 7, n)
	_, err = DecodeUint64Value([]byte("LastVoteTerm"), rec)
	require.True(t, errors.Is(err, ErrChecksum), "a record under another key fails its check")

	f, err := DecodeFormat(AppendFormat(nil, Format{Version: 3, Kind: KindLogStore}), 1)
	require.ErrorIs(t, err, ErrVersion)
	require.EqualValues(t, 3, f.Version)
}
