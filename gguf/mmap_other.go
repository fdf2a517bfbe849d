//go:build !unix

package gguf

import (
	"errors"
	"os"
)

// mmapFile is not implemented on this platform; Open falls back to reads.
func mmapFile(*os.File, int64) ([]byte, func() error, error) {
	return nil, nil, errors.ErrUnsupported
}
