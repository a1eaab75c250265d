package powerloss

import (
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// hx is s as strace -xx prints it.
func hx(s string) string { return `"` + escape(s) + `"` }

func fd(n int, path string) string { return strconv.Itoa(n) + "<" + escape(path) + ">" }

var cwd = "AT_FDCWD<" + escape("/w") + ">"

// syntheticTrace creates a file, writes it in two steps across an fsync,
// renames a temporary file into place, syncs the directory, and writes a
// mark; one call is split across threads.
func syntheticTrace() string {
	return strings.Join([]string{
		`100   openat(` + cwd + `, ` + hx("/w/r/a") + `, O_RDWR|O_CREAT|O_CLOEXEC, 0600) = 3<` + escape("/w/r/a") + `>`,
		`100   openat(` + cwd + `, ` + hx("/etc/hosts") + `, O_RDONLY|O_CLOEXEC) = 4<` + escape("/etc/hosts") + `>`,
		`100   pwrite64(` + fd(3, "/w/r/a") + `, ` + hx("0123456789") + `, 10, 0) = 10`,
		`101   fdatasync(` + fd(3, "/w/r/a") + ` <unfinished ...>`,
		`100   write(4<` + escape("/etc/hosts") + `>, ` + hx("POWERLOSS not a mark\n") + `, 21) = -1 EBADF (Bad file descriptor)`,
		`101   <... fdatasync resumed>)       = 0`,
		`100   write(` + fd(3, "/w/r/a") + `, ` + hx("xy") + `, 2) = 2`,
		`100   write(` + fd(3, "/w/r/a") + `, ` + hx("z") + `, 1 <unfinished ...>`,
		`100   <... write resumed>)      = 1`,
		`100   --- SIGURG {si_signo=SIGURG, si_code=SI_TKILL, si_pid=100, si_uid=0} ---`,
		`100   openat(` + cwd + `, ` + hx("r/t.tmp") + `, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0600) = 5<` + escape("/w/r/t.tmp") + `>`,
		`100   write(` + fd(5, "/w/r/t.tmp") + `, ` + hx("new") + `, 3) = 3`,
		`100   fsync(` + fd(5, "/w/r/t.tmp") + `) = 0`,
		`100   close(` + fd(5, "/w/r/t.tmp") + `) = 0`,
		`100   renameat(` + cwd + `, ` + hx("/w/r/t.tmp") + `, ` + cwd + `, ` + hx("/w/r/t") + `) = 0`,
		`100   ftruncate(` + fd(3, "/w/r/a") + `, 4) = 0`,
		`100   openat(` + cwd + `, ` + hx("/w/r") + `, O_RDONLY|O_CLOEXEC) = 6<` + escape("/w/r") + `>`,
		`100   fsync(` + fd(6, "/w/r") + `) = 0`,
		`100   write(1<pipe:[1]>, ` + hx("POWERLOSS ack\n") + `, 14) = 14`,
		`100   unlinkat(` + cwd + `, ` + hx("/w/r/t") + `, 0) = 0`,
		`100   +++ exited with 0 +++`,
	}, "\n") + "\n"
}

func TestParse(t *testing.T) {
	ops, err := Parse(strings.NewReader(syntheticTrace()), "/w/r", "/w")
	require.NoError(t, err)
	var got []string
	for _, op := range ops {
		got = append(got, op.String())
	}
	require.Equal(t, []string{
		"openat O_CREAT(a -> ino 1)",
		"pwrite64(ino 1, off 0, len 10)",
		"fdatasync(ino 1)",
		"write(ino 1, off 0, len 2)", // write uses the descriptor's offset, which pwrite left alone
		"write(ino 1, off 2, len 1)",
		"openat O_CREAT(t.tmp -> ino 2)",
		"write(ino 2, off 0, len 3)",
		"fsync(ino 2)",
		"renameat(t.tmp -> t)",
		"ftruncate(ino 1, 4)",
		"fsync(dir .)",
		`mark "POWERLOSS ack"`,
		"unlinkat(t)",
	}, got)
	require.Equal(t, []byte("0123456789"), ops[1].Data)
	require.Equal(t, 6, ops[2].Line, "a resumed call is placed where it returned")
}

func TestParseRejectsCutStrings(t *testing.T) {
	tr := `1 openat(` + cwd + `, ` + hx("/w/r/a") + `, O_RDWR|O_CREAT, 0600) = 3<` + escape("/w/r/a") + ">\n" +
		`1 pwrite64(` + fd(3, "/w/r/a") + `, "\x30\x31"..., 4096, 0) = 4096` + "\n"
	_, err := Parse(strings.NewReader(tr), "/w/r", "/w")
	require.ErrorContains(t, err, "cut short")
}

// statesAt returns every state Explore generates at the crash point just
// before the n-th operation (n = len(ops): the end), file sets as strings.
func statesAt(t *testing.T, ops []Op, p int) []string {
	t.Helper()
	fs := NewFS()
	for i := range ops[:p] {
		fs.Apply(&ops[i])
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	for k := -len(fs.pendingNames); k <= len(fs.pendingNames); k++ {
		for _, mode := range []string{keepNone, keepAll} {
			seen[render(fs.build(p, nil, k, mode, rng))] = true
		}
	}
	for range 300 {
		seen[render(fs.build(p, nil, rng.IntN(len(fs.pendingNames)+1), randomModes[rng.IntN(len(randomModes))], rng))] = true
	}
	var out []string
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func render(s *State) string {
	var names []string
	for n := range s.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n + "=" + string(s.Files[n]) + " ")
	}
	return strings.TrimSpace(b.String())
}

func TestModelNamesNeedTheDirectorySync(t *testing.T) {
	ops, err := Parse(strings.NewReader(syntheticTrace()), "/w/r", "/w")
	require.NoError(t, err)
	// Before the directory fsync (op 10): a's data was synced, but neither
	// name is durable, so the directory may be empty; t.tmp may be there
	// (synced data), t only as t.tmp's rename.
	got := statesAt(t, ops, 10)
	require.Contains(t, got, "", "no name durable: an empty directory")
	require.Contains(t, got, "a=0123456789", "a's name, its synced data")
	require.Contains(t, got, "a=xy23456789 t=new", "everything")
	require.Contains(t, got, "a=0123 t=new", "the truncation alone")
	require.Contains(t, got, "a=0123456789 t.tmp=new", "the rename not applied")
	require.Contains(t, got, "t=new", "the create of a not applied, the later ones applied")
	for _, s := range got {
		require.NotContains(t, s, "a=01234567z", "writes apply in order: z is at offset 2")
		require.False(t, strings.Contains(s, "t=") && strings.Contains(s, "t.tmp="), "a rename leaves one name: %s", s)
	}
	// After it: both names durable; a's unsynced writes and truncation may
	// or may not be there; t is t.tmp's synced content.
	got = statesAt(t, ops, 11)
	require.Equal(t, []string{
		"a=0123 t=new", "a=0123456789 t=new", "a=01z3 t=new", "a=01z3456789 t=new", "a=xy23 t=new", "a=xy23456789 t=new", "a=xyz3 t=new", "a=xyz3456789 t=new",
	}, got)
	// The unlink is pending at the end: t may still be there.
	got = statesAt(t, ops, len(ops))
	require.True(t, slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "t=new") }))
	require.True(t, slices.ContainsFunc(got, func(s string) bool { return !strings.Contains(s, "t=") }))
}

