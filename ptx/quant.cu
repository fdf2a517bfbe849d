// Quantized weights kept quantized on the GPU: matrix-vector products for
// decode (1-16 activation rows, each weight byte read once per launch),
// embedding rows, and dequantization to FP16 for the prompt GEMMs. FP32
// arithmetic; compiled for compute capability 5.2 (no dp4a, no FP16
// arithmetic, 48 KB of shared memory).
//
// Storage ("planes", written by ptx.PackQuant from the GGUF blocks: the
// same bytes regrouped so that every load is aligned). A matrix of m rows
// of k elements (ggml ne=[k, m]) is m*k/BE GGUF blocks of BE elements
// (32, or 256 for the K-quants), block b of row r being block r*k/BE + b.
// Each block's bytes are split into up to three planes p0, p1, p2, block i
// of a plane at i times the plane's bytes per block (offsets in the GGUF
// block in brackets):
//
//   type    BE   p0                          p1                        p2
//   Q8_0    32   qs[32]  [2, 34)             d      [0, 2)
//   Q4_0    32   qs[16]  [2, 18)             d      [0, 2)
//   Q4_1    32   qs[16]  [4, 20)             d, m   [0, 4)
//   Q5_0    32   qs[16]  [6, 22)             qh[4]  [2, 6)            d [0, 2)
//   Q5_1    32   qs[16]  [8, 24)             qh[4]  [4, 8)            d, m [0, 4)
//   IQ4_NL  32   qs[16]  [2, 18)             d      [0, 2)
//   Q2_K   256   scales[16] qs[64] [0, 80)   d, dmin [80, 84)
//   Q3_K   256   hmask[32] qs[64]  [0, 96)   scales[12] [96, 108)     d [108, 110)
//   Q4_K   256   qs[128] [16, 144)           d, dmin, scales[12] [0, 16)
//   Q5_K   256   qh[32] qs[128] [16, 176)    d, dmin, scales[12] [0, 16)
//   Q6_K   256   ql[128] qh[64] scales[16] [0, 208)   d [208, 210)
//
// The kernels see a row as units of 32 weights: unit u of a row is part
// u % S of the row's block u / S (S = BE/32 units per block). A unit's
// elements lie in G runs of 32/G consecutive elements (one run for the
// 32-element types; two of 16 for Q4_K/Q5_K; four of 8 for Q2_K, Q3_K and
// Q6_K), each run with one scale: the value of element e of run g is
//
//   w = a_g * (q_e - O) + b_g
//
// with q_e the element's quant, O the type's offset (8 for Q4_0, 16 for
// Q5_0, 32 for Q6_K, 4 for Q3_K, 0 otherwise) and (a_g, b_g) the run's
// scale and offset (for example Q4_K: a = d*sc, b = -dmin*m). This form is
// the CPU's arithmetic (gguf/dequant*.go), so dequantized values are the
// CPU's bit for bit.
//
// Decoding without integer-to-float conversions (an I2F per weight is a
// quarter-rate instruction on Maxwell and Hopper). A unit is loaded as
// eight 32-bit words of codes, one byte per weight:
//  - quants of at most 7 bits (all types but Q8_0 and IQ4_NL): the byte is
//    q, built four at a time with masks and shifts; PRMT puts it into the
//    top mantissa byte of 0.5f, giving f = 0.5 + q/256 exactly, so a run's
//    dot product is Σ q x = 256 Σ f x - 128 Σ x, and
//    Σ w x = 256 a Σ f x + (b - (128 + O) a) Σ x.
//  - 8-bit quants (Q8_0, and IQ4_NL's table values): the byte is q + 128;
//    PRMT puts it under the exponent of 2^23, f - (2^23 + 128) = q exactly,
//    one FADD, and Σ w x = a Σ q x + (b - O a) Σ x.
// Per weight that is one PRMT and one FMA (plus one FADD for 8-bit quants)
// and a quarter to a half of a mask or shift; the sums Σ x of each run
// come from shared memory, computed once per block. With several
// activation rows (matvec_qb) the codes are decoded once per pass over NP
// rows and each row costs one FMA per weight. The budget per byte is in
// docs/PERFORMANCE.md.
//
// Results do not depend on how many activation rows are computed at once:
// every row's unit products are summed in the same order (lane order, then
// the xor butterfly of warp_sum, then warps in order), so batched rows are
// bit-identical to single ones.
//
// Kernel parameters are listed in ptx/kernels.go.

#include <cuda_fp16.h>
#include "reduce.cuh"

// The type numbers of ptx.QuantType.
enum { Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K };

// unit holds one unit of a weight row: codes (byte e%4 of c[e/4] is slot
// e) and the runs' a and b. Types without an offset set b = -0.0f: adding
// -0 leaves every value unchanged, a product of -0 included, as the CPU's
// plain product does.
template <int G> struct unit {
    unsigned int c[8];
    float a[G], b[G];
};

__device__ __forceinline__ float h2f(const unsigned char *p, size_t i)
{
    return __half2float(reinterpret_cast<const __half *>(p)[i]);
}

__device__ __forceinline__ unsigned int ld32(const unsigned char *p, size_t off)
{
    return __ldg(reinterpret_cast<const unsigned int *>(p + off));
}

__device__ __forceinline__ uint2 ld64(const unsigned char *p, size_t off)
{
    return __ldg(reinterpret_cast<const uint2 *>(p + off));
}

__device__ __forceinline__ uint4 ld128(const unsigned char *p, size_t off)
{
    return __ldg(reinterpret_cast<const uint4 *>(p + off));
}

// nibbles sets c[0..3] to the low and c[4..7] to the high nibbles of the
// 16 bytes q, each as nibble | hi (hi: extra bits per byte, or 0).
__device__ __forceinline__ void nibbles(unsigned int *c, uint4 q, const unsigned int *hlo, const unsigned int *hhi)
{
    const unsigned int w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        c[j] = (w[j] & 0x0F0F0F0Fu) | hlo[j];
        c[4 + j] = ((w[j] >> 4) & 0x0F0F0F0Fu) | hhi[j];
    }
}

// nibbles4 is nibbles with no extra bits (the 4-bit types).
__device__ __forceinline__ void nibbles4(unsigned int *c, uint4 q)
{
    const unsigned int z[4] = {0, 0, 0, 0};
    nibbles(c, q, z, z);
}

