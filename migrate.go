package raftbolt

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt/internal/boltfile"
	rcodec "github.com/raftbolt/raftbolt/internal/codec"
	"github.com/raftbolt/raftbolt/internal/layout"
	"go.etcd.io/bbolt"
)

// hashicorp/raft-boltdb's layout, the same in v1 (boltdb/bolt) and v2
// (bbolt): bucket "logs" maps an 8-byte big-endian index to a msgpack-encoded
// raft.Log, bucket "conf" holds the StableStore keys as given.
var (
	boltDBLogs = []byte("logs")
	boltDBConf = []byte("conf")
)

// migrateBatchBytes bounds the source bytes decoded into one StoreLogs
// batch, and migrateBatchEntries the entries, so that memory stays bounded
// whatever the size of the source: a batch, its encoded records and one
// bbolt write transaction of that size are all Migrate holds at once.
const (
	migrateBatchBytes   = 4 << 20
	migrateBatchEntries = 16384
)

// migrateTempInfix names the file Migrate builds next to dst: dst's name,
// this infix and a random suffix. It is only ever renamed (or linked) to dst
// once complete, synced and verified; a crash leaves it behind, never a
// partial dst.
const migrateTempInfix = ".migrating-"

// msgpackHandle decodes raft-boltdb's records exactly as raft-boltdb's
// decodeMsgPack does: a zero-value go-msgpack/v2 MsgpackHandle. Its decoder
// reads both encodings of time.Time that raft-boltdb files hold: the old one
// (time.MarshalBinary in a msgpack string, written by raft-boltdb v2 by
// default and by raft-boltdb v1 built with go-msgpack 0.5.x) and the new
// one (the msgpack timestamp extension, written by raft-boltdb v1 with
// go-msgpack 1.1.5 and by v2 with MsgpackUseNewTimeFormat). A handle is
// safe for concurrent use once configured, and a zero one needs no setup.
var msgpackHandle codec.MsgpackHandle

// Migrate copies a hashicorp/raft-boltdb file (v1 or v2, the same on-disk
// layout) at src into a new store at dst, which must not exist.
//
// It copies the log and every StableStore key (raft's CurrentTerm,
// LastVoteTerm and LastVoteCand among them), and records the newest
// configuration entry of the copied log as the store's latest
// configuration, as raft itself loads it on restart. raft-boltdb allows gaps
// in the log (raft leaves one after restoring a user snapshot, and every
// entry before the last gap is obsolete): only the newest contiguous run is
// copied, and the skipped range is logged.
//
// src is opened read-only and never modified; while another process holds
// it (raft still running on it) Migrate waits up to opts.LockTimeout and
// returns ErrLocked. The copy is built in a temporary file next to dst in
// batches of bounded size, then checked, compared entry by entry and key by
// key with src, fsynced, and only then put in place under the name dst
// (never replacing a file that appeared there meanwhile) and the directory
// fsynced. A crash at any point leaves either no dst or a complete one; the
// temporary file (dst + ".migrating-" + a random suffix) may be left behind
// and can be removed.
//
// The errors wrap fs.ErrNotExist when src is missing, fs.ErrExist when dst
// exists, ErrNotStore when src is not a raft-boltdb file (including when it
// already is a raftbolt store), ErrCorrupt for a damaged src or an entry
// that does not decode (naming its index), and the I/O error itself, such
// as syscall.ENOSPC, when writing the copy fails; dst and the temporary file
// are then removed. opts may be nil. Logger receives the progress and
// LockTimeout bounds the wait for src; ReadOnly and NoSync are ignored (the
// copy is written without fsync and synced once, before it is verified and
// put in place).
func Migrate(src, dst string, opts *Options) (err error) {
	o, err := opts.withDefaults()
	if err == nil && (src == "" || dst == "") {
		err = invalidf("empty path")
	}
	if err != nil {
		return migrateError(src, dst, err)
	}
	m := &migration{src: src, dst: dst, opts: o, logger: o.Logger.With("src", src, "dst", dst)}
	if err := m.run(); err != nil {
		return migrateError(src, dst, err)
	}
	return nil
}

