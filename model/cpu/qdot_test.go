package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/m40llm/m40llm/gguf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var qdotTypes = []gguf.Type{
	gguf.TypeQ4_0, gguf.TypeQ4_1, gguf.TypeQ5_0, gguf.TypeQ5_1, gguf.TypeIQ4_NL, gguf.TypeQ8_0,
	gguf.TypeQ2_K, gguf.TypeQ3_K, gguf.TypeQ4_K, gguf.TypeQ5_K, gguf.TypeQ6_K,
}

// setUnitScales sets every f16 scale, min and offset of the blocks of raw
// (type typ) to 1.0, leaving the codes and the sub-block scales as they
// are: a row's dequantized values are then small integers.
func setUnitScales(typ gguf.Type, raw []byte) {
	const one = 0x3c00 // f16 1.0
	var offs []int
	switch typ {
	case gguf.TypeQ4_0, gguf.TypeQ8_0, gguf.TypeIQ4_NL, gguf.TypeQ5_0:
		offs = []int{0}
	case gguf.TypeQ4_1, gguf.TypeQ5_1, gguf.TypeQ4_K, gguf.TypeQ5_K:
		offs = []int{0, 2}
	case gguf.TypeQ2_K:
		offs = []int{80, 82}
	case gguf.TypeQ3_K:
		offs = []int{108}
	case gguf.TypeQ6_K:
		offs = []int{208}
	default:
		panic("setUnitScales: " + typ.String())
	}
	ts := typ.TypeSize()
	for b := 0; b+ts <= len(raw); b += ts {
		for _, o := range offs {
			binary.LittleEndian.PutUint16(raw[b+o:], one)
		}
	}
}

// quantizedRow returns src quantized to t and dequantized back.
func quantizedRow(t *testing.T, typ gguf.Type, src []float32) ([]byte, []float32) {
	size, ok := typ.RowSize(int64(len(src)))
	require.True(t, ok)
	raw := make([]byte, size)
	require.NoError(t, gguf.Quantize(raw, src, typ))
	deq := make([]float32, len(src))
	require.NoError(t, gguf.Dequantize(deq, raw, typ))
	return raw, deq
}

func newQvec(k int) qvec {
	var q qrows
	q.reset(1, k)
	return q.row(0)
}

// TestQuantizeRow checks the activation quantizer: every element within
// half a step of its block's scale, the largest one exact, the sums.
func TestQuantizeRow(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	x := make([]float32, 96)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for i := 32; i < 64; i++ {
		x[i] = 0 // an all-zero block
	}
	q := newQvec(len(x))
	quantizeRow(q, x)
	for b := range 3 {
		var sum int32
		for i := 32 * b; i < 32*b+32; i++ {
			assert.InDelta(t, x[i], q.d[b]*float32(q.qs[i]), float64(q.d[b])/2*1.0001, "element %d", i)
			assert.LessOrEqual(t, int(q.qs[i]), 127)
			assert.GreaterOrEqual(t, int(q.qs[i]), -127)
			sum += int32(q.qs[i])
		}
		assert.Equal(t, q.d[b]*float32(sum), q.s[b])
	}
	assert.Equal(t, float32(0), q.d[1])

	nan := make([]float32, 32)
	nan[3] = float32(math.NaN())
	quantizeRow(q, append(nan, x[32:]...))
	assert.True(t, math.IsNaN(float64(q.d[0])), "a NaN reaches the block scale")
}

