package journal

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data, and only the metadata needed to read it back:
// the journal's blocks are allocated when it is created, so that is none.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
