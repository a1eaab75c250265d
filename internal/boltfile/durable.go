package boltfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// A file's name is durable only once its directory is synced: after a
// power cut, a file created or renamed without that sync may be gone (or
// still under its old name) although its own data was synced. Every create
// and rename in the module goes through the helpers below, which sync the
// file first, then the directory, and return every error: a caller that
// acknowledges a write after them has it on disk under its final name.

// SyncDir fsyncs directory dir, making the creations, renames and
// removals in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// SyncFile fsyncs the file at path.
func SyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// Replace puts the complete file tmp in place of path durably: it gives
// tmp the permission bits of the file it replaces (when there is one),
// syncs tmp, renames it over path and syncs the directory. tmp must be in
// path's directory. When it fails, path is either the old file or the new
// one, whole; tmp may be left for the caller to remove.
func Replace(tmp, path string) error {
	if fi, err := os.Stat(path); err == nil {
		if err := os.Chmod(tmp, fi.Mode().Perm()); err != nil {
			return fmt.Errorf("keep the mode of %s: %w", path, err)
		}
	}
	if err := SyncFile(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// Link gives the complete file tmp the name path durably, never replacing
// a file: it syncs tmp, links it to path, removes the name tmp and syncs
// the directory. When path exists the error wraps fs.ErrExist and nothing
// changed. Where the file system has no hard links, a rename after a last
// check for path does it (then a file created at path in between would be
// replaced).
func Link(tmp, path string) error {
	if err := SyncFile(tmp); err != nil {
		return err
	}
	err := os.Link(tmp, path)
	switch {
	case err == nil:
		if err := os.Remove(tmp); err != nil {
			return fmt.Errorf("remove the temporary name %s: %w", tmp, err)
		}
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s: %w", path, fs.ErrExist)
	default:
		if _, serr := os.Lstat(path); serr == nil {
			return fmt.Errorf("%s: %w", path, fs.ErrExist)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
		}
	}
	return SyncDir(filepath.Dir(path))
}

// Remove removes the file at path, if there is one, durably: the
// directory is synced after.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return SyncDir(filepath.Dir(path))
}
