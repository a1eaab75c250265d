package codec

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/hashicorp/raft"
)

// ConfigVersion is the version byte of configuration records.
const ConfigVersion = 1

// Configuration record layout, version 1 (integers little-endian):
//
//	offset  size  field
//	0       1     version (1)
//	1       8     index of the configuration
//	9       4     number of servers N
//	13      ...   N servers, each:
//	                1 byte suffrage (0 voter, 1 nonvoter, 2 staging),
//	                2 bytes ID length I, I bytes ID,
//	                2 bytes address length A, A bytes address
//	end-4   4     CRC32C of every byte before it
const (
	configHeaderSize = 13
	minServerSize    = 5
	// MaxServerField is the longest server ID or address a record holds.
	MaxServerField = math.MaxUint16
)

// AppendConfiguration appends the record of configuration c at index to
// dst. The caller checks every ID and address against MaxServerField.
func AppendConfiguration(dst []byte, index uint64, c raft.Configuration) []byte {
	start := len(dst)
	dst = append(dst, ConfigVersion)
	dst = binary.LittleEndian.AppendUint64(dst, index)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(c.Servers)))
	for _, s := range c.Servers {
		dst = append(dst, byte(s.Suffrage))
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s.ID)))
		dst = append(dst, s.ID...)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s.Address)))
		dst = append(dst, s.Address...)
	}
	return appendSum(dst, start)
}

// DecodeConfiguration decodes a configuration record.
func DecodeConfiguration(rec []byte) (uint64, raft.Configuration, error) {
	body, err := verifySum(rec)
	if err != nil {
		return 0, raft.Configuration{}, err
	}
	if len(body) < configHeaderSize {
		return 0, raft.Configuration{}, ErrTruncated
	}
	if body[0] != ConfigVersion {
		return 0, raft.Configuration{}, fmt.Errorf("%w %d (this build reads %d)", ErrVersion, body[0], ConfigVersion)
	}
	index := binary.LittleEndian.Uint64(body[1:])
	n := uint64(binary.LittleEndian.Uint32(body[9:]))
	rest := body[configHeaderSize:]
	if n > uint64(len(rest))/minServerSize {
		return 0, raft.Configuration{}, ErrTruncated
	}
	var c raft.Configuration
	if n > 0 {
		c.Servers = make([]raft.Server, 0, n)
	}
	for i := uint64(0); i < n; i++ {
		var s raft.Server
		if len(rest) < minServerSize {
			return 0, raft.Configuration{}, ErrTruncated
		}
		s.Suffrage = raft.ServerSuffrage(rest[0])
		if s.Suffrage > raft.Staging {
			return 0, raft.Configuration{}, fmt.Errorf("%w: server %d has suffrage %d", ErrMalformed, i, rest[0])
		}
		var id, addr []byte
		if id, rest, err = lengthPrefixed(rest[1:]); err != nil {
			return 0, raft.Configuration{}, err
		}
		if addr, rest, err = lengthPrefixed(rest); err != nil {
			return 0, raft.Configuration{}, err
		}
		s.ID, s.Address = raft.ServerID(id), raft.ServerAddress(addr)
		c.Servers = append(c.Servers, s)
	}
	if len(rest) != 0 {
		return 0, raft.Configuration{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(rest))
	}
	return index, c, nil
}

// lengthPrefixed splits a 2-byte length-prefixed field off b.
func lengthPrefixed(b []byte) (field, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, ErrTruncated
	}
	n := int(binary.LittleEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, nil, ErrTruncated
	}
	return b[2 : 2+n], b[2+n:], nil
}
