//go:build !amd64

package cpu

import "github.com/m40llm/m40llm/gguf"

// qdot returns row · x for a row stored as t (see hasQDot) in portable Go.
func qdot(t gguf.Type, row []byte, x qvec) float32 { return qdotGeneric(t, row, x) }

// useAVX2 is false: there are no assembly kernels on this architecture.
const useAVX2 = false
