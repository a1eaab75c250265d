package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/raftbolt/raftbolt"
	"github.com/raftbolt/raftbolt/internal/journal"
	"github.com/raftbolt/raftbolt/internal/layout"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// bin is the raftbolt binary the tests run, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "raftbolt-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	bin = filepath.Join(dir, "raftbolt")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(2)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// tool runs the binary with args.
func tool(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return r
}

func (r result) requireCode(t *testing.T, code int) result {
	t.Helper()
	require.Equal(t, code, r.code, "exit code\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	return r
}

func quiet() *raftbolt.Options {
	return &raftbolt.Options{NoSync: true, Logger: hclog.NewNullLogger(), MetricsInterval: -1}
}

var testConf = raft.Configuration{Servers: []raft.Server{
	{Suffrage: raft.Voter, ID: "node-1", Address: "10.0.0.1:8300"},
	{Suffrage: raft.Nonvoter, ID: "node-2", Address: "10.0.0.2:8300"},
}}

// entry i of the test stores: text commands, binary commands, noops.
func entry(i uint64) *raft.Log {
	l := &raft.Log{Index: i, Term: 3, Type: raft.LogCommand, AppendedAt: time.Unix(1700000000+int64(i), 0).UTC()}
	switch i % 3 {
	case 0:
		l.Data = []byte(fmt.Sprintf("set key-%d", i))
	case 1:
		l.Data = []byte{0xff, 0, byte(i)}
	case 2:
		l.Type = raft.LogNoop
	}
	return l
}

// makeStore writes a closed store with entries first..last, raft's stable
// keys and a configuration at index 7.
func makeStore(t *testing.T, first, last uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := raftbolt.Open(path, quiet())
	require.NoError(t, err)
	var batch []*raft.Log
	for i := first; i <= last; i++ {
		batch = append(batch, entry(i))
		if len(batch) == 500 || i == last {
			require.NoError(t, s.StoreLogs(batch))
			batch = nil
		}
	}
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 3))
	require.NoError(t, s.SetUint64([]byte("LastVoteTerm"), 2))
	require.NoError(t, s.Set([]byte("LastVoteCand"), []byte("node-1")))
	require.NoError(t, s.StoreConfiguration(7, testConf))
	require.NoError(t, s.Close())
	return path
}

// damage flips a byte in every copy of the payload of entry i.
func damage(t *testing.T, path string, i uint64) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	needle := entry(i).Data
	n := 0
	for off := 0; ; {
		j := bytes.Index(data[off:], needle)
		if j < 0 {
			break
		}
		data[off+j+len(needle)-1] ^= 0x55
		off += j + len(needle)
		n++
	}
	require.NotZero(t, n)
	require.NoError(t, os.WriteFile(path, data, 0o600))
}

func TestInfo(t *testing.T) {
	path := makeStore(t, 1, 100)
	r := tool(t, "info", path).requireCode(t, 0)
	for _, want := range []string{
		"format version:  1", "first index:     1", "last index:      100", "entries:         100",
		"current term:    3", "last vote term:  2", "last vote for:   node-1",
		"configuration:   index 7, 2 server(s)", "node-2  10.0.0.2:8300  Nonvoter",
	} {
		require.Contains(t, r.stdout, want)
	}

	// -json, after the path.
	r = tool(t, "info", path, "-json").requireCode(t, 0)
	var info infoJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &info))
	require.EqualValues(t, 1, info.FormatVersion)
	require.EqualValues(t, 1, info.FirstIndex)
	require.EqualValues(t, 100, info.LastIndex)
	require.EqualValues(t, 100, info.Entries)
	require.EqualValues(t, 3, *info.CurrentTerm)
	require.EqualValues(t, 2, *info.LastVoteTerm)
	require.Equal(t, "node-1", *info.LastVoteCand)
	require.Positive(t, info.FileSize)
	require.EqualValues(t, 7, info.Configuration.Index)
	require.Equal(t, []serverJSON{
		{ID: "node-1", Address: "10.0.0.1:8300", Suffrage: "Voter"},
		{ID: "node-2", Address: "10.0.0.2:8300", Suffrage: "Nonvoter"},
	}, info.Configuration.Servers)

	// An empty store: nothing set, nothing recorded.
	empty := filepath.Join(t.TempDir(), "empty.db")
	s, err := raftbolt.Open(empty, quiet())
	require.NoError(t, err)
	require.NoError(t, s.Close())
	r = tool(t, "info", "-json", empty).requireCode(t, 0)
	require.Contains(t, r.stdout, `"current_term": null`)
	require.Contains(t, r.stdout, `"configuration": null`)
	r = tool(t, "info", empty).requireCode(t, 0)
	require.Contains(t, r.stdout, "current term:    not set")
	require.Contains(t, r.stdout, "configuration:   none recorded")
}

