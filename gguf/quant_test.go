package gguf_test

import (
	"encoding/hex"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
)

// qtQuantInput is the 1024-element input of TestQuantizeMatchesGGML, made
// by the same steps in the C program that produced the expected bytes:
// Irwin-Hall sums of the four bytes of xorshift32 outputs (seed 0x9e3779b9),
// v/128 in [-3.98, 3.98], all exact in float32; the four 256-element
// super-blocks are scaled by 1, 2^-14 (f16 scales become subnormal), 2^8
// and 1. In the last one, elements 768-799 are zero (a zero block and a
// zero Q4_K sub-block), 800 and 801 are 3 and -3 (a magnitude tie, the
// first wins in Q4_0) and 832-863 are made non-negative (a Q4_K sub-block
// whose minimum is clamped to 0).
func qtQuantInput() []float32 {
	x := make([]float32, 1024)
	rs := qtXorshift(0x9e3779b9)
	scale := [4]float32{1, 1.0 / 16384, 256, 1}
	for i := range x {
		r := rs.next()
		v := int(r&255) + int(r>>8&255) + int(r>>16&255) + int(r>>24) - 510
		x[i] = float32(v) / 128 * scale[i/256]
	}
	for i := 768; i < 800; i++ {
		x[i] = 0
	}
	x[800], x[801] = 3, -3
	for i := 832; i < 864; i++ {
		x[i] = float32(math.Abs(float64(x[i])))
	}
	return x
}

