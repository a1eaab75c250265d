package powerloss

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// Kind is the kind of a file-system operation.
type Kind int

const (
	Write    Kind = iota // Data written at Off in Inode
	Truncate             // Inode's size set to Size
	Sync                 // fsync or fdatasync of Inode: its data and size are durable
	DirSync              // fsync of directory Dir: its name operations are durable
	SyncAll              // sync or syncfs: everything is durable
	Link                 // Name now refers to Inode (a create or a link)
	Unlink               // Name removed
	Rename               // Name moved to NewName (replacing it)
	Mark                 // a line the workload wrote to an untracked descriptor
)

func (k Kind) String() string {
	return [...]string{"write", "truncate", "sync", "dirsync", "syncall", "link", "unlink", "rename", "mark"}[k]
}

// Op is one operation on the traced directory. Names are paths relative to
// the directory, in slash form.
type Op struct {
	Kind  Kind
	Line  int    // line of the trace it comes from (1-based)
	Sys   string // the system call
	Inode int
	Off   int64
	Data  []byte
	Size  int64
	Name  string
	New   string // Rename's new name
	Text  string // Mark's line, without its newline
}

// Dir is the directory a name operation changes (Rename: the new name's).
func (o *Op) Dir() string {
	if o.Kind == Rename {
		return filepath.Dir(o.New)
	}
	return filepath.Dir(o.Name)
}

func (o *Op) String() string {
	switch o.Kind {
	case Write:
		return fmt.Sprintf("%s(ino %d, off %d, len %d)", o.Sys, o.Inode, o.Off, len(o.Data))
	case Truncate:
		return fmt.Sprintf("%s(ino %d, %d)", o.Sys, o.Inode, o.Size)
	case Sync:
		return fmt.Sprintf("%s(ino %d)", o.Sys, o.Inode)
	case DirSync:
		return fmt.Sprintf("fsync(dir %s)", o.Name)
	case Link:
		return fmt.Sprintf("%s(%s -> ino %d)", o.Sys, o.Name, o.Inode)
	case Unlink:
		return fmt.Sprintf("%s(%s)", o.Sys, o.Name)
	case Rename:
		return fmt.Sprintf("%s(%s -> %s)", o.Sys, o.Name, o.New)
	case Mark:
		return fmt.Sprintf("mark %q", o.Text)
	}
	return o.Sys
}

// MarkPrefix starts every line a workload writes to tell the explorer where
// it is ("POWERLOSS intent ...", "POWERLOSS ack").
const MarkPrefix = "POWERLOSS "

// Syscalls is the strace -e trace= list that Parse understands (a leading
// '?' lets strace ignore a call the architecture lacks).
const Syscalls = "?open,openat,?creat,write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,sync_file_range," +
	"ftruncate,?truncate,fallocate,?rename,renameat,renameat2,?link,linkat,?unlink,unlinkat,close," +
	"dup,?dup2,dup3,sync,syncfs,mkdirat,?mkdir"

// StraceArgs are the strace options the trace must be recorded with: every
// thread, every byte as \xNN (so no string holds a space, comma or quote),
// whole buffers, descriptors annotated with their paths.
func StraceArgs(out string) []string {
	return []string{"-f", "-qq", "-xx", "-s", strconv.Itoa(64 << 20), "-y", "-o", out, "-e", "trace=" + Syscalls}
}

// fdInfo is what an open descriptor refers to. Descriptors made by dup
// share one (and its offset).
type fdInfo struct {
	dir    bool
	name   string
	inode  int
	off    int64
	append bool
}

// parser turns trace lines into operations on the files under root.
type parser struct {
	root   string
	cwd    string
	names  map[string]int // the namespace as the process sees it
	sizes  map[int]int64  // file sizes as the process sees them
	dirs   map[string]bool
	fds    map[int]*fdInfo
	nextIn int
	ops    []Op
	line   int
}