// spread4 moves bits 0..3 of v to bit 4 of bytes 0..3 (the fifth bits of
// Q5_0 and Q5_1).
__device__ __forceinline__ unsigned int spread4(unsigned int v)
{
    return ((v & 1u) << 4) | ((v & 2u) << 11) | ((v & 4u) << 18) | ((v & 8u) << 25);
}

// scale_min_k4 unpacks the 6-bit scale and min of sub-block j of Q4_K and
// Q5_K from the 12 scale bytes s (words s0, s1, s2): j < 4: s[j] & 63,
// s[j+4] & 63; j >= 4: s[j+4] & 15 | s[j-4] >> 6 << 4, s[j+4] >> 4 |
// s[j] >> 6 << 4.
__device__ __forceinline__ unsigned int word_of(unsigned int s0, unsigned int s1, unsigned int s2, unsigned int s3,
                                                int i)
{
    return i == 0 ? s0 : i == 1 ? s1 : i == 2 ? s2 : s3;
}

// byte_of returns byte n (0..15, known only at run time) of the words s.
__device__ __forceinline__ unsigned int byte_of(unsigned int s0, unsigned int s1, unsigned int s2, unsigned int s3,
                                                int n)
{
    return (word_of(s0, s1, s2, s3, n / 4) >> (8 * (n % 4))) & 255u;
}

__device__ __forceinline__ void scale_min_k4(int j, unsigned int s0, unsigned int s1, unsigned int s2, float &sc,
                                             float &mn)
{
    unsigned int a, m;
    if (j < 4) {
        a = byte_of(s0, s1, s2, 0, j) & 63;
        m = byte_of(s0, s1, s2, 0, j + 4) & 63;
    } else {
        a = (byte_of(s0, s1, s2, 0, j + 4) & 15) | ((byte_of(s0, s1, s2, 0, j - 4) >> 6) << 4);
        m = (byte_of(s0, s1, s2, 0, j + 4) >> 4) | ((byte_of(s0, s1, s2, 0, j) >> 6) << 4);
    }
    sc = (float)a;
    mn = (float)m;
}

// Type traits: G runs per unit, S units per block, O the quant offset,
// MANT whether codes are q < 128 (else q + 128), run(sub, g) the offset
// of run g of unit sub in its block, slot(e) the index (run*32/G + i) of
// the element that code slot e holds, and load(p0, p1, p2, blk, sub)
// the unit.
template <int T> struct qt;

// The layouts the traits share: one run per unit and block (the 32-element
// types), and the K-quants' two runs of 16 (Q4_K, Q5_K) or four of 8 (Q2_K,
// Q3_K, Q6_K; units_k32 and units_k16 below).
struct units32 {
    static constexpr int G = 1, S = 1;
    static __device__ __forceinline__ int run(int, int) { return 0; }
    static __device__ __forceinline__ int slot(int e) { return e; }
};

template <> struct qt<Q8_0> : units32 {
    static constexpr int O = 0;
    static constexpr bool MANT = false;
    static __device__ __forceinline__ unit<1> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *, size_t blk, int)
    {
        unit<1> u;
        const uint4 q0 = ld128(p0, 32 * blk), q1 = ld128(p0, 32 * blk + 16);
        const unsigned int w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
        for (int j = 0; j < 8; j++)
            u.c[j] = w[j] ^ 0x80808080u;
        u.a[0] = h2f(p1, blk);
        u.b[0] = -0.0f;
        return u;
    }
};

template <> struct qt<Q4_0> : units32 {
    static constexpr int O = 8;
    static constexpr bool MANT = true;
    static __device__ __forceinline__ unit<1> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *, size_t blk, int)
    {
        unit<1> u;
        nibbles4(u.c, ld128(p0, 16 * blk));
        u.a[0] = h2f(p1, blk);
        u.b[0] = -0.0f;
        return u;
    }
};

template <> struct qt<Q4_1> : units32 {
    static constexpr int O = 0;
    static constexpr bool MANT = true;
    static __device__ __forceinline__ unit<1> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *, size_t blk, int)
    {
        unit<1> u;
        nibbles4(u.c, ld128(p0, 16 * blk));
        u.a[0] = h2f(p1, 2 * blk);
        u.b[0] = h2f(p1, 2 * blk + 1);
        return u;
    }
};

// q5_high returns the fifth bits of Q5_0/Q5_1 (qh: bit i is element i's)
// as bit 4 of each code byte, low and high halves.
__device__ __forceinline__ void q5_high(unsigned int qh, unsigned int *hlo, unsigned int *hhi)
{
#pragma unroll
    for (int j = 0; j < 4; j++) {
        hlo[j] = spread4(qh >> (4 * j));
        hhi[j] = spread4(qh >> (16 + 4 * j));
    }
}

template <> struct qt<Q5_0> : units32 {
    static constexpr int O = 16;
    static constexpr bool MANT = true;
    static __device__ __forceinline__ unit<1> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *p2, size_t blk, int)
    {
        unit<1> u;
        unsigned int hlo[4], hhi[4];
        q5_high(ld32(p1, 4 * blk), hlo, hhi);
        nibbles(u.c, ld128(p0, 16 * blk), hlo, hhi);
        u.a[0] = h2f(p2, blk);
        u.b[0] = -0.0f;
        return u;
    }
};

template <> struct qt<Q5_1> : units32 {
    static constexpr int O = 0;
    static constexpr bool MANT = true;
    static __device__ __forceinline__ unit<1> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *p2, size_t blk, int)
    {
        unit<1> u;
        unsigned int hlo[4], hhi[4];
        q5_high(ld32(p1, 4 * blk), hlo, hhi);
        nibbles(u.c, ld128(p0, 16 * blk), hlo, hhi);
        u.a[0] = h2f(p2, 2 * blk);
        u.b[0] = h2f(p2, 2 * blk + 1);
        return u;
    }
};

