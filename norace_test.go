//go:build !race

package raftbolt

// raceEnabled is true in `go test -race` builds (see race_test.go).
const raceEnabled = false
