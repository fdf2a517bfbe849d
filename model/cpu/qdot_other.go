//go:build !amd64

package cpu

import "github.com/m40llm/m40llm/gguf"

// qdot returns row · x for a row stored as t (see hasQDot) in portable Go.
func qdot(t gguf.Type, row []byte, x qvec) float32 { return qdotGeneric(t, row, x) }

// qdot4 returns row · x for the four activation rows i..i+3 of q.
func qdot4(t gguf.Type, row []byte, q *qrows, i int) (out [4]float32) {
	for j := range out {
		out[j] = qdot(t, row, q.row(i+j))
	}
	return out
}

// useAVX2 is false: there are no assembly kernels on this architecture.
const useAVX2 = false

// quantizeRow quantizes x into dst (see quantizeRowGeneric).
func quantizeRow(dst qvec, x []float32) { quantizeRowGeneric(dst, x) }

// qdotRows reports false: no multi-row kernel off amd64.
func qdotRows(gguf.Type, []byte, int, qvec, []float32) bool { return false }

// qdot4Rows reports false: no multi-row kernel off amd64.
func qdot4Rows(gguf.Type, []byte, int, int, *qrows, int, []float32, int) bool { return false }