// IQ4_NL: the nibble indexes a table of 16 levels; the codes are the
// levels + 128, looked up four at a time with PRMT (entries 0-7 and 8-15
// from two word pairs, chosen per byte by the index's top bit). The 16
// bits of a qs word's half are the selectors of the elements j, j+16,
// j+1, j+17 (low and high nibble of two bytes): slot(e) says so.
template <> struct qt<IQ4_NL> : units32 {
    static constexpr int O = 0;
    static constexpr bool MANT = false;
    // Slot e = 4w + t (word w of codes, byte t) holds qs byte
    // 4*(w/2) + 2*(w%2) + t/2, its low nibble for even t: element
    // that byte index, plus 16 for odd t.
    static __device__ __forceinline__ int slot(int e)
    {
        const int w = e / 4, t = e % 4;
        return 4 * (w / 2) + 2 * (w % 2) + t / 2 + 16 * (t % 2);
    }
    static __device__ __forceinline__ unsigned int lookup(unsigned int sel)
    {
        // The levels -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25,
        // 38, 53, 69, 89, 113, plus 128, little-endian.
        const unsigned int t0 = 0x3F2D1801u, t1 = 0x766A5D4Fu, t2 = 0xA6998D81u, t3 = 0xF1D9C5B5u;
        const unsigned int lo = __byte_perm(t0, t1, sel & 0x7777u);
        const unsigned int hi = __byte_perm(t2, t3, sel & 0x7777u);
        // Byte n from lo (index n) or, when its selector's top bit is
        // set, from hi (index n + 4).
        return __byte_perm(lo, hi, 0x3210u | ((sel & 0x8888u) >> 1));
    }
    static __device__ __forceinline__ unit<1> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *, size_t blk, int)
    {
        unit<1> u;
        const uint4 q = ld128(p0, 16 * blk);
        const unsigned int w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            u.c[2 * j] = lookup(w[j] & 0xFFFFu);
            u.c[2 * j + 1] = lookup(w[j] >> 16);
        }
        u.a[0] = h2f(p1, blk);
        u.b[0] = -0.0f;
        return u;
    }
};

// Q2_K, Q3_K and Q6_K (units_k16): unit sub (0..7) is half h = sub/4
// (elements 128h..128h+127) and bytes l0 = 8*(sub%4) .. l0+7 of that
// half's quant rows; run j holds elements 128h + 32j + l0 .. +7.
struct units_k16 {
    static constexpr int G = 4, S = 8;
    static __device__ __forceinline__ int run(int sub, int g) { return 128 * (sub / 4) + 32 * g + 8 * (sub % 4); }
    static __device__ __forceinline__ int slot(int e) { return e; }
};

template <> struct qt<Q2_K> : units_k16 {
    static constexpr int O = 0;
    static constexpr bool MANT = true;
    static __device__ __forceinline__ unit<4> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *, size_t blk, int sub)
    {
        unit<4> u;
        const int h = sub / 4, l0 = 8 * (sub % 4);
        const uint2 q = ld64(p0, 80 * blk + 16 + 32 * h + l0);
        const uint4 sc = ld128(p0, 80 * blk);
        const float d = h2f(p1, 2 * blk), dmin = h2f(p1, 2 * blk + 1);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            u.c[2 * j] = ((q.x >> (2 * j)) & 0x03030303u);
            u.c[2 * j + 1] = ((q.y >> (2 * j)) & 0x03030303u);
            const int k = 8 * h + 2 * j + l0 / 16;
            const unsigned int v = byte_of(sc.x, sc.y, sc.z, sc.w, k);
            u.a[j] = d * (float)(v & 15);
            u.b[j] = -(dmin * (float)(v >> 4));
        }
        return u;
    }
};

template <> struct qt<Q3_K> : units_k16 {
    static constexpr int O = 4;
    static constexpr bool MANT = true;
    static __device__ __forceinline__ unit<4> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *p2, size_t blk, int sub)
    {
        unit<4> u;
        const int h = sub / 4, l0 = 8 * (sub % 4);
        const uint2 q = ld64(p0, 96 * blk + 32 + 32 * h + l0);
        const uint2 hm = ld64(p0, 96 * blk + l0);
        const unsigned int s0 = ld32(p1, 12 * blk), s1 = ld32(p1, 12 * blk + 4), s2 = ld32(p1, 12 * blk + 8);
        const float d = h2f(p2, blk);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int hb = 4 * h + j;
            u.c[2 * j] = ((q.x >> (2 * j)) & 0x03030303u) | (((hm.x >> hb) & 0x01010101u) << 2);
            u.c[2 * j + 1] = ((q.y >> (2 * j)) & 0x03030303u) | (((hm.y >> hb) & 0x01010101u) << 2);
            // Scale k: low 4 bits from byte k (k < 8, low nibble) or k-8
            // (high nibble), high 2 bits from byte 8 + k%4 at bit 2(k/4).
            const int k = 8 * h + 2 * j + l0 / 16;
            const unsigned int lo = k < 8 ? byte_of(s0, s1, s2, 0, k) & 15u : byte_of(s0, s1, s2, 0, k - 8) >> 4;
            const unsigned int hi = (byte_of(s0, s1, s2, 0, 8 + k % 4) >> (2 * (k / 4))) & 3u;
            u.a[j] = d * (float)((int)(lo | (hi << 4)) - 32);
            u.b[j] = -0.0f;
        }
        return u;
    }
};

// Q4_K and Q5_K (units_k32): unit sub (0..7) is half h = sub%2 of the
// 64-element group c = sub/2: qs bytes 32c + 16h .. +15, whose low nibbles
// are elements 64c + 16h + i (sub-block 2c) and high nibbles
// 64c + 32 + 16h + i (sub-block 2c + 1).
struct units_k32 {
    static constexpr int G = 2, S = 8;
    static __device__ __forceinline__ int run(int sub, int g) { return 64 * (sub / 2) + 32 * g + 16 * (sub % 2); }
    static __device__ __forceinline__ int slot(int e) { return e; }
};

