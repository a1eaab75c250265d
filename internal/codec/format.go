package codec

import (
	"encoding/binary"
	"fmt"
)

// Format record layout (integers little-endian). Its first 12 bytes are
// fixed for every format version, so any build can recognise a store and
// read its version before it knows how to read anything else:
//
//	offset  size  field
//	0       8     magic "RAFTBOLT"
//	8       4     format version
//	12      1     kind (1 log store, 2 state machine)
//	13      3     reserved, zero
//	16      4     CRC32C of bytes 0-15
const (
	formatSize = 20
	// Magic identifies a raftbolt file.
	Magic = "RAFTBOLT"
)

// Kind says which raftbolt file a format record belongs to.
type Kind byte

// The kinds of raftbolt files.
const (
	KindLogStore     Kind = 1
	KindStateMachine Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindLogStore:
		return "log store"
	case KindStateMachine:
		return "state machine"
	}
	return fmt.Sprintf("kind %d", byte(k))
}

// Format is the content of a format record.
type Format struct {
	Version uint32
	Kind    Kind
}

// AppendFormat appends the format record f to dst.
func AppendFormat(dst []byte, f Format) []byte {
	start := len(dst)
	dst = append(dst, Magic...)
	dst = binary.LittleEndian.AppendUint32(dst, f.Version)
	dst = append(dst, byte(f.Kind), 0, 0, 0)
	return appendSum(dst, start)
}

// DecodeFormat decodes a format record written by format version at most
// known. A record of a newer version returns its Format and an error
// wrapping ErrVersion; its checksum is not checked, because a newer
// version may lay the rest of the record out differently.
func DecodeFormat(rec []byte, known uint32) (Format, error) {
	if len(rec) < 12 || string(rec[:8]) != Magic {
		return Format{}, fmt.Errorf("%w: no %q magic", ErrMalformed, Magic)
	}
	f := Format{Version: binary.LittleEndian.Uint32(rec[8:])}
	if f.Version > known {
		return f, fmt.Errorf("%w: format version %d (this build reads up to %d)", ErrVersion, f.Version, known)
	}
	if len(rec) != formatSize {
		return f, ErrTruncated
	}
	if _, err := verifySum(rec); err != nil {
		return f, err
	}
	f.Kind = Kind(rec[12])
	if f.Version == 0 || rec[13]|rec[14]|rec[15] != 0 {
		return f, fmt.Errorf("%w: format record %x", ErrMalformed, rec)
	}
	return f, nil
}

// Key returns the bbolt key of log index i: 8 bytes, big-endian, so that
// bbolt's byte order is index order.
func Key(i uint64) [8]byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], i)
	return k
}

// Uint64 decodes an 8-byte big-endian value, such as a log key or a value
// stored with PutUint64. ok is false when b is not 8 bytes long.
func Uint64(b []byte) (v uint64, ok bool) {
	if len(b) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// PutUint64 returns the 8-byte big-endian encoding of v.
func PutUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v) }
