package codec

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// seedEntries are valid records of every shape, for the fuzz corpora.
func seedEntries() []*raft.Log {
	return []*raft.Log{
		{},
		{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: []byte{0x81, 0xa7}},
		{Index: 7, Term: 3, Type: raft.LogCommand, Data: []byte("set x=1"), Extensions: []byte{}, AppendedAt: time.Unix(1700000000, 5)},
		{Index: 1 << 40, Term: 9, Type: raft.LogBarrier, Data: []byte{}, AppendedAt: time.Unix(0, 1).UTC()},
		{Index: 2, Term: 2, Type: raft.LogNoop, Extensions: []byte("ext"), AppendedAt: time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("CET", 3600))},
	}
}

func FuzzDecodeEntry(f *testing.F) {
	for _, l := range seedEntries() {
		f.Add(AppendEntry(nil, l))
	}
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, rec []byte) {
		var l raft.Log
		if err := DecodeEntry(rec, &l); err != nil {
			return
		}
		if len(l.Data)+len(l.Extensions) > len(rec) {
			t.Fatalf("decoded %d payload bytes from a %d-byte record", len(l.Data)+len(l.Extensions), len(rec))
		}
		if idx, typ, err := CheckEntry(rec); err != nil || idx != l.Index || typ != l.Type {
			t.Fatalf("CheckEntry disagrees with DecodeEntry: %d %v %v", idx, typ, err)
		}
		var again raft.Log
		if err := DecodeEntry(AppendEntry(nil, &l), &again); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(l, again) {
			t.Fatalf("round trip changed the entry:\n%#v\n%#v", l, again)
		}
	})
}

func FuzzEntryRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint64(1), uint8(0), []byte("data"), []byte(nil), int64(1700000000), uint32(7), uint8(1), "", int32(0))
	f.Add(uint64(5), uint64(2), uint8(5), []byte(nil), []byte("x"), int64(-5), uint32(999999999), uint8(2), "EST", int32(-18000))
	f.Fuzz(func(t *testing.T, index, term uint64, typ uint8, data, ext []byte, sec int64, nsec uint32, zone uint8, name string, offset int32) {
		l := &raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: data, Extensions: ext}
		nsec %= 1e9
		sec %= 1 << 40 // time.Unix overflows its own range near the int64 limits
		switch zone % 4 {
		case 1:
			l.AppendedAt = time.Unix(sec, int64(nsec))
		case 2:
			l.AppendedAt = time.Unix(sec, int64(nsec)).UTC()
		case 3:
			if len(name) > maxZoneName {
				name = name[:maxZoneName]
			}
			l.AppendedAt = time.Unix(sec, int64(nsec)).In(time.FixedZone(name, int(offset)))
		}
		rec := AppendEntry(nil, l)
		if len(rec) != EntrySize(l) {
			t.Fatalf("EntrySize %d, encoded %d bytes", EntrySize(l), len(rec))
		}
		var got raft.Log
		if err := DecodeEntry(rec, &got); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got.Index != l.Index || got.Term != l.Term || got.Type != l.Type ||
			!bytes.Equal(got.Data, l.Data) || (got.Data == nil) != (l.Data == nil) ||
			!bytes.Equal(got.Extensions, l.Extensions) || (got.Extensions == nil) != (l.Extensions == nil) ||
			!got.AppendedAt.Equal(l.AppendedAt) || got.AppendedAt.Location().String() != l.AppendedAt.Location().String() {
			t.Fatalf("round trip changed the entry:\n%#v\n%#v", l, got)
		}
	})
}

func FuzzDecodeConfiguration(f *testing.F) {
	f.Add(AppendConfiguration(nil, 3, raft.Configuration{Servers: []raft.Server{
		{ID: "a", Address: "127.0.0.1:1"},
		{ID: "b", Address: "127.0.0.1:2", Suffrage: raft.Nonvoter},
	}}))
	f.Add(AppendConfiguration(nil, 1, raft.Configuration{}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, rec []byte) {
		index, c, err := DecodeConfiguration(rec)
		if err != nil {
			return
		}
		if len(c.Servers)*minServerSize > len(rec) {
			t.Fatalf("%d servers from %d bytes", len(c.Servers), len(rec))
		}
		if again := AppendConfiguration(nil, index, c); !bytes.Equal(again, rec) {
			t.Fatalf("re-encoding differs:\n%x\n%x", rec, again)
		}
	})
}

func FuzzDecodeValue(f *testing.F) {
	f.Add([]byte("CurrentTerm"), AppendUint64Value(nil, []byte("CurrentTerm"), 42))
	f.Add([]byte("k"), AppendValue(nil, []byte("k"), []byte("value")))
	f.Fuzz(func(t *testing.T, key, rec []byte) {
		v, err := DecodeValue(key, rec)
		if err != nil {
			return
		}
		if again := AppendValue(nil, key, v); !bytes.Equal(again, rec) {
			t.Fatalf("re-encoding differs:\n%x\n%x", rec, again)
		}
		_, _ = DecodeUint64Value(key, rec)
	})
}

func FuzzDecodeFormat(f *testing.F) {
	f.Add(AppendFormat(nil, Format{Version: 1, Kind: KindLogStore}))
	f.Add(AppendFormat(nil, Format{Version: 9, Kind: KindStateMachine}))
	f.Fuzz(func(t *testing.T, rec []byte) {
		got, err := DecodeFormat(rec, 1)
		if err != nil {
			return
		}
		if again := AppendFormat(nil, got); !bytes.Equal(again, rec) {
			t.Fatalf("re-encoding differs:\n%x\n%x", rec, again)
		}
	})
}