// k4_scales sets the runs' a and b of unit sub of a Q4_K/Q5_K block from
// its 16-byte header (d, dmin, 12 scale bytes s; see scale_min_k4): the
// unit's sub-blocks j = 2c, 2c+1 (c = sub/2) are adjacent bytes, decoded
// two at a time.
__device__ __forceinline__ void k4_scales(const unsigned char *hdr, size_t blk, int sub, unit<2> &u)
{
    const uint4 h = ld128(hdr, 16 * blk);
    const float d = __half2float(__ushort_as_half((unsigned short)(h.x & 0xFFFFu)));
    const float dmin = __half2float(__ushort_as_half((unsigned short)(h.x >> 16)));
    const int c = sub / 2, sh = 8 * ((2 * c) & 3);
    // Bytes t, t+1 (t = 2c mod 4) of each scale word.
    const unsigned int a2 = (h.y >> sh) & 0xFFFFu, b2 = (h.z >> sh) & 0xFFFFu, c2 = (h.w >> sh) & 0xFFFFu;
    unsigned int sc2, m2;
    if (c < 2) {
        sc2 = a2 & 0x3F3Fu;
        m2 = b2 & 0x3F3Fu;
    } else {
        sc2 = (c2 & 0x0F0Fu) | ((a2 >> 2) & 0x3030u);
        m2 = ((c2 >> 4) & 0x0F0Fu) | ((b2 >> 2) & 0x3030u);
    }
#pragma unroll
    for (int g = 0; g < 2; g++) {
        u.a[g] = d * (__uint_as_float(0x4B000000u | ((sc2 >> (8 * g)) & 255u)) - 8388608.0f);
        u.b[g] = -(dmin * (__uint_as_float(0x4B000000u | ((m2 >> (8 * g)) & 255u)) - 8388608.0f));
    }
}

template <> struct qt<Q4_K> : units_k32 {
    static constexpr int O = 0;
    static constexpr bool MANT = true;
    static __device__ __forceinline__ unit<2> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *, size_t blk, int sub)
    {
        unit<2> u;
        nibbles4(u.c, ld128(p0, 128 * blk + 16 * sub));
        k4_scales(p1, blk, sub, u);
        return u;
    }
};

template <> struct qt<Q5_K> : units_k32 {
    static constexpr int O = 0;
    static constexpr bool MANT = true;
    static __device__ __forceinline__ unit<2> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *, size_t blk, int sub)
    {
        unit<2> u;
        const int c = sub / 2, h = sub % 2;
        // qh[l] for l = 16h..16h+15: bit 2c is the fifth bit of the low
        // nibble's element, bit 2c+1 the high one's.
        const uint4 qh = ld128(p0, 160 * blk + 16 * h);
        const unsigned int hw[4] = {qh.x, qh.y, qh.z, qh.w};
        unsigned int hlo[4], hhi[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            hlo[j] = ((hw[j] >> (2 * c)) & 0x01010101u) << 4;
            hhi[j] = ((hw[j] >> (2 * c + 1)) & 0x01010101u) << 4;
        }
        nibbles(u.c, ld128(p0, 160 * blk + 32 + 16 * sub), hlo, hhi);
        k4_scales(p1, blk, sub, u);
        return u;
    }
};

template <> struct qt<Q6_K> : units_k16 {
    static constexpr int O = 32;
    static constexpr bool MANT = true;
    static __device__ __forceinline__ unit<4> load(const unsigned char *p0, const unsigned char *p1,
                                                   const unsigned char *, size_t blk, int sub)
    {
        unit<4> u;
        const int h = sub / 4, l0 = 8 * (sub % 4);
        const size_t base = 208 * blk;
        // Run j: low (j < 2) or high nibble of ql[64h + 32(j%2) + l],
        // high two bits (qh[32h + l] >> 2j) & 3.
        const uint2 qa = ld64(p0, base + 64 * h + l0), qb = ld64(p0, base + 64 * h + 32 + l0);
        const uint2 qh = ld64(p0, base + 128 + 32 * h + l0);
        const uint2 sc = ld64(p0, base + 192 + 8 * h);
        const float d = h2f(p1, blk);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const uint2 q = j % 2 ? qb : qa;
            const int sh = j < 2 ? 0 : 4;
            u.c[2 * j] = ((q.x >> sh) & 0x0F0F0F0Fu) | (((qh.x >> (2 * j)) & 0x03030303u) << 4);
            u.c[2 * j + 1] = ((q.y >> sh) & 0x0F0F0F0Fu) | (((qh.y >> (2 * j)) & 0x03030303u) << 4);
            const int k = l0 / 16 + 2 * j; // scale index within the half
            const unsigned int sw = k < 4 ? sc.x : sc.y;
            const int s8 = (int)(signed char)((sw >> (8 * (k % 4))) & 255u);
            u.a[j] = d * (float)s8;
            u.b[j] = -0.0f;
        }
        return u;
    }
};

// code_f returns slot t (0..3) of code word c as a float: 0.5 + q/256 for
// codes q < 128, q exactly for q + 128 codes.
template <bool MANT> __device__ __forceinline__ float code_f(unsigned int c, int t);

template <> __device__ __forceinline__ float code_f<true>(unsigned int c, int t)
{
    return __uint_as_float(__byte_perm(c, 0x3F000000u, 0x7054 | (t << 8)));
}

template <> __device__ __forceinline__ float code_f<false>(unsigned int c, int t)
{
    return __uint_as_float(__byte_perm(c, 0x4B000000u, 0x7650 | t)) - 8388736.0f;
}

// code_q returns slot t of code word c as the integer quant (dequantization).
template <bool MANT> __device__ __forceinline__ int code_q(unsigned int c, int t)
{
    const int v = (int)((c >> (8 * t)) & 255u);
    return MANT ? v : v - 128;
}

// decode sets f[e] to slot e of unit w as code_f does.
template <int T> __device__ __forceinline__ void decode(const unit<qt<T>::G> &w, float *f)
{
#pragma unroll
    for (int e = 0; e < 32; e++)
        f[e] = code_f<qt<T>::MANT>(w.c[e / 4], e % 4);
}

// run_term returns run g's share of Σ w x given s = Σ f x over the run's
// decoded codes f and xs = Σ x over its activations.
template <int T>
__device__ __forceinline__ float run_term(const unit<qt<T>::G> &w, int g, float s, float xs)
{
    using Q = qt<T>;
    if (Q::MANT)
        return fmaf(256.0f * w.a[g], s, (w.b[g] - (128.0f + Q::O) * w.a[g]) * xs);
    return fmaf(w.a[g], s, (w.b[g] - Q::O * w.a[g]) * xs);
}