func TestCheck(t *testing.T) {
	path := makeStore(t, 1, 300)
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	r := tool(t, "check", path).requireCode(t, 0)
	require.Contains(t, r.stdout, "ok: 300 entries (1-300)")
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, before, after, "check wrote to the store")

	damage(t, path, 121)
	r = tool(t, "check", path).requireCode(t, 1)
	require.Contains(t, r.stdout, "DAMAGED")
	require.Contains(t, r.stdout, "first bad index: 121")
	require.Contains(t, r.stdout, "entry 121: checksum mismatch")

	r = tool(t, "check", "-json", path).requireCode(t, 1)
	var out checkJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.False(t, out.OK)
	require.EqualValues(t, 121, *out.FirstBadIndex)
	require.Contains(t, out.Error, "entry 121")

	// A file cut short is refused before it is mapped: damaged, no index.
	short := filepath.Join(t.TempDir(), "short.db")
	require.NoError(t, os.WriteFile(short, before[:len(before)/2], 0o600))
	r = tool(t, "check", short).requireCode(t, 1)
	require.Contains(t, r.stdout, "DAMAGED")
	require.Contains(t, r.stdout, "truncated")
}

func TestDump(t *testing.T) {
	path := makeStore(t, 5, 40)
	r := tool(t, "dump", path).requireCode(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 36)
	require.Equal(t, "index=5 term=3 type=LogNoop appended_at=2023-11-14T22:13:25Z data=\"\"", lines[0])
	require.Equal(t, "index=6 term=3 type=LogCommand appended_at=2023-11-14T22:13:26Z data=\"set key-6\"", lines[1])
	require.Equal(t, "index=7 term=3 type=LogCommand appended_at=2023-11-14T22:13:27Z data_base64=/wAH", lines[2])

	// Flags before and after the path.
	for _, args := range [][]string{
		{"dump", "-from", "10", "-to", "12", "-json", path},
		{"dump", path, "-from", "10", "-to", "12", "-json"},
		{"dump", "-json", path, "-to=12", "-from=10"},
	} {
		r := tool(t, args...).requireCode(t, 0)
		sc := bufio.NewScanner(strings.NewReader(r.stdout))
		var got []uint64
		for sc.Scan() {
			var e entryJSON
			require.NoError(t, json.Unmarshal(sc.Bytes(), &e), sc.Text())
			want := entry(e.Index)
			require.Equal(t, want.Type.String(), e.Type)
			require.EqualValues(t, 3, e.Term)
			require.Equal(t, want.AppendedAt.Format(time.RFC3339Nano), e.AppendedAt)
			switch {
			case e.Data != nil:
				require.Equal(t, string(want.Data), *e.Data)
			case e.DataBase64 != "":
				b, err := base64.StdEncoding.DecodeString(e.DataBase64)
				require.NoError(t, err)
				require.Equal(t, want.Data, b)
			default:
				require.Empty(t, want.Data)
			}
			got = append(got, e.Index)
		}
		require.Equal(t, []uint64{10, 11, 12}, got, "%v", args)
	}

	// A range past the log is clipped; an inverted one is a usage error.
	r = tool(t, "dump", "-from", "39", "-to", "1000", path).requireCode(t, 0)
	require.Equal(t, 2, strings.Count(r.stdout, "\n"))
	tool(t, "dump", "-from", "20", "-to", "10", path).requireCode(t, 2)

	// Damage: the entries before it, then the error, exit 1.
	damage(t, path, 12)
	r = tool(t, "dump", path).requireCode(t, 1)
	require.Equal(t, 7, strings.Count(r.stdout, "\n"))
	require.Contains(t, r.stderr, "entry 12: checksum mismatch")
}

func TestDumpShowsConfigurationEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := raftbolt.Open(path, quiet())
	require.NoError(t, err)
	require.NoError(t, s.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(testConf)}}))
	require.NoError(t, s.Close())
	r := tool(t, "dump", path).requireCode(t, 0)
	require.Contains(t, r.stdout, "servers=node-1@10.0.0.1:8300(Voter),node-2@10.0.0.2:8300(Nonvoter)")
	r = tool(t, "dump", "-json", path).requireCode(t, 0)
	require.Contains(t, r.stdout, `"servers":[{"id":"node-1","address":"10.0.0.1:8300","suffrage":"Voter"}`)
}

