// Package journal owns the append journal that sits in front of a store's
// bbolt file: one preallocated file overwritten in place as a ring of
// checksummed frames, each made durable with one fdatasync.
//
// It knows nothing of what a frame holds (the store encodes its batches)
// nor of bbolt: the store checkpoints frames into its bbolt file and tells
// the journal how far it got (Checkpointed), recording the same Position in
// the checkpoint's own transaction; at Open it hands that Position back and
// gets the frames written after it.
//
// Format (little-endian). The file is Size bytes, zero-filled when created
// so that later writes never allocate blocks (a sync then writes data, not
// file-system metadata). Its first block is the header:
//
//	0   8  magic "RBJOURN1"
//	8   4  version (1)
//	12  4  reserved, 0
//	16  8  size of the file
//	24  8  journal id (random, also in the store's checkpoint record)
//	32  4  CRC32C of bytes 0..32
//
// Frames follow from offset HeaderSize, each 8-byte aligned:
//
//	0   4  magic 0x46_4a_42_52 ("RBJF")
//	4   4  payload length
//	8   8  sequence number (the first frame is 1; each next one is +1)
//	16  1  kind (the caller's)
//	17  7  reserved, 0
//	24  4  CRC32C of the previous frame (the checkpoint's, for the first after it)
//	28  4  CRC32C of the journal id, bytes 0..28 and the payload
//	32  …  payload
//
// A frame that does not fit before the end of the file is written at
// HeaderSize instead. Recovery reads from the checkpoint's offset, taking a
// frame only when its checksum holds, its sequence number is the next one
// and it names the previous frame's checksum; where none is, it looks at
// HeaderSize once (a wrap); otherwise the chain stops. The chain of
// checksums makes a complete but stale frame (of an earlier pass of the
// ring, or one that names a predecessor since rewritten) never follow the
// frames before it.
//
// Torn tail or damage. Where the chain stops, at offset P after frame N,
// recovery must tell two things apart: frame N+1 was never completed (a
// crash cut its write short; it was never acknowledged, and dropping it is
// right), or it was completed and later damaged (a bit flip, a zeroed
// block): then it and every frame after it were acknowledged, and dropping
// them silently would lose acknowledged entries. So recovery scans the
// ring, every 8-byte-aligned offset from HeaderSize to the end but those
// of the frames it just recovered, for a complete frame of this journal
// whose own checksum (journal id, header, payload) holds and whose
// sequence number is above N+1. If there is one, Open fails with an error
// wrapping errs.ErrCorrupt (a DamageError) that says where the chain
// breaks and how far the journal went.
//
// Why a torn tail never has such a frame (soundness: no false alarm):
//
//   - Frames are written one at a time, each after the previous one's
//     write and fdatasync returned. A frame with sequence number M > N+1 of
//     this journal was written by a run that had, before it, either
//     written frame N+1 itself, completely and durably, or recovered it
//     intact at its Open (it started past N+1). Either way frame N+1 was
//     complete once, before M was written.
//   - After that, nothing legitimately overwrites frame N+1: the writer
//     overwrites only checkpointed frames, and the checkpoint this recovery
//     starts from is the newest one (checkpoints only advance) and lies at
//     or before N. A later run rewrites frame N+1 only if its own recovery
//     stopped before it, which with this check happens only when no intact
//     frame above N+1 was left, i.e. never while M is intact.
//   - Sequence numbers only grow, across runs too: a run continues from the
//     last frame it recovered, which is at or past the checkpoint. So the
//     stale frames of earlier passes of the ring are all at or below the
//     checkpoint's sequence number (their space was free for reuse only
//     because they were checkpointed), and a frame that a crash tore and
//     the next run rewrote (same sequence number, in place or not; its remains
//     fail their checksum) leaves nothing above N+1 either. A journal
//     created again has a new id, which every frame's checksum covers.
//   - Only a checksum collision makes damage look like a frame.
//
// The recovered frames' own spans need no scan: from their writing on they
// were not checkpointed, so the writer never put a later frame over them.
//
// So a complete frame above N+1 proves frame N+1 was completed and
// acknowledged: its loss is damage, reported. The converse has a limit:
// damage that leaves no intact frame after the break (it hits the last
// acknowledged frame, or every frame from the break to the end) looks
// exactly like a torn tail, and those frames are dropped as such. With
// noSync (no fdatasync per frame), a power loss can keep a later frame
// and lose an earlier one; recovery then reports it, which is the truth:
// acknowledged entries were lost.
//
// The scan reads the rest of the file in large chunks and tests the frame
// magic first, so Open reads the journal once in all (the frames, then the
// rest: about 6 ms for 64 MiB from the page cache) and checksums only the
// rare candidate above N+1.
//
// Invariant: the writer never overwrites a frame that is not checkpointed;
// when the ring has no room, Append returns ErrFull and the caller
// checkpoints first.
package journal

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/raftbolt/raftbolt/internal/boltfile"
	"github.com/raftbolt/raftbolt/internal/errs"
)