// TestQuantizeMatchesGGML compares Quantize with the output of ggml's
// quantize_row_q8_0_ref, quantize_row_q4_0_ref and quantize_row_q4_K_ref
// (ggml-quants.c, compiled with gcc 12 -O2; the same bytes with
// -march=native -ffp-contract=fast) on qtQuantInput.
func TestQuantizeMatchesGGML(t *testing.T) {
	x := qtQuantInput()
	require.Equal(t, "849505895fe24381", hexU64(qtFNV(x)), "input differs from the C generator's")
	tests := []struct {
		typ  gguf.Type
		want string
	}{
		{gguf.TypeQ8_0, "" +
			"a1269fe400f7e52bf57f2d0812212bb4caf0ff0ffc1f1e3135282cf010022123283c1e25171424d6fbd5e222feea8138" +
			"27360809f7310f28de90d9da1b25b72c0c02e035b524a6544b2bfdeb1c201eb6030932150cdee127ec5e244ae6cafaa9" +
			"31cddb8186bd7725bafb3b17101314e5d6d3de5368c37f03e2c62af739c34b2deefe30f1f5d41d294f23de0e4d24cbf6" +
			"d79b2c9617ad7e30a9a507b2355cf6ef093101cbecd67fa6100851261c81f2f918d20f4834500d0b2dd1ecf93413c5fd" +
			"bbd3fc24fee434253607ff11ee267fde1131106537b2e3c818f23eddd32432f6e6b22119bb0a191ed8bb593d0f0d0c24" +
			"2961ed3bd1ea50c7bd8e064ac87ff4af11f0a4f7ccfbe0fb3baea475083ab62d1500dbe83616ced53e60c91b6f30c86e" +
			"19d70d7fcf39ad21060ee0c040b2c1fd39d21b00170c0429c413a0e908180bfd24f6fa3c7fc6cccfbf4e0f17040d15f2" +
			"adfb2701160007c825c00555f9f3fc3baabdd8811b1df52097ff04450df6ef1f06fb4436cf851200f94c7b98cb61dd2f" +
			"2d331e92ae3d8d81adf9f1342fef33ff2812ead1f12fde3d1b000b050328e1eb44ff42812103e7e30d5cd42517d6fc4b" +
			"404cc10728ffbff3ea201900f915113ae944e028283a064b11397fd55ddfe600c7c6f532cfd32594b92c2e49150008e1" +
			"3ad13217ebc3eff1e902bf81c3dca93162226f1efb1bec32bebed5350f3511003befbe3f36af49215ce82e76b0e381fc" +
			"5c901416a6a62ae44b7c40df18ae47352446323fefdacb30f9e9ae1081bc2dd42a01cf3be234d0ecfcec12aa4118edad" +
			"3adb4f45e32c3e0f3f3ffd1a33dc5d9d81d3b5bf1a0851c9e422d4a93c43b4571c2c24023645c12fed0bfe0efbd00f14" +
			"81e623c415c4ffcd653018cfec243f5242eaf8a1b54f6544088bd68ee82bda6ae72fd8110a26f0a381d419d49b26b3e4" +
			"30d20a3324c60533dc450824d07b02c2d021c6add79b5143db2968ff816506d97539f8e722171e0db61432450afbd91b" +
			"f6c91302a2c7b6ffcbff9c6f8df5ecee317fc3c633b8fdcc59db27cc85449b7a35f405a3b5f2b32245caf3fe1aeef0a7" +
			"24efb625bb53ff29a37fdbf4aaf42046f9007fc020b7051d0e32592dccde18dc32ecf3472965f7e7300f0a2ab9c97ebc" +
			"000000000000000000000000000000000000000000000000000000000000000000000c267f81e9c0253915080ae4f8d2" +
			"e7ef3a18fbd7e1e57628cbf020e8fd29d6c5d03067251a062f1a4b2d512714365f03580437297f1c37210f1e35032839" +
			"276932522b2d6f25bc0ce4a21998d9dc5c214321672e0deff33750d2da027fe10ab0a0fe262a4f0abd243312daa21fae" +
			"eceef7190b9c491e647f310520ea662c173ae23cbb564de5bffdca2445ec0a191d12d76306e44bcdae939f08bc53e57f" +
			"47f9c751c90f1c1eb1f4ebdce6242452351447d84117c132fcea00f36433430dfe7fcef3ed0b8fbad1001d3335d66126" +
			"cd06c8cb167fdd00c3d9e41b402027f2ea0e2406183c6b09562a62f2cdc50915"},
		{gguf.TypeQ4_0, "" +
			"94b68e7a88696a55596055977786656d6b49143579b99ab56815666aa8a730bc9a8b69b9ac3462ad7deba8d76a5a8a33" +
			"b8596b0909466cb5acc8549747c7375a9b8b5a9391bc605840b38ad753269b997b5e85bf97bd00e57d8e4436ba904788" +
			"495589ad8b6db9a9bb858798e0b6509aa7d56762c57d6a6cb6c9244a7b7604b47592e994bb89a38c4cdfe8138c40d95d" +
			"4e817a0ab547db6b8472abc641d5cb8146bbab8107c7b8b5cc377e7987767798d68968845e0178a51a8488cd987778ac" +
			"8384c6b05a0a2101388d7fb1b57eb68bab9b7a5173bc61c0a80159a8985b86d7ccd84c80ba88467679ae878128a7a784" +
			"c9c49a55b5b468f3d754503b4f0139b6eca5fba987a477b7474854b094b60701ec17949c2b23bd6adef7cb6fa336d0b8" +
			"18565bcc67b6557b88779339c0947b35cb684455a68bdc596cac582acbc63ed2a0b5a3842c55845be7b9985978a5c9d9" +
			"c0768a2439d45c540851a55127ab366fb65b96b9a94a87b2d055f88a05ef8864f5ca7463a592ad9c369b28d5f7989a96" +
			"590bc7c85edc8db82ba86eb17cd49ee06599d86ecd398d56e40ba998d69914d65898904c562d98a657757255cbba06ca" +
			"00808888888888888888888888888888888800b680bfa9ac1654b79767aa895bbac9b4565cb506685566736553865745" +
			"62185238555564b59c573abea68f0aaa72d6e48662553779b4b455876a9e265d7949a946c73e33a6c280c0b4c439a706" +
			"4687cb32b87a636bdd9f9ea7dcb446738507b39b9477fcc5b889685952b554b69b786c8b67401a783c5a2a96b4c67679"},
		{gguf.TypeQ4_K, "" +
			"971e672abfe5e9ac71f2ae9fd2f5bb4ac0c4e675a47985dea99707f8e9f1b3b5a6f7c6e888197979d9e547e6b8b889fa" +
			"025fae7c79777b3b2b2439c9dc1afa66371b975fab1eb79548539c4556208094b4088c99b366a4e0daf0a8a1cf6a8191" +
			"d7b25a9d466697ca9773d5c4dfa198a79fc367a9475dba30340277b53ae362288965146048675166a72813d17caa2797" +
			"07003500f0fdefaee0eff3a9fc3f348b737468862272094b62777c68825c57a2e62d323920b775766371795011558962" +
			"69b4eb1449ce589798ac821426a00a0a276a61a8986da978978a69486d9c55a06978789b56a74c888c906aa87696d94e" +
			"b54a5965383d6c9d34488a08249797aaa8663ba5aa39b694c667a6e834500475c21a8d892e299759b6eab454853ab8ab" +
			"1e3e184af5f3b1f0fff9b4aeef277d557dced8a7d5dd99b8c36bf0240d664d4ab69ee75d76b86938dbd34efbb8c3be97" +
			"841c571968a958e569aa50978ba47a2408559f5c2aa5376bad5e8db7a84283be887a559f7844857a144335724d7c16ea" +
			"0e78606ea8f53f4ba7367a49da59a349506ffa16870162867299cb9326377936964159b692d9524c977a619f0416f106" +
			"591e0e2a80bfdef580bf80b26ddee222f0006040a0b09080806070506070b09070506060f0a04070a06070a0504050b0" +
			"3381551399055954d296cb90eaa086656eb3c6445273f6508526147ca6a9c585ca688490989155e58668c7402b081d8f" +
			"3ad769f5cd7948da448a929c2c756256196c1a187bf52b58032a3776a7868d4a3b68876f74a6e668c093d447190a6a74"},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			want, err := hex.DecodeString(tt.want)
			require.NoError(t, err)
			got := make([]byte, len(want))
			require.NoError(t, gguf.Quantize(got, x, tt.typ))
			ts := tt.typ.TypeSize()
			for b := 0; b < len(want)/ts; b++ {
				if !assert.Equal(t, hex.EncodeToString(want[b*ts:(b+1)*ts]), hex.EncodeToString(got[b*ts:(b+1)*ts]), "block %d", b) {
					return
				}
			}
		})
	}
}

