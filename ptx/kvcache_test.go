package ptx

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/gguf"
)

// The layouts under test (KVCache): a cache row of n elements of type t is
// t.RowBytes(n) bytes, ggml's block layout for t; row (slot s, position p)
// at byte (s*ctx + p)·RowBytes. The CPU side of every comparison encodes
// and decodes rows with gguf (Quantize, Dequantize, F32ToF16): ggml's
// reference quantizers, independent of the kernels.

var cacheTypeList = []CacheType{CacheF32, CacheF16, CacheQ8_0, CacheQ4_0}

// ggufOf is the GGUF type whose encoding t's rows share.
func ggufOf(t CacheType) gguf.Type {
	return [...]gguf.Type{CacheF16: gguf.TypeF16, CacheF32: gguf.TypeF32, CacheQ8_0: gguf.TypeQ8_0, CacheQ4_0: gguf.TypeQ4_0}[t]
}

// encodeRow is the CPU's encoding of x as a row of t.
func encodeRow(t *testing.T, ct CacheType, x []float32) []byte {
	t.Helper()
	b := make([]byte, ct.RowBytes(len(x)))
	if err := gguf.Quantize(b, x, ggufOf(ct)); err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeRow is the CPU's decoding of a row of n elements of t.
func decodeRow(t *testing.T, ct CacheType, b []byte, n int) []float32 {
	t.Helper()
	x := make([]float32, n)
	if err := gguf.Dequantize(x, b, ggufOf(ct)); err != nil {
		t.Fatal(err)
	}
	return x
}

// TestCacheTypeRows checks the row sizes against ggml's block layouts:
// f32 4 bytes and f16 2 bytes an element, q8_0 34 and q4_0 18 bytes per
// 32 elements.
func TestCacheTypeRows(t *testing.T) {
	for _, c := range []struct {
		t           CacheType
		name        string
		block       int
		bytes128    int64
		ggufRowSize int64
	}{
		{CacheF32, "f32", 1, 512, 512}, {CacheF16, "f16", 1, 256, 256},
		{CacheQ8_0, "q8_0", 32, 136, 136}, {CacheQ4_0, "q4_0", 32, 72, 72},
	} {
		if c.t.String() != c.name || c.t.BlockSize() != c.block || c.t.RowBytes(128) != c.bytes128 {
			t.Errorf("%s: name %q, block %d, row of 128 %d bytes; want %q, %d, %d", c.name, c.t, c.t.BlockSize(), c.t.RowBytes(128), c.name, c.block, c.bytes128)
		}
		if got, _ := ggufOf(c.t).RowSize(128); got != c.ggufRowSize {
			t.Errorf("%s: gguf row of 128 is %d bytes, want %d", c.name, got, c.ggufRowSize)
		}
	}
	if CacheType(9).String() != "CacheType(9)" || CacheType(9).RowBytes(32) != 0 || CacheType(-1).BlockSize() != 0 {
		t.Error("a value that is not a type has a name, size or block")
	}
}

// TestKVKernels checks kernel selection without a GPU: every pair of types
// has its stores and decode kernel, prefill exists for the head dims that
// are whole blocks of both types, and FP16 keys with FP16 values use the
// rope.cu and attention.cu kernels.
func TestKVKernels(t *testing.T) {
	for _, kt := range cacheTypeList {
		for _, vt := range cacheTypeList {
			pair := kt.String() + "_" + vt.String()
			for kind, prefix := range []string{"kv_append", "rope_append", "attn_decode"} {
				id, ok := kvKernel(kt, vt, kind)
				want := prefix + "_" + pair
				if kt == CacheF16 && vt == CacheF16 {
					want = prefix
				}
				if !ok || kernelTable[id].name != want {
					t.Errorf("%s %s: kernel %q (%v), want %q", pair, prefix, kernelTable[id].name, ok, want)
				}
			}
			quant := kt == CacheQ8_0 || kt == CacheQ4_0 || vt == CacheQ8_0 || vt == CacheQ4_0
			for i, hd := range prefillDims {
				id, ok := kvKernel(kt, vt, kvkPrefill+i)
				want := fmt.Sprintf("attn_prefill_%s_h%d", pair, hd)
				if kt == CacheF16 && vt == CacheF16 {
					want = fmt.Sprintf("attn_prefill_h%d", hd)
				}
				if wantOK := !quant || hd >= 32; ok != wantOK || (ok && kernelTable[id].name != want) {
					t.Errorf("%s prefill h%d: kernel %q (%v), want %q (%v)", pair, hd, kernelTable[id].name, ok, want, wantOK)
				}
				a := Attention{Heads: 2, KVHeads: 1, HeadDim: hd, ValueDim: hd,
					Cache: KVCache{Ctx: 4, KCols: hd, VCols: hd, KType: kt, VType: vt}}
				if a.PrefillSupported() != ok {
					t.Errorf("%s h%d: PrefillSupported %v, kernel %v", pair, hd, a.PrefillSupported(), ok)
				}
			}
		}
	}
	if _, ok := kvKernel(CacheType(7), CacheF16, kvkAppend); ok {
		t.Error("a kernel for a value that is not a type")
	}
}

// TestKVLaunchChecks: rows or heads that are not whole blocks of a
// quantized type, and values that are not types, fail before any launch
// (the Kernels value here has nothing loaded).
func TestKVLaunchChecks(t *testing.T) {
	k := &Kernels{}
	bad := KVCache{K: 1, V: 2, Ctx: 8, KCols: 48, VCols: 64, KType: CacheQ8_0, VType: CacheF16}
	if err := k.KVAppend(0, bad, 3, 4, 5, 6, 1); err == nil {
		t.Error("KVAppend of q8_0 rows of 48 did not fail")
	}
	c := KVCache{K: 1, V: 2, Ctx: 8, KCols: 64, VCols: 64, KType: CacheQ4_0, VType: CacheQ4_0}
	if err := k.RopeAppend(0, c, 1, 2, 3, 4, 5, 6, 1, 64, 16, 16, false); err == nil {
		t.Error("RopeAppend of q4_0 keys with heads of 16 did not fail")
	}
	a := &Attention{Heads: 4, KVHeads: 4, HeadDim: 16, ValueDim: 16, Scale: 1, Cache: c}
	if err := k.AttnDecode(0, a, a.PlanDecode(1, 24), 1, 2, 3, 4, 5, 6, 1); err == nil {
		t.Error("AttnDecode over q4_0 with heads of 16 did not fail")
	}
	c.VType = CacheType(11)
	c.KCols, c.VCols = 64, 64
	a = &Attention{Heads: 1, KVHeads: 1, HeadDim: 64, ValueDim: 64, Scale: 1, Cache: c}
	if err := k.AttnPrefill(0, a, 1, 2, 3, 4, 20); err == nil {
		t.Error("AttnPrefill with a value type that is not a type did not fail")
	}
}

// kvRows returns n rows of cols values in [-1, 1]; with special, also
// special blocks where cols allows (32-element blocks of rows 0..2): all
// zeros, two
// elements of equal largest magnitude and opposite signs (q4_0 takes the
// sign of the first), all equal, values at the rounding ties of q8_0 (amax
// 127: d = 1) and q4_0 (largest −8: d = 1), tiny values.
func kvRows(r *rand.Rand, n, cols int, special bool) []float32 {
	x := make([]float32, n*cols)
	for i := range x {
		x[i] = 2*r.Float32() - 1
	}
	if !special {
		return x
	}
	blocks := [][]float32{
		make([]float32, 32),
		{0.25, -0.1, 0.3, 0.75, 0.2, -0.3, 0.1, 0.05, 0.6, -0.75},
		{-0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25,
			-0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25},
		{127, 2.5, -2.5, 0.5, -0.5, 126.5, -126.5, 63.5, 1.5, -1.5},
		{-8, 0.5, -0.5, 7.5, -7.5, 7, 3.5, -3.5, 1.5, -1.5, 6.5, -6.5},
		{1e-30, -3e-31, 2e-30, 5e-31},
	}
	for s, blk := range blocks {
		row, b := s/2, s%2
		if row >= n || (b+1)*32 > cols {
			continue
		}
		dst := x[row*cols+b*32 : row*cols+b*32+32]
		for j := range dst {
			dst[j] = 0
			if s == 3 || s == 4 {
				dst[j] = float32(j%5) - 2 // small values next to the ties
			}
		}
		copy(dst, blk)
	}
	return x
}

// cacheBuf is one half of a test cache on the device.
type cacheBuf struct {
	p     cudadrv.DevicePtr
	bytes int
}

const cachePoison = 0xa5

func newCacheBuf(t *testing.T, bytes int) cacheBuf {
	t.Helper()
	p, err := cudadrv.MemAlloc(bytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cudadrv.MemFree(p) })
	if err := cudadrv.MemsetD8(p, cachePoison, bytes); err != nil {
		t.Fatal(err)
	}
	return cacheBuf{p, bytes}
}