func migrateError(src, dst string, err error) error {
	return fmt.Errorf("raftbolt: migrate %s to %s: %w", src, dst, err)
}

// migration is one run of Migrate.
type migration struct {
	src, dst string
	opts     Options
	logger   hclog.Logger

	srcFile *boltfile.File
	// first..last is the source's whole log; from..last the newest
	// contiguous run, which is what is copied. All 0 for an empty log.
	first, from, last uint64
	stableKeys        int

	// The newest configuration entry copied: its index, type and data.
	confIndex uint64
	confType  raft.LogType
	confData  []byte
	// conf is what was recorded as the latest configuration (confIndex
	// and conf), or confIndex 0 / recorded false when nothing was.
	conf     raft.Configuration
	recorded bool
}

func (m *migration) run() error {
	start := time.Now()
	if err := m.checkPaths(); err != nil {
		return err
	}
	if err := m.openSource(); err != nil {
		return err
	}
	defer func() { _ = m.srcFile.Close() }()
	if err := m.scanSource(); err != nil {
		return err
	}
	if m.from > m.first {
		m.logger.Warn("the log has a gap: copying only the newest contiguous run; the entries before the gap are obsolete "+
			"(raft leaves such a gap after restoring a snapshot)",
			"copied_from", m.from, "copied_to", m.last, "skipped_from", m.first, "skipped_before", m.from)
	}

	tmp, err := m.createTemp()
	if err != nil {
		return err
	}
	placed := false
	defer func() {
		if !placed {
			if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
				m.logger.Warn("could not remove the temporary file", "file", tmp, "error", err)
			}
		}
	}()
	if err := m.write(tmp); err != nil {
		return err
	}
	if err := boltfile.SyncFile(tmp); err != nil {
		return err
	}
	if err := m.verify(tmp); err != nil {
		return err
	}
	if err := m.place(tmp); err != nil {
		return err
	}
	placed = true
	m.logger.Info("migrated hashicorp/raft-boltdb store", "first_index", m.from, "last_index", m.last,
		"entries", entryCount(m.from, m.last), "stable_keys", m.stableKeys,
		"configuration_index", m.recordedIndex(), "duration", time.Since(start))
	return nil
}

func (m *migration) recordedIndex() uint64 {
	if !m.recorded {
		return 0
	}
	return m.confIndex
}

func entryCount(first, last uint64) uint64 {
	if last == 0 {
		return 0
	}
	return last - first + 1
}