func TestConfig(t *testing.T) {
	path := makeStore(t, 1, 10)
	r := tool(t, "config", path).requireCode(t, 0)
	require.Equal(t, "configuration at index 7\n"+
		"ID      ADDRESS        SUFFRAGE\n"+
		"node-1  10.0.0.1:8300  Voter\n"+
		"node-2  10.0.0.2:8300  Nonvoter\n", r.stdout)
	r = tool(t, "config", path, "-json").requireCode(t, 0)
	var conf configJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &conf))
	require.EqualValues(t, 7, conf.Index)
	require.Len(t, conf.Servers, 2)

	empty := filepath.Join(t.TempDir(), "empty.db")
	s, err := raftbolt.Open(empty, quiet())
	require.NoError(t, err)
	require.NoError(t, s.Close())
	r = tool(t, "config", empty).requireCode(t, 1)
	require.Contains(t, r.stderr, "no configuration recorded")
}

func TestCompact(t *testing.T) {
	path := makeStore(t, 1, 20000)
	s, err := raftbolt.Open(path, quiet())
	require.NoError(t, err)
	require.NoError(t, s.DeleteRange(1, 19900))
	require.NoError(t, s.Close())
	before, err := os.Stat(path)
	require.NoError(t, err)

	r := tool(t, "compact", path).requireCode(t, 0)
	require.Contains(t, r.stdout, "compacted "+path)
	after, err := os.Stat(path)
	require.NoError(t, err)
	require.Less(t, after.Size(), before.Size()/2)
	tool(t, "check", path).requireCode(t, 0)
	r = tool(t, "dump", "-json", path, "-from", "19950", "-to", "19950").requireCode(t, 0)
	require.Contains(t, r.stdout, `"index":19950`)

	// compact never creates a store.
	missing := filepath.Join(t.TempDir(), "missing.db")
	r = tool(t, "compact", missing).requireCode(t, 2)
	require.Contains(t, r.stderr, "file does not exist")
	require.NoFileExists(t, missing)
}

func TestBackup(t *testing.T) {
	path := makeStore(t, 1, 500)
	dest := filepath.Join(t.TempDir(), "backup.db")
	r := tool(t, "backup", path, dest).requireCode(t, 0)
	require.Contains(t, r.stdout, "entries 1-500; the copy passed check")
	requireSameStore(t, path, dest)

	// Never over an existing file.
	r = tool(t, "backup", path, dest).requireCode(t, 2)
	require.Contains(t, r.stderr, "file already exists")

	// To stdout.
	r = tool(t, "backup", path, "-").requireCode(t, 0)
	piped := filepath.Join(t.TempDir(), "piped.db")
	require.NoError(t, os.WriteFile(piped, []byte(r.stdout), 0o600))
	requireSameStore(t, path, piped)
}

func requireSameStore(t *testing.T, a, b string) {
	t.Helper()
	o := quiet()
	o.ReadOnly = true
	sa, err := raftbolt.Open(a, o)
	require.NoError(t, err)
	defer sa.Close()
	sb, err := raftbolt.Open(b, o)
	require.NoError(t, err)
	defer sb.Close()
	require.NoError(t, sb.Check())
	fa, _ := sa.FirstIndex()
	la, _ := sa.LastIndex()
	fb, _ := sb.FirstIndex()
	lb, _ := sb.LastIndex()
	require.Equal(t, []uint64{fa, la}, []uint64{fb, lb})
	for i := fa; i <= la; i++ {
		var x, y raft.Log
		require.NoError(t, sa.GetLog(i, &x))
		require.NoError(t, sb.GetLog(i, &y))
		require.Equal(t, x, y)
	}
	ia, ca, err := sa.LatestConfiguration()
	require.NoError(t, err)
	ib, cb, err := sb.LatestConfiguration()
	require.NoError(t, err)
	require.Equal(t, ia, ib)
	require.Equal(t, ca, cb)
}

// writeBoltDB writes a hashicorp/raft-boltdb file: its two buckets, its
// msgpack records (util.go's encodeMsgPack) and raft's stable keys.
func writeBoltDB(t *testing.T, path string, first, last uint64, raw map[uint64][]byte) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	h := codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: true}}
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		logs, _ := tx.CreateBucket([]byte("logs"))
		conf, _ := tx.CreateBucket([]byte("conf"))
		for i := first; i <= last; i++ {
			l := entry(i)
			if i == first {
				l.Type, l.Data = raft.LogConfiguration, raft.EncodeConfiguration(testConf)
			}
			var buf bytes.Buffer
			if err := codec.NewEncoder(&buf, &h).Encode(l); err != nil {
				return err
			}
			v := buf.Bytes()
			if r, ok := raw[i]; ok {
				v = r
			}
			key := []byte{0, 0, 0, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
			if err := logs.Put(key, v); err != nil {
				return err
			}
		}
		_ = conf.Put([]byte("CurrentTerm"), []byte{0, 0, 0, 0, 0, 0, 0, 9})
		return conf.Put([]byte("LastVoteCand"), []byte("node-1"))
	}))
	require.NoError(t, db.Close())
}