func TestModelTearsAtSectors(t *testing.T) {
	data := strings.Repeat("A", 512) + strings.Repeat("B", 512) + strings.Repeat("C", 100)
	ops := []Op{
		{Kind: Link, Name: "f", Inode: 1},
		{Kind: DirSync, Name: "."},
		{Kind: Write, Inode: 1, Off: 0, Data: []byte(strings.Repeat("z", 1124))},
		{Kind: Sync, Inode: 1},
		{Kind: Write, Inode: 1, Off: 0, Data: []byte(data)},
	}
	got := statesAt(t, ops, len(ops))
	z := func(n int) string { return strings.Repeat("z", n) }
	A, B, C := strings.Repeat("A", 512), strings.Repeat("B", 512), strings.Repeat("C", 100)
	require.ElementsMatch(t, []string{
		"f=" + z(1124), "f=" + data, // untorn
		"f=" + A + z(612), "f=" + z(512) + B + z(100), "f=" + z(1024) + C, // one sector
		"f=" + A + B + z(100), "f=" + A + z(512) + C, "f=" + z(512) + B + C, // two
	}, got)
	require.Len(t, sectors(&Op{Kind: Write, Off: 500, Data: make([]byte, 30)}), 2, "a write across a sector boundary")
}

func TestExploreKeepsToTheBudgetAndMarks(t *testing.T) {
	ops, err := Parse(strings.NewReader(syntheticTrace()), "/w/r", "/w")
	require.NoError(t, err)
	var states []*State
	points := Explore(ops, 25, rand.New(rand.NewPCG(3, 4)), func(s *State) bool { states = append(states, s); return true })
	require.Greater(t, points, 5)
	require.LessOrEqual(t, len(states), 25)
	require.Greater(t, len(states), 10)
	for _, s := range states {
		require.Equal(t, s.Point > 11, len(s.Marks) == 1, "marks are those before the crash point")
		require.Contains(t, s.Desc, "crash ")
	}
	n := 0
	Explore(ops, 100, rand.New(rand.NewPCG(3, 4)), func(*State) bool { n++; return n < 3 })
	require.Equal(t, 3, n, "emit returning false stops it")
}

func TestVerifyComparesWithTheProcessView(t *testing.T) {
	ops, err := Parse(strings.NewReader(syntheticTrace()), "/w/r", "/w")
	require.NoError(t, err)
	check := func(want string) func(map[string][]byte, string) bool {
		return func(files map[string][]byte, mark string) bool {
			return render(&State{Files: files}) == want
		}
	}
	require.NoError(t, Verify(ops, check("a=xyz3 t=new")), "at the ack: every operation before it")
	require.NoError(t, Verify(ops, check("a=xyz3456789 t=new")), "a state since the previous mark: a read racing the truncation")
	require.ErrorContains(t, Verify(ops, check("a=never")), "agrees with")
}