// checkPaths gives the clear errors for a missing src and an existing dst
// before anything is opened.
func (m *migration) checkPaths() error {
	fi, err := os.Stat(m.src)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("source %s: %w", m.src, fs.ErrNotExist)
	case err != nil:
		return fmt.Errorf("source: %w", err)
	case fi.IsDir():
		return fmt.Errorf("%w: source %s is a directory, not a hashicorp/raft-boltdb file", ErrNotStore, m.src)
	case fi.Size() == 0:
		return fmt.Errorf("%w: source %s is empty, not a hashicorp/raft-boltdb file", ErrNotStore, m.src)
	}
	if _, err := os.Lstat(m.dst); err == nil {
		return fmt.Errorf("destination %s: %w (Migrate never replaces a file; remove it or choose another path)", m.dst, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("destination: %w", err)
	}
	if fi, err := os.Stat(filepath.Dir(m.dst)); err != nil {
		return fmt.Errorf("destination directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("destination directory %s is not a directory", filepath.Dir(m.dst))
	}
	return nil
}

// openSource opens src read-only. openBolt takes a shared lock, so a
// process still running raft on src makes this ErrLocked, and checks the
// whole file's structure before bbolt maps it, so a damaged src is an
// ErrCorrupt here rather than a crash later.
func (m *migration) openSource() error {
	so := m.opts
	so.ReadOnly = true
	so.VerifyOnOpen = true
	f, _, err := boltfile.Open(m.src, fileOptions(&so, m.logger, nil))
	switch {
	case errors.Is(err, ErrLocked):
		return fmt.Errorf("source %s is in use; stop the process that has it open (raft still running?) and retry: %w", m.src, err)
	case err != nil:
		return fmt.Errorf("source: %w", err)
	}
	m.srcFile = f
	return nil
}

// viewSource runs fn in a read transaction of the source, turning a panic
// or memory fault inside bbolt (a damaged page) into ErrCorrupt.
func (m *migration) viewSource(fn func(tx *bbolt.Tx) error) error {
	err := m.srcFile.View(fn)
	if errors.Is(err, ErrCorrupt) && strings.Contains(err.Error(), "bbolt panicked") {
		return fmt.Errorf("source %s: %w", m.src, err)
	}
	return err
}

// scanSource checks that src has raft-boltdb's layout and finds the newest
// contiguous run of its log by walking back from the last index.
func (m *migration) scanSource() error {
	return m.viewSource(func(tx *bbolt.Tx) error {
		if err := m.checkLayout(tx); err != nil {
			return err
		}
		c := tx.Bucket(boltDBLogs).Cursor()
		k, _ := c.First()
		if k == nil {
			return nil
		}
		first, err := m.logKey(k)
		if err != nil {
			return err
		}
		k, _ = c.Last()
		last, err := m.logKey(k)
		if err != nil {
			return err
		}
		from := last
		for k, _ = c.Prev(); k != nil; k, _ = c.Prev() {
			i, err := m.logKey(k)
			if err != nil {
				return err
			}
			if i != from-1 {
				break
			}
			from = i
		}
		m.first, m.from, m.last = first, from, last
		return nil
	})
}

// checkLayout refuses anything but raft-boltdb's two buckets, saying what
// the file is instead.
func (m *migration) checkLayout(tx *bbolt.Tx) error {
	if meta := tx.Bucket(layout.MetaBucket); meta != nil && meta.Get(layout.KeyFormat) != nil {
		return fmt.Errorf("%w: source %s is already a raftbolt file, not a hashicorp/raft-boltdb one: "+
			"open it with raftbolt.Open, there is nothing to migrate", ErrNotStore, m.src)
	}
	var names, unknown []string
	_ = tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
		names = append(names, fmt.Sprintf("%q", name))
		if !bytes.Equal(name, boltDBLogs) && !bytes.Equal(name, boltDBConf) {
			unknown = append(unknown, fmt.Sprintf("%q", name))
		}
		return nil
	})
	switch {
	case len(names) == 0:
		return fmt.Errorf("%w: source %s is a bbolt database without any bucket, not a hashicorp/raft-boltdb file", ErrNotStore, m.src)
	case tx.Bucket(boltDBLogs) == nil || tx.Bucket(boltDBConf) == nil || len(unknown) > 0:
		return fmt.Errorf("%w: source %s is not a hashicorp/raft-boltdb file: it holds buckets %s, raft-boltdb's are exactly \"logs\" and \"conf\"",
			ErrNotStore, m.src, strings.Join(names, ", "))
	}
	return nil
}

// logKey decodes a key of raft-boltdb's log bucket.
func (m *migration) logKey(k []byte) (uint64, error) {
	i, ok := rcodec.Uint64(k)
	if !ok {
		return 0, corruptf("source %s: log key %x is not an 8-byte index", m.src, k)
	}
	if i == 0 {
		return 0, corruptf("source %s: the log holds an entry at index 0", m.src)
	}
	return i, nil
}

// decodeEntry decodes raft-boltdb's record of entry index. The result owns
// its bytes (the bytes decoder copies them), so it outlives the source's
// transaction.
func (m *migration) decodeEntry(index uint64, v []byte) (*raft.Log, error) {
	l := new(raft.Log)
	if err := decodeMsgpack(v, l); err != nil {
		return nil, corruptf("source %s: entry %d does not decode: %v", m.src, index, err)
	}
	if l.Index != index {
		return nil, corruptf("source %s: the entry stored under index %d holds index %d", m.src, index, l.Index)
	}
	return l, nil
}