// unit_dot returns acc + Σ w x over unit w given its decoded codes f, xe
// its 32 activations in run order and xs[g] the sum of run g's: each
// run's Σ f x is an FMA chain in slot order from 0, and the runs' terms
// are added to acc one after the other, in run order (matvec_qb adds them
// in the same order, so batched rows equal single ones bit for bit).
template <int T>
__device__ __forceinline__ float unit_dot(float acc, const unit<qt<T>::G> &w, const float *f, const float *xe,
                                          const float *xs)
{
    using Q = qt<T>;
    constexpr int G = Q::G, L = 32 / G;
    float s[G];
#pragma unroll
    for (int g = 0; g < G; g++)
        s[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < 32; e++) {
        const int i = Q::slot(e);
        s[i / L] = fmaf(f[e], xe[i], s[i / L]);
    }
#pragma unroll
    for (int g = 0; g < G; g++)
        acc += run_term<T>(w, g, s[g], xs[g]);
    return acc;
}

// The products of one input X (n, k) FP32 with up to three quantized
// matrices of one type (the Q, K and V projections, or a single product):
// Y_o[i, r] = Σ_l X[i, l] * W_o[r, l] (+ bias_o[r]) for r < m_o, W_o (m_o,
// k) in planes po0, po1, po2 (o = a, b, c), Y_o (n, m_o) FP32, bias_o 0 or
// (1, m_o); m_o = 0 for outputs not used. The blocks of output 0 come
// first, then those of 1 and 2. matvec_q computes one row of X (n = 1),
// matvec_qb up to N.
//
// With GU (the feed-forward block's gate and up, W_a = Wg, W_b = Wu, m_a =
// m_b = m): g = X·Wgᵀ, u = X·Wuᵀ; Y_a[i, r] = g / (1 + exp(-g)) * u
// (swiglu_f32's formula) and Y_b[i, r] = u; a warp computes R/2 rows of
// each, so that both halves of a row meet in one lane.
//
// A block of 8 warps computes 8R weight rows, R per warp; lane j of a warp
// takes units j, j + 32, ... of its rows (matvec_q: P of them at a time,
// their loads issued first) and the warp's xor butterfly adds the lanes'
// sums. The activations are staged in shared memory, KC columns at a time
// (stage_x), with the sum of every 8 consecutive values: a lane reads the
// 128 bytes of its unit, which from global memory would touch 32 cache
// lines per warp instruction; in shared memory the 16-byte pieces are
// swizzled (piece v of unit u at v ^ (u % 8)) so that the eight lanes of a
// phase hit distinct banks. Grid ceil(m/(8R)). Rows past m are computed on
// row m-1's data and not stored.
struct qouts {
    float *y[3];
    const unsigned char *p[3][3];
    const float *bias[3];
    int m[3];
};

// stage_x copies rows r0 .. r0+NP-1 (rows ≥ n as zeros) of X (n, k), columns
// [32·c0, 32·(c0+uc)), into the swizzled shared-memory tile xs4 and the
// sums of every 8 values xsum (layout in matvec_q's comment), between two
// barriers.
template <int NP, int UC>
__device__ __forceinline__ void stage_x(float4 *xs4, float *xsum, const float *__restrict__ x, int n, int k, int r0,
                                        int c0, int uc)
{
    __syncthreads(); // the previous chunk or pass has been read
#pragma unroll
    for (int i = 0; i < NP; i++) {
        const float *xr = x + (size_t)(r0 + i) * k + (size_t)c0 * 32;
        for (int q = threadIdx.x; q < uc * 4; q += 256) {
            float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f), b = a;
            if (r0 + i < n) {
                a = __ldg(reinterpret_cast<const float4 *>(xr) + 2 * q);
                b = __ldg(reinterpret_cast<const float4 *>(xr) + 2 * q + 1);
            }
            const int u = q / 4, v = 2 * (q % 4);
            xs4[(i * UC + u) * 8 + (v ^ (u & 7))] = a;
            xs4[(i * UC + u) * 8 + ((v + 1) ^ (u & 7))] = b;
            xsum[i * UC * 4 + q] = ((a.x + a.y) + (a.z + a.w)) + ((b.x + b.y) + (b.z + b.w));
        }
    }
    __syncthreads();
}

// store_rows writes a warp's row sums acc (R weight rows by N activation
// rows, lane partial sums) to the outputs, reduced by warp_sum: Y_out[i, r]
// (+ bias) or, with GU, rows s and s + R/2 as gate and up through SwiGLU.
template <int N, int R, bool GU>
__device__ __forceinline__ void store_rows(const qouts &o, float (&acc)[R][N], int out, int m, int r0, int n, int lane)
{
    constexpr int ROWS = GU ? R / 2 : R;
    if (GU) {
#pragma unroll
        for (int s = 0; s < ROWS; s++) {
            const int r = r0 + s;
#pragma unroll
            for (int i = 0; i < N; i++) {
                const float g = warp_sum(acc[s][i]), u = warp_sum(acc[s + ROWS][i]);
                if (lane == 0 && i < n && r < m) {
                    o.y[0][(size_t)i * m + r] = g / (1.0f + expf(-g)) * u;
                    o.y[1][(size_t)i * m + r] = u;
                }
            }
        }
        return;
    }
    float *y = o.y[out];
    const float *bias = o.bias[out];
#pragma unroll
    for (int s = 0; s < R; s++) {
        const int r = r0 + s;
#pragma unroll
        for (int i = 0; i < N; i++) {
            const float v = warp_sum(acc[s][i]);
            if (lane == 0 && i < n && r < m)
                y[(size_t)i * m + r] = v + (bias ? bias[r] : 0.0f);
        }
    }
}