// HeaderSize is the size of the header block; frames start after it.
const HeaderSize = 4096

// FrameHeader is the size of a frame's header.
const FrameHeader = 32

const (
	fileMagic  = "RBJOURN1"
	version    = 1
	frameMagic = 0x464a4252
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFull is returned by Append when the frame would overwrite frames not
// yet checkpointed.
var ErrFull = errors.New("journal full: checkpoint first")

// ErrTooLarge is returned by Append for a frame larger than the ring.
var ErrTooLarge = errors.New("frame larger than the journal")

// Position is how far the journal is applied: the sequence number and
// checksum of the last frame checkpointed, and the offset where the next
// one starts. The zero Position, with Off HeaderSize, is a new journal's.
type Position struct {
	Seq uint64
	Off int64
	CRC uint32
}

// Start is the position of a journal nothing was written to.
var Start = Position{Off: HeaderSize}

// Frame is one frame read back by Open.
type Frame struct {
	Seq     uint64
	Kind    byte
	Payload []byte
	End     Position // the position after this frame
}

// Journal is an open journal file. Append is for one writer at a time;
// Checkpointed may run concurrently with it.
type Journal struct {
	f      *os.File
	path   string
	size   int64
	id     uint64
	noSync bool

	// mu guards last and pending; Append holds it only to look at them.
	mu   sync.Mutex
	last Position // the last frame written
	// pending are the frames written and not checkpointed, oldest first:
	// the ring from pending[0].off to last.Off must not be overwritten.
	pending []span
	buf     []byte // Append's, reused
}

type span struct {
	seq      uint64
	off, end int64
}

// ID returns the journal's id.
func (j *Journal) ID() uint64 { return j.id }

// Path returns the journal's file name.
func (j *Journal) Path() string { return j.path }

// Size returns the journal file's size.
func (j *Journal) Size() int64 { return j.size }

// Create makes a new journal of size bytes at path, which must not exist,
// durably (zero-filled and synced under a temporary name, then linked into
// place and the directory synced), and returns its id.
func Create(path string, size int64) (uint64, error) {
	if size < HeaderSize+2*FrameHeader || size%HeaderSize != 0 {
		return 0, fmt.Errorf("%w: journal size %d is not a multiple of %d above %d", errs.ErrInvalid, size, HeaderSize, HeaderSize)
	}
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return 0, err
	}
	id := binary.LittleEndian.Uint64(idb[:]) | 1 // never 0: 0 means "no journal" in a checkpoint record
	tf, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".creating-*")
	if err != nil {
		return 0, err
	}
	tmp := tf.Name()
	defer os.Remove(tmp)
	err = fillFile(tf, size, id)
	if cerr := tf.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = boltfile.Link(tmp, path)
	}
	if err != nil {
		return 0, fmt.Errorf("create journal %s: %w", path, err)
	}
	return id, nil
}

// fillFile writes zeros up to size, then the header, and syncs.
func fillFile(f *os.File, size int64, id uint64) error {
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(zeros)) {
		n := min(int64(len(zeros)), size-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
	}
	if _, err := f.WriteAt(header(size, id), 0); err != nil {
		return err
	}
	return f.Sync()
}

