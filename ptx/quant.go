package ptx

import (
	"fmt"
	"strings"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
)

// QuantType is a quantized weight encoding the kernels of quant.cu read:
// one of GGUF's block types, kept in its own bytes on the device.
type QuantType int

// The encodings, in quant.cu's order, with GGUF's names.
const (
	QuantQ8_0   QuantType = iota // 32 int8 and an FP16 scale
	QuantQ4_0                    // 32 4-bit, FP16 scale, offset 8
	QuantQ4_1                    // 32 4-bit, FP16 scale and minimum
	QuantQ5_0                    // 32 5-bit, FP16 scale, offset 16
	QuantQ5_1                    // 32 5-bit, FP16 scale and minimum
	QuantIQ4_NL                  // 32 4-bit indices of 16 levels, FP16 scale
	QuantQ2_K                    // 256 2-bit, 16 sub-blocks with 4-bit scales and mins
	QuantQ3_K                    // 256 3-bit, 16 sub-blocks with 6-bit scales
	QuantQ4_K                    // 256 4-bit, 8 sub-blocks with 6-bit scales and mins
	QuantQ5_K                    // 256 5-bit, 8 sub-blocks with 6-bit scales and mins
	QuantQ6_K                    // 256 6-bit, 16 sub-blocks with 8-bit scales
	numQuantTypes
)

// span is a byte range [off, off+n) of a GGUF block.
type span struct{ off, n int }

// quantFormat describes how a type's GGUF blocks are split into the
// planes the kernels read (the table at the top of quant.cu): plane j
// holds, for every block in order, the block's bytes planes[j].
type quantFormat struct {
	gguf   gguf.Type
	name   string // kernel name part
	planes []span
}

var quantFormats = [numQuantTypes]quantFormat{
	QuantQ8_0:   {gguf.TypeQ8_0, "q8_0", []span{{2, 32}, {0, 2}}},
	QuantQ4_0:   {gguf.TypeQ4_0, "q4_0", []span{{2, 16}, {0, 2}}},
	QuantQ4_1:   {gguf.TypeQ4_1, "q4_1", []span{{4, 16}, {0, 4}}},
	QuantQ5_0:   {gguf.TypeQ5_0, "q5_0", []span{{6, 16}, {2, 4}, {0, 2}}},
	QuantQ5_1:   {gguf.TypeQ5_1, "q5_1", []span{{8, 16}, {4, 4}, {0, 4}}},
	QuantIQ4_NL: {gguf.TypeIQ4_NL, "iq4_nl", []span{{2, 16}, {0, 2}}},
	QuantQ2_K:   {gguf.TypeQ2_K, "q2_k", []span{{0, 80}, {80, 4}}},
	QuantQ3_K:   {gguf.TypeQ3_K, "q3_k", []span{{0, 96}, {96, 12}, {108, 2}}},
	QuantQ4_K:   {gguf.TypeQ4_K, "q4_k", []span{{16, 128}, {0, 16}}},
	QuantQ5_K:   {gguf.TypeQ5_K, "q5_k", []span{{16, 160}, {0, 16}}},
	QuantQ6_K:   {gguf.TypeQ6_K, "q6_k", []span{{0, 208}, {208, 2}}},
}

// The kernels of each type, in kernelID order from quantKernel.
const (
	qkMatvec1 = iota
	qkMatvec4
	qkMatvec8
	qkMatvec16
	qkGateUp1
	qkGateUp4
	qkGateUp8
	qkGateUp16
	qkDequant
	qkEmbed
	quantKernels
)

// quantMatvecRows is the batch width of each mat-vec instantiation and the
// rows of each output one block computes (8 warps of R rows in quant.cu's
// MATVEC_Q and MATVEC_QB lines, R/2 of each for the gate/up kernels).
var quantMatvecRows = [4]struct{ n, rows, guRows int }{{1, 16, 16}, {4, 16, 8}, {8, 16, 8}, {16, 16, 8}}

// quantMatvecThreads is the block size of the mat-vec kernels.
const quantMatvecThreads = 256

func quantKernel(t QuantType, v int) kernelID {
	return kQuant + kernelID(int(t)*quantKernels+v)
}

