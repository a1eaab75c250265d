package codec

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// ValueVersion is the version byte of value records.
const ValueVersion = 1

// Value record layout, version 1, for the values of the stable bucket and
// the store's own integers:
//
//	offset  size  field
//	0       1     version (1)
//	1       V     the value
//	end-4   4     CRC32C of the key, then of every byte before it
//
// The checksum covers the key the record is stored under, so a record that
// a damaged page moved under another key fails its check.
const valueOverhead = 1 + crcSize

// AppendValue appends the record of value stored under key to dst.
func AppendValue(dst, key, value []byte) []byte {
	start := len(dst)
	dst = append(dst, ValueVersion)
	dst = append(dst, value...)
	c := crc32.Update(sum(key), castagnoli, dst[start:])
	return binary.LittleEndian.AppendUint32(dst, c)
}

// DecodeValue checks the record stored under key and returns its value,
// which aliases rec.
func DecodeValue(key, rec []byte) ([]byte, error) {
	if len(rec) < valueOverhead {
		return nil, ErrTruncated
	}
	body := rec[:len(rec)-crcSize]
	if binary.LittleEndian.Uint32(rec[len(body):]) != crc32.Update(sum(key), castagnoli, body) {
		return nil, ErrChecksum
	}
	if body[0] != ValueVersion {
		return nil, fmt.Errorf("%w %d (this build reads %d)", ErrVersion, body[0], ValueVersion)
	}
	return body[1:], nil
}

// AppendUint64Value appends the record of integer v (8 bytes, big-endian)
// stored under key.
func AppendUint64Value(dst, key []byte, v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return AppendValue(dst, key, b[:])
}

// DecodeUint64Value decodes a record written by AppendUint64Value.
func DecodeUint64Value(key, rec []byte) (uint64, error) {
	v, err := DecodeValue(key, rec)
	if err != nil {
		return 0, err
	}
	n, ok := Uint64(v)
	if !ok {
		return 0, fmt.Errorf("%w: %d-byte value where an 8-byte integer belongs", ErrMalformed, len(v))
	}
	return n, nil
}