func hexU64(v uint64) string {
	b := []byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	return hex.EncodeToString(b)
}

// TestQuantizeQ8_0ModelBytes quantizes the F32 stories260K weights and
// compares the result with the Q8_0 file made from the same checkpoint by
// an independent converter: a byte-for-byte match of all 37 Q8_0 tensors,
// ffn_down's row-straddling flat layout included.
func TestQuantizeQ8_0ModelBytes(t *testing.T) {
	qpath := fixture.Shared(t, "models/tinyllamas-stories-260k-q8_0.gguf")
	qf, err := gguf.Open(qpath)
	require.NoError(t, err)
	defer qf.Close()
	ff, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer ff.Close()

	n := 0
	for i := range qf.Tensors {
		qt := &qf.Tensors[i]
		if qt.Type != gguf.TypeQ8_0 {
			continue
		}
		n++
		t.Run(qt.Name, func(t *testing.T) {
			ft, ok := ff.Tensor(qt.Name)
			require.True(t, ok)
			x, err := ff.Float32s(ft)
			require.NoError(t, err)
			want, err := qf.TensorData(qt)
			require.NoError(t, err)
			got := make([]byte, len(want))
			require.NoError(t, gguf.Quantize(got, x, gguf.TypeQ8_0))
			for b := 0; b < len(want)/34; b++ {
				if !assert.Equal(t, hex.EncodeToString(want[b*34:b*34+34]), hex.EncodeToString(got[b*34:b*34+34]), "block %d", b) {
					return
				}
			}
		})
	}
	assert.Equal(t, 37, n)
}

// qtF32Block returns 32 floats: the given values followed by zeros.
func qtF32Block(v ...float32) []float32 {
	x := make([]float32, 32)
	copy(x, v)
	return x
}