func init() {
	for t := range numQuantTypes {
		n := quantFormats[t].name
		const mv = "ppppppppppppppppiiiii"
		kernelTable[quantKernel(t, qkMatvec1)] = kernelSpec{"quant", "matvec_" + n + "_n1", mv}
		kernelTable[quantKernel(t, qkMatvec4)] = kernelSpec{"quant", "matvec_" + n + "_n4", mv}
		kernelTable[quantKernel(t, qkMatvec8)] = kernelSpec{"quant", "matvec_" + n + "_n8", mv}
		kernelTable[quantKernel(t, qkMatvec16)] = kernelSpec{"quant", "matvec_" + n + "_n16", mv}
		kernelTable[quantKernel(t, qkGateUp1)] = kernelSpec{"quant", "gateup_" + n + "_n1", mv}
		kernelTable[quantKernel(t, qkGateUp4)] = kernelSpec{"quant", "gateup_" + n + "_n4", mv}
		kernelTable[quantKernel(t, qkGateUp8)] = kernelSpec{"quant", "gateup_" + n + "_n8", mv}
		kernelTable[quantKernel(t, qkGateUp16)] = kernelSpec{"quant", "gateup_" + n + "_n16", mv}
		kernelTable[quantKernel(t, qkDequant)] = kernelSpec{"quant", "dequant_" + n + "_f16", "ppppii"}
		kernelTable[quantKernel(t, qkEmbed)] = kernelSpec{"quant", "embed_" + n, "pppppii"}
	}
}

// QuantWeight is a quantized (M, K) matrix on the device in the planes of
// its type (see quant.cu): Planes[j] holds PlaneBytes(M, K)[j] bytes,
// 16-byte aligned; unused planes are 0. K is a multiple of the type's
// block size.
type QuantWeight struct {
	Type   QuantType
	Planes [3]cudadrv.DevicePtr
	M, K   int
}

// String returns GGUF's name of the type.
func (t QuantType) String() string {
	if t < 0 || t >= numQuantTypes {
		return fmt.Sprintf("QuantType(%d)", int(t))
	}
	return quantFormats[t].gguf.String()
}

// GGUF returns the GGUF type whose blocks t holds.
func (t QuantType) GGUF() gguf.Type { return quantFormats[t].gguf }

// Kernel returns the name part of t's kernels ("q4_k" in matvec_q4_k_n1).
func (t QuantType) Kernel() string { return quantFormats[t].name }

// BlockSize returns the elements per block: 32, or 256 for the K-quants.
func (t QuantType) BlockSize() int { return t.GGUF().BlockSize() }

// PlaneBytes returns the bytes of each plane of a (rows, k) matrix of type
// t (0 for planes the type does not use). k must be a multiple of the
// block size.
func (t QuantType) PlaneBytes(rows, k int64) [3]int64 {
	var out [3]int64
	blocks := rows * (k / int64(t.BlockSize()))
	for j, s := range quantFormats[t].planes {
		out[j] = blocks * int64(s.n)
	}
	return out
}

func (w *QuantWeight) check(what string) error {
	if w.Type < 0 || w.Type >= numQuantTypes {
		return fmt.Errorf("ptx: %s: unknown quantized type %d", what, w.Type)
	}
	if bs := w.Type.BlockSize(); w.K <= 0 || w.K%bs != 0 || w.M <= 0 {
		return fmt.Errorf("ptx: %s: %s matrix %dx%d, want k a positive multiple of %d", what, w.Type, w.M, w.K, bs)
	}
	for j := range quantFormats[w.Type].planes {
		if w.Planes[j] == 0 {
			return fmt.Errorf("ptx: %s: %s matrix without plane %d", what, w.Type, j)
		}
	}
	return checkCounts(what, w.M, w.K, w.M*w.K)
}

// QuantOut is one product of MatVecQ: Y (n, W.M) = X · Wᵀ (+ Bias), Bias
// FP32 (1, W.M) or 0.
type QuantOut struct {
	Y    cudadrv.DevicePtr
	W    QuantWeight
	Bias cudadrv.DevicePtr
}

// quantVariant returns the instantiation for n activation rows.
func quantVariant(n int) int {
	v := 0
	for v < len(quantMatvecRows)-1 && n > quantMatvecRows[v].n {
		v++
	}
	return v
}

