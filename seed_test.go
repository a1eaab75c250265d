package raftbolt

import (
	"flag"
	"os"
	"strconv"
	"testing"
	"time"
)

// Random tests take their seed from -raftbolt.seed, else from RAFTBOLT_SEED
// (the variable the internal packages' random tests read too), else from
// the clock, and log it: a failure is replayed by running the test again
// with the logged seed. Each test draws its own PCG stream from the seed,
// so two tests given the same seed do not share a sequence.

const seedEnv = "RAFTBOLT_SEED"

var seedFlag = flag.String("raftbolt.seed", "", "seed of the random tests (default $"+seedEnv+", else from the clock)")

// testSeed returns the seed of a random test and logs how to re-run it.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	v, from := *seedFlag, "-raftbolt.seed"
	if v == "" {
		v, from = os.Getenv(seedEnv), seedEnv
	}
	seed := uint64(time.Now().UnixNano())
	if v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: not a seed: %v", from, v, err)
		}
	}
	t.Logf("seed %d (re-run with %s=%d)", seed, seedEnv, seed)
	return seed
}
