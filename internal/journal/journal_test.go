package journal

import (
	"bytes"
	"fmt"
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

// patch writes b at off of the file at path.
func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// appendN appends n frames of varied sizes and returns the position after
// each; frame k (from 1) starts at ends[k-2].Off (HeaderSize for the first).
func appendN(t *testing.T, j *Journal, n int) []Position {
	t.Helper()
	var ends []Position
	for i := 1; i <= n; i++ {
		pos, err := j.Append(1, payload(i, 300+37*i))
		require.NoError(t, err)
		ends = append(ends, pos)
	}
	return ends
}

// requireDamage asserts that Open and Inspect of the journal report the
// chain broken at frame seq, at off, with intact frames up to later after
// it, and that Inspect saw the frames before it.
func requireDamage(t *testing.T, path string, id uint64, from Position, seq uint64, off int64, later uint64) {
	t.Helper()
	_, _, err := Open(path, id, from, true, true)
	require.ErrorIs(t, err, errs.ErrCorrupt)
	var de *DamageError
	require.ErrorAs(t, err, &de)
	require.Equal(t, DamageError{Off: off, Seq: seq, Later: later}, *de)
	require.Contains(t, err.Error(), path)
	require.Contains(t, err.Error(), fmt.Sprintf("journal frame %d at offset %d is damaged, but frames up to %d were written after it", seq, off, later))
	rep, err := Inspect(path, id, from)
	require.ErrorIs(t, err, errs.ErrCorrupt)
	require.ErrorAs(t, err, &de)
	require.EqualValues(t, seq-1-from.Seq, rep.Frames, "the frames before the break")
	require.Equal(t, id, rep.ID)
}

// A bit flipped in a middle frame's payload: the frames after it are
// intact, so they were acknowledged: Open refuses rather than drop them.
func TestMidJournalBitFlip(t *testing.T) {
	path, id, j := newJournal(t, 64<<10)
	ends := appendN(t, j, 6)
	require.NoError(t, j.Close())
	patch(t, path, ends[1].Off+FrameHeader+100, []byte{0x5a}) // frame 3's payload
	requireDamage(t, path, id, Start, 3, ends[1].Off, 6)
	// From a checkpoint after frame 1, and with only the last frame left
	// after the damaged one.
	requireDamage(t, path, id, ends[0], 3, ends[1].Off, 6)
	path2, id2, j2 := newJournal(t, 64<<10)
	ends2 := appendN(t, j2, 3)
	require.NoError(t, j2.Close())
	patch(t, path2, ends2[0].Off+FrameHeader+1, []byte{0xff, 0xfe})
	requireDamage(t, path2, id2, Start, 2, ends2[0].Off, 3)
}

// A middle frame's header zeroed, or a whole 4 KiB block of frames: Open
// refuses.
func TestMidJournalZeroedHeader(t *testing.T) {
	path, id, j := newJournal(t, 64<<10)
	ends := appendN(t, j, 8)
	require.NoError(t, j.Close())
	patch(t, path, ends[2].Off, make([]byte, FrameHeader)) // frame 4's header
	requireDamage(t, path, id, Start, 4, ends[2].Off, 8)

	path, id, j = newJournal(t, 64<<10)
	ends = appendN(t, j, 20)
	require.NoError(t, j.Close())
	patch(t, path, HeaderSize+4096, make([]byte, 4096)) // frames 8 to 16 or so
	k := 0
	for ends[k].Off <= HeaderSize+4096 {
		k++
	}
	// The first frame the block touches is frame k+1.
	requireDamage(t, path, id, Start, uint64(k+1), ends[k-1].Off, 20)
}

// A torn last frame, the way a crash leaves one: recovery stops there,
// without an error, and returns the frames before it.
func TestTornLastFrame(t *testing.T) {
	cases := map[string]func(t *testing.T, path string, last, end Position){
		// The write reached part of the payload; the rest of the frame is
		// what was there before (zeros, in a new journal).
		"payload cut short": func(t *testing.T, path string, last, end Position) {
			n := end.Off - last.Off - FrameHeader
			patch(t, path, last.Off+FrameHeader+n/2, make([]byte, n-n/2))
		},
		// Only the first half of the frame's header reached the disk.
		"half written": func(t *testing.T, path string, last, end Position) {
			patch(t, path, last.Off+FrameHeader/2, make([]byte, end.Off-last.Off-FrameHeader/2))
		},
		// Garbage over the last frame and after it (a torn write of a
		// device that scrambles the sectors in flight).
		"garbage": func(t *testing.T, path string, last, end Position) {
			g := make([]byte, 3000)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range g {
				g[i] = byte(rng.Uint32())
			}
			patch(t, path, last.Off+FrameHeader+40, g)
		},
		// Garbage only after the last frame: it is complete.
		"garbage after": func(t *testing.T, path string, last, end Position) {
			g := bytes.Repeat([]byte("RBJF\x07\x00\x00\x00"), 400) // frame magic at every aligned offset
			patch(t, path, end.Off, g)
		},
	}
	for name, tear := range cases {
		t.Run(name, func(t *testing.T) {
			path, id, j := newJournal(t, 64<<10)
			ends := appendN(t, j, 5)
			require.NoError(t, j.Close())
			tear(t, path, ends[3], ends[4])
			want := 4
			if name == "garbage after" {
				want = 5
			}
			_, frames, err := Open(path, id, Start, true, true)
			require.NoError(t, err)
			require.Len(t, frames, want)
			for k, f := range frames {
				require.Equal(t, ends[k], f.End)
				require.Equal(t, payload(k+1, 300+37*(k+1)), f.Payload)
			}
			rep, err := Inspect(path, id, Start)
			require.NoError(t, err)
			require.Equal(t, Report{Size: 64 << 10, ID: id, Frames: want, Bytes: ends[want-1].Off - HeaderSize,
				FirstSeq: 1, LastSeq: uint64(want), End: ends[want-1]}, rep)
			// The next run appends over the torn frame, and the journal
			// reads back whole.
			j, _, err = Open(path, id, Start, false, true)
			require.NoError(t, err)
			more := appendN(t, j, 2)
			require.NoError(t, j.Close())
			_, frames, err = Open(path, id, Start, true, true)
			require.NoError(t, err)
			require.Len(t, frames, want+2)
			require.Equal(t, more[1], frames[want+1].End)
		})
	}
}

// After many passes of the ring, its space holds stale frames of earlier
// passes, complete and checksum-valid: they all have lower sequence
// numbers than the chain's next, so neither a reopening nor a torn last
// frame raises a false alarm.
func TestStaleFramesOfEarlierPasses(t *testing.T) {
	path, id, j := newJournal(t, 16<<10)
	var ends []Position
	size := func(i int) int { return 200 + (i*53)%900 }
	for i := 1; i <= 200; i++ {
		pos, err := j.Append(1, payload(i, size(i)))
		if err == ErrFull {
			j.Checkpointed(ends[len(ends)-3].Seq) // keep the last two pending
			pos, err = j.Append(1, payload(i, size(i)))
		}
		require.NoError(t, err)
		ends = append(ends, pos)
	}
	require.NoError(t, j.Close())
	n := len(ends)
	ckpt := ends[n-6]
	_, frames, err := Open(path, id, ckpt, true, true)
	require.NoError(t, err)
	require.Len(t, frames, 5)
	require.Less(t, ends[n-1].Off, ends[n-7].Off, "the pending frames wrapped past the end of the ring")
	// Tear the last frame: the chain stops before it, where stale frames
	// follow.
	start := ends[n-1].Off - frameSize(size(n))
	patch(t, path, start+FrameHeader+5, []byte{0xaa, 0xbb})
	_, frames, err = Open(path, id, ckpt, true, true)
	require.NoError(t, err)
	require.Len(t, frames, 4)
	require.Equal(t, ends[n-2], frames[3].End)
}

// A torn frame is rewritten by the next run, possibly with another length;
// what remains of it fails its checksum and is never taken. The chain of
// checksums also refuses a complete frame that names another predecessor
// (made here by rewriting frame 2 in place behind the writer's back).
func TestTornAndStaleFrames(t *testing.T) {
	path, id, j := newJournal(t, 64<<10)
	_, err := j.Append(1, payload(1, 500))
	require.NoError(t, err)
	p2, err := j.Append(1, payload(2, 500))
	require.NoError(t, err)
	p3, err := j.Append(1, payload(3, 500))
	require.NoError(t, err)
	require.NoError(t, j.Close())
	patch(t, path, p2.Off+FrameHeader+10, []byte{0xff}) // tear frame 3, the last

	j, frames, err := Open(path, id, Start, false, true)
	require.NoError(t, err)
	require.Len(t, frames, 2, "stops at the torn frame")
	p3b, err := j.Append(1, payload(9, 100)) // shorter: the torn frame's tail remains
	require.NoError(t, err)
	require.Equal(t, p3.Seq, p3b.Seq)
	require.Less(t, p3b.Off, p3.Off)
	p4, err := j.Append(1, payload(10, 100))
	require.NoError(t, err)
	require.NoError(t, j.Close())
	_, frames, err = Open(path, id, Start, true, true)
	require.NoError(t, err)
	require.Len(t, frames, 4)
	require.Equal(t, p4, frames[3].End)

	// Frame 2 rewritten in place, same length, other bytes: frame 3 on
	// disk is complete and at the offset that follows, but names the old
	// frame 2's checksum.
	path, id, j = newJournal(t, 64<<10)
	ends := appendN(t, j, 3)
	j.last, j.pending = ends[0], nil
	p2b, err := j.Append(1, payload(7, 300+37*2))
	require.NoError(t, err)
	require.Equal(t, ends[1].Off, p2b.Off)
	require.NotEqual(t, ends[1].CRC, p2b.CRC)
	require.NoError(t, j.Close())
	_, frames, err = Open(path, id, Start, true, true)
	require.NoError(t, err)
	require.Len(t, frames, 2, "the stale frame 3 is not taken")
	require.Equal(t, payload(7, 300+37*2), frames[1].Payload)
}

// The scan for intact later frames reads the ring in chunks: a frame
// whose header straddles a chunk's end, or whose payload crosses one, is
// found all the same.
func TestScanAcrossChunks(t *testing.T) {
	for _, keep := range []int{2, 3} {
		path, id, j := newJournal(t, 3*scanChunk)
		var starts []int64
		for _, n := range []int{scanChunk - 48, 1000, scanChunk, 100} {
			starts = append(starts, j.Last().Off)
			_, err := j.Append(1, payload(n, n))
			require.NoError(t, err)
		}
		require.NoError(t, j.Close())
		require.EqualValues(t, HeaderSize+scanChunk-16, starts[1], "frame 2's header straddles the first chunk's end")
		require.Less(t, starts[2], int64(HeaderSize+2*scanChunk))
		require.Greater(t, starts[3], int64(HeaderSize+2*scanChunk), "frame 3 crosses the second chunk's end")
		patch(t, path, HeaderSize+FrameHeader+7, []byte{0x99}) // frame 1
		for k := 2; k <= 4; k++ {
			if k != keep {
				patch(t, path, starts[k-1], make([]byte, 8))
			}
		}
		requireDamage(t, path, id, Start, 1, HeaderSize, uint64(keep))
	}
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

// BenchmarkOpen opens a 64 MiB journal holding 15 MiB of frames past the
// checkpoint (the chain is read, then the rest of the ring scanned for
// damage), and times the scan of the rest alone.
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), "j")
	id, err := Create(path, 64<<20)
	require.NoError(b, err)
	j, _, err := Open(path, id, Start, false, true)
	require.NoError(b, err)
	p := make([]byte, 256<<10)
	for i := range p {
		p[i] = byte(i*7 + 3)
	}
	for i := 0; i < 60; i++ {
		_, err := j.Append(1, p)
		require.NoError(b, err)
	}
	require.NoError(b, j.Close())
	b.Run("open", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			j, _, err := Open(path, id, Start, true, true)
			require.NoError(b, err)
			_ = j.Close()
		}
	})
	b.Run("scan", func(b *testing.B) {
		j, _, err := Open(path, id, Start, true, true)
		require.NoError(b, err)
		defer j.Close()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := j.scanAbove(62); err != nil {
				b.Fatal(err)
			}
		}
	})
}