// MatVecQ enqueues up to three products of one input in one launch (the
// Q, K and V projections, or a single product): outs[j].Y[i, r] = Σ_l
// X[i, l]·outs[j].W[r, l] (+ outs[j].Bias[r]) for n ≤ MatVecMaxN rows of x
// (n, kk) FP32, every W of one quantized type with K = kk. The result of
// a row does not depend on n nor on the other products. It fails on a bad
// shape, type or count; x must be 16-byte aligned (it is, for buffers from
// the backend).
func (k *Kernels) MatVecQ(s cudadrv.Stream, x cudadrv.DevicePtr, n, kk int, outs ...QuantOut) error {
	if len(outs) == 0 || len(outs) > 3 {
		return fmt.Errorf("ptx: MatVecQ: %d products, want 1 to 3", len(outs))
	}
	if n <= 0 || n > MatVecMaxN {
		return fmt.Errorf("ptx: MatVecQ: %d rows, want 1 to %d", n, MatVecMaxN)
	}
	var ys, bs [3]cudadrv.DevicePtr
	var ps [9]cudadrv.DevicePtr
	var ms [3]int32
	v := quantVariant(n)
	rows := quantMatvecRows[v].rows
	grid := 0
	for j, o := range outs {
		if err := o.W.check("MatVecQ"); err != nil {
			return err
		}
		if o.W.Type != outs[0].W.Type || o.W.K != kk {
			return fmt.Errorf("ptx: MatVecQ: product %d is %s %dx%d, want %s with k = %d", j, o.W.Type, o.W.M, o.W.K, outs[0].W.Type, kk)
		}
		ys[j], bs[j], ms[j] = o.Y, o.Bias, int32(o.W.M)
		copy(ps[3*j:], o.W.Planes[:])
		grid += (o.W.M + rows - 1) / rows
	}
	return k.launch(quantKernel(outs[0].W.Type, qkMatvec1+v), dim1(grid), dim1(quantMatvecThreads), s,
		ys[0], ys[1], ys[2], x, ps[0], ps[1], ps[2], ps[3], ps[4], ps[5], ps[6], ps[7], ps[8], bs[0], bs[1], bs[2],
		int32(n), ms[0], ms[1], ms[2], int32(kk))
}

// GateUpQ enqueues the feed-forward block's gate and up products with
// SwiGLU on the way out: with g = x·wgᵀ and u = x·wuᵀ (x (n, wg.K), n ≤
// MatVecMaxN; wg and wu quantized (m, k) of one type), hb[i, r] =
// silu(g)·u and hb2[i, r] = u, hb and hb2 (n, m) FP32: swiglu_f32's
// arithmetic on MatVecQ's products, bit for bit. It fails on a bad shape
// or type.
func (k *Kernels) GateUpQ(s cudadrv.Stream, hb, hb2, x cudadrv.DevicePtr, wg, wu *QuantWeight, n int) error {
	for _, w := range []*QuantWeight{wg, wu} {
		if err := w.check("GateUpQ"); err != nil {
			return err
		}
	}
	if wg.Type != wu.Type || wg.M != wu.M || wg.K != wu.K {
		return fmt.Errorf("ptx: GateUpQ: gate %s %dx%d and up %s %dx%d differ", wg.Type, wg.M, wg.K, wu.Type, wu.M, wu.K)
	}
	if n <= 0 || n > MatVecMaxN {
		return fmt.Errorf("ptx: GateUpQ: %d rows, want 1 to %d", n, MatVecMaxN)
	}
	v := quantVariant(n)
	rows := quantMatvecRows[v].guRows
	g, u := wg.Planes, wu.Planes
	return k.launch(quantKernel(wg.Type, qkGateUp1+v), dim1((wg.M+rows-1)/rows), dim1(quantMatvecThreads), s,
		hb, hb2, cudadrv.DevicePtr(0), x, g[0], g[1], g[2], u[0], u[1], u[2], cudadrv.DevicePtr(0), cudadrv.DevicePtr(0),
		cudadrv.DevicePtr(0), cudadrv.DevicePtr(0), cudadrv.DevicePtr(0), cudadrv.DevicePtr(0),
		int32(n), int32(wg.M), int32(wu.M), int32(0), int32(wg.K))
}

