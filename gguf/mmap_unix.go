//go:build unix

package gguf

import (
	"os"

	"golang.org/x/sys/unix"
)

// mmapFile maps size bytes of fd read-only and returns the mapping and the
// function that unmaps it.
func mmapFile(fd *os.File, size int64) ([]byte, func() error, error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, nil, unix.EINVAL
	}
	data, err := unix.Mmap(int(fd.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return unix.Munmap(data) }, nil
}
