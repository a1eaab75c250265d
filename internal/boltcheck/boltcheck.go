// Package boltcheck reads the structure of a bbolt file with plain,
// bounds-checked reads, so that a damaged file is reported as an error
// before bbolt maps it.
//
// bbolt trusts its file. A file shorter than its meta page says is mapped
// anyway, and touching the missing tail kills the process with SIGBUS; a
// damaged page makes bbolt panic, and when it rebuilds its freelist at Open
// (the store never syncs the freelist while it runs, so it does this after
// every crash) it walks the tree in a goroutine of its own, where no
// recover can reach. Inspect and Walk look at the same structures first,
// with every page id, offset and length checked against the file.
//
// The package reads through an io.ReaderAt and never writes. It knows the
// bbolt file format (version 2) and nothing about what raftbolt stores in it.
package boltcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
)

// ErrNotBolt means neither meta page carries bbolt's magic number.
var ErrNotBolt = errors.New("not a bbolt database")

// ErrDamaged means the file is a bbolt database whose structure is broken.
var ErrDamaged = errors.New("damaged bbolt file")

// bbolt's on-disk constants (go.etcd.io/bbolt/internal/common).
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	pageHeaderSize  = 16
	elementSize     = 16 // branch and leaf elements are both 16 bytes
	metaSize        = 64
	metaSumOffset   = 56
	inBucketSize    = 16
	branchPageFlag  = 0x01
	leafPageFlag    = 0x02
	freelistFlag    = 0x10
	bucketLeafFlag  = 0x01
	noFreelist      = ^uint64(0)
	maxDepth        = 64
	minPageSize     = 512
	maxPageSize     = 1 << 20
	freelistOverrun = 0xFFFF
)

// ioError marks a failure to read the file, as opposed to content that
// fails a check.
type ioError struct{ err error }

func (e *ioError) Error() string { return e.err.Error() }
func (e *ioError) Unwrap() error { return e.err }

// byteOrder is the order bbolt writes its structures in: the host's.
var byteOrder = binary.NativeEndian

// Meta is the meta page bbolt will use.
type Meta struct {
	PageSize int
	Root     uint64 // page of the root bucket
	Freelist uint64 // page of the freelist, or ^0 when it is not synced
	HighMark uint64 // number of pages in use (the high water mark)
	Txid     uint64
}

// FreelistSynced reports whether the file holds a freelist page. When it
// does not, bbolt rebuilds the freelist by walking every page at Open.
func (m Meta) FreelistSynced() bool { return m.Freelist != noFreelist }

// Report is what Inspect found.
type Report struct {
	Size int64
	Meta Meta
	// BadMeta lists the meta pages (0, 1) that failed validation. bbolt
	// silently uses the other one; after a crash that is a torn meta write
	// of an unacknowledged commit, otherwise it means the newest commit may
	// have been lost.
	BadMeta []int
}

