//go:build race

package raftbolt

// raceEnabled is true in `go test -race` builds, where child processes run
// several times slower: the fault tests then run fewer trials by default.
const raceEnabled = true