template <int T, int KC, int R, int P, bool GU>
__device__ __forceinline__ void matvec_q(const qouts &o, const float *__restrict__ x, int k)
{
    using Q = qt<T>;
    constexpr int G = Q::G, L = 32 / G, UC = KC / 32, WARPS = 8;
    static_assert(KC % 1024 == 0, "chunks of whole warps of units");
    static_assert(!GU || R % 2 == 0, "gate and up rows in pairs");
    __shared__ float4 xs4[UC * 8];
    __shared__ float xsum[UC * 4];
    constexpr int ROWS = GU ? R / 2 : R; // rows of each output per warp
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    // The output this block computes, and the block's index in it.
    int out = 0, blk = blockIdx.x;
    if (!GU) {
        const int nb0 = (o.m[0] + WARPS * R - 1) / (WARPS * R), nb1 = (o.m[1] + WARPS * R - 1) / (WARPS * R);
        if (blk >= nb0) {
            blk -= nb0;
            out = 1;
            if (blk >= nb1) {
                blk -= nb1;
                out = 2;
            }
        }
    }
    const int m = o.m[out];
    const int r0 = (blk * WARPS + warp) * ROWS;
    const int units = k / 32, bpr = units / Q::S;
    size_t rowblk[R];
    const unsigned char *pl[R][3];
#pragma unroll
    for (int s = 0; s < R; s++) {
        const int src = GU ? s / ROWS : out;
        rowblk[s] = (size_t)min(r0 + s % ROWS, m - 1) * bpr;
#pragma unroll
        for (int j = 0; j < 3; j++)
            pl[s][j] = o.p[src][j];
    }
    float acc[R][1];
#pragma unroll
    for (int s = 0; s < R; s++)
        acc[s][0] = 0.0f;
    for (int c0 = 0; c0 < units; c0 += UC) {
        const int uc = min(UC, units - c0), groups = (uc + 32 * P - 1) / (32 * P);
        for (int gi = 0; gi < groups; gi++) {
            const int j0 = gi * 32 * P + lane;
            unit<G> w[P][R];
#pragma unroll
            for (int p = 0; p < P; p++) {
                const int u = c0 + min(j0 + 32 * p, uc - 1);
#pragma unroll
                for (int s = 0; s < R; s++)
                    w[p][s] = Q::load(pl[s][0], pl[s][1], pl[s][2], rowblk[s] + u / Q::S, u % Q::S);
            }
            if (gi == 0)
                stage_x<1, UC>(xs4, xsum, x, 1, k, 0, c0, uc);
            if (r0 >= m)
                continue;
#pragma unroll
            for (int p = 0; p < P; p++) {
                const int j = j0 + 32 * p;
                if (j < uc) {
                    const int sub = (c0 + j) % Q::S;
                    const int b32 = (j / Q::S) * Q::S; // the unit's block, in units from the chunk's start
                    float fw[R][32];
#pragma unroll
                    for (int s = 0; s < R; s++)
                        decode<T>(w[p][s], fw[s]);
                    float xe[32], xs[G];
#pragma unroll
                    for (int g = 0; g < G; g++) {
                        const int pos = 32 * b32 + Q::run(sub, g); // in the chunk
                        float t = 0.0f;
#pragma unroll
                        for (int v = 0; v < L / 4; v++) {
                            const int e = pos + 4 * v, su = e / 32, pv = (e % 32) / 4;
                            const float4 xv = xs4[su * 8 + (pv ^ (su & 7))];
                            xe[g * L + 4 * v] = xv.x;
                            xe[g * L + 4 * v + 1] = xv.y;
                            xe[g * L + 4 * v + 2] = xv.z;
                            xe[g * L + 4 * v + 3] = xv.w;
                        }
#pragma unroll
                        for (int v = 0; v < L / 8; v++)
                            t += xsum[pos / 8 + v];
                        xs[g] = t;
                    }
#pragma unroll
                    for (int s = 0; s < R; s++)
                        acc[s][0] = unit_dot<T>(acc[s][0], w[p][s], fw[s], xe, xs);
                }
            }
        }
    }
    store_rows<1, R, GU>(o, acc, out, m, r0, 1, lane);
}

// ---------------------------------------------------------------------------
// Batched path (2 ≤ N ≤ 16): matvec_qb.
//
// At N = 1 a lane decodes each unit into 32 floats and reads the unit's 32
// activations once. With N rows decoded floats for R rows of several units
// would not fit in registers, and few loads would stay in flight. Here the
// lane keeps only the codes of its units (8 words and the runs' a, b per
// weight row) and walks each unit in four pieces of 8 code slots: it
// decodes the piece for its R weight rows (8R PRMTs), then for every
// activation row reads the piece's 8 activations (two float4 from shared
// memory) and does 8R FMAs. The next chunk's codes are loaded before the
// current chunk is computed, so the loads of one chunk overlap the FMAs of
// the previous one.
//
// Same sums as matvec_q: lane j owns units j, j + 32, ... of every row, a
// run's Σ f x is one FMA chain in slot order from 0 (the pieces of a run
// continue it), the run terms (run_term) are added to the row's sum in run
// order when the run's last piece is done, and the lanes are combined by
// warp_sum. A piece's slots are two float4 of the unit's activations in run
// order: float4 2q and 2q+1 for piece q, or q and q+4 for IQ4_NL, whose slot
// t holds element slot(8q + t) (ILV below).
//
// The activations are staged as in matvec_q, NP rows by KC columns (KC =
// 32·PU units, PU per lane); with N > NP the passes over the chunk reuse
// its codes. Grid ceil(m/(8R)) (GU: R/2 rows of each output per warp).