func TestQuantizeHandBuilt(t *testing.T) {
	tests := []struct {
		name string
		typ  gguf.Type
		x    []float32
		want []byte
	}{
		{
			name: "Q8_0 amax 127: d=1, roundf ties away from zero",
			typ:  gguf.TypeQ8_0,
			x:    qtF32Block(127, -63.5, 0.5, -0.5, 2.5, -127, 1.49),
			// d = 127/127 = 1 (f16 0x3c00); q = roundf(x)
			want: qtBuf{}.f16(h1).raw(127, byte(0x100-64), 1, 0xff, 3, byte(0x100-127), 1).fill(25, 0),
		},
		{
			name: "Q8_0 amax 254: d=2, halves round away from zero",
			typ:  gguf.TypeQ8_0,
			x:    qtF32Block(3, -1, 254, 1, -3, 5),
			// x/2 = 1.5, -0.5, 127, 0.5, -1.5, 2.5
			want: qtBuf{}.f16(hNeg2&^0x8000).raw(2, 0xff, 127, 1, 0xfe, 3).fill(26, 0),
		},
		{
			name: "Q8_0 zero block: d=0, quants 0",
			typ:  gguf.TypeQ8_0,
			x:    qtF32Block(),
			want: qtBuf{}.f16(0).fill(32, 0),
		},
		{
			name: "Q4_0 first of equal magnitudes wins: max=4, d=-0.5",
			typ:  gguf.TypeQ4_0,
			// elements 0-8 and 16-17; the rest are 0 -> q = 8
			x: append(qtF32Block(4, -4, 0, 0.25, -0.25, 1.5, -3.9, 1.75, -1.75)[:16],
				qtF32Block(-3.5, 3.5)[:16]...),
			// q = min(15, trunc(x*-2 + 8.5)):
			//   4 -> 0.5 -> 0      -4 -> 16.5 -> 16 -> 15   0 -> 8
			//   0.25 -> 8 -> 8     -0.25 -> 9 -> 9          1.5 -> 5.5 -> 5
			//   -3.9 -> 16.3 -> 15 1.75 -> 5 -> 5           -1.75 -> 12
			//   -3.5 -> 15.5 -> 15 3.5 -> 1.5 -> 1
			want: qtBuf{}.f16(hNeg05).raw(0xf0, 0x1f, 0x88, 0x88, 0x89, 0x85, 0x8f, 0x85, 0x8c).fill(7, 0x88),
		},
		{
			name: "Q4_0 zero block: d=-0 (0/-8), quants 8",
			typ:  gguf.TypeQ4_0,
			x:    qtF32Block(),
			want: qtBuf{}.f16(0x8000).fill(16, 0x88),
		},
		{
			name: "F16 rounds to nearest even",
			typ:  gguf.TypeF16,
			x:    []float32{1, 1 + 0x1p-11, 65520, -0x1p-25},
			want: qtBuf{}.f16(0x3c00).f16(0x3c00).f16(0x7c00).f16(0x8000),
		},
		{
			name: "F32 copies bits",
			typ:  gguf.TypeF32,
			x:    []float32{1, -0.1},
			want: qtBuf{}.f32(1).f32(-0.1),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Len(t, tt.want, len(tt.x)/tt.typ.BlockSize()*tt.typ.TypeSize())
			got := make([]byte, len(tt.want))
			require.NoError(t, gguf.Quantize(got, tt.x, tt.typ))
			assert.Equal(t, hex.EncodeToString(tt.want), hex.EncodeToString(got))
		})
	}
}

// qtRMSE returns sqrt(mean((a-b)²)) and sqrt(mean(a²)).
func qtRMSE(a, b []float32) (rmse, rms float64) {
	var se, s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		se += d * d
		s += float64(a[i]) * float64(a[i])
	}
	return math.Sqrt(se / float64(len(a))), math.Sqrt(s / float64(len(a)))
}

func qtRoundTrip(t *testing.T, x []float32, typ gguf.Type) []float32 {
	t.Helper()
	q := make([]byte, len(x)/typ.BlockSize()*typ.TypeSize())
	require.NoError(t, gguf.Quantize(q, x, typ))
	y := make([]float32, len(x))
	require.NoError(t, gguf.Dequantize(y, q, typ))
	return y
}