func header(size int64, id uint64) []byte {
	h := make([]byte, 36)
	copy(h, fileMagic)
	binary.LittleEndian.PutUint32(h[8:], version)
	binary.LittleEndian.PutUint64(h[16:], uint64(size))
	binary.LittleEndian.PutUint64(h[24:], id)
	binary.LittleEndian.PutUint32(h[32:], crc32.Checksum(h[:32], castagnoli))
	return h
}

// Open opens the journal at path and reads the frames written after from,
// which is the position the store last checkpointed. id is the journal id
// of the store's checkpoint record: a journal of another id is not this
// store's, and Open says so (errs.ErrCorrupt) rather than replay it.
// readOnly opens never write.
func Open(path string, id uint64, from Position, readOnly, noSync bool) (*Journal, []Frame, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, nil, err
	}
	j := &Journal{f: f, path: path, noSync: noSync}
	frames, err := j.load(id, from)
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("journal %s: %w", path, err)
	}
	return j, frames, nil
}

// Report is what Inspect finds in a journal file.
type Report struct {
	Size int64  // the file's size, from its header (0 if the header is unreadable)
	ID   uint64 // the journal's id, from its header
	// The frames past the checkpoint that recovery takes, in order: how
	// many, the bytes of the ring they hold, the first's and last's
	// sequence numbers (0 when there are none), and the position after
	// the last (the checkpoint's when there are none).
	Frames            int
	Bytes             int64
	FirstSeq, LastSeq uint64
	End               Position
}

// Inspect reads the journal at path without writing it, as Open would
// with the store's journal id and checkpoint position (id, from): the
// header, the frames past the checkpoint, and damage (Open's errors: a
// header that does not check, another journal's id, a chain that stops at
// damage; they wrap errs.ErrCorrupt, and a chain that stops at damage is a
// *DamageError). The Report holds what was read before any error.
func Inspect(path string, id uint64, from Position) (Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return Report{}, err
	}
	defer f.Close()
	j := &Journal{f: f, path: path}
	frames, err := j.load(id, from)
	r := Report{Size: j.size, ID: j.id, End: from}
	for _, fr := range frames {
		r.Frames++
		r.Bytes += frameSize(len(fr.Payload))
		if r.FirstSeq == 0 {
			r.FirstSeq = fr.Seq
		}
		r.LastSeq, r.End = fr.Seq, fr.End
	}
	if err != nil {
		return r, fmt.Errorf("journal %s: %w", path, err)
	}
	return r, nil
}

// RecordSize is the size of an encoded Record.
const RecordSize = 28

// Record is what a store records of its journal in each checkpoint's
// transaction: the journal's id and the position checkpointed. Encoded,
// big-endian: id (8), then the position's Seq (8), Off (8) and CRC (4).
type Record struct {
	ID  uint64
	Pos Position
}

// Encode returns the record's RecordSize bytes.
func (r Record) Encode() []byte {
	v := make([]byte, 0, RecordSize)
	v = binary.BigEndian.AppendUint64(v, r.ID)
	v = binary.BigEndian.AppendUint64(v, r.Pos.Seq)
	v = binary.BigEndian.AppendUint64(v, uint64(r.Pos.Off))
	return binary.BigEndian.AppendUint32(v, r.Pos.CRC)
}

// DecodeRecord decodes what Encode returned; an error wraps
// errs.ErrCorrupt.
func DecodeRecord(v []byte) (Record, error) {
	if len(v) != RecordSize {
		return Record{}, fmt.Errorf("%w: journal record of %d bytes, not %d", errs.ErrCorrupt, len(v), RecordSize)
	}
	return Record{
		ID: binary.BigEndian.Uint64(v[0:]),
		Pos: Position{
			Seq: binary.BigEndian.Uint64(v[8:]),
			Off: int64(binary.BigEndian.Uint64(v[16:])),
			CRC: binary.BigEndian.Uint32(v[24:]),
		},
	}, nil
}