// Inspect validates the meta pages of a file of the given size, that the
// file holds every page the chosen meta page counts, and the freelist page.
func Inspect(r io.ReaderAt, size int64) (Report, error) {
	rep := Report{Size: size}
	metas, errs := readMetas(r, size)
	for _, err := range errs {
		var ioErr *ioError
		if errors.As(err, &ioErr) {
			return rep, ioErr.err // the file could not be read: not a verdict on its content
		}
	}
	best := -1
	magic := false
	for i, m := range metas {
		if errs[i] == nil {
			if best < 0 || m.Txid > metas[best].Txid {
				best = i
			}
		} else {
			rep.BadMeta = append(rep.BadMeta, i)
		}
		if !errors.Is(errs[i], ErrNotBolt) {
			magic = true
		}
	}
	if best < 0 {
		if !magic {
			return rep, ErrNotBolt
		}
		return rep, fmt.Errorf("%w: both meta pages are invalid (page 0: %v; page 1: %v)", ErrDamaged, errs[0], errs[1])
	}
	m := metas[best]
	rep.Meta = m
	if m.HighMark > uint64(size)/uint64(m.PageSize) {
		return rep, fmt.Errorf("%w: file is %d bytes, but its meta page (txid %d) counts %d pages of %d bytes: the file was truncated",
			ErrDamaged, size, m.Txid, m.HighMark, m.PageSize)
	}
	if m.Root < 2 || m.Root >= m.HighMark {
		return rep, fmt.Errorf("%w: root page %d outside [2, %d)", ErrDamaged, m.Root, m.HighMark)
	}
	if h, err := readHeader(r, m, m.Root); err != nil {
		return rep, err
	} else if h.flags != branchPageFlag && h.flags != leafPageFlag {
		return rep, fmt.Errorf("%w: root page %d has page flags %#x", ErrDamaged, m.Root, h.flags)
	}
	if m.FreelistSynced() {
		if _, err := readFreelist(r, m); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func readMetas(r io.ReaderAt, size int64) ([2]Meta, [2]error) {
	var metas [2]Meta
	var errs [2]error
	metas[0], errs[0] = readMeta(r, size, 0)
	pageSize := metas[0].PageSize
	if errs[0] != nil {
		// Page 0 is unusable, so its page size is unknown: look for the
		// second meta page where each plausible page size would put it.
		errs[1] = ErrNotBolt
		for ps := int64(1024); ps <= 64*1024; ps *= 2 {
			if m, err := readMeta(r, size, ps); err == nil || !errors.Is(err, ErrNotBolt) {
				metas[1], errs[1] = m, err
				if err == nil && int64(m.PageSize) != ps {
					errs[1] = fmt.Errorf("meta page at offset %d says page size %d", ps, m.PageSize)
				}
				break
			}
		}
		return metas, errs
	}
	metas[1], errs[1] = readMeta(r, size, int64(pageSize))
	return metas, errs
}

func readMeta(r io.ReaderAt, size, off int64) (Meta, error) {
	var buf [pageHeaderSize + metaSize]byte
	if off+int64(len(buf)) > size {
		return Meta{}, ErrNotBolt
	}
	if _, err := r.ReadAt(buf[:], off); err != nil {
		return Meta{}, &ioError{fmt.Errorf("read meta page at offset %d: %w", off, err)}
	}
	b := buf[pageHeaderSize:]
	if byteOrder.Uint32(b[0:]) != boltMagic {
		return Meta{}, ErrNotBolt
	}
	if v := byteOrder.Uint32(b[4:]); v != boltVersion {
		return Meta{}, fmt.Errorf("bbolt file format version %d, expected %d", v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(b[:metaSumOffset])
	if byteOrder.Uint64(b[metaSumOffset:]) != h.Sum64() {
		return Meta{}, errors.New("meta page checksum mismatch")
	}
	m := Meta{
		PageSize: int(byteOrder.Uint32(b[8:])),
		Root:     byteOrder.Uint64(b[16:]),
		Freelist: byteOrder.Uint64(b[32:]),
		HighMark: byteOrder.Uint64(b[40:]),
		Txid:     byteOrder.Uint64(b[48:]),
	}
	if m.PageSize < minPageSize || m.PageSize > maxPageSize || m.PageSize&(m.PageSize-1) != 0 {
		return Meta{}, fmt.Errorf("page size %d", m.PageSize)
	}
	if m.HighMark < 3 {
		return Meta{}, fmt.Errorf("high water mark %d", m.HighMark)
	}
	return m, nil
}

// readFreelist validates the freelist page and returns the free page ids.
func readFreelist(r io.ReaderAt, m Meta) ([]uint64, error) {
	id := m.Freelist
	if id < 2 || id >= m.HighMark {
		return nil, fmt.Errorf("%w: freelist page %d outside [2, %d)", ErrDamaged, id, m.HighMark)
	}
	hdr, err := readHeader(r, m, id)
	if err != nil {
		return nil, err
	}
	if hdr.flags != freelistFlag {
		return nil, fmt.Errorf("%w: freelist page %d has page flags %#x", ErrDamaged, id, hdr.flags)
	}
	span := int64(hdr.overflow+1) * int64(m.PageSize)
	buf := make([]byte, span)
	if _, err := r.ReadAt(buf, int64(id)*int64(m.PageSize)); err != nil {
		return nil, fmt.Errorf("%w: read freelist page %d: %v", ErrDamaged, id, err)
	}
	body := buf[pageHeaderSize:]
	n := uint64(hdr.count)
	if hdr.count == freelistOverrun {
		if len(body) < 8 {
			return nil, fmt.Errorf("%w: freelist page %d truncated", ErrDamaged, id)
		}
		n = byteOrder.Uint64(body)
		body = body[8:]
	}
	if n > uint64(len(body))/8 {
		return nil, fmt.Errorf("%w: freelist page %d counts %d ids but holds room for %d", ErrDamaged, id, n, len(body)/8)
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = byteOrder.Uint64(body[8*i:])
		if ids[i] < 2 || ids[i] >= m.HighMark {
			return nil, fmt.Errorf("%w: freelist page %d lists page %d outside [2, %d)", ErrDamaged, id, ids[i], m.HighMark)
		}
		if i > 0 && ids[i] <= ids[i-1] {
			return nil, fmt.Errorf("%w: freelist page %d is not sorted at entry %d", ErrDamaged, id, i)
		}
	}
	return ids, nil
}

type header struct {
	id       uint64
	flags    uint16
	count    uint16
	overflow uint32
}

func parseHeader(b []byte) header {
	return header{
		id:       byteOrder.Uint64(b),
		flags:    byteOrder.Uint16(b[8:]),
		count:    byteOrder.Uint16(b[10:]),
		overflow: byteOrder.Uint32(b[12:]),
	}
}

func readHeader(r io.ReaderAt, m Meta, id uint64) (header, error) {
	var b [pageHeaderSize]byte
	if _, err := r.ReadAt(b[:], int64(id)*int64(m.PageSize)); err != nil {
		return header{}, fmt.Errorf("%w: read page %d: %v", ErrDamaged, id, err)
	}
	h := parseHeader(b[:])
	if h.id != id {
		return h, fmt.Errorf("%w: page %d identifies itself as page %d", ErrDamaged, id, h.id)
	}
	if uint64(h.overflow) >= m.HighMark-id {
		return h, fmt.Errorf("%w: page %d has %d overflow pages, past the high water mark %d", ErrDamaged, id, h.overflow, m.HighMark)
	}
	return h, nil
}

// Walk checks every page reachable from the root bucket the way bbolt's
// own consistency check does (bbolt runs that check at Open when the
// freelist is not synced): page ids within the file, pages of the right
// type that identify themselves, no page reachable twice (so no cycle),
// every element and key inside its page, keys in strictly ascending order
// within and across pages, nested and inline buckets alike.
//
// With a synced freelist it also checks that no page in use is listed as
// free: bbolt would hand such a page to the next write, overwriting live
// data.
func Walk(r io.ReaderAt, rep Report) error {
	w := &walker{r: r, m: rep.Meta, seen: make([]uint64, (rep.Meta.HighMark+63)/64)}
	if rep.Meta.FreelistSynced() {
		ids, err := readFreelist(r, rep.Meta)
		if err != nil {
			return err
		}
		for _, id := range ids {
			w.mark(id, 0)
		}
		h, err := readHeader(r, rep.Meta, rep.Meta.Freelist)
		if err != nil {
			return err
		}
		if !w.mark(rep.Meta.Freelist, h.overflow) {
			return fmt.Errorf("%w: the freelist lists its own page %d as free", ErrDamaged, rep.Meta.Freelist)
		}
	}
	if !w.mark(0, 0) || !w.mark(1, 0) {
		return fmt.Errorf("%w: the freelist lists a meta page as free", ErrDamaged)
	}
	_, err := w.tree(rep.Meta.Root, nil, nil, 0)
	return err
}

type walker struct {
	r    io.ReaderAt
	m    Meta
	seen []uint64 // bitmap of pages reached so far
	bufs [][]byte // bufs[depth] holds the page being checked at that depth
}

func (w *walker) mark(id uint64, overflow uint32) bool {
	for p := id; p <= id+uint64(overflow); p++ {
		if w.seen[p/64]&(1<<(p%64)) != 0 {
			return false
		}
	}
	for p := id; p <= id+uint64(overflow); p++ {
		w.seen[p/64] |= 1 << (p % 64)
	}
	return true
}

// tree walks the subtree at page id, whose keys must lie in [lo, hi) (nil
// bounds are open), and returns the largest key in it.
func (w *walker) tree(id uint64, lo, hi []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: tree deeper than %d pages at page %d", ErrDamaged, maxDepth, id)
	}
	if id < 2 || id >= w.m.HighMark {
		return nil, fmt.Errorf("%w: page %d outside [2, %d)", ErrDamaged, id, w.m.HighMark)
	}
	h, err := readHeader(w.r, w.m, id)
	if err != nil {
		return nil, err
	}
	if !w.mark(id, h.overflow) {
		return nil, fmt.Errorf("%w: page %d is reachable twice, or listed as free", ErrDamaged, id)
	}
	// The page stays in bufs[depth] while its children are checked: its
	// keys are their bounds.
	span := int(h.overflow+1) * w.m.PageSize
	for len(w.bufs) <= depth {
		w.bufs = append(w.bufs, nil)
	}
	if cap(w.bufs[depth]) < span {
		w.bufs[depth] = make([]byte, span)
	}
	page := w.bufs[depth][:span]
	if _, err := w.r.ReadAt(page, int64(id)*int64(w.m.PageSize)); err != nil {
		return nil, fmt.Errorf("%w: read page %d: %v", ErrDamaged, id, err)
	}
	return w.node(id, h, page, lo, hi, depth)
}

// node checks a branch or leaf page (or an inline bucket's page) held in
// page, and recurses into its children and nested buckets.
func (w *walker) node(id uint64, h header, page, lo, hi []byte, depth int) ([]byte, error) {
	n := int(h.count)
	if pageHeaderSize+n*elementSize > len(page) {
		return nil, fmt.Errorf("%w: page %d counts %d elements, more than fit", ErrDamaged, id, n)
	}
	switch h.flags {
	case branchPageFlag:
		if n == 0 {
			return nil, fmt.Errorf("%w: branch page %d is empty", ErrDamaged, id)
		}
		prev, maxKey := lo, []byte(nil)
		for i := 0; i < n; i++ {
			e := pageHeaderSize + i*elementSize
			pos, ksize := int(byteOrder.Uint32(page[e:])), int(byteOrder.Uint32(page[e+4:]))
			child := byteOrder.Uint64(page[e+8:])
			key, err := slice(page, e+pos, ksize, id, i)
			if err != nil {
				return nil, err
			}
			if err := order(id, i, key, prev, hi, i > 0); err != nil {
				return nil, err
			}
			next := hi
			if i+1 < n {
				ne := pageHeaderSize + (i+1)*elementSize
				next, err = slice(page, ne+int(byteOrder.Uint32(page[ne:])), int(byteOrder.Uint32(page[ne+4:])), id, i+1)
				if err != nil {
					return nil, err
				}
			}
			if maxKey, err = w.tree(child, key, next, depth+1); err != nil {
				return nil, err
			}
			prev = maxKey
		}
		return maxKey, nil
	case leafPageFlag:
		prev := lo
		for i := 0; i < n; i++ {
			e := pageHeaderSize + i*elementSize
			flags := byteOrder.Uint32(page[e:])
			pos := int(byteOrder.Uint32(page[e+4:]))
			ksize, vsize := int(byteOrder.Uint32(page[e+8:])), int(byteOrder.Uint32(page[e+12:]))
			if flags&^bucketLeafFlag != 0 {
				return nil, fmt.Errorf("%w: page %d element %d has flags %#x", ErrDamaged, id, i, flags)
			}
			key, err := slice(page, e+pos, ksize, id, i)
			if err != nil {
				return nil, err
			}
			value, err := slice(page, e+pos+ksize, vsize, id, i)
			if err != nil {
				return nil, err
			}
			if err := order(id, i, key, prev, hi, i > 0); err != nil {
				return nil, err
			}
			prev = key
			if flags&bucketLeafFlag != 0 {
				if err := w.bucket(id, i, value, depth); err != nil {
					return nil, err
				}
			}
		}
		if n == 0 {
			return nil, nil
		}
		return prev, nil
	default:
		return nil, fmt.Errorf("%w: page %d has page flags %#x, expected a branch or leaf page", ErrDamaged, id, h.flags)
	}
}

// bucket checks the nested bucket stored as element i of page id.
func (w *walker) bucket(id uint64, i int, value []byte, depth int) error {
	if len(value) < inBucketSize {
		return fmt.Errorf("%w: page %d element %d: bucket header of %d bytes", ErrDamaged, id, i, len(value))
	}
	root := byteOrder.Uint64(value)
	if root != 0 {
		_, err := w.tree(root, nil, nil, depth+1)
		return err
	}
	inline := value[inBucketSize:]
	if len(inline) < pageHeaderSize {
		return fmt.Errorf("%w: page %d element %d: inline bucket of %d bytes", ErrDamaged, id, i, len(inline))
	}
	h := parseHeader(inline)
	if h.flags != leafPageFlag {
		return fmt.Errorf("%w: page %d element %d: inline bucket page has flags %#x", ErrDamaged, id, i, h.flags)
	}
	_, err := w.node(id, h, inline, nil, nil, depth+1)
	return err
}

// slice returns page[off:off+n] after checking that it lies inside page.
func slice(page []byte, off, n int, id uint64, i int) ([]byte, error) {
	if off < 0 || n < 0 || off > len(page) || n > len(page)-off {
		return nil, fmt.Errorf("%w: page %d element %d points outside its page", ErrDamaged, id, i)
	}
	return page[off : off+n], nil
}

// order checks that the i-th key of page id follows prev (strictly, unless
// prev is the closed lower bound inherited from the parent) and precedes hi.
func order(id uint64, i int, key, prev, hi []byte, strict bool) error {
	if prev != nil {
		if c := bytes.Compare(key, prev); c < 0 || strict && c == 0 {
			return fmt.Errorf("%w: page %d element %d: key %x does not sort after %x", ErrDamaged, id, i, key, prev)
		}
	}
	if hi != nil && bytes.Compare(key, hi) >= 0 {
		return fmt.Errorf("%w: page %d element %d: key %x is not below its upper bound %x", ErrDamaged, id, i, key, hi)
	}
	return nil
}
