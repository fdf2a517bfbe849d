//go:build !amd64

package cpu

import "github.com/m40llm/m40llm/gguf"

// dot returns Σ a[i]·b[i] over len(a) elements.
func dot(a, b []float32) float32 { return dotGeneric(a, b) }

// dot4 returns the dot products of w with four vectors.
func dot4(w, x0, x1, x2, x3 []float32) (float32, float32, float32, float32) {
	return dot4Generic(w, x0, x1, x2, x3)
}

// hasFusedDot reports whether rows of type t have a fused dot kernel:
// none on this architecture.
func hasFusedDot(gguf.Type) bool { return false }

func fusedDot(t gguf.Type, _ []byte, _ []float32) float32 {
	panic("cpu: fusedDot of " + t.String())
}

// rowToF32 reports false: no vector conversion on this architecture.
func rowToF32(gguf.Type, []float32, []byte) bool { return false }