// load reads the header and the frames after from, and checks that the
// chain does not stop at damage (the package comment). On an error it
// returns the frames read before it, for Inspect; j.size and j.id are set
// once the header is read.
func (j *Journal) load(id uint64, from Position) ([]Frame, error) {
	fi, err := j.f.Stat()
	if err != nil {
		return nil, err
	}
	h := make([]byte, 36)
	if _, err := j.f.ReadAt(h, 0); err != nil {
		return nil, fmt.Errorf("%w: header: %v", errs.ErrCorrupt, err)
	}
	switch {
	case string(h[:8]) != fileMagic:
		return nil, fmt.Errorf("%w: not a raftbolt journal", errs.ErrCorrupt)
	case binary.LittleEndian.Uint32(h[32:]) != crc32.Checksum(h[:32], castagnoli):
		return nil, fmt.Errorf("%w: header checksum mismatch", errs.ErrCorrupt)
	case binary.LittleEndian.Uint32(h[8:]) != version:
		return nil, fmt.Errorf("%w: journal version %d", errs.ErrCorrupt, binary.LittleEndian.Uint32(h[8:]))
	}
	j.size = int64(binary.LittleEndian.Uint64(h[16:]))
	j.id = binary.LittleEndian.Uint64(h[24:])
	if j.size != fi.Size() {
		return nil, fmt.Errorf("%w: the header says %d bytes, the file has %d", errs.ErrCorrupt, j.size, fi.Size())
	}
	if j.id != id {
		return nil, fmt.Errorf("%w: journal id %x, the store's checkpoint names %x", errs.ErrCorrupt, j.id, id)
	}
	if from.Off < HeaderSize || from.Off > j.size || from.Off%8 != 0 {
		return nil, fmt.Errorf("%w: checkpoint offset %d outside the journal", errs.ErrCorrupt, from.Off)
	}
	j.last = from
	var frames []Frame
	for {
		fr, ok := j.readAt(from, from.Off)
		if !ok && from.Off != HeaderSize {
			fr, ok = j.readAt(from, HeaderSize)
		}
		if !ok {
			break
		}
		frames = append(frames, fr)
		j.pending = append(j.pending, span{seq: fr.Seq, off: fr.End.Off - frameSize(len(fr.Payload)), end: fr.End.Off})
		from = fr.End
		j.last = from
	}
	later, err := j.scanAbove(from.Seq + 1)
	if err != nil {
		return frames, fmt.Errorf("scan journal: %w", err)
	}
	if later != 0 {
		return frames, &DamageError{Off: from.Off, Seq: from.Seq + 1, Later: later}
	}
	return frames, nil
}

// DamageError is load's report of a chain that stops at damage: frame Seq,
// expected at offset Off (or at HeaderSize, had it not fit there), is not
// intact, yet intact frames up to Later were written after it. It wraps
// errs.ErrCorrupt.
type DamageError struct {
	Off   int64
	Seq   uint64
	Later uint64
}

func (e *DamageError) Error() string {
	return fmt.Sprintf("%v: journal frame %d at offset %d is damaged, but frames up to %d were written after it: "+
		"acknowledged entries would be lost", errs.ErrCorrupt, e.Seq, e.Off, e.Later)
}

func (e *DamageError) Unwrap() error { return errs.ErrCorrupt }

// scanChunk is how much of the ring scanAbove reads at a time.
const scanChunk = 1 << 20

var frameMagicBytes = binary.LittleEndian.AppendUint32(nil, frameMagic)