func TestMigrate(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "raft.db"), filepath.Join(dir, "raftbolt.db")
	writeBoltDB(t, src, 11, 250, nil)

	// Every other command says how to migrate it.
	r := tool(t, "info", src).requireCode(t, 2)
	require.Contains(t, r.stderr, fmt.Sprintf("raftbolt migrate %s %s.raftbolt", src, src))

	r = tool(t, "migrate", src, dst).requireCode(t, 0)
	require.Contains(t, r.stdout, "migrated "+src+" to "+dst)
	require.Contains(t, r.stdout, "entries 11-250 (240), current term 9, configuration at index 11 (2 server(s))")
	r = tool(t, "info", "-json", dst).requireCode(t, 0)
	var info infoJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &info))
	require.EqualValues(t, 11, info.FirstIndex)
	require.EqualValues(t, 250, info.LastIndex)
	require.EqualValues(t, 9, *info.CurrentTerm)
	tool(t, "check", dst).requireCode(t, 0)

	// dst exists: usage/I-O error, dst untouched.
	r = tool(t, "migrate", src, dst).requireCode(t, 2)
	require.Contains(t, r.stderr, "file already exists")
	tool(t, "check", dst).requireCode(t, 0)

	// -json.
	dst2 := filepath.Join(dir, "second.db")
	r = tool(t, "migrate", "-json", src, dst2).requireCode(t, 0)
	var out map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.EqualValues(t, 240, out["entries"])

	// A corrupt source is a problem found, naming the index; nothing is left.
	bad := filepath.Join(dir, "bad.db")
	writeBoltDB(t, bad, 1, 50, map[uint64][]byte{33: {0xc1}})
	out3 := filepath.Join(t.TempDir(), "out.db")
	r = tool(t, "migrate", bad, out3).requireCode(t, 1)
	require.Contains(t, r.stderr, "entry 33 does not decode")
	require.NoFileExists(t, out3)
}

// TestLockedStore runs every command against a store another process (this
// test) holds open: each says it is locked, promptly, and exits 2.
func TestLockedStore(t *testing.T) {
	path := makeStore(t, 1, 10)
	s, err := raftbolt.Open(path, quiet())
	require.NoError(t, err)
	defer s.Close()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"info", path}, {"check", path}, {"dump", path}, {"config", path}, {"compact", path},
		{"backup", path, filepath.Join(dir, "b.db")},
	} {
		start := time.Now()
		r := tool(t, append(args, "-lock-timeout", "200ms")...).requireCode(t, 2)
		require.Contains(t, r.stderr, "locked by another process", "%v", args)
		require.Less(t, time.Since(start), 20*time.Second)
		require.Empty(t, r.stdout)
	}
	require.NoFileExists(t, filepath.Join(dir, "b.db"))

	// raft's process, still running, was not disturbed.
	require.NoError(t, s.StoreLogs([]*raft.Log{entry(11)}))
}

func TestUsage(t *testing.T) {
	path := makeStore(t, 1, 3)
	for _, args := range [][]string{
		{},
		{"frobnicate", path},
		{"info"},
		{"info", path, path},
		{"info", "-bogus", path},
		{"dump", "-from", "x", path},
		{"backup", path},
		{"migrate", path},
		{"info", "-lock-timeout", "0s", path},
	} {
		r := tool(t, args...).requireCode(t, 2)
		require.NotEmpty(t, r.stderr, "%v", args)
		require.Empty(t, r.stdout, "%v", args)
	}
	for _, args := range [][]string{{"-h"}, {"help"}, {"help", "dump"}} {
		r := tool(t, args...).requireCode(t, 0)
		require.Contains(t, r.stdout, "Usage:")
	}
	for _, c := range commands {
		r := tool(t, c.name, "-h").requireCode(t, 0)
		require.Contains(t, r.stdout, "Usage: raftbolt "+c.name)
		require.Contains(t, r.stdout, "-json")
		r = tool(t, c.name, path, "-h").requireCode(t, 0) // -h after the path too
		require.Contains(t, r.stdout, "Usage: raftbolt "+c.name)
	}

	// Missing files and files that are not stores.
	r := tool(t, "info", filepath.Join(t.TempDir(), "missing.db")).requireCode(t, 2)
	require.Contains(t, r.stderr, "file does not exist")
	text := filepath.Join(t.TempDir(), "text.db")
	require.NoError(t, os.WriteFile(text, bytes.Repeat([]byte("hello\n"), 1000), 0o600))
	r = tool(t, "info", text).requireCode(t, 2)
	require.Contains(t, r.stderr, "not a bbolt database")
}

// smConf is the configuration the test state machine records.
var smConf = raft.Configuration{Servers: []raft.Server{
	{Suffrage: raft.Voter, ID: "node-1", Address: "10.0.0.1:8300"},
	{Suffrage: raft.Voter, ID: "node-2", Address: "10.0.0.2:8300"},
	{Suffrage: raft.Voter, ID: "node-3", Address: "10.0.0.3:8300"},
}}