// decodeMsgpack decodes v into out as raft-boltdb does; a panic in the
// decoder (it should not, but its input is a file) is an error.
func decodeMsgpack(v []byte, out any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("msgpack decoder panicked: %v", r)
		}
	}()
	return codec.NewDecoderBytes(v, &msgpackHandle).Decode(out)
}

// createTemp picks the name the store is built under, next to dst so that
// the final link stays within one file system. Open creates the file
// there (durably, as every store).
func (m *migration) createTemp() (string, error) {
	f, err := os.CreateTemp(filepath.Dir(m.dst), filepath.Base(m.dst)+migrateTempInfix+"*")
	if err != nil {
		return "", fmt.Errorf("create the temporary file next to %s: %w", m.dst, err)
	}
	tmp := f.Name()
	_ = f.Close()
	if err := os.Remove(tmp); err != nil {
		return "", fmt.Errorf("create %s: %w", tmp, err)
	}
	return tmp, nil
}

// tempOptions are the options the copy is written and read with: no fsync
// per batch (the file is synced once, before it is verified and put in
// place) and no entry cache, so that verification reads the file.
func (m *migration) tempOptions(readOnly bool) *Options {
	o := m.opts
	o.ReadOnly = readOnly
	o.NoSync = true
	o.NoJournal = true // the copy is verified in the file itself
	o.CacheSize = -1
	o.MetricsInterval = -1
	o.VerifyOnOpen = readOnly
	o.Logger = m.logger.Named("copy")
	return &o
}

// write builds the store in tmp: the log's newest run, every stable key,
// then the latest configuration.
func (m *migration) write(tmp string) (err error) {
	s, err := Open(tmp, m.tempOptions(false))
	if err != nil {
		return fmt.Errorf("create the store: %w", err)
	}
	defer func() {
		if cerr := s.Close(); err == nil && cerr != nil {
			err = writeError(tmp, "close the store", cerr)
		}
	}()
	if err := m.copyLog(s, tmp); err != nil {
		return err
	}
	if err := m.copyStable(s, tmp); err != nil {
		return err
	}
	return m.recordConfiguration(s, tmp)
}

// writeError names a failed write into the temporary file, with a hint
// for the usual cause. bbolt reports a failure to grow the file as text
// ("file resize error: ..."), without wrapping the cause, hence the
// second test.
func writeError(tmp, what string, err error) error {
	hint := " (the source is untouched; the partial copy is removed)"
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG) ||
		strings.Contains(err.Error(), "file resize error") {
		hint = " (is the file system full? free space and retry; the source is untouched and the partial copy is removed)"
	}
	return fmt.Errorf("%s in %s: %w%s", what, tmp, err, hint)
}

// copyLog copies the entries m.from..m.last in batches bounded by
// migrateBatchBytes, in one read transaction of the source (nothing writes
// the source, so a long one costs nothing) and one write transaction of the
// copy per batch.
func (m *migration) copyLog(s *Store, tmp string) error {
	if m.last == 0 {
		return nil
	}
	var (
		batch []*raft.Log
		size  int
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.StoreLogs(batch); err != nil {
			return writeError(tmp, fmt.Sprintf("write entries %d-%d", batch[0].Index, batch[len(batch)-1].Index), err)
		}
		for i := range batch {
			batch[i] = nil
		}
		batch, size = batch[:0], 0
		return nil
	}
	return m.viewSource(func(tx *bbolt.Tx) error {
		c := tx.Bucket(boltDBLogs).Cursor()
		next := m.from
		key := rcodec.Key(m.from)
		for k, v := c.Seek(key[:]); k != nil; k, v = c.Next() {
			index, err := m.logKey(k)
			if err != nil {
				return err
			}
			if index != next {
				return corruptf("source %s: entry %d disappeared during the copy (found %d)", m.src, next, index)
			}
			l, err := m.decodeEntry(index, v)
			if err != nil {
				return err
			}
			if isConfigEntry(l.Type) {
				m.confIndex, m.confType, m.confData = l.Index, l.Type, l.Data
			}
			batch = append(batch, l)
			size += len(v)
			if size >= migrateBatchBytes || len(batch) >= migrateBatchEntries {
				if err := flush(); err != nil {
					return err
				}
			}
			next++
		}
		if next != m.last+1 {
			return corruptf("source %s: the log ends at %d, expected %d", m.src, next-1, m.last)
		}
		return flush()
	})
}

