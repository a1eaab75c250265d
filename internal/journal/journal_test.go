package journal

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/raftbolt/raftbolt/internal/errs"
	"github.com/stretchr/testify/require"
)

func newJournal(t *testing.T, size int64) (string, uint64, *Journal) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "j")
	id, err := Create(path, size)
	require.NoError(t, err)
	j, frames, err := Open(path, id, Start, false, true)
	require.NoError(t, err)
	require.Empty(t, frames)
	t.Cleanup(func() { _ = j.Close() })
	return path, id, j
}

func payload(i int, n int) []byte {
	return bytes.Repeat([]byte{byte(i)}, n)
}

func TestAppendAndReopen(t *testing.T) {
	path, id, j := newJournal(t, 64<<10)
	var ends []Position
	for i := 1; i <= 5; i++ {
		pos, err := j.Append(byte(i), payload(i, 100*i))
		require.NoError(t, err)
		require.EqualValues(t, i, pos.Seq)
		ends = append(ends, pos)
	}
	require.NoError(t, j.Close())

	_, frames, err := Open(path, id, Start, true, true)
	require.NoError(t, err)
	require.Len(t, frames, 5)
	for i, f := range frames {
		require.EqualValues(t, i+1, f.Seq)
		require.Equal(t, byte(i+1), f.Kind)
		require.Equal(t, payload(i+1, 100*(i+1)), f.Payload)
		require.Equal(t, ends[i], f.End)
	}
	// From a checkpoint: only the frames after it.
	_, frames, err = Open(path, id, ends[2], true, true)
	require.NoError(t, err)
	require.Len(t, frames, 2)
	require.EqualValues(t, 4, frames[0].Seq)
}

func TestOpenRefusesAnotherJournal(t *testing.T) {
	path, id, _ := newJournal(t, 16<<10)
	_, _, err := Open(path, id+2, Start, true, true)
	require.ErrorIs(t, err, errs.ErrCorrupt)
	require.NoError(t, os.WriteFile(path, []byte("not a journal"), 0o600))
	_, _, err = Open(path, id, Start, true, true)
	require.ErrorIs(t, err, errs.ErrCorrupt)
}

// The ring wraps, never overwrites a frame not checkpointed, and recovery
// follows the wrap.
func TestRingWrapsAndKeepsPendingFrames(t *testing.T) {
	path, id, j := newJournal(t, 16<<10) // 12 KiB of ring
	var ends []Position
	for i := 1; ; i++ {
		pos, err := j.Append(1, payload(i, 1000))
		if err == ErrFull {
			break
		}
		require.NoError(t, err)
		ends = append(ends, pos)
	}
	require.Len(t, ends, 11, "12 KiB holds eleven 1 KiB frames")
	j.Checkpointed(ends[3].Seq) // four frames' space is free again
	var more []Position
	for i := 0; ; i++ {
		pos, err := j.Append(2, payload(100+i, 1000))
		if err == ErrFull {
			break
		}
		require.NoError(t, err)
		more = append(more, pos)
	}
	require.Len(t, more, 4, "the freed frames' space, at the start of the ring")
	require.Less(t, more[0].Off, ends[0].Off+1024*4+1, "written at the start")

	_, frames, err := Open(path, id, ends[3], true, true)
	require.NoError(t, err)
	require.Len(t, frames, 7+4, "the pending frames, then the wrapped ones")
	for k, f := range frames {
		require.EqualValues(t, ends[3].Seq+uint64(k)+1, f.Seq)
	}
	require.Equal(t, payload(100, 1000), frames[7].Payload)
	_, err = j.Append(1, make([]byte, 20<<10))
	require.ErrorIs(t, err, ErrTooLarge)
}

// A torn frame ends recovery there; the next Append rewrites it, and a
// complete stale frame beyond it is never taken as the next one.
func TestTornAndStaleFrames(t *testing.T) {
	path, id, j := newJournal(t, 64<<10)
	p1, err := j.Append(1, payload(1, 500))
	require.NoError(t, err)
	p2, err := j.Append(1, payload(2, 500))
	require.NoError(t, err)
	p3, err := j.Append(1, payload(3, 500)) // stale once frame 2 is rewritten
	require.NoError(t, err)
	require.NoError(t, j.Close())

	// Tear frame 2: one byte of its payload.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xff}, p1.Off+FrameHeader+10)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	j, frames, err := Open(path, id, Start, false, true)
	require.NoError(t, err)
	require.Len(t, frames, 1, "stops at the torn frame")
	// Rewrite seq 2 with the same length but other bytes: frame 3 on disk
	// is complete and follows at the same offset, but names the old
	// frame 2's checksum.
	p2b, err := j.Append(1, payload(9, 500))
	require.NoError(t, err)
	require.Equal(t, p2.Off, p2b.Off)
	require.NotEqual(t, p2.CRC, p2b.CRC)
	require.NoError(t, j.Close())
	_, frames, err = Open(path, id, Start, true, true)
	require.NoError(t, err)
	require.Len(t, frames, 2, "the stale frame 3 (ending at %d) is not taken", p3.Off)
	require.Equal(t, payload(9, 500), frames[1].Payload)
}

// Random appends, checkpoints and reopenings against a model: what Open
// returns after a checkpoint is exactly the frames appended after it.
func TestRandomAgainstModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RAFTBOLT_SEED"); s != "" {
		var err error
		seed, err = strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
	}
	t.Logf("seed %d (re-run with RAFTBOLT_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	path, id, j := newJournal(t, 32<<10)
	type written struct {
		pos     Position
		payload []byte
	}
	var pending []written
	checkpoint := Start
	for op := 0; op < 3000; op++ {
		switch r := rng.IntN(10); {
		case r < 7:
			p := payload(op, rng.IntN(3000))
			pos, err := j.Append(byte(op), p)
			if err == ErrFull {
				require.NotEmpty(t, pending, "op %d: full with nothing pending", op)
				continue
			}
			require.NoError(t, err, "op %d", op)
			pending = append(pending, written{pos, p})
		case r < 9 && len(pending) > 0:
			k := rng.IntN(len(pending))
			checkpoint = pending[k].pos
			j.Checkpointed(checkpoint.Seq)
			pending = pending[k+1:]
		default:
			require.NoError(t, j.Close())
			var frames []Frame
			var err error
			j, frames, err = Open(path, id, checkpoint, false, true)
			require.NoError(t, err)
			require.Len(t, frames, len(pending), "op %d", op)
			for k, f := range frames {
				require.Equal(t, pending[k].pos, f.End, "op %d frame %d", op, k)
				require.Equal(t, pending[k].payload, f.Payload, "op %d frame %d", op, k)
			}
		}
	}
}