// DequantF16 enqueues dst (w.M, w.K) FP16 = W, for the products of prompt
// processing (GEMM takes FP16 weights). It fails on a bad shape or type.
func (k *Kernels) DequantF16(s cudadrv.Stream, dst cudadrv.DevicePtr, w *QuantWeight) error {
	if err := w.check("DequantF16"); err != nil {
		return err
	}
	p := w.Planes
	return k.launch(quantKernel(w.Type, qkDequant), dim1(blocks(w.M*(w.K/32), 256)), dim1(256), s,
		dst, p[0], p[1], p[2], int32(w.M), int32(w.K))
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
	p := w.Planes
	return k.launch(quantKernel(w.Type, qkEmbed), dim2(blocks(w.K/32, 256), n), dim1(256), s,
		dst, p[0], p[1], p[2], tokens, int32(n), int32(w.K))
}

// QuantTypeOf returns the QuantType whose GGUF block encoding is typ, or
// false for types the kernels do not read (F32, F16, BF16, Q8_1, Q8_K,
// the IQ types but IQ4_NL, MXFP4, ...).
func QuantTypeOf(typ gguf.Type) (QuantType, bool) {
	for t := range numQuantTypes {
		if quantFormats[t].gguf == typ {
			return t, true
		}
	}
	return 0, false
}

// QuantTypeNames lists the GGUF names of the types the kernels read.
func QuantTypeNames() string {
	names := make([]string, numQuantTypes)
	for t := range numQuantTypes {
		names[t] = t.String()
	}
	return strings.Join(names, ", ")
}

// PlaneBlockBytes returns the bytes plane j holds per GGUF block of type t
// (0 for planes the type does not use).
func (t QuantType) PlaneBlockBytes(j int) int {
	if f := &quantFormats[t]; j < len(f.planes) {
		return f.planes[j].n
	}
	return 0
}

// PackPlane writes plane j of the whole GGUF blocks of type t in blocks
// into dst, which must hold exactly len(blocks)/block size ×
// t.PlaneBlockBytes(j) bytes. It fails on a partial block or a wrong size.
func (t QuantType) PackPlane(j int, dst, blocks []byte) error {
	bb := t.GGUF().TypeSize()
	n := t.PlaneBlockBytes(j)
	if n == 0 || len(blocks)%bb != 0 || len(dst) != len(blocks)/bb*n {
		return fmt.Errorf("ptx: PackPlane: %s plane %d of %d block bytes into %d", t, j, len(blocks), len(dst))
	}
	off := quantFormats[t].planes[j].off
	for b := range len(blocks) / bb {
		copy(dst[b*n:(b+1)*n], blocks[b*bb+off:b*bb+off+n])
	}
	return nil
}

// PackQuant regroups rows of GGUF blocks of type t (rows × k elements in
// data) into the planes the kernels read (see quant.cu): planes[j] must
// hold exactly t.PlaneBytes(rows, k)[j] bytes (unused planes nil). It
// fails when data does not hold exactly that many whole blocks or a plane
// has the wrong size.
func PackQuant(t QuantType, planes [3][]byte, data []byte, rows, k int) error {
	f := &quantFormats[t]
	bs := t.BlockSize()
	bb := t.GGUF().TypeSize()
	if k%bs != 0 {
		return fmt.Errorf("ptx: PackQuant: %s rows of %d elements, not whole blocks of %d", t, k, bs)
	}
	nb := rows * (k / bs)
	if len(data) != nb*bb {
		return fmt.Errorf("ptx: PackQuant: %s %dx%d needs %d bytes, got %d", t, rows, k, nb*bb, len(data))
	}
	for j := range planes {
		want := 0
		if j < len(f.planes) {
			want = nb * f.planes[j].n
		}
		if len(planes[j]) != want {
			return fmt.Errorf("ptx: PackQuant: %s plane %d holds %d bytes, want %d", t, j, len(planes[j]), want)
		}
	}
	for j := range f.planes {
		if err := t.PackPlane(j, planes[j], data); err != nil {
			return err
		}
	}
	return nil
}