// copyStable copies every key of raft-boltdb's "conf" bucket.
func (m *migration) copyStable(s *Store, tmp string) error {
	return m.viewSource(func(tx *bbolt.Tx) error {
		return tx.Bucket(boltDBConf).ForEach(func(k, v []byte) error {
			if v == nil {
				return fmt.Errorf("%w: source %s: bucket \"conf\" holds a nested bucket %q, which raft-boltdb never writes", ErrNotStore, m.src, k)
			}
			if err := s.Set(bytes.Clone(k), bytes.Clone(v)); err != nil {
				return writeError(tmp, fmt.Sprintf("write stable key %q", k), err)
			}
			m.stableKeys++
			return nil
		})
	})
}

// recordConfiguration records the newest configuration entry of the copied
// log as the store's latest configuration: raft loads the same entry on
// restart. An entry that does not decode would crash raft there, so it
// fails the migration; one that decodes to a configuration raft would not
// accept (no voter, say) is logged and not recorded.
func (m *migration) recordConfiguration(s *Store, tmp string) error {
	if m.confIndex == 0 {
		m.logger.Info("the copied log holds no configuration entry; none recorded (raft takes it from its snapshots)")
		return nil
	}
	c, err := decodeConfigurationEntry(m.confType, m.confData)
	if err != nil {
		return corruptf("source %s: configuration entry %d: %v", m.src, m.confIndex, err)
	}
	if err := checkConfiguration(c); err != nil {
		m.logger.Warn("the newest configuration entry is not a valid configuration; not recorded",
			"index", m.confIndex, "type", m.confType, "error", err)
		return nil
	}
	if err := s.StoreConfiguration(m.confIndex, c); err != nil {
		return writeError(tmp, fmt.Sprintf("record the configuration of entry %d", m.confIndex), err)
	}
	m.conf, m.recorded = c, true
	return nil
}

// decodeConfigurationEntry decodes the data of a configuration entry of
// type t (see isConfigEntry).
//
// LogAddPeerDeprecated and LogRemovePeerDeprecated entries (written by raft
// with ProtocolVersion < 2) hold a msgpack list of peers encoded by the
// transport. raft decodes them with its transport's DecodePeer; every
// transport raft ships (network, TCP, in-memory) encodes a peer as its
// address, so each becomes a voter whose ID and address are that address,
// which is what raft itself builds from them.
func decodeConfigurationEntry(t raft.LogType, data []byte) (raft.Configuration, error) {
	if t == raft.LogConfiguration {
		return decodeConfiguration(data)
	}
	var peers [][]byte
	if err := decodeMsgpack(data, &peers); err != nil {
		return raft.Configuration{}, fmt.Errorf("%w: undecodable %v entry: %v", ErrCorrupt, t, err)
	}
	var c raft.Configuration
	for _, p := range peers {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p), Address: raft.ServerAddress(p)})
	}
	return c, nil
}