// setApply is the test state machine's ApplyFunc: "bucket/key=value",
// "bucket/nested/key=value".
func setApply(tx *bbolt.Tx, l *raft.Log) interface{} {
	path, value, _ := strings.Cut(string(l.Data), "=")
	names := strings.Split(path, "/")
	b, err := tx.CreateBucketIfNotExists([]byte(names[0]))
	for _, name := range names[1 : len(names)-1] {
		if err != nil {
			break
		}
		b, err = b.CreateBucketIfNotExists([]byte(name))
	}
	if err != nil {
		return err
	}
	return b.Put([]byte(names[len(names)-1]), []byte(value))
}

// makeStateMachine writes a closed state-machine file, as a controller's
// raft would: applied index 46, smConf committed at index 4, bucket "kv"
// with 41 keys (one of them binary) and a nested bucket "archive", and
// bucket "nodes" with one key.
func makeStateMachine(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	sm, err := raftbolt.OpenStateMachine(path, setApply, quiet())
	require.NoError(t, err)
	batch := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(testConf)},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte("nodes/node-1=10.0.0.1:8000")},
		{Index: 3, Term: 2, Type: raft.LogCommand, Data: []byte("kv/color=blue")},
		{Index: 4, Term: 2, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(smConf)},
		{Index: 5, Term: 2, Type: raft.LogCommand, Data: []byte("kv/bin=\xff\x00\x01")},
	}
	// Enough keys that "kv" gets a page of its own (bbolt keeps a small
	// bucket inline in its parent's page).
	for i := 6; i <= 44; i++ {
		data := fmt.Sprintf("kv/user-%02d=%s", i, strings.Repeat("v", 60))
		batch = append(batch, &raft.Log{Index: uint64(i), Term: 2, Type: raft.LogCommand, Data: []byte(data)})
	}
	batch = append(batch,
		&raft.Log{Index: 45, Term: 3, Type: raft.LogCommand, Data: []byte("kv/archive/old=gone")},
		&raft.Log{Index: 46, Term: 3, Type: raft.LogNoop})
	for i, r := range sm.ApplyBatch(batch) {
		require.Nil(t, r, "entry %d", batch[i].Index)
	}
	require.EqualValues(t, 46, sm.AppliedIndex())
	require.NoError(t, sm.Close())
	return path
}

func TestInfoStateMachine(t *testing.T) {
	path := makeStateMachine(t)
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	r := tool(t, "info", path).requireCode(t, 0)
	for _, want := range []string{
		"kind:           state machine\n", "applied index:  46\n",
		"buckets:        2, 42 keys\n", "  NAME   KEYS  BUCKETS\n", "  kv     41    1\n", "  nodes  1     0\n",
		"configuration:  index 4, 3 server(s)\n", "  node-3  10.0.0.3:8300  Voter\n",
	} {
		require.Contains(t, r.stdout, want)
	}
	require.NotContains(t, r.stdout, "_raftbolt")

	r = tool(t, "info", "-json", path).requireCode(t, 0)
	var info smInfoJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &info))
	require.Equal(t, "state_machine", info.Kind)
	require.EqualValues(t, 46, info.AppliedIndex)
	require.Positive(t, info.FileSize)
	require.Equal(t, []bucketJSON{{Name: "kv", Keys: 41, Buckets: 1}, {Name: "nodes", Keys: 1}}, info.Buckets)
	require.EqualValues(t, 4, info.Configuration.Index)
	require.Len(t, info.Configuration.Servers, 3)

	// The log store's info says its kind too.
	r = tool(t, "info", "-json", makeStore(t, 1, 3)).requireCode(t, 0)
	require.Contains(t, r.stdout, `"kind": "log_store"`)

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, before, after, "info wrote to the state machine")
}

func TestConfigStateMachine(t *testing.T) {
	path := makeStateMachine(t)
	r := tool(t, "config", path).requireCode(t, 0)
	require.Equal(t, "configuration at index 4\n"+
		"ID      ADDRESS        SUFFRAGE\n"+
		"node-1  10.0.0.1:8300  Voter\n"+
		"node-2  10.0.0.2:8300  Voter\n"+
		"node-3  10.0.0.3:8300  Voter\n", r.stdout)
	r = tool(t, "config", "-json", path).requireCode(t, 0)
	var conf struct {
		Kind string `json:"kind"`
		configJSON
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &conf))
	require.Equal(t, "state_machine", conf.Kind)
	require.EqualValues(t, 4, conf.Index)
	require.Len(t, conf.Servers, 3)

	// A state machine that has applied no configuration: exit 1.
	empty := filepath.Join(t.TempDir(), "state.db")
	sm, err := raftbolt.OpenStateMachine(empty, setApply, quiet())
	require.NoError(t, err)
	require.NoError(t, sm.Close())
	r = tool(t, "config", empty).requireCode(t, 1)
	require.Contains(t, r.stderr, "no configuration recorded")
}

