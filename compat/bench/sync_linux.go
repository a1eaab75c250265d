package main

import (
	"os"
	"syscall"
)

// fdatasync is what bbolt and raft-wal call on Linux.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