// scanAbove returns the highest sequence number above seq of a complete
// frame of this journal whose own checksum holds, starting at any
// 8-byte-aligned offset of the ring outside the spans of the chain just
// recovered (j.pending), or 0 if there is none. The chain's spans are
// skipped because no frame written after them can lie there: they were
// pending, never overwritten, from their writing on (the package comment;
// the chain was just read, too). The rest of the ring is read in chunks of
// scanChunk; the magic is the first test, then the header's sanity and
// the sequence number, and only a frame that passes them is checksummed.
func (j *Journal) scanAbove(seq uint64) (uint64, error) {
	var best uint64
	var buf []byte
	for _, r := range j.unrecovered() {
		for base := r[0]; base < r[1]; base += scanChunk {
			// Frame headers starting in [base, end) are looked at; the
			// buffer holds the last one's header too.
			end := min(base+scanChunk, r[1])
			n := min(end-base+FrameHeader, j.size-base)
			if n < FrameHeader {
				break
			}
			if buf == nil {
				buf = make([]byte, min(scanChunk+FrameHeader, j.size-HeaderSize))
			}
			b := buf[:n]
			if _, err := j.f.ReadAt(b, base); err != nil && err != io.EOF {
				return 0, err
			}
			starts := int(min(end-base, n-FrameHeader+1)) // offsets in b where a header is looked at
			for k := 0; k < starts; {
				i := bytes.Index(b[k:starts+len(frameMagicBytes)-1], frameMagicBytes)
				if i < 0 {
					break
				}
				k += i
				if k%8 != 0 { // base is 8-aligned: so is every frame's offset in b
					k++
					continue
				}
				if s, ok, err := j.frameAbove(b, k, base+int64(k), max(seq, best)); err != nil {
					return 0, err
				} else if ok {
					best = s
				}
				k += 8
			}
		}
	}
	return best, nil
}

// unrecovered returns the ranges of the ring, [from, to) by offset, that
// no span of j.pending covers.
func (j *Journal) unrecovered() [][2]int64 {
	spans := append([]span(nil), j.pending...)
	sort.Slice(spans, func(a, b int) bool { return spans[a].off < spans[b].off })
	var out [][2]int64
	at := int64(HeaderSize)
	for _, s := range spans {
		if s.off > at {
			out = append(out, [2]int64{at, s.off})
		}
		at = max(at, s.end)
	}
	if at < j.size {
		out = append(out, [2]int64{at, j.size})
	}
	return out
}

// frameAbove reports whether b[k:], at offset off of the file, starts a
// complete, checksum-valid frame of this journal with a sequence number
// above seq, and that number. b holds at least its header.
func (j *Journal) frameAbove(b []byte, k int, off int64, seq uint64) (uint64, bool, error) {
	h := b[k : k+FrameHeader]
	s := binary.LittleEndian.Uint64(h[8:])
	n := int64(binary.LittleEndian.Uint32(h[4:]))
	if s <= seq || binary.LittleEndian.Uint64(h[16:])&^0xff != 0 || off+frameSize(int(n)) > j.size {
		return 0, false, nil // not above seq, reserved bytes set, or past the end
	}
	var payload []byte
	if k+FrameHeader+int(n) <= len(b) {
		payload = b[k+FrameHeader : k+FrameHeader+int(n)]
	} else {
		payload = make([]byte, n)
		if _, err := j.f.ReadAt(payload, off+FrameHeader); err != nil && err != io.EOF {
			return 0, false, err
		}
	}
	if frameCRC(j.id, h[:28], payload) != binary.LittleEndian.Uint32(h[28:]) {
		return 0, false, nil
	}
	return s, true, nil
}

// readAt reads the frame that follows prev at off, if there is one.
func (j *Journal) readAt(prev Position, off int64) (Frame, bool) {
	if off+FrameHeader > j.size {
		return Frame{}, false
	}
	var h [FrameHeader]byte
	if _, err := j.f.ReadAt(h[:], off); err != nil {
		return Frame{}, false
	}
	n := int64(binary.LittleEndian.Uint32(h[4:]))
	seq := binary.LittleEndian.Uint64(h[8:])
	if binary.LittleEndian.Uint32(h[0:]) != frameMagic || seq != prev.Seq+1 ||
		binary.LittleEndian.Uint32(h[24:]) != prev.CRC || off+frameSize(int(n)) > j.size {
		return Frame{}, false
	}
	payload := make([]byte, n)
	if _, err := j.f.ReadAt(payload, off+FrameHeader); err != nil && err != io.EOF {
		return Frame{}, false
	}
	crc := frameCRC(j.id, h[:28], payload)
	if binary.LittleEndian.Uint32(h[28:]) != crc {
		return Frame{}, false
	}
	return Frame{Seq: seq, Kind: h[16], Payload: payload, End: Position{Seq: seq, Off: off + frameSize(int(n)), CRC: crc}}, true
}