func TestCheckStateMachine(t *testing.T) {
	path := makeStateMachine(t)
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	r := tool(t, "check", path).requireCode(t, 0)
	require.Equal(t, path+": ok: state machine, applied index 46, configuration at index 4; "+
		"2 buckets, 42 keys; every page and record verified\n", r.stdout)
	r = tool(t, "check", "-json", path).requireCode(t, 0)
	var out checkJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.True(t, out.OK)
	require.Equal(t, "state_machine", out.Kind)
	require.EqualValues(t, 46, *out.AppliedIndex)
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, before, after, "check wrote to the state machine")
}

func TestCheckDamagedStateMachine(t *testing.T) {
	before, err := os.ReadFile(makeStateMachine(t))
	require.NoError(t, err)

	// The applied record (index 46, term 3, big-endian) fails its checksum.
	record := filepath.Join(t.TempDir(), "record.db")
	require.NoError(t, os.WriteFile(record, flipAfter(t, before, []byte{0, 0, 0, 0, 0, 0, 0, 46, 0, 0, 0, 0, 0, 0, 0, 3}), 0o600))
	r := tool(t, "check", record).requireCode(t, 1)
	require.Contains(t, r.stdout, record+": DAMAGED (state machine)\n")
	require.Contains(t, r.stdout, "applied record")
	r = tool(t, "check", "-json", record).requireCode(t, 1)
	var out checkJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.False(t, out.OK)
	require.Equal(t, "state_machine", out.Kind)
	require.Contains(t, out.Error, "applied record")

	// A page of the application's bucket "kv" with bad page flags: only
	// checking every page finds it.
	page := filepath.Join(t.TempDir(), "page.db")
	require.NoError(t, os.WriteFile(page, damagePage(t, before, []byte("user-17")), 0o600))
	r = tool(t, "check", page).requireCode(t, 1)
	require.Contains(t, r.stdout, page+": DAMAGED (state machine)\n")
	require.Contains(t, r.stdout, "flags")
	// info and dump, which do not check every page, meet it as damage too.
	for _, cmd := range []string{"info", "dump"} {
		r = tool(t, cmd, page).requireCode(t, 1)
		require.Contains(t, r.stderr, "store corrupt", cmd)
		require.Contains(t, r.stderr, "raftbolt check "+page, cmd)
	}

	// A file cut short, inside its pages (bbolt grows a state machine's
	// file in large steps, so half of it would still hold every page):
	// damaged, of a kind nothing can tell.
	short := filepath.Join(t.TempDir(), "short.db")
	require.NoError(t, os.WriteFile(short, before[:3*4096], 0o600))
	r = tool(t, "check", short).requireCode(t, 1)
	require.Contains(t, r.stdout, "DAMAGED")
	require.Contains(t, r.stdout, "truncated")
}

// flipAfter returns a copy of data with the byte after every copy of
// needle flipped.
func flipAfter(t *testing.T, data, needle []byte) []byte {
	t.Helper()
	data = bytes.Clone(data)
	n := 0
	for off := 0; ; {
		j := bytes.Index(data[off:], needle)
		if j < 0 {
			break
		}
		data[off+j+len(needle)] ^= 0x55
		off += j + len(needle)
		n++
	}
	require.NotZero(t, n)
	return data
}

// damagePage returns a copy of data in which every 4 KiB page holding
// needle has invalid page flags.
func damagePage(t *testing.T, data, needle []byte) []byte {
	t.Helper()
	data = bytes.Clone(data)
	const pageSize = 4096
	n := 0
	for off := 0; ; {
		j := bytes.Index(data[off:], needle)
		if j < 0 {
			break
		}
		start := (off + j) / pageSize * pageSize
		data[start+8], data[start+9] = 0x7f, 0x7f // page header: id (8 bytes), flags (2)
		off = start + pageSize
		n++
	}
	require.NotZero(t, n)
	return data
}

