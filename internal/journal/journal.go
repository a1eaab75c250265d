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
// HeaderSize once (a wrap); otherwise it stops. The chain of checksums makes
// a complete but stale frame (of an earlier pass of the ring, or written
// after a frame that a crash tore and a later run rewrote) never follow
// the frames before it.
//
// Invariant: the writer never overwrites a frame that is not checkpointed;
// when the ring has no room, Append returns ErrFull and the caller
// checkpoints first.
package journal

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
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
	if from.Off < HeaderSize || from.Off > j.size {
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
	return frames, nil
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