// verify reopens the copy read-only, checking every page, and compares it
// with the source: Check, the index range, every entry field by field,
// every stable key, and the recorded configuration.
func (m *migration) verify(tmp string) (err error) {
	s, err := Open(tmp, m.tempOptions(true))
	if err != nil {
		return fmt.Errorf("verify: reopen the copy: %w", err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Check(); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if m.last == 0 && last != 0 || m.last != 0 && (first != m.from || last != m.last) {
		return corruptf("verify: the copy holds entries %d-%d, the source's newest run is %d-%d", first, last, m.from, m.last)
	}
	err = m.viewSource(func(tx *bbolt.Tx) error {
		if m.last != 0 {
			c := tx.Bucket(boltDBLogs).Cursor()
			key := rcodec.Key(m.from)
			var got raft.Log
			for k, v := c.Seek(key[:]); k != nil; k, v = c.Next() {
				index, err := m.logKey(k)
				if err != nil {
					return err
				}
				want, err := m.decodeEntry(index, v)
				if err != nil {
					return err
				}
				if err := s.GetLog(index, &got); err != nil {
					return fmt.Errorf("verify: %w", err)
				}
				if diff := diffLog(want, &got); diff != "" {
					return corruptf("verify: entry %d differs from the source: %s", index, diff)
				}
			}
		}
		n := 0
		err := tx.Bucket(boltDBConf).ForEach(func(k, v []byte) error {
			n++
			got, err := s.Get(k)
			if err != nil {
				return fmt.Errorf("verify: stable key %q: %w", k, err)
			}
			if !bytes.Equal(got, v) {
				return corruptf("verify: stable key %q differs from the source", k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n != m.stableKeys {
			return corruptf("verify: the source has %d stable keys, %d were copied", n, m.stableKeys)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.rlock(); err != nil {
		return err
	}
	err = s.view("verify", func(tx *bbolt.Tx) error {
		if n := tx.Bucket(layout.StableBucket).Stats().KeyN; n != m.stableKeys {
			return corruptf("verify: the copy has %d stable keys, the source %d", n, m.stableKeys)
		}
		return nil
	})
	s.runlock()
	if err != nil {
		return err
	}
	index, c, err := s.LatestConfiguration()
	switch {
	case !m.recorded && errors.Is(err, ErrNoConfiguration):
		return nil
	case err != nil:
		return fmt.Errorf("verify: %w", err)
	case !m.recorded || index != m.confIndex || !equalConfiguration(c, m.conf):
		return corruptf("verify: the copy's configuration (index %d) is not the one recorded (index %d)", index, m.recordedIndex())
	}
	return nil
}

// diffLog describes how got differs from want, "" when it does not.
func diffLog(want, got *raft.Log) string {
	switch {
	case want.Index != got.Index:
		return fmt.Sprintf("index %d, want %d", got.Index, want.Index)
	case want.Term != got.Term:
		return fmt.Sprintf("term %d, want %d", got.Term, want.Term)
	case want.Type != got.Type:
		return fmt.Sprintf("type %v, want %v", got.Type, want.Type)
	case !bytes.Equal(want.Data, got.Data) || (want.Data == nil) != (got.Data == nil):
		return fmt.Sprintf("data (%d bytes, want %d)", len(got.Data), len(want.Data))
	case !bytes.Equal(want.Extensions, got.Extensions) || (want.Extensions == nil) != (got.Extensions == nil):
		return fmt.Sprintf("extensions (%d bytes, want %d)", len(got.Extensions), len(want.Extensions))
	case !sameTime(want.AppendedAt, got.AppendedAt):
		return fmt.Sprintf("appended-at %v, want %v", got.AppendedAt, want.AppendedAt)
	}
	return ""
}

// sameTime reports whether a and b are the same instant in the same zone.
func sameTime(a, b time.Time) bool {
	if !a.Equal(b) {
		return false
	}
	if a.Location() == b.Location() {
		return true
	}
	an, ao := a.Zone()
	bn, bo := b.Zone()
	return an == bn && ao == bo
}

// place gives the verified copy the name dst and makes that durable
// (boltfile.Link): a hard link does it without ever replacing a file, so if
// dst appeared since Migrate began, nothing is lost.
func (m *migration) place(tmp string) error {
	err := boltfile.Link(tmp, m.dst)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("destination %s appeared during the migration: %w (left as it is)", m.dst, fs.ErrExist)
	}
	return err
}