func TestDumpStateMachine(t *testing.T) {
	path := makeStateMachine(t)
	r := tool(t, "dump", path).requireCode(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 44)
	require.Equal(t, `bucket=kv key="archive" nested_bucket`, lines[0])
	require.Equal(t, `bucket=kv/archive key="old" value="gone"`, lines[1])
	require.Equal(t, `bucket=kv key="bin" value_base64=/wAB`, lines[2])
	require.Equal(t, `bucket=kv key="color" value="blue"`, lines[3])
	require.Equal(t, `bucket=nodes key="node-1" value="10.0.0.1:8000"`, lines[43])
	require.NotContains(t, r.stdout, "_raftbolt")

	r = tool(t, "dump", path, "-json").requireCode(t, 0)
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	var got []keyJSON
	for sc.Scan() {
		var k keyJSON
		require.NoError(t, json.Unmarshal(sc.Bytes(), &k), sc.Text())
		got = append(got, k)
	}
	require.Len(t, got, 44)
	require.Equal(t, keyJSON{Bucket: []string{"kv"}, Key: ptr("archive"), Nested: true}, got[0])
	require.Equal(t, keyJSON{Bucket: []string{"kv", "archive"}, Key: ptr("old"), Value: ptr("gone")}, got[1])
	require.Equal(t, keyJSON{Bucket: []string{"kv"}, Key: ptr("bin"), ValueBase64: "/wAB"}, got[2])
	require.Equal(t, keyJSON{Bucket: []string{"kv"}, Key: ptr("color"), Value: ptr("blue")}, got[3])
	require.Equal(t, keyJSON{Bucket: []string{"nodes"}, Key: ptr("node-1"), Value: ptr("10.0.0.1:8000")}, got[43])

	// A state machine has no log entries to choose from.
	r = tool(t, "dump", "-from", "3", path).requireCode(t, 2)
	require.Contains(t, r.stderr, "state machine")
}

func ptr[T any](v T) *T { return &v }

// TestLockedStateMachine: a state machine a running process holds is
// locked, as a log store is.
func TestLockedStateMachine(t *testing.T) {
	path := makeStateMachine(t)
	sm, err := raftbolt.OpenStateMachine(path, setApply, quiet())
	require.NoError(t, err)
	defer sm.Close()
	for _, cmd := range []string{"info", "check", "dump", "config"} {
		r := tool(t, cmd, path, "-lock-timeout", "200ms").requireCode(t, 2)
		require.Contains(t, r.stderr, "locked by another process", cmd)
		require.Empty(t, r.stdout, cmd)
	}
}

// makeJournalStore writes a store whose entries 1-50 (and raft's stable
// keys, the configuration) are in the file and 51-80 only in its journal,
// three batches past the last checkpoint, as a crash leaves them: the
// files are copied while the store is open (its checkpoint waits an hour;
// the journal has room). It returns the copy's path.
func makeJournalStore(t *testing.T) string {
	t.Helper()
	o := quiet()
	o.Journal, o.NoJournal, o.JournalSize, o.CheckpointInterval = true, false, 256<<10, time.Hour
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := raftbolt.Open(path, o)
	require.NoError(t, err)
	require.NoError(t, s.StoreLogs(entries(1, 50)))
	require.NoError(t, s.SetUint64([]byte("CurrentTerm"), 3))
	require.NoError(t, s.StoreConfiguration(7, testConf))
	require.NoError(t, s.Close()) // checkpoints everything
	s, err = raftbolt.Open(path, o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	for i := uint64(51); i <= 80; i += 10 {
		require.NoError(t, s.StoreLogs(entries(i, i+9)))
	}
	st, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, 3, st.JournalBatches, "the batches must still be pending")
	dir := t.TempDir()
	for _, suffix := range []string{"", layout.JournalSuffix} {
		b, err := os.ReadFile(path + suffix)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "raft.db"+suffix), b, 0o600))
	}
	return filepath.Join(dir, "raft.db")
}

func entries(first, last uint64) []*raft.Log {
	var ls []*raft.Log
	for i := first; i <= last; i++ {
		ls = append(ls, entry(i))
	}
	return ls
}

// flipIn flips the last byte of needle, which must occur once in the file.
func flipIn(t *testing.T, path string, needle []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, 1, bytes.Count(data, needle), "%q", needle)
	data[bytes.Index(data, needle)+len(needle)-1] ^= 0x20
	require.NoError(t, os.WriteFile(path, data, 0o600))
}

