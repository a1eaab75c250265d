// Package compat holds what needs hashicorp/raft-boltdb and hashicorp/raft-wal
// next to raftbolt: the side-by-side benchmark harness and the migration
// tests against files the real raft-boltdb wrote. It is a module of its own
// so that the library's go.mod stays lean.
package compat