func frameCRC(id uint64, head, payload []byte) uint32 {
	var idb [8]byte
	binary.LittleEndian.PutUint64(idb[:], id)
	c := crc32.Update(0, castagnoli, idb[:])
	c = crc32.Update(c, castagnoli, head)
	return crc32.Update(c, castagnoli, payload)
}

func frameSize(n int) int64 { return (FrameHeader + int64(n) + 7) &^ 7 }

// MaxPayload is the largest payload a frame of this journal can hold.
func (j *Journal) MaxPayload() int { return int(j.size-HeaderSize) - FrameHeader }

// Append writes one frame after the last and makes it durable (one
// fdatasync, unless the journal was opened with noSync), and returns the
// position after it. ErrFull: no room without overwriting a frame not yet
// checkpointed; ErrTooLarge: the frame can never fit. Nothing is written
// then. The caller serializes Appends.
func (j *Journal) Append(kind byte, payload []byte) (Position, error) {
	n := frameSize(len(payload))
	if n > j.size-HeaderSize {
		return Position{}, ErrTooLarge
	}
	j.mu.Lock()
	last := j.last
	off, ok := j.place(n)
	j.mu.Unlock()
	if !ok {
		return Position{}, ErrFull
	}
	buf := j.buf[:0]
	if cap(buf) < int(n) {
		buf = make([]byte, 0, n)
	}
	buf = buf[:n]
	clear(buf[:FrameHeader])
	binary.LittleEndian.PutUint32(buf[0:], frameMagic)
	binary.LittleEndian.PutUint32(buf[4:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(buf[8:], last.Seq+1)
	buf[16] = kind
	binary.LittleEndian.PutUint32(buf[24:], last.CRC)
	copy(buf[FrameHeader:], payload)
	clear(buf[FrameHeader+len(payload):])
	crc := frameCRC(j.id, buf[:28], payload)
	binary.LittleEndian.PutUint32(buf[28:], crc)
	j.buf = buf
	if _, err := j.f.WriteAt(buf, off); err != nil {
		return Position{}, fmt.Errorf("write journal %s at %d: %w", j.path, off, err)
	}
	if !j.noSync {
		if err := fdatasync(j.f); err != nil {
			return Position{}, fmt.Errorf("sync journal %s: %w", j.path, err)
		}
	}
	pos := Position{Seq: last.Seq + 1, Off: off + n, CRC: crc}
	j.mu.Lock()
	j.last = pos
	j.pending = append(j.pending, span{seq: pos.Seq, off: off, end: off + n})
	j.mu.Unlock()
	return pos, nil
}

// place returns where a frame of n bytes goes, if it fits; the caller
// holds mu.
func (j *Journal) place(n int64) (int64, bool) {
	w := j.last.Off
	if len(j.pending) == 0 {
		if w+n <= j.size {
			return w, true
		}
		return HeaderSize, true
	}
	c := j.pending[0].off // the oldest frame not checkpointed
	if c < w {            // pending frames lie in [c, w): free are [w, size) and [HeaderSize, c)
		if w+n <= j.size {
			return w, true
		}
		if HeaderSize+n <= c {
			return HeaderSize, true
		}
		return 0, false
	}
	// wrapped: pending frames lie in [c, size) and [HeaderSize, w); free is [w, c)
	if w+n <= c {
		return w, true
	}
	return 0, false
}

// Last returns the position after the last frame written.
func (j *Journal) Last() Position {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.last
}

// Pending returns the number of frames written and not checkpointed, and
// the bytes of the ring they hold.
func (j *Journal) Pending() (frames int, bytes int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, s := range j.pending {
		bytes += s.end - s.off
	}
	return len(j.pending), bytes
}

// Checkpointed tells the journal that every frame up to and including
// seq is in the store of record: their space may be overwritten.
func (j *Journal) Checkpointed(seq uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	k := 0
	for k < len(j.pending) && j.pending[k].seq <= seq {
		k++
	}
	j.pending = append(j.pending[:0], j.pending[k:]...)
}

// Close closes the file.
func (j *Journal) Close() error { return j.f.Close() }
