package ptx

import (
	"fmt"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
)

// QuantType is a quantized weight encoding the kernels of quant.cu read.
type QuantType int

// The encodings, with GGUF's names. Both have blocks of 32 elements with
// an FP16 scale.
const (
	QuantQ8_0 QuantType = iota // int8 quants: value = d·q
	QuantQ4_0                  // 4-bit quants: value = d·(q − 8)
)

// QuantWeight is a quantized (m, k) matrix on the device in planes (see
// quant.cu): Quants holds the rows' quants, QuantBytes(k) bytes per row,
// 16-byte aligned; Scales the rows' FP16 block scales, k/32 per row. k is a
// multiple of 32.
type QuantWeight struct {
	Type           QuantType
	Quants, Scales cudadrv.DevicePtr
	M, K           int
}

// QuantBlockBytes returns the bytes of quants per block of 32 elements.
func (t QuantType) QuantBlockBytes() int {
	if t == QuantQ4_0 {
		return 16
	}
	return 32
}

// String returns GGUF's name of the type.
func (t QuantType) String() string {
	if t == QuantQ4_0 {
		return "Q4_0"
	}
	return "Q8_0"
}

func (w *QuantWeight) check(what string) error {
	if w.Type != QuantQ8_0 && w.Type != QuantQ4_0 {
		return fmt.Errorf("ptx: %s: unknown quantized type %d", what, w.Type)
	}
	if w.K <= 0 || w.K%32 != 0 || w.M <= 0 {
		return fmt.Errorf("ptx: %s: %s matrix %dx%d, want k a positive multiple of 32", what, w.Type, w.M, w.K)
	}
	return checkCounts(what, w.M, w.K, w.M*w.K)
}

// quantMatvecKernels are the instantiations of matvec_q by type and batch.
// rows is the weight rows each warp computes (R in quant.cu).
var quantMatvecKernels = [2][]struct {
	n, rows int
	id      kernelID
}{
	QuantQ8_0: {{1, 4, kMatvecQ8_0n1}, {4, 4, kMatvecQ8_0n4}, {16, 2, kMatvecQ8_0n16}},
	QuantQ4_0: {{1, 4, kMatvecQ4_0n1}, {4, 4, kMatvecQ4_0n4}, {16, 2, kMatvecQ4_0n16}},
}

// MatVecQ enqueues Y[i, r] = Σ_l X[i, l]·W[r, l] (+ bias[r]) for n ≤
// MatVecMaxN rows of x (n, w.K) FP32 into y (n, w.M) FP32, with W quantized
// (bias 0, or FP32 (1, w.M)). The result of a row does not depend on n. It
// fails on a bad shape or type; x must be 16-byte aligned (it is, for
// buffers from the backend).
func (k *Kernels) MatVecQ(s cudadrv.Stream, y, x cudadrv.DevicePtr, w *QuantWeight, bias cudadrv.DevicePtr, n int) error {
	if err := w.check("MatVecQ"); err != nil {
		return err
	}
	if n <= 0 || n > MatVecMaxN {
		return fmt.Errorf("ptx: MatVecQ: %d rows, want 1 to %d", n, MatVecMaxN)
	}
	q := quantMatvecKernels[w.Type][0]
	for _, q = range quantMatvecKernels[w.Type] {
		if n <= q.n {
			break
		}
	}
	return k.launch(q.id, dim1((w.M+8*q.rows-1)/(8*q.rows)), dim1(256), s, y, x, w.Quants, w.Scales, bias,
		int32(n), int32(w.M), int32(w.K))
}

// DequantF16 enqueues dst (w.M, w.K) FP16 = W, for the products of prompt
// processing (GEMM takes FP16 weights). It fails on a bad shape or type.
func (k *Kernels) DequantF16(s cudadrv.Stream, dst cudadrv.DevicePtr, w *QuantWeight) error {
	if err := w.check("DequantF16"); err != nil {
		return err
	}
	id := kDequantQ8_0
	if w.Type == QuantQ4_0 {
		id = kDequantQ4_0
	}
	return k.launch(id, dim1(blocks(w.M*w.K, 256)), dim1(256), s, dst, w.Quants, w.Scales, int32(w.M), int32(w.K))
}

// EmbedQ enqueues dst[i, :] = W[tokens[i], :] as FP32 for i < n: the
// embedding lookup from a quantized (vocab, dim) table, dst (n, w.K). It
// fails on a bad shape or type.
func (k *Kernels) EmbedQ(s cudadrv.Stream, dst cudadrv.DevicePtr, w *QuantWeight, tokens cudadrv.DevicePtr, n int) error {
	if err := w.check("EmbedQ"); err != nil {
		return err
	}
	if err := checkCounts("EmbedQ", n); err != nil {
		return err
	}
	id := kEmbedQ8_0
	if w.Type == QuantQ4_0 {
		id = kEmbedQ4_0
	}
	return k.launch(id, dim2(blocks(w.K, 256), n), dim1(256), s, dst, w.Quants, w.Scales, tokens, int32(n), int32(w.K))
}

// QuantTypeOf returns the QuantType whose GGUF block encoding is typ
// (gguf.TypeQ8_0 or gguf.TypeQ4_0), or false.
func QuantTypeOf(typ gguf.Type) (QuantType, bool) {
	switch typ {
	case gguf.TypeQ8_0:
		return QuantQ8_0, true
	case gguf.TypeQ4_0:
		return QuantQ4_0, true
	}
	return 0, false
}

// PackQuant regroups rows of GGUF blocks (rows × k/32 blocks of the type
// in data) into the planes the kernels read: quants (rows·k/32 blocks of
// QuantBlockBytes each, the bytes of each block's quants as stored) and
// scales (the blocks' FP16 scales, as little-endian uint16 bytes). quants
// and scales must hold exactly that many bytes. It fails when data does
// not hold rows·k/32 whole blocks.
func PackQuant(t QuantType, quants, scales, data []byte, rows, k int) error {
	qb := t.QuantBlockBytes()
	bb := qb + 2 // GGUF block: FP16 scale, then the quants
	nb := rows * (k / 32)
	if k%32 != 0 || len(data) != nb*bb || len(quants) != nb*qb || len(scales) != 2*nb {
		return fmt.Errorf("ptx: PackQuant: %s %dx%d from %d bytes into %d + %d", t, rows, k, len(data), len(quants), len(scales))
	}
	for b := range nb {
		blk := data[b*bb : (b+1)*bb]
		scales[2*b], scales[2*b+1] = blk[0], blk[1]
		copy(quants[b*qb:(b+1)*qb], blk[2:])
	}
	return nil
}
