package codec

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/hashicorp/raft"
)

// EntryVersion is the version byte written at the start of every entry.
const EntryVersion = 1

// Entry layout, version 1 (integers little-endian):
//
//	offset  size  field
//	0       1     version (1)
//	1       1     raft.LogType
//	2       1     flags (see below)
//	3       8     index
//	11      8     term
//	19      4     data length D
//	23      4     extensions length E
//	27      T     appended-at, present when flagTime is set:
//	                8 bytes Unix seconds (int64), 4 bytes nanoseconds (uint32),
//	                and when the zone is zoneFixed: 4 bytes UTC offset in
//	                seconds (int32), 1 byte name length N, N bytes zone name
//	27+T    D     data
//	27+T+D  E     extensions
//	end-4   4     CRC32C of every byte before it
const entryHeaderSize = 27

// Entry flags.
const (
	flagTime     = 0x01 // AppendedAt is stored
	zoneMask     = 0x06 // location of AppendedAt
	zoneUTC      = 0x00
	zoneLocal    = 0x02
	zoneFixed    = 0x04
	flagData     = 0x08 // Data was non-nil (kept so nil and empty round-trip exactly)
	flagExt      = 0x10 // Extensions was non-nil
	knownFlags   = flagTime | zoneMask | flagData | flagExt
	maxZoneName  = math.MaxUint8
	timeBaseSize = 12
	timeZoneSize = 5
)

// MaxPayload is the largest Data or Extensions an entry can hold.
const MaxPayload = math.MaxUint32

// EntrySize returns the encoded size of l.
func EntrySize(l *raft.Log) int {
	n := entryHeaderSize + len(l.Data) + len(l.Extensions) + crcSize
	if hasTime(l.AppendedAt) {
		n += timeBaseSize
		if zoneOf(l.AppendedAt) == zoneFixed {
			name, _ := l.AppendedAt.Zone()
			n += timeZoneSize + min(len(name), maxZoneName)
		}
	}
	return n
}

// AppendEntry appends the encoding of l to dst and returns the extended
// slice. The caller checks len(l.Data) and len(l.Extensions) against
// MaxPayload first.
func AppendEntry(dst []byte, l *raft.Log) []byte {
	start := len(dst)
	var flags byte
	if hasTime(l.AppendedAt) {
		flags |= flagTime | zoneOf(l.AppendedAt)
	}
	if l.Data != nil {
		flags |= flagData
	}
	if l.Extensions != nil {
		flags |= flagExt
	}
	dst = append(dst, EntryVersion, byte(l.Type), flags)
	dst = binary.LittleEndian.AppendUint64(dst, l.Index)
	dst = binary.LittleEndian.AppendUint64(dst, l.Term)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(l.Data)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(l.Extensions)))
	if flags&flagTime != 0 {
		t := l.AppendedAt
		dst = binary.LittleEndian.AppendUint64(dst, uint64(t.Unix()))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(t.Nanosecond()))
		if flags&zoneMask == zoneFixed {
			name, offset := t.Zone()
			if len(name) > maxZoneName {
				name = name[:maxZoneName]
			}
			dst = binary.LittleEndian.AppendUint32(dst, uint32(int32(offset)))
			dst = append(dst, byte(len(name)))
			dst = append(dst, name...)
		}
	}
	dst = append(dst, l.Data...)
	dst = append(dst, l.Extensions...)
	return appendSum(dst, start)
}

// DecodeEntry decodes rec into l, overwriting every field. Data and
// Extensions are copied into one new allocation that l owns, so rec may be
// memory that is only valid for the current transaction.
func DecodeEntry(rec []byte, l *raft.Log) error {
	v, err := parseEntry(rec)
	if err != nil {
		return err
	}
	l.Type, l.Index, l.Term, l.AppendedAt = v.typ, v.index, v.term, v.at
	l.Data, l.Extensions = nil, nil
	var buf []byte
	if len(v.data)+len(v.ext) > 0 {
		buf = make([]byte, len(v.data)+len(v.ext))
		copy(buf, v.data)
		copy(buf[len(v.data):], v.ext)
	}
	if v.hasData {
		l.Data = buf[:len(v.data):len(v.data)]
		if l.Data == nil {
			l.Data = []byte{}
		}
	}
	if v.hasExt {
		l.Extensions = buf[len(v.data):]
		if l.Extensions == nil {
			l.Extensions = []byte{}
		}
	}
	return nil
}