// TestQDot compares the integer kernels (the dispatching qdot: assembly on
// amd64 with AVX2, and the portable qdotGeneric) with float64 dot products
// of the dequantized weights. Against the quantized activations the only
// difference is float rounding; against the float activations the error is
// bounded by Σ|w|·d/2, the activation quantization error.
func TestQDot(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, typ := range qdotTypes {
		bs := typ.BlockSize()
		for _, nb := range []int{1, 2, 3, 5, 7, 64 + 1} {
			for _, kind := range []string{"random", "zero-x", "zero-w", "large", "small", "spiky"} {
				n := nb * bs
				t.Run(fmt.Sprintf("%s/blocks=%d/%s", typ, nb, kind), func(t *testing.T) {
					w, x := make([]float32, n), make([]float32, n)
					for i := range w {
						w[i], x[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
					}
					switch kind {
					case "zero-x":
						clear(x)
					case "zero-w":
						clear(w)
					case "large":
						for i := range x {
							x[i] *= 1e18
						}
					case "small":
						for i := range x {
							x[i] *= 1e-18
						}
					case "spiky": // one huge value per block: the rest round to few levels
						for i := 0; i < n; i += 32 {
							x[i+r.IntN(32)] = 1000
						}
					}
					raw, deq := quantizedRow(t, typ, w)
					q := newQvec(n)
					quantizeRow(q, x)
					var want, wantQ, mag, bound float64
					for i := range deq {
						xq := float64(q.d[i/32]) * float64(q.qs[i])
						want += float64(deq[i]) * float64(x[i])
						wantQ += float64(deq[i]) * xq
						mag += math.Abs(float64(deq[i]) * xq)
						bound += math.Abs(float64(deq[i])) * float64(q.d[i/32]) / 2
					}
					for name, got := range map[string]float32{"qdot": qdot(typ, raw, q), "generic": qdotGeneric(typ, raw, q)} {
						assert.InDelta(t, wantQ, float64(got), 1e-5*mag+1e-30, "%s vs quantized activations", name)
						assert.InDelta(t, want, float64(got), bound*1.0001+1e-5*mag+1e-30, "%s vs float activations", name)
					}
				})
			}
		}
	}
}

// TestQDotExact checks the integer arithmetic of every kernel (the
// assembly ones through qdot and the portable ones) against the float64 dot
// product of gguf's dequantized row with the quantized activations: with
// every f16 scale, min and activation scale 1 (and small enough sums) no
// float operation rounds, so the three agree bit for bit. The codes and
// sub-block scales are random bytes (every value a file may hold: Q8_0's
// −128 and Q6_K's scale −128 included) or every byte 0x00 or 0xff (all
// high bits clear or set, the smallest and largest scales and mins).
func TestQDotExact(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, typ := range qdotTypes {
		bs, ts := typ.BlockSize(), typ.TypeSize()
		for _, nb := range []int{1, 2, 3, 4, 7} {
			for _, fill := range []string{"random", "zeros", "ones"} {
				if fill != "random" && nb > 2 {
					continue // all codes at their largest: longer rows leave float32's exact range
				}
				t.Run(fmt.Sprintf("%s/blocks=%d/%s", typ, nb, fill), func(t *testing.T) {
					reps := 50
					if fill != "random" {
						reps = 3
					}
					for range reps {
						n := nb * bs
						raw := make([]byte, nb*ts)
						for i := range raw {
							switch fill {
							case "random":
								raw[i] = byte(r.UintN(256))
							case "ones":
								raw[i] = 0xff
							}
						}
						setUnitScales(typ, raw)
						deq := make([]float32, n)
						require.NoError(t, gguf.Dequantize(deq, raw, typ))
						// One ±127 per block makes d = 1; the rest are small.
						x := make([]float32, n)
						for i := range x {
							x[i] = float32(r.IntN(9) - 4)
							if i%32 == 0 {
								x[i+r.IntN(32)] = 127
							}
						}
						for i := 0; i < n; i += 32 {
							if x[i] != 127 {
								x[i+31] = -127
							}
						}
						q := newQvec(n)
						quantizeRow(q, x)
						var want, mag float64
						for i, w := range deq {
							require.Equal(t, float32(1), q.d[i/32], "block %d", i/32)
							want += float64(w) * float64(q.qs[i])
							mag += math.Abs(float64(w) * float64(q.qs[i]))
						}
						require.Less(t, mag, float64(1<<24), "every partial sum must be an exact float32 integer")
						assert.Equal(t, float32(want), qdotGeneric(typ, raw, q), "generic")
						assert.Equal(t, float32(want), qdot(typ, raw, q), "qdot")
					}
				})
			}
		}
	}
}

// BenchmarkQDot measures the row kernels over 64 rows of 4096 elements
// (the weights stay in L2): bytes/s are weight bytes.
func BenchmarkQDot(b *testing.B) {
	const k, rows = 4096, 64
	r := rand.New(rand.NewPCG(1, 2))
	for _, typ := range qdotTypes {
		src := make([]float32, k*rows)
		for i := range src {
			src[i] = float32(r.NormFloat64())
		}
		size, _ := typ.RowSize(int64(len(src)))
		raw := make([]byte, size)
		if err := gguf.Quantize(raw, src, typ); err != nil {
			b.Fatal(err)
		}
		q := newQvec(k)
		quantizeRow(q, src[:k])
		rb := int(size) / rows
		for _, impl := range []string{"asm", "go"} {
			b.Run(fmt.Sprintf("%s/%s", typ, impl), func(b *testing.B) {
				if impl == "asm" && !useAVX2 {
					b.Skip("no AVX2")
				}
				f := qdot
				if impl == "go" {
					f = qdotGeneric
				}
				b.SetBytes(int64(size))
				var s float32
				for b.Loop() {
					for i := range rows {
						s += f(typ, raw[i*rb:(i+1)*rb], q)
					}
				}
				_ = s
			})
		}
	}
}

// BenchmarkQuantizeRow measures the activation quantizer (bytes/s are
// float32 input bytes).
func BenchmarkQuantizeRow(b *testing.B) {
	const k = 4096
	x := make([]float32, k)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	q := newQvec(k)
	for _, impl := range []string{"asm", "go"} {
		b.Run(impl, func(b *testing.B) {
			f := quantizeRow
			if impl == "go" {
				f = quantizeRowGeneric
			}
			b.SetBytes(4 * k)
			for b.Loop() {
				f(q, x)
			}
		})
	}
}

// TestMatMulQuantized checks MatMul with integer kernels (several rows,
// bias, odd output width) against the float64 product of the dequantized
// weights with the float activations, within the activation quantization
// bound Σ|w|·d/2 of each output.
func TestMatMulQuantized(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	const rows, n = 83, 5
	for _, typ := range qdotTypes {
		t.Run(typ.String(), func(t *testing.T) {
			k := 3 * typ.BlockSize()
			if k < 256 {
				k = 7 * 32
			}
			src := make([]float32, rows*k)
			for i := range src {
				src[i] = float32(r.NormFloat64())
			}
			raw, deq := quantizedRow(t, typ, src)
			ti := &gguf.TensorInfo{Name: "w", Type: typ, Dims: []int64{int64(k), rows}, Size: int64(len(raw))}
			bias := make([]float32, rows)
			for i := range bias {
				bias[i] = float32(r.NormFloat64())
			}
			bti := &gguf.TensorInfo{Name: "b", Type: gguf.TypeF32, Dims: []int64{rows}, Size: 4 * rows}
			braw := make([]byte, 4*rows)
			require.NoError(t, gguf.Quantize(braw, bias, gguf.TypeF32))
			be := New(Options{Threads: 2})
			defer be.Close()
			w, err := be.LoadWeight(ti, raw)
			require.NoError(t, err)
			bw, err := be.LoadWeight(bti, braw)
			require.NoError(t, err)
			xs := make([]float32, n*k)
			for i := range xs {
				xs[i] = float32(r.NormFloat64())
			}
			out, _ := be.NewBuf(n, rows)
			be.MatMul(out, BufFrom(n, k, xs), w, bw, n)
			q := newQvec(k)
			for i := range n {
				quantizeRow(q, xs[i*k:(i+1)*k])
				for j := range rows {
					want, bound := float64(bias[j]), 0.0
					for c := range k {
						wv := float64(deq[j*k+c])
						want += wv * float64(xs[i*k+c])
						bound += math.Abs(wv) * float64(q.d[c/32]) / 2
					}
					assert.InDelta(t, want, Data(out)[i*rows+j], bound+1e-4, "%s token %d row %d", typ, i, j)
				}
			}
		})
	}
}

// TestQDot4 checks the four-row kernels against qdot per row: within float
// rounding for random data, bit for bit with unit scales (exact sums).
func TestQDot4(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	for _, typ := range qdotTypes {
		bs := typ.BlockSize()
		for _, nb := range []int{1, 3, 9} {
			for _, unit := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/blocks=%d/unit=%v", typ, nb, unit), func(t *testing.T) {
					n := nb * bs
					w := make([]float32, n)
					for i := range w {
						w[i] = float32(r.NormFloat64())
					}
					raw, _ := quantizedRow(t, typ, w)
					if unit {
						setUnitScales(typ, raw)
					}
					var q qrows
					q.reset(6, n) // rows 1..4 are used: an offset start
					for i := range 6 {
						x := make([]float32, n)
						for j := range x {
							if unit {
								x[j] = float32(r.IntN(17) - 8)
								if j%32 == 31 {
									x[j] = 127
								}
							} else {
								x[j] = float32(r.NormFloat64())
							}
						}
						quantizeRow(q.row(i), x)
					}
					got := qdot4(typ, raw, &q, 1)
					for j := range 4 {
						want := qdot(typ, raw, q.row(1+j))
						if unit {
							assert.Equal(t, want, got[j], "row %d", j)
						} else {
							assert.InDelta(t, want, got[j], 1e-5*math.Abs(float64(want))+1e-4, "row %d", j)
						}
					}
				})
			}
		}
	}
}

