package codec

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// castagnoli is the CRC32C table. crc32 uses the SSE4.2/ARMv8 instructions
// for it where the CPU has them, so checksumming an entry costs nanoseconds.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors returned by the decoders. The store wraps them in its ErrCorrupt
// together with the key or index that failed.
var (
	// ErrChecksum means the record's CRC32C does not match its bytes.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrTruncated means the record is shorter than its own header says.
	ErrTruncated = errors.New("record truncated")
	// ErrMalformed means a field holds a value no encoder writes.
	ErrMalformed = errors.New("malformed record")
	// ErrVersion means the record was written by a newer codec version.
	ErrVersion = errors.New("unknown record version")
)

// crcSize is the length of the trailing checksum of every record.
const crcSize = 4

// sum returns the CRC32C of b.
func sum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// appendSum appends the CRC32C of the record that starts at dst[start:].
func appendSum(dst []byte, start int) []byte {
	return binary.LittleEndian.AppendUint32(dst, sum(dst[start:]))
}

// verifySum checks the trailing CRC32C of rec and returns the bytes before it.
func verifySum(rec []byte) ([]byte, error) {
	if len(rec) < crcSize {
		return nil, ErrTruncated
	}
	body := rec[:len(rec)-crcSize]
	if binary.LittleEndian.Uint32(rec[len(body):]) != sum(body) {
		return nil, ErrChecksum
	}
	return body, nil
}