// CheckEntry validates rec as DecodeEntry does, without copying anything,
// and returns its index and type.
func CheckEntry(rec []byte) (uint64, raft.LogType, error) {
	v, err := parseEntry(rec)
	return v.index, v.typ, err
}

// entryView is a parsed entry whose slices alias the record.
type entryView struct {
	typ             raft.LogType
	index, term     uint64
	at              time.Time
	data, ext       []byte
	hasData, hasExt bool
}

func parseEntry(rec []byte) (entryView, error) {
	var v entryView
	body, err := verifySum(rec)
	if err != nil {
		return v, err
	}
	if len(body) < entryHeaderSize {
		return v, ErrTruncated
	}
	if body[0] != EntryVersion {
		return v, fmt.Errorf("%w %d (this build reads %d)", ErrVersion, body[0], EntryVersion)
	}
	flags := body[2]
	if flags&^knownFlags != 0 || flags&zoneMask == zoneMask {
		return v, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, flags)
	}
	dataLen := uint64(binary.LittleEndian.Uint32(body[19:]))
	extLen := uint64(binary.LittleEndian.Uint32(body[23:]))
	rest := body[entryHeaderSize:]
	if flags&flagTime != 0 {
		if v.at, rest, err = decodeTime(rest, flags&zoneMask); err != nil {
			return v, err
		}
	} else if flags&zoneMask != 0 {
		return v, fmt.Errorf("%w: zone flags without a time", ErrMalformed)
	}
	if uint64(len(rest)) != dataLen+extLen {
		if uint64(len(rest)) < dataLen+extLen {
			return v, ErrTruncated
		}
		return v, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, uint64(len(rest))-dataLen-extLen)
	}
	v.hasData, v.hasExt = flags&flagData != 0, flags&flagExt != 0
	if !v.hasData && dataLen != 0 || !v.hasExt && extLen != 0 {
		return v, fmt.Errorf("%w: payload length set on a nil field", ErrMalformed)
	}
	v.typ = raft.LogType(body[1])
	v.index = binary.LittleEndian.Uint64(body[3:])
	v.term = binary.LittleEndian.Uint64(body[11:])
	v.data, v.ext = rest[:dataLen], rest[dataLen:]
	return v, nil
}

func decodeTime(b []byte, zone byte) (time.Time, []byte, error) {
	if len(b) < timeBaseSize {
		return time.Time{}, nil, ErrTruncated
	}
	sec := int64(binary.LittleEndian.Uint64(b))
	nsec := binary.LittleEndian.Uint32(b[8:])
	if nsec > 999_999_999 {
		return time.Time{}, nil, fmt.Errorf("%w: %d nanoseconds", ErrMalformed, nsec)
	}
	b = b[timeBaseSize:]
	t := time.Unix(sec, int64(nsec)) // in time.Local
	switch zone {
	case zoneUTC:
		t = t.UTC()
	case zoneFixed:
		if len(b) < timeZoneSize {
			return time.Time{}, nil, ErrTruncated
		}
		offset := int32(binary.LittleEndian.Uint32(b))
		n := int(b[4])
		if len(b) < timeZoneSize+n {
			return time.Time{}, nil, ErrTruncated
		}
		t = t.In(time.FixedZone(string(b[timeZoneSize:timeZoneSize+n]), int(offset)))
		b = b[timeZoneSize+n:]
	}
	return t, b, nil
}

// hasTime reports whether t must be stored: everything except the zero
// time.Time{}, which decodes back to exactly that value when it is absent.
func hasTime(t time.Time) bool { return !t.IsZero() || t.Location() != time.UTC }

// zoneOf classifies t's location. UTC and Local decode to the very same
// *time.Location, so times raft creates (time.Now()) round-trip exactly;
// any other location is kept as its offset and abbreviation.
func zoneOf(t time.Time) byte {
	switch t.Location() {
	case time.UTC:
		return zoneUTC
	case time.Local:
		return zoneLocal
	default:
		return zoneFixed
	}
}
