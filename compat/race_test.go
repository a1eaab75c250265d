//go:build race

package compat

// raceEnabled: boltdb/bolt v1.3.1, under raft-boltdb v1, trips Go's
// checkptr instrumentation (-race turns it on) in Bucket.write
// ("converted pointer straddles multiple allocations") and the process
// dies. Tests that run raft-boltdb v1 itself skip under -race and use
// testdata/raftboltdb-v1.db.gz, a file it wrote, instead.
const raceEnabled = true