template <int T, int N, int NP, int KC, int R, bool GU>
__device__ __forceinline__ void matvec_qb(const qouts &o, const float *__restrict__ x, int n, int k)
{
    using Q = qt<T>;
    constexpr int G = Q::G, L = 32 / G, UC = KC / 32, PU = UC / 32, WARPS = 8;
    constexpr bool ILV = T == IQ4_NL;
    static_assert(KC % 1024 == 0 && N % NP == 0, "chunks of whole warps of units and whole passes");
    static_assert(!GU || R % 2 == 0, "gate and up rows in pairs");
    __shared__ float4 xs4[NP * UC * 8];
    __shared__ float xsum[NP * UC * 4];
    constexpr int ROWS = GU ? R / 2 : R; // rows of each output per warp
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int out = 0, blk = blockIdx.x;
    if (!GU) {
        const int nb0 = (o.m[0] + WARPS * R - 1) / (WARPS * R), nb1 = (o.m[1] + WARPS * R - 1) / (WARPS * R);
        if (blk >= nb0) {
            blk -= nb0;
            out = 1;
            if (blk >= nb1) {
                blk -= nb1;
                out = 2;
            }
        }
    }
    const int m = o.m[out];
    const int r0 = (blk * WARPS + warp) * ROWS;
    const int units = k / 32, bpr = units / Q::S;
    size_t rowblk[R];
    const unsigned char *pl[R][3];
#pragma unroll
    for (int s = 0; s < R; s++) {
        const int src = GU ? s / ROWS : out;
        rowblk[s] = (size_t)min(r0 + s % ROWS, m - 1) * bpr;
#pragma unroll
        for (int j = 0; j < 3; j++)
            pl[s][j] = o.p[src][j];
    }
    float acc[R][N];
#pragma unroll
    for (int s = 0; s < R; s++)
#pragma unroll
        for (int i = 0; i < N; i++)
            acc[s][i] = 0.0f;
    unit<G> w[PU][R], wn[PU][R];
    // load_chunk fills u with this lane's units of the chunk at c (clamped
    // to the row's last unit: those past it are loaded but not used).
    auto load_chunk = [&](unit<G>(&u)[PU][R], int c) {
#pragma unroll
        for (int p = 0; p < PU; p++) {
            const int uu = min(c + lane + 32 * p, units - 1);
#pragma unroll
            for (int s = 0; s < R; s++)
                u[p][s] = Q::load(pl[s][0], pl[s][1], pl[s][2], rowblk[s] + uu / Q::S, uu % Q::S);
        }
    };
    load_chunk(w, 0);
    for (int c0 = 0; c0 < units; c0 += UC) {
        const int uc = min(UC, units - c0);
        if (c0 + UC < units)
            load_chunk(wn, c0 + UC);
#pragma unroll
        for (int ip = 0; ip < N / NP; ip++) {
            if (ip * NP >= n)
                break;
            stage_x<NP, UC>(xs4, xsum, x, n, k, ip * NP, c0, uc);
            if (r0 >= m)
                continue;
#pragma unroll
            for (int p = 0; p < PU; p++) {
                const int j = lane + 32 * p;
                if (j >= uc)
                    continue;
                const int sub = (c0 + j) % Q::S;
                const int b32 = (j / Q::S) * Q::S; // the unit's block, in units from the chunk's start
                float sacc[R][NP]; // a run's Σ f x
#pragma unroll
                for (int s = 0; s < R; s++)
#pragma unroll
                    for (int ii = 0; ii < NP; ii++)
                        sacc[s][ii] = 0.0f;
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    float fw[R][8];
#pragma unroll
                    for (int s = 0; s < R; s++)
#pragma unroll
                        for (int t = 0; t < 8; t++)
                            fw[s][t] = code_f<Q::MANT>(w[p][s].c[2 * q + t / 4], t % 4);
                    // The piece's two float4 of activations: xe indices
                    // (run order) 4·v0 and 4·v1.
                    const int v0 = ILV ? q : 2 * q, v1 = ILV ? q + 4 : 2 * q + 1;
                    const int g0 = 4 * v0 / L, g1 = 4 * v1 / L;
                    const int e0 = 32 * b32 + Q::run(sub, g0) + 4 * v0 % L;
                    const int e1 = 32 * b32 + Q::run(sub, g1) + 4 * v1 % L;
#pragma unroll
                    for (int ii = 0; ii < NP; ii++) {
                        if (ip * NP + ii < n) {
                            const float4 xa = xs4[(ii * UC + e0 / 32) * 8 + (((e0 % 32) / 4) ^ ((e0 / 32) & 7))];
                            const float4 xb = xs4[(ii * UC + e1 / 32) * 8 + (((e1 % 32) / 4) ^ ((e1 / 32) & 7))];
                            const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
                            for (int s = 0; s < R; s++)
#pragma unroll
                                for (int t = 0; t < 8; t++)
                                    sacc[s][ii] = fmaf(fw[s][t], xv[ILV ? 4 * (t % 2) + t / 2 : t], sacc[s][ii]);
                        }
                    }
                    if ((8 * q + 8) % L == 0) { // the last piece of run g
                        const int g = 8 * q / L, pos = 32 * b32 + Q::run(sub, g);
#pragma unroll
                        for (int ii = 0; ii < NP; ii++) {
                            if (ip * NP + ii < n) {
                                float xs = 0.0f;
#pragma unroll
                                for (int v = 0; v < L / 8; v++)
                                    xs += xsum[ii * UC * 4 + pos / 8 + v];
#pragma unroll
                                for (int s = 0; s < R; s++) {
                                    acc[s][ip * NP + ii] += run_term<T>(w[p][s], g, sacc[s][ii], xs);
                                    sacc[s][ii] = 0.0f;
                                }
                            }
                        }
                    }
                }
            }
        }
#pragma unroll
        for (int p = 0; p < PU; p++)
#pragma unroll
            for (int s = 0; s < R; s++)
                w[p][s] = wn[p][s];
    }
    store_rows<N, R, GU>(o, acc, out, m, r0, n, lane);
}

// The single-row instantiations (matvec_q): KC columns staged (KC*4.5
// bytes of shared memory), R weight rows per warp, P units in flight per
// lane (ptx/quant.go mirrors R).
#define MATVEC_Q(name, T, KC, R, P, GU)                                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        name(float *ya, float *yb, float *yc, const float *__restrict__ x, const unsigned char *pa0,              \
             const unsigned char *pa1, const unsigned char *pa2, const unsigned char *pb0,                         \
             const unsigned char *pb1, const unsigned char *pb2, const unsigned char *pc0,                         \
             const unsigned char *pc1, const unsigned char *pc2, const float *ba, const float *bb,                \
             const float *bc, int n, int ma, int mb, int mc, int k)                                                \
    {                                                                                                              \
        const qouts o = {{ya, yb, yc}, {{pa0, pa1, pa2}, {pb0, pb1, pb2}, {pc0, pc1, pc2}}, {ba, bb, bc},        \
                         {ma, mb, mc}};                                                                            \
        matvec_q<T, KC, R, P, GU>(o, x, k);                                                              \
    }

// The batched instantiations (matvec_qb): up to N rows of X, NP of them by
// KC columns staged at a time (NP*KC*4.5 bytes of shared memory), R weight
// rows per warp (ptx/quant.go mirrors R).
#define MATVEC_QB(name, T, N, NP, KC, R, GU)                                                                     \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        name(float *ya, float *yb, float *yc, const float *__restrict__ x, const unsigned char *pa0,              \
             const unsigned char *pa1, const unsigned char *pa2, const unsigned char *pb0,                         \
             const unsigned char *pb1, const unsigned char *pb2, const unsigned char *pc0,                         \
             const unsigned char *pc1, const unsigned char *pc2, const float *ba, const float *bb,                \
             const float *bc, int n, int ma, int mb, int mc, int k)                                                \
    {                                                                                                              \
        const qouts o = {{ya, yb, yc}, {{pa0, pa1, pa2}, {pb0, pb1, pb2}, {pc0, pc1, pc2}}, {ba, bb, bc},        \
                         {ma, mb, mc}};                                                                            \
        matvec_qb<T, N, NP, KC, R, GU>(o, x, n, k);                                                                \
    }