// check verifies the journal: on a healthy one it says what is past the
// checkpoint; a bit flipped in the middle batch (the last one intact) is
// damage, named with the journal's path, exit status 1.
func TestCheckJournal(t *testing.T) {
	path := makeJournalStore(t)
	jpath := path + layout.JournalSuffix
	before := [2][]byte{}
	for k, p := range []string{path, jpath} {
		var err error
		before[k], err = os.ReadFile(p)
		require.NoError(t, err)
	}
	r := tool(t, "check", path).requireCode(t, 0)
	require.Contains(t, r.stdout, "ok: 80 entries (1-80)")
	require.Contains(t, r.stdout, "journal "+jpath+": ok: 256.0 KiB (262144 bytes), 3 batch(es)")
	r = tool(t, "check", "-json", path).requireCode(t, 0)
	var out checkJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.True(t, out.OK)
	require.NotNil(t, out.Journal)
	require.True(t, out.Journal.OK && out.Journal.InUse)
	require.Equal(t, 3, out.Journal.Batches)
	require.EqualValues(t, 256<<10, out.Journal.Size)
	require.Equal(t, out.Journal.FirstSeq+2, out.Journal.LastSeq)
	for k, p := range []string{path, jpath} {
		after, err := os.ReadFile(p)
		require.NoError(t, err)
		require.Equal(t, before[k], after, "check wrote to %s", p)
	}
	r = tool(t, "info", path).requireCode(t, 0)
	require.Contains(t, r.stdout, "last index:      80")
	require.Contains(t, r.stdout, "3 batch(es)")

	// Entry 63 is in the second of the three batches.
	flipIn(t, jpath, entry(63).Data)
	r = tool(t, "check", path).requireCode(t, 1)
	require.Contains(t, r.stdout, path+": DAMAGED (log store)")
	require.Contains(t, r.stdout, "journal "+jpath+": DAMAGED: ")
	require.Contains(t, r.stdout, fmt.Sprintf("journal frame %d at offset", out.Journal.FirstSeq+1))
	require.Contains(t, r.stdout, fmt.Sprintf("frames up to %d were written after it: acknowledged entries would be lost", out.Journal.LastSeq))
	r = tool(t, "check", "-json", path).requireCode(t, 1)
	var bad checkJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &bad))
	require.False(t, bad.OK)
	require.Equal(t, kindLogStore, bad.Kind)
	require.False(t, bad.Journal.OK)
	require.Equal(t, out.Journal.FirstSeq+1, *bad.Journal.DamagedSeq)
	require.Equal(t, out.Journal.LastSeq, *bad.Journal.LaterSeq)
	require.Equal(t, 1, bad.Journal.Batches, "the batch before the damage")
	require.Contains(t, bad.Error, jpath)
	// The other commands refuse the store too, rather than show it short.
	r = tool(t, "dump", path).requireCode(t, 1)
	require.Contains(t, r.stderr, "acknowledged entries would be lost")

	// An intact frame whose batch does not decode: Open's replay, not the
	// journal's format, finds it; the journal is named all the same.
	require.NoError(t, os.WriteFile(jpath, before[1], 0o600))
	c := &ctx{lockTimeout: time.Second}
	rec, inUse, found, recErr, err := c.journalRecord(path)
	require.NoError(t, err)
	require.NoError(t, recErr)
	require.True(t, found)
	require.True(t, inUse)
	j, _, err := journal.Open(jpath, rec.ID, rec.Pos, false, true)
	require.NoError(t, err)
	_, err = j.Append(1, bytes.Repeat([]byte{7}, 40))
	require.NoError(t, err)
	require.NoError(t, j.Close())
	r = tool(t, "check", path).requireCode(t, 1)
	require.Contains(t, r.stdout, "journal "+jpath+": DAMAGED: ")
	require.Contains(t, r.stdout, "frame") // decoding the batch failed

	// A journal that is not the store's (another journal's id), and one
	// whose header is damaged.
	other := makeJournalStore(t)
	require.NoError(t, os.Rename(other+layout.JournalSuffix, jpath))
	r = tool(t, "check", path).requireCode(t, 1)
	require.Contains(t, r.stdout, "journal "+jpath+": DAMAGED: ")
	require.Contains(t, r.stdout, "the store's checkpoint names")
	require.NoError(t, os.WriteFile(jpath, before[1], 0o600))
	f, err := os.OpenFile(jpath, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xee}, 20)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	r = tool(t, "check", path).requireCode(t, 1)
	require.Contains(t, r.stdout, "journal "+jpath+": DAMAGED: ")
	require.Contains(t, r.stdout, "header checksum mismatch")
}

// dump prints the entries still only in the journal: a read-only open
// keeps the replayed batches pending, and reads serve them.
func TestDumpJournalEntries(t *testing.T) {
	path := makeJournalStore(t)
	r := tool(t, "dump", path).requireCode(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 80)
	require.Equal(t, "index=63 term=3 type=LogCommand appended_at=2023-11-14T22:14:23Z data=\"set key-63\"", lines[62])
	r = tool(t, "dump", "-json", "-from", "75", path).requireCode(t, 0)
	require.Equal(t, 6, strings.Count(r.stdout, "\n"))
	require.Contains(t, r.stdout, `"index":80`)

	// The store file alone holds 1-50: 51-80 were only in the journal.
	alone := filepath.Join(t.TempDir(), "raft.db")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(alone, b, 0o600))
	r = tool(t, "dump", alone).requireCode(t, 0)
	require.Equal(t, 50, strings.Count(r.stdout, "\n"))
}
