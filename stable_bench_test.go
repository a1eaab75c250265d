package raftbolt

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// raft reads its stable keys (CurrentTerm, LastVoteTerm, LastVoteCand) on
// every election and vote request; hashicorp/raft-boltdb serves them in
// about 0.5 µs.
func BenchmarkGet(b *testing.B) {
	s := openTest(b)
	key, val := []byte("LastVoteCand"), []byte("node-1.example.com:8300")
	require.NoError(b, s.Set(key, val))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Get(key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetUint64(b *testing.B) {
	s := openTest(b)
	key := []byte("CurrentTerm")
	require.NoError(b, s.SetUint64(key, 42))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.GetUint64(key); err != nil {
			b.Fatal(err)
		}
	}
}