// dequant_unit sets v (32 values, run order: run g's at v[g*32/G ..]) to
// unit u of row r and start[g] to run g's first column in the row.
template <int T>
__device__ __forceinline__ void dequant_unit(const unsigned char *p0, const unsigned char *p1,
                                             const unsigned char *p2, size_t r, int k, int u, float *v, int *start)
{
    using Q = qt<T>;
    constexpr int G = Q::G, L = 32 / G;
    const int bpr = k / (32 * Q::S), sub = u % Q::S;
    const unit<G> w = Q::load(p0, p1, p2, r * bpr + u / Q::S, sub);
    const int base = (u / Q::S) * 32 * Q::S;
#pragma unroll
    for (int g = 0; g < G; g++)
        start[g] = base + Q::run(sub, g);
#pragma unroll
    for (int e = 0; e < 32; e++) {
        const int i = Q::slot(e), g = i / L;
        const int q = code_q<Q::MANT>(w.c[e / 4], e % 4) - Q::O;
        v[i] = __fadd_rn(__fmul_rn(w.a[g], (float)q), w.b[g]);
    }
}

// dst (rows, k) FP16 = W, for the products of prompt processing. One
// thread per unit, grid-stride; each run is written in 16-byte stores.
template <int T>
__device__ __forceinline__ void dequant_f16(__half *__restrict__ dst, const unsigned char *__restrict__ p0,
                                            const unsigned char *__restrict__ p1,
                                            const unsigned char *__restrict__ p2, int rows, int k)
{
    constexpr int G = qt<T>::G, L = 32 / G;
    const int units = k / 32;
    const long long total = (long long)rows * units;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const size_t r = (size_t)(t / units);
        float v[32];
        int start[G];
        dequant_unit<T>(p0, p1, p2, r, k, (int)(t % units), v, start);
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int c = 0; c < L / 8; c++) {
                const float *x = v + g * L + 8 * c;
                uint4 h;
                h.x = (unsigned int)__half_as_ushort(__float2half_rn(x[0])) |
                      ((unsigned int)__half_as_ushort(__float2half_rn(x[1])) << 16);
                h.y = (unsigned int)__half_as_ushort(__float2half_rn(x[2])) |
                      ((unsigned int)__half_as_ushort(__float2half_rn(x[3])) << 16);
                h.z = (unsigned int)__half_as_ushort(__float2half_rn(x[4])) |
                      ((unsigned int)__half_as_ushort(__float2half_rn(x[5])) << 16);
                h.w = (unsigned int)__half_as_ushort(__float2half_rn(x[6])) |
                      ((unsigned int)__half_as_ushort(__float2half_rn(x[7])) << 16);
                *reinterpret_cast<uint4 *>(dst + r * k + start[g] + 8 * c) = h;
            }
    }
}

// dst[i, :] = W[tokens[i], :] as FP32 for i = blockIdx.y < n: the embedding
// lookup from a quantized table. Grid (x: unit blocks, y: n).
template <int T>
__device__ __forceinline__ void embed_q(float *__restrict__ dst, const unsigned char *__restrict__ p0,
                                        const unsigned char *__restrict__ p1, const unsigned char *__restrict__ p2,
                                        const int *__restrict__ tokens, int n, int k)
{
    constexpr int G = qt<T>::G, L = 32 / G;
    const int i = blockIdx.y;
    if (i >= n)
        return;
    const size_t r = (size_t)tokens[i];
    float *out = dst + (size_t)i * k;
    for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < k / 32; u += gridDim.x * blockDim.x) {
        float v[32];
        int start[G];
        dequant_unit<T>(p0, p1, p2, r, k, u, v, start);
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int c = 0; c < L / 4; c++)
                *reinterpret_cast<float4 *>(out + start[g] + 4 * c) =
                    make_float4(v[g * L + 4 * c], v[g * L + 4 * c + 1], v[g * L + 4 * c + 2], v[g * L + 4 * c + 3]);
    }
}

#define QUANT_KERNELS(t, T)                                                                                       \
    MATVEC_Q(matvec_##t##_n1, T, 8192, 2, 4, false)                                                               \
    MATVEC_QB(matvec_##t##_n4, T, 4, 4, 2048, 2, false)                                                           \
    MATVEC_QB(matvec_##t##_n8, T, 8, 8, 1024, 2, false)                                                           \
    MATVEC_QB(matvec_##t##_n16, T, 16, 4, 1024, 2, false)                                                         \
    MATVEC_Q(gateup_##t##_n1, T, 8192, 4, 2, true)                                                                \
    MATVEC_QB(gateup_##t##_n4, T, 4, 4, 2048, 2, true)                                                            \
    MATVEC_QB(gateup_##t##_n8, T, 8, 8, 1024, 2, true)                                                            \
    MATVEC_QB(gateup_##t##_n16, T, 16, 4, 1024, 2, true)                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        dequant_##t##_f16(__half *__restrict__ dst, const unsigned char *__restrict__ p0,                          \
                          const unsigned char *__restrict__ p1, const unsigned char *__restrict__ p2, int rows,    \
                          int k)                                                                                   \
    {                                                                                                              \
        dequant_f16<T>(dst, p0, p1, p2, rows, k);                                                                  \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        embed_##t(float *__restrict__ dst, const unsigned char *__restrict__ p0,                                   \
                  const unsigned char *__restrict__ p1, const unsigned char *__restrict__ p2,                      \
                  const int *__restrict__ tokens, int n, int k)                                                    \
    {                                                                                                              \
        embed_q<T>(dst, p0, p1, p2, tokens, n, k);                                                                 \
    }

QUANT_KERNELS(q8_0, Q8_0)
QUANT_KERNELS(q4_0, Q4_0)
QUANT_KERNELS(q4_1, Q4_1)
QUANT_KERNELS(q5_0, Q5_0)
QUANT_KERNELS(q5_1, Q5_1)
QUANT_KERNELS(iq4_nl, IQ4_NL)
QUANT_KERNELS(q2_k, Q2_K)
QUANT_KERNELS(q3_k, Q3_K)
QUANT_KERNELS(q4_k, Q4_K)
QUANT_KERNELS(q5_k, Q5_K)
QUANT_KERNELS(q6_k, Q6_K)
