// Package powerloss explores the states a power cut can leave on disk, in the
// manner of ALICE: a workload runs under strace, the recorded system calls
// become file-system operations on one directory (Parse), and at each crash
// point Explore builds the states the disk may hold — what was synced, plus
// any subset of the writes since, torn at 512-byte sectors, with the name
// operations (create, rename, link, unlink) since the directory's last fsync
// applied or not. The tests re-open each state with raftbolt's public API
// and check that every acknowledged operation survived.
//
// It owns the trace parser, the durability model and the crash-state
// generator. It never touches the files it models: states are written to
// directories of their own (State.Materialise). It models the strict POSIX
// rules, not one file system's: fsync or fdatasync makes a file's data and
// size durable, never its name; a name is durable only once its directory is
// fsynced. sync_file_range makes nothing durable; sync and syncfs make
// everything durable. Pending writes reach the disk as any subset, applied
// in the order they were made (where two overlap and both arrive, the later
// wins, as the page cache holds only the newest bytes); pending name
// operations as any prefix (a journal keeps their order) or all but one.
//
// The tests (powerloss_test.go, workload_test.go) run only with
// RAFTBOLT_POWERLOSS_STATES set, as .ci/powerloss does; RAFTBOLT_SEED repeats
// a run, RAFTBOLT_POWERLOSS_OPS sets the length of the workloads and
// RAFTBOLT_POWERLOSS_KEEP keeps the first failing states for inspection.
// Each trace is checked against the workload's own reads (Verify) before it
// is explored, so that a gap in the parser shows as an error, not as a
// false finding.
package powerloss