func (c cacheBuf) read(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, c.bytes)
	if err := cudadrv.CopyFromDevice(b, c.p); err != nil {
		t.Fatal(err)
	}
	return b
}

func devFloats(t *testing.T, x []float32) cudadrv.DevicePtr {
	t.Helper()
	p, err := cudadrv.MemAlloc(4*len(x) + 4*guardLen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cudadrv.MemFree(p) })
	if err := cudadrv.CopyToDevice(p, x); err != nil {
		t.Fatal(err)
	}
	return p
}

func devInts(t *testing.T, x []int32) cudadrv.DevicePtr {
	t.Helper()
	p, err := cudadrv.MemAlloc(4 * len(x))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cudadrv.MemFree(p) })
	if err := cudadrv.CopyToDevice(p, x); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkCacheRows compares every row of a cache read back with want
// (slot*ctx + pos → the row's bytes); rows not in want must still hold
// the poison.
func checkCacheRows(t *testing.T, what string, got []byte, rowBytes int, want map[int][]byte) {
	t.Helper()
	bad := 0
	for r := range len(got) / rowBytes {
		row := got[r*rowBytes : (r+1)*rowBytes]
		w, ok := want[r]
		for j, b := range row {
			if (ok && b != w[j]) || (!ok && b != cachePoison) {
				if bad < 3 {
					if ok {
						t.Errorf("%s: row %d byte %d = %#02x, want %#02x (the CPU quantizer's)", what, r, j, b, w[j])
					} else {
						t.Errorf("%s: row %d byte %d = %#02x, written though no token is stored there", what, r, j, b)
					}
				}
				bad++
				break
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d rows differ", what, bad)
	}
}

// TestKVStore stores rows with KVAppend and RopeAppend for every pair of
// cache types and checks the cache's bytes: each stored row is what gguf's
// encoder (the reference quantizer for q8_0/q4_0) makes of the same
// values — for RopeAppend, of the rotated keys the kernel left in k, which
// must match a float64 rotation — and no other row is touched.
func TestKVStore(t *testing.T) {
	ctx, k := testKernels(t)
	const (
		slots, ctxLen = 2, 8
		hd, kvHeads   = 64, 2
		heads         = 4
		kcols, vcols  = kvHeads * hd, kvHeads * hd
		qcols         = heads * hd
	)
	seq := []int32{0, 1, 0, 1, 0}
	pos := []int32{0, 3, 7, 0, 2}
	n := len(seq)
	for _, kt := range cacheTypeList {
		for _, vt := range cacheTypeList {
			for _, fused := range []bool{false, true} {
				name := fmt.Sprintf("KV_APPEND(k=%s,v=%s)", kt, vt)
				if fused {
					name = fmt.Sprintf("ROPE_APPEND(k=%s,v=%s)", kt, vt)
				}
				t.Run(name, func(t *testing.T) {
					r := rand.New(rand.NewPCG(uint64(kt)*7+uint64(vt), 11))
					kx, vx, qx := kvRows(r, n, kcols, true), kvRows(r, n, vcols, true), kvRows(r, n, qcols, false)
					angles := make([]float32, 2*n*hd/2)
					for i := 0; i < len(angles); i += 2 {
						th := 6.3 * r.Float64()
						angles[i], angles[i+1] = float32(math.Cos(th)), float32(math.Sin(th))
					}
					err := ctx.Do(func() error {
						c := KVCache{Ctx: ctxLen, KCols: kcols, VCols: vcols, KType: kt, VType: vt}
						kb, vb := newCacheBuf(t, int(slots*ctxLen*kt.RowBytes(kcols))), newCacheBuf(t, int(slots*ctxLen*vt.RowBytes(vcols)))
						c.K, c.V = kb.p, vb.p
						dk, dv, dq := devFloats(t, kx), devFloats(t, vx), devFloats(t, qx)
						dseq, dpos := devInts(t, seq), devInts(t, pos)
						rot := kx
						neox := kt == vt // both pairings over the pairs
						if fused {
							dcs := devFloats(t, angles)
							if err := k.RopeAppend(0, c, dq, dk, dv, dcs, dseq, dpos, n, qcols, hd, hd, neox); err != nil {
								return err
							}
							rot = make([]float32, len(kx))
							if err := cudadrv.CopyFromDevice(rot, dk); err != nil {
								return err
							}
							want := make([]float64, len(kx))
							for i := range n {
								for h := range kvHeads {
									rotate64(want[i*kcols+h*hd:], kx[i*kcols+h*hd:], angles[i*hd:], hd, neox)
								}
							}
							if e := relErr(rot, want); e > 1e-6 {
								t.Errorf("rotated keys: relative error %.3g", e)
							}
						} else if err := k.KVAppend(0, c, dk, dv, dseq, dpos, n); err != nil {
							return err
						}
						wantK, wantV := map[int][]byte{}, map[int][]byte{}
						for i := range n {
							row := int(seq[i])*ctxLen + int(pos[i])
							wantK[row] = encodeRow(t, kt, rot[i*kcols:(i+1)*kcols])
							wantV[row] = encodeRow(t, vt, vx[i*vcols:(i+1)*vcols])
						}
						checkCacheRows(t, "keys", kb.read(t), int(kt.RowBytes(kcols)), wantK)
						checkCacheRows(t, "values", vb.read(t), int(vt.RowBytes(vcols)), wantV)
						return nil
					})
					if err != nil {
						t.Fatal(err)
					}
				})
			}
		}
	}
}

// rotate64 is RoPE of one head in float64 with the table's (cos, sin)
// pairs: (x[2j], x[2j+1]), or (x[j], x[j+hd/2]) when neox.
func rotate64(dst []float64, x []float32, cs []float32, hd int, neox bool) {
	for d := range hd {
		dst[d] = float64(x[d])
	}
	for j := range hd / 2 {
		a, b := 2*j, 2*j+1
		if neox {
			a, b = j, j+hd/2
		}
		c, s := float64(cs[2*j]), float64(cs[2*j+1])
		x0, x1 := float64(x[a]), float64(x[b])
		dst[a] = x0*c - x1*s
		dst[b] = x0*s + x1*c
	}
}

// attnExact bounds the NMSE of attention over a cache of the given types
// against attention over the values before they were stored: the cost of
// the cache type (the kernels' arithmetic is checked against the stored
// values to 1e-8).
func attnExact(kt, vt CacheType) float64 {
	bound := map[CacheType]float64{CacheF32: 1e-10, CacheF16: 1e-5, CacheQ8_0: 1e-3, CacheQ4_0: 3e-2}
	return max(bound[kt], bound[vt])
}

// attnRef is grouped-query attention in float64 of the query rows q (n,
// heads·hd) over keys and values kf, vf ((slots·ctx, kvHeads·hd) rows,
// row slot·ctx + p), query i over positions 0..pos[i] of slot seq[i].
func attnRef(q, kf, vf []float32, seq, pos []int32, heads, kvHeads, hd, ctxLen int, scale float64) []float64 {
	n := len(seq)
	out := make([]float64, n*heads*hd)
	cols := kvHeads * hd
	for i := range n {
		for h := range heads {
			kh := h / (heads / kvHeads)
			qh := q[(i*heads+h)*hd:][:hd]
			np := int(pos[i]) + 1
			sc := make([]float64, np)
			m := math.Inf(-1)
			for p := range np {
				row := (int(seq[i])*ctxLen + p) * cols
				var s float64
				for d := range hd {
					s += float64(qh[d]) * float64(kf[row+kh*hd+d])
				}
				sc[p] = s * scale
				m = max(m, sc[p])
			}
			var l float64
			for p := range sc {
				sc[p] = math.Exp(sc[p] - m)
				l += sc[p]
			}
			o := out[(i*heads+h)*hd:][:hd]
			for p := range np {
				row := (int(seq[i])*ctxLen + p) * cols
				for d := range hd {
					o[d] += sc[p] / l * float64(vf[row+kh*hd+d])
				}
			}
		}
	}
	return out
}

// nmse64 is Σ(got−ref)²/Σref², +Inf when got has a NaN or an infinity.
func nmse64(got []float32, ref []float64) float64 {
	e := relErr(got, ref)
	return e * e
}

// TestAttentionCacheTypes runs decode (split-KV) and prefill attention over
// caches of every pair of types, filled by KVAppend, against float64
// attention over the values the cache holds (decoded by gguf: the kernels'
// FP32 arithmetic, NMSE ≤ 1e-8) and over the values before they were
// stored (the cost of the type, attnExact).
func TestAttentionCacheTypes(t *testing.T) {
	ctx, k := testKernels(t)
	shapes := []struct {
		heads, kvHeads, hd, ctxLen int
	}{
		{4, 2, 64, 300},  // GQA, several splits
		{8, 2, 128, 200}, // the 7B head
		{2, 1, 256, 70},  // wider than 128: the kernels' loops over dims
		{4, 2, 96, 90},   // three blocks: quantized keys one thread per key, values on 24 lanes
		{4, 4, 32, 50},   // one block per head
		{4, 4, 8, 40},    // f32/f16 only
	}
	for _, sh := range shapes {
		for _, kt := range cacheTypeList {
			for _, vt := range cacheTypeList {
				if sh.hd%max(kt.BlockSize(), vt.BlockSize()) != 0 {
					continue
				}
				name := fmt.Sprintf("ATTN(k=%s,v=%s,heads=%d/%d,hd=%d,ctx=%d)", kt, vt, sh.heads, sh.kvHeads, sh.hd, sh.ctxLen)
				t.Run(name, func(t *testing.T) {
					testAttention(t, ctx, k, kt, vt, sh.heads, sh.kvHeads, sh.hd, sh.ctxLen)
				})
			}
		}
	}
}

func testAttention(t *testing.T, ctx *cudadrv.Context, k *Kernels, kt, vt CacheType, heads, kvHeads, hd, ctxLen int) {
	const slots = 2
	cols := kvHeads * hd
	rows := slots * ctxLen
	r := rand.New(rand.NewPCG(uint64(hd*31+heads), uint64(kt)*4+uint64(vt)))
	kx, vx := kvRows(r, rows, cols, false), kvRows(r, rows, cols, false)
	allSeq, allPos := make([]int32, rows), make([]int32, rows)
	for i := range rows {
		allSeq[i], allPos[i] = int32(i/ctxLen), int32(i%ctxLen)
	}
	scale := 1 / math.Sqrt(float64(hd))
	a := &Attention{Heads: heads, KVHeads: kvHeads, HeadDim: hd, ValueDim: hd, Scale: float32(scale),
		Cache: KVCache{Ctx: ctxLen, KCols: cols, VCols: cols, KType: kt, VType: vt}}
	err := ctx.Do(func() error {
		kb, vb := newCacheBuf(t, int(int64(rows)*kt.RowBytes(cols))), newCacheBuf(t, int(int64(rows)*vt.RowBytes(cols)))
		a.Cache.K, a.Cache.V = kb.p, vb.p
		if err := k.KVAppend(0, a.Cache, devFloats(t, kx), devFloats(t, vx), devInts(t, allSeq), devInts(t, allPos), rows); err != nil {
			return err
		}
		kraw, vraw := kb.read(t), vb.read(t)
		kf, vf := make([]float32, 0, rows*cols), make([]float32, 0, rows*cols)
		kr, vr := int(kt.RowBytes(cols)), int(vt.RowBytes(cols))
		for i := range rows {
			kf = append(kf, decodeRow(t, kt, kraw[i*kr:(i+1)*kr], cols)...)
			vf = append(vf, decodeRow(t, vt, vraw[i*vr:(i+1)*vr], cols)...)
		}
		cases := []struct {
			name     string
			seq, pos []int32
			prefill  bool
		}{
			{"decode", []int32{0, 1, 0}, []int32{int32(ctxLen - 1), int32(ctxLen / 2), 5}, false},
			{"decode-1", []int32{1}, []int32{int32(ctxLen - 2)}, false},
		}
		if a.PrefillSupported() {
			var s, p []int32
			for i := range 20 {
				s, p = append(s, 0), append(p, int32(ctxLen-20+i))
			}
			for i := range 20 {
				s, p = append(s, 1), append(p, int32(i))
			}
			cases = append(cases, struct {
				name     string
				seq, pos []int32
				prefill  bool
			}{"prefill", s, p, true})
		}
		for _, c := range cases {
			n := len(c.seq)
			q := kvRows(r, n, heads*hd, false)
			out := make([]float32, n*heads*hd)
			dst := devFloats(t, out)
			if err := poisonOut(dst, len(out)); err != nil {
				return err
			}
			dq, dseq, dpos := devFloats(t, q), devInts(t, c.seq), devInts(t, c.pos)
			if c.prefill {
				if err := k.AttnPrefill(0, a, dst, dq, dseq, dpos, n); err != nil {
					return err
				}
			} else {
				plan := a.PlanDecode(n, 24)
				part := devFloats(t, make([]float32, a.PartialElems(n, plan)))
				cnt := devInts(t, make([]int32, a.Counters(n, plan)))
				if err := k.AttnDecode(0, a, plan, dst, part, cnt, dq, dseq, dpos, n); err != nil {
					return err
				}
			}
			got, err := readOut(dst, len(out))
			if err != nil {
				return err
			}
			held := nmse64(got, attnRef(q, kf, vf, c.seq, c.pos, heads, kvHeads, hd, ctxLen, scale))
			exact := nmse64(got, attnRef(q, kx, vx, c.seq, c.pos, heads, kvHeads, hd, ctxLen, scale))
			if held > 1e-8 {
				t.Errorf("%s: NMSE %.3g against attention over the cached values (limit 1e-8)", c.name, held)
			}
			if exact > attnExact(kt, vt) {
				t.Errorf("%s: NMSE %.3g against attention over the values stored (limit %.1g)", c.name, exact, attnExact(kt, vt))
			}
			t.Logf("%s: NMSE %.2g (cached values), %.2g (stored values)", c.name, held, exact)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkAttnDecodeCacheTypes times split-KV decode attention of one
// query row at position 4000 of a 4096-position cache on the Llama 2 7B
// shape (32 heads, head dim 128) per cache type, and reports the KV bytes
// read per second (both halves, positions 0..4000, in the type's rows).
func BenchmarkAttnDecodeCacheTypes(b *testing.B) {
	ctx, k := testKernels(b)
	const heads, hd, ctxLen, p = 32, 128, 4096, 4000
	cols := heads * hd
	for _, ct := range []CacheType{CacheF16, CacheQ8_0, CacheQ4_0, CacheF32} {
		b.Run(fmt.Sprintf("7b/ctx=%d,pos=%d,type=%s", ctxLen, p, ct), func(b *testing.B) {
			a := &Attention{Heads: heads, KVHeads: heads, HeadDim: hd, ValueDim: hd, Scale: 0.088,
				Cache: KVCache{Ctx: ctxLen, KCols: cols, VCols: cols, KType: ct, VType: ct}}
			plan := a.PlanDecode(1, 132)
			rowBytes := int(ct.RowBytes(cols))
			var kc, vc, rows, q, dst, part, cnt, seq, pos cudadrv.DevicePtr
			err := ctx.Do(func() error {
				var err error
				for _, al := range []struct {
					p     *cudadrv.DevicePtr
					bytes int
				}{{&kc, ctxLen * rowBytes}, {&vc, ctxLen * rowBytes}, {&rows, 4 * ctxLen * cols},
					{&q, 4 * heads * hd}, {&dst, 4 * heads * hd},
					{&part, 4 * a.PartialElems(1, plan)}, {&cnt, 4 * a.Counters(1, plan)}, {&seq, 4 * ctxLen}, {&pos, 4 * ctxLen}} {
					if *al.p, err = cudadrv.MemAlloc(al.bytes); err != nil {
						return err
					}
				}
				// Fill the cache through the store kernel from random rows.
				if err := randomFloats(rows, ctxLen*cols, 3); err != nil {
					return err
				}
				ps := make([]int32, ctxLen)
				for i := range ps {
					ps[i] = int32(i)
				}
				if err := cudadrv.MemsetD8(seq, 0, 4*ctxLen); err != nil {
					return err
				}
				if err := cudadrv.CopyToDevice(pos, ps); err != nil {
					return err
				}
				a.Cache.K, a.Cache.V = kc, vc
				if err := k.KVAppend(0, a.Cache, rows, rows, seq, pos, ctxLen); err != nil {
					return err
				}
				if err := randomFloats(q, heads*hd, 5); err != nil {
					return err
				}
				if err := cudadrv.MemsetD8(cnt, 0, 4*a.Counters(1, plan)); err != nil {
					return err
				}
				return ctx.Synchronize()
			})
			if err != nil {
				b.Fatal(err)
			}
			defer ctx.Do(func() error {
				for _, p := range []cudadrv.DevicePtr{kc, vc, rows, q, dst, part, cnt, seq, pos} {
					cudadrv.MemFree(p)
				}
				return nil
			})
			sec := graphBench(b, ctx, 20, func(s cudadrv.Stream, _ int) error {
				return k.AttnDecode(s, a, plan, dst, part, cnt, q, seq, pos.Offset(4*p), 1)
			})
			kvBytes := 2 * (p + 1) * rowBytes
			b.ReportMetric(sec*1e6, "µs/op")
			b.ReportMetric(float64(kvBytes)/sec/1e9, "GB/s")
			b.ReportMetric(float64(kvBytes)/1e6, "KV-MB")
		})
	}
}