// BenchmarkQDot4 measures the four-row kernels as BenchmarkQDot does
// (bytes/s are weight bytes, each used for four rows).
func BenchmarkQDot4(b *testing.B) {
	const k, rows = 4096, 64
	r := rand.New(rand.NewPCG(1, 2))
	for _, typ := range qdotTypes {
		src := make([]float32, k*rows)
		for i := range src {
			src[i] = float32(r.NormFloat64())
		}
		size, _ := typ.RowSize(int64(len(src)))
		raw := make([]byte, size)
		if err := gguf.Quantize(raw, src, typ); err != nil {
			b.Fatal(err)
		}
		var q qrows
		q.reset(4, k)
		for i := range 4 {
			quantizeRow(q.row(i), src[i*k:(i+1)*k])
		}
		rb := int(size) / rows
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(int64(size))
			var s float32
			for b.Loop() {
				for i := range rows {
					o := qdot4(typ, raw[i*rb:(i+1)*rb], &q, 0)
					s += o[0]
				}
			}
			_ = s
		})
	}
}

// TestQuantizeRowBits checks that quantizeRow (AVX2 on amd64) writes the
// same bits as quantizeRowGeneric: random blocks at every magnitude,
// subnormals, signed zeros, exact halves (x·id = k + 0.5 rounds away from
// zero), and blocks holding NaN or ±Inf, for 1 to 9 blocks.
func TestQuantizeRowBits(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	inf := float32(math.Inf(1))
	for nb := 1; nb <= 9; nb++ {
		for _, kind := range []string{"random", "huge", "tiny", "subnormal", "zeros", "halves", "nan", "inf", "mixed"} {
			t.Run(fmt.Sprintf("blocks=%d/%s", nb, kind), func(t *testing.T) {
				n := nb * 32
				x := make([]float32, n)
				for i := range x {
					v := float32(r.NormFloat64())
					switch kind {
					case "huge":
						v *= 1e37
					case "tiny":
						v *= 1e-37
					case "subnormal":
						v = math.Float32frombits(r.Uint32() & 0x807fffff)
					case "zeros":
						v = math.Float32frombits(r.Uint32() & 0x80000000)
					case "halves": // amax 127: x·id = x exactly
						v = float32(r.IntN(254)-127) + 0.5
						if i%32 == 0 {
							v = 127
						}
					case "mixed":
						v = math.Float32frombits(r.Uint32())
					}
					x[i] = v
				}
				switch kind {
				case "nan":
					x[r.IntN(n)] = float32(math.NaN())
				case "inf":
					x[r.IntN(n)] = inf
					x[r.IntN(n)] = -inf
				}
				got, want := newQvec(n), newQvec(n)
				quantizeRow(got, x)
				quantizeRowGeneric(want, x)
				assert.Equal(t, want.qs, got.qs, "quants")
				for b := range nb {
					assert.Equal(t, math.Float32bits(want.d[b]), math.Float32bits(got.d[b]), "d of block %d", b)
					assert.Equal(t, math.Float32bits(want.s[b]), math.Float32bits(got.s[b]), "s of block %d", b)
				}
			})
		}
	}
}