// TestQuantizeRoundTripError bounds the quantization error.
//
// On N(0,1) data the bound is relative RMSE = rmse/rms. Expected values:
// Q8_0's step is amax/127 with amax ≈ 2.0-2.5 for 32 normal samples, so a
// uniform rounding error gives about 0.018/sqrt(12) ≈ 0.005 (measured
// 0.0054); Q4_0's step is amax/8 ≈ 0.27, about 0.08, plus the clipping of
// the side opposite the maximum at 7 steps (measured 0.086); Q4_K fits
// each 32-element sub-block with a scale and a min over 16 levels
// (measured 0.071); F16 keeps 11 significant bits (measured 0.0002). The
// bounds leave a margin over those figures.
//
// The ggml rows repeat tests/test-quantize-fns.cpp: data 0.1 + 2cos(i) over
// 4096 elements and its "total quantization error" sqrt(Σ(a-b)²)/n (not a
// true RMSE: it is the RMSE divided by sqrt(n) = 64) <= 0.002.
func TestQuantizeRoundTripError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	normal := make([]float32, 1<<16)
	for i := range normal {
		normal[i] = float32(rng.NormFloat64())
	}
	tests := []struct {
		typ    gguf.Type
		maxRel float64
	}{
		{gguf.TypeQ8_0, 0.007},
		{gguf.TypeQ4_0, 0.1},
		{gguf.TypeQ4_K, 0.085},
		{gguf.TypeF16, 0.0003},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String()+"/normal", func(t *testing.T) {
			rmse, rms := qtRMSE(normal, qtRoundTrip(t, normal, tt.typ))
			t.Logf("relative RMSE %.5f", rmse/rms)
			assert.Less(t, rmse/rms, tt.maxRel)
			assert.Greater(t, rmse, 0.0)
		})
		t.Run(tt.typ.String()+"/test-quantize-fns", func(t *testing.T) {
			const n = 32 * 128
			x := make([]float32, n)
			for i := range x {
				x[i] = 0.1 + 2*float32(math.Cos(float64(i)))
			}
			rmse, _ := qtRMSE(x, qtRoundTrip(t, x, tt.typ))
			total := rmse * math.Sqrt(n) / n
			t.Logf("ggml total quantization error %.6f", total)
			assert.LessOrEqual(t, total, 0.002)
		})
	}
}

// TestQuantizeFixedPoint checks that quantizing dequantized data gives the
// same bytes back: the block maximum dequantizes to exactly ±127·d (Q8_0)
// or -8·d (Q4_0), which gives back the same f16 scale.
func TestQuantizeFixedPoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, 1<<14)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64())) // varying block scales
	}
	for _, typ := range []gguf.Type{gguf.TypeQ8_0, gguf.TypeQ4_0} {
		t.Run(typ.String(), func(t *testing.T) {
			size := len(x) / 32 * typ.TypeSize()
			q1 := make([]byte, size)
			require.NoError(t, gguf.Quantize(q1, x, typ))
			y := make([]float32, len(x))
			require.NoError(t, gguf.Dequantize(y, q1, typ))
			q2 := make([]byte, size)
			require.NoError(t, gguf.Quantize(q2, y, typ))
			assert.Equal(t, q1, q2)
		})
	}
}

func TestQuantizeErrors(t *testing.T) {
	tests := []struct {
		name string
		typ  gguf.Type
		n    int
		dst  int
	}{
		{"unknown type", gguf.Type(200), 32, 34},
		{"type without a quantizer", gguf.TypeQ6_K, 256, 210},
		{"partial Q8_0 block", gguf.TypeQ8_0, 33, 68},
		{"partial Q4_K super-block", gguf.TypeQ4_K, 32, 144},
		{"short destination", gguf.TypeQ4_0, 64, 35},
		{"long destination", gguf.TypeQ8_0, 32, 35},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Error(t, gguf.Quantize(make([]byte, tt.dst), make([]float32, tt.n), tt.typ))
		})
	}
	assert.NoError(t, gguf.Quantize(nil, nil, gguf.TypeQ8_0), "zero elements")
}

func TestCanQuantize(t *testing.T) {
	for _, typ := range gguf.Types() {
		want := typ == gguf.TypeF32 || typ == gguf.TypeF16 || typ == gguf.TypeQ8_0 || typ == gguf.TypeQ4_0 || typ == gguf.TypeQ4_K
		assert.Equal(t, want, typ.CanQuantize(), "%s", typ)
	}
}