// Parse reads an strace log recorded with StraceArgs and returns the
// operations on files under root (an absolute path, symlinks resolved, that
// is empty when the trace starts), in the order the calls returned, and the
// Marks written to any other descriptor. cwd resolves relative paths.
func Parse(r io.Reader, root, cwd string) ([]Op, error) {
	p := &parser{root: filepath.Clean(root), cwd: cwd, names: map[string]int{}, sizes: map[int]int64{},
		dirs: map[string]bool{".": true}, fds: map[int]*fdInfo{}, nextIn: 1}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	unfinished := map[string]string{}
	for sc.Scan() {
		p.line++
		l := sc.Text()
		pid, rest, ok := strings.Cut(strings.TrimLeft(l, " "), " ")
		if !ok || pid == "" || pid[0] < '0' || pid[0] > '9' {
			pid, rest = "", l // a trace of a single process has no pid column
		}
		rest = strings.TrimLeft(rest, " ")
		switch {
		case strings.HasPrefix(rest, "+++"), strings.HasPrefix(rest, "---"):
			continue
		case strings.HasSuffix(rest, " <unfinished ...>"):
			if strings.HasPrefix(rest, "<...") {
				continue // resumed and cut again by the exit
			}
			unfinished[pid] = strings.TrimSuffix(rest, " <unfinished ...>")
			continue
		case strings.HasPrefix(rest, "<... "):
			start, ok := unfinished[pid]
			_, tail, ok2 := strings.Cut(rest, " resumed>")
			if !ok || !ok2 {
				return nil, fmt.Errorf("line %d: resumed call with no start: %s", p.line, short(l))
			}
			delete(unfinished, pid)
			rest = start + tail
		}
		if err := p.call(rest); err != nil {
			return nil, fmt.Errorf("trace line %d: %v: %s", p.line, err, short(l))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return p.ops, nil
}

func short(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// call handles one complete line: name(args) = ret ... (strace pads the
// space before "=" in resumed calls).
func (p *parser) call(l string) error {
	open := strings.IndexByte(l, '(')
	eq := strings.LastIndex(l, " = ")
	end := strings.LastIndex(l[:max(eq, 0)], ")")
	if open < 0 || eq < 0 || end < open || strings.TrimSpace(l[end+1:eq]) != "" {
		if strings.HasSuffix(l, "= ?") || strings.HasSuffix(l, "= ? <unavailable>") {
			return nil // the process exited inside the call
		}
		return fmt.Errorf("not a system call line")
	}
	name := l[:open]
	ret, _, _ := strings.Cut(l[eq+3:], " ")
	if i := strings.IndexByte(ret, '<'); i >= 0 {
		ret = ret[:i]
	}
	if ret == "?" {
		return nil
	}
	rv, err := strconv.ParseInt(ret, 0, 64)
	if err != nil {
		return fmt.Errorf("return value %q", ret)
	}
	if rv < 0 {
		return nil // failed: changed nothing
	}
	return p.handle(name, splitArgs(l[open+1:end]), rv)
}

// splitArgs splits at ", " outside brackets. Strings cannot hold ", "
// under -xx.
func splitArgs(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[', '{', '(':
			depth++
		case ']', '}', ')':
			depth--
		case ',':
			if depth == 0 && i+1 < len(s) && s[i+1] == ' ' {
				out = append(out, s[start:i])
				start = i + 2
				i++
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// unquote decodes a "\xNN..." string.
func unquote(s string) ([]byte, error) {
	if strings.HasSuffix(s, "...") {
		return nil, fmt.Errorf("string cut short (raise strace -s)")
	}
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return nil, fmt.Errorf("not a string: %.40s", s)
	}
	return unescape(s[1 : len(s)-1])
}

func unescape(s string) ([]byte, error) {
	out := make([]byte, 0, len(s)/4)
	for i := 0; i < len(s); {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] == 'x' {
			if i+4 > len(s) {
				return nil, fmt.Errorf("bad escape at the end of %.40q", s)
			}
			b, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("bad escape %q", s[i:i+4])
			}
			out = append(out, byte(b))
			i += 4
			continue
		}
		out = append(out, s[i])
		i++
	}
	return out, nil
}

// fdArg splits "5</path>" or "AT_FDCWD</path>" into the descriptor (-100
// for AT_FDCWD) and the annotated path.
func fdArg(s string) (int, string, error) {
	num, path, _ := strings.Cut(s, "<")
	path = strings.TrimSuffix(strings.TrimSuffix(path, "(deleted)"), ">")
	p, err := unescape(path)
	if err != nil {
		return 0, "", err
	}
	if num == "AT_FDCWD" {
		return -100, string(p), nil
	}
	fd, err := strconv.Atoi(num)
	if err != nil {
		return 0, "", fmt.Errorf("descriptor %q", s)
	}
	return fd, string(p), nil
}

// rel returns the name of abs under root, or false.
func (p *parser) rel(abs string) (string, bool) {
	r, err := filepath.Rel(p.root, filepath.Clean(abs))
	if err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return "", false
	}
	return filepath.ToSlash(r), true
}

// pathAt resolves the (dirfd, path) arguments of an *at call.
func (p *parser) pathAt(dirArg, pathArg string) (string, bool, error) {
	b, err := unquote(pathArg)
	if err != nil {
		return "", false, err
	}
	path := string(b)
	if !filepath.IsAbs(path) {
		_, dir, err := fdArg(dirArg)
		if err != nil {
			return "", false, err
		}
		if dir == "" {
			dir = p.cwd
		}
		path = filepath.Join(dir, path)
	}
	r, ok := p.rel(path)
	return r, ok, nil
}

func (p *parser) pathArg(arg string) (string, bool, error) {
	return p.pathAt("AT_FDCWD<"+escape(p.cwd)+">", arg)
}

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "\\x%02x", s[i])
	}
	return b.String()
}

func (p *parser) emit(op Op) {
	op.Line = p.line
	p.ops = append(p.ops, op)
}

func hasFlag(flags, f string) bool {
	for _, x := range strings.Split(flags, "|") {
		if x == f {
			return true
		}
	}
	return false
}

// file returns the tracked file a descriptor argument names, or nil.
func (p *parser) file(arg string) (*fdInfo, error) {
	fd, _, err := fdArg(arg)
	if err != nil {
		return nil, err
	}
	return p.fds[fd], nil
}

func (p *parser) handle(name string, a []string, rv int64) error {
	need := func(n int) error {
		if len(a) < n {
			return fmt.Errorf("%s: %d arguments, expected %d", name, len(a), n)
		}
		return nil
	}
	switch name {
	case "open", "openat", "creat":
		var rel string
		var ok bool
		var err error
		flags := "O_CREAT|O_WRONLY|O_TRUNC"
		switch name {
		case "openat":
			if err = need(3); err != nil {
				return err
			}
			rel, ok, err = p.pathAt(a[0], a[1])
			flags = a[2]
		case "open":
			if err = need(2); err != nil {
				return err
			}
			rel, ok, err = p.pathArg(a[0])
			flags = a[1]
		default:
			rel, ok, err = p.pathArg(a[0])
		}
		if err != nil {
			return err
		}
		fd := int(rv)
		delete(p.fds, fd)
		if !ok {
			return nil
		}
		if p.dirs[rel] || hasFlag(flags, "O_DIRECTORY") {
			p.dirs[rel] = true
			p.fds[fd] = &fdInfo{dir: true, name: rel}
			return nil
		}
		ino, exists := p.names[rel]
		if !exists {
			if !hasFlag(flags, "O_CREAT") {
				return fmt.Errorf("%s existed before the trace began", rel)
			}
			ino = p.nextIn
			p.nextIn++
			p.names[rel] = ino
			p.sizes[ino] = 0
			p.emit(Op{Kind: Link, Sys: name + " O_CREAT", Name: rel, Inode: ino})
		}
		if hasFlag(flags, "O_TRUNC") && p.sizes[ino] != 0 {
			p.sizes[ino] = 0
			p.emit(Op{Kind: Truncate, Sys: name + " O_TRUNC", Inode: ino})
		}
		p.fds[fd] = &fdInfo{name: rel, inode: ino, append: hasFlag(flags, "O_APPEND")}
	case "close":
		fd, _, err := fdArg(a[0])
		if err != nil {
			return err
		}
		delete(p.fds, fd)
	case "dup", "dup2", "dup3":
		fd, _, err := fdArg(a[0])
		if err != nil {
			return err
		}
		delete(p.fds, int(rv))
		if f := p.fds[fd]; f != nil {
			p.fds[int(rv)] = f
		}
	case "write", "pwrite64", "writev", "pwritev", "pwritev2":
		if err := need(2); err != nil {
			return err
		}
		var data []byte
		if name == "writev" || name == "pwritev" || name == "pwritev2" {
			for _, part := range strings.Split(a[1], "iov_base=")[1:] {
				s, _, _ := strings.Cut(part, ", iov_len=")
				b, err := unquote(s)
				if err != nil {
					return err
				}
				data = append(data, b...)
			}
		} else {
			b, err := unquote(a[1])
			if err != nil {
				return err
			}
			data = b
		}
		if int64(len(data)) > rv {
			data = data[:rv] // a short write
		}
		f, err := p.file(a[0])
		if err != nil {
			return err
		}
		if f == nil {
			for _, l := range strings.Split(string(data), "\n") {
				if strings.HasPrefix(l, MarkPrefix) {
					p.emit(Op{Kind: Mark, Sys: name, Text: l})
				}
			}
			return nil
		}
		if f.dir {
			return fmt.Errorf("write to directory %s", f.name)
		}
		var off int64
		switch {
		case name == "pwrite64" || name == "pwritev" || name == "pwritev2":
			if err := need(3); err != nil {
				return err
			}
			o, err := strconv.ParseInt(a[len(a)-1], 0, 64)
			if name == "pwritev" || name == "pwritev2" {
				o, err = strconv.ParseInt(a[3], 0, 64)
			}
			if err != nil {
				return fmt.Errorf("offset %q", a[len(a)-1])
			}
			off = o
		case f.append:
			off = p.sizes[f.inode]
			f.off = off + int64(len(data))
		default:
			off = f.off
			f.off += int64(len(data))
		}
		if end := off + int64(len(data)); end > p.sizes[f.inode] {
			p.sizes[f.inode] = end
		}
		p.emit(Op{Kind: Write, Sys: name, Inode: f.inode, Off: off, Data: data})
	case "ftruncate", "truncate":
		if err := need(2); err != nil {
			return err
		}
		size, err := strconv.ParseInt(a[1], 0, 64)
		if err != nil {
			return fmt.Errorf("size %q", a[1])
		}
		var ino int
		if name == "ftruncate" {
			f, err := p.file(a[0])
			if err != nil || f == nil {
				return err
			}
			ino = f.inode
		} else {
			rel, ok, err := p.pathArg(a[0])
			if err != nil || !ok {
				return err
			}
			if ino = p.names[rel]; ino == 0 {
				return fmt.Errorf("truncate of unknown %s", rel)
			}
		}
		p.sizes[ino] = size
		p.emit(Op{Kind: Truncate, Sys: name, Inode: ino, Size: size})
	case "fallocate":
		if err := need(4); err != nil {
			return err
		}
		f, err := p.file(a[0])
		if err != nil || f == nil {
			return err
		}
		off, err1 := strconv.ParseInt(a[2], 0, 64)
		n, err2 := strconv.ParseInt(a[3], 0, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("fallocate range %s %s", a[2], a[3])
		}
		switch {
		case strings.Contains(a[1], "PUNCH_HOLE"), strings.Contains(a[1], "ZERO_RANGE"):
			p.emit(Op{Kind: Write, Sys: name, Inode: f.inode, Off: off, Data: make([]byte, n)})
		case strings.Contains(a[1], "KEEP_SIZE"):
		case off+n > p.sizes[f.inode]:
			p.sizes[f.inode] = off + n
			p.emit(Op{Kind: Truncate, Sys: name, Inode: f.inode, Size: off + n})
		}
	case "fsync", "fdatasync":
		f, err := p.file(a[0])
		if err != nil || f == nil {
			return err
		}
		if f.dir {
			p.emit(Op{Kind: DirSync, Sys: name, Name: f.name})
		} else {
			p.emit(Op{Kind: Sync, Sys: name, Inode: f.inode})
		}
	case "sync", "syncfs":
		p.emit(Op{Kind: SyncAll, Sys: name})
	case "sync_file_range":
		// Starts writeback; makes nothing durable (no metadata, no cache flush).
	case "rename", "renameat", "renameat2":
		var from, to string
		var ok1, ok2 bool
		var err error
		if name == "rename" {
			if err := need(2); err != nil {
				return err
			}
			if from, ok1, err = p.pathArg(a[0]); err == nil {
				to, ok2, err = p.pathArg(a[1])
			}
		} else {
			if err := need(4); err != nil {
				return err
			}
			if len(a) > 4 && a[4] != "0" && a[4] != "RENAME_NOREPLACE" {
				return fmt.Errorf("%s flags %s not modelled", name, a[4])
			}
			if from, ok1, err = p.pathAt(a[0], a[1]); err == nil {
				to, ok2, err = p.pathAt(a[2], a[3])
			}
		}
		if err != nil {
			return err
		}
		switch {
		case ok1 && ok2:
			if p.dirs[from] {
				return fmt.Errorf("rename of directory %s not modelled", from)
			}
			p.names[to] = p.names[from]
			delete(p.names, from)
			p.emit(Op{Kind: Rename, Sys: name, Name: from, New: to})
		case ok1:
			delete(p.names, from)
			p.emit(Op{Kind: Unlink, Sys: name + " out", Name: from})
		case ok2:
			return fmt.Errorf("rename into the traced directory from outside: %s", to)
		}
	case "link", "linkat":
		var from, to string
		var ok1, ok2 bool
		var err error
		if name == "link" {
			if err := need(2); err != nil {
				return err
			}
			if from, ok1, err = p.pathArg(a[0]); err == nil {
				to, ok2, err = p.pathArg(a[1])
			}
		} else {
			if err := need(4); err != nil {
				return err
			}
			if from, ok1, err = p.pathAt(a[0], a[1]); err == nil {
				to, ok2, err = p.pathAt(a[2], a[3])
			}
		}
		if err != nil {
			return err
		}
		if ok2 {
			ino := p.names[from]
			if name == "linkat" && len(a) > 4 && hasFlag(a[4], "AT_EMPTY_PATH") {
				f, err := p.file(a[0]) // linkat(fd, "", ..., AT_EMPTY_PATH) names fd's file
				if err != nil {
					return err
				}
				ok1, ino = f != nil && !f.dir, 0
				if ok1 {
					ino = f.inode
				}
			}
			if !ok1 || ino == 0 {
				return fmt.Errorf("link into the traced directory of a file it does not know: %s", to)
			}
			p.names[to] = ino
			p.emit(Op{Kind: Link, Sys: name, Name: to, Inode: ino})
		}
	case "unlink", "unlinkat":
		var rel string
		var ok bool
		var err error
		if name == "unlink" {
			rel, ok, err = p.pathArg(a[0])
		} else {
			if err := need(3); err != nil {
				return err
			}
			rel, ok, err = p.pathAt(a[0], a[1])
			if hasFlag(a[2], "AT_REMOVEDIR") {
				if ok {
					delete(p.dirs, rel)
				}
				return err
			}
		}
		if err != nil || !ok {
			return err
		}
		delete(p.names, rel)
		p.emit(Op{Kind: Unlink, Sys: name, Name: rel})
	case "mkdir", "mkdirat":
		var rel string
		var ok bool
		var err error
		if name == "mkdir" {
			rel, ok, err = p.pathArg(a[0])
		} else if err = need(2); err == nil {
			rel, ok, err = p.pathAt(a[0], a[1])
		}
		if err != nil {
			return err
		}
		if ok {
			// Directories are taken as durable at once (not modelled).
			p.dirs[rel] = true
		}
	}
	return nil
}
