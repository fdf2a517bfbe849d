// The KV-cache row types: how a row of n FP32 values is stored in the
// cache, read back one element at a time, and written by a block.
// Compiled for compute capability 5.2 (no FP16 arithmetic, no dp4a: every
// value is converted to FP32 before it is used).
//
// Layout of a row of n elements (ggml's block layouts, little-endian; a
// block is 2-byte aligned in the cache, so blocks are read by bytes and
// 16-bit words):
//
//   kv_f32:  n × float
//   kv_f16:  n × binary16
//   kv_q8_0: n/32 blocks of 34 bytes: binary16 d, then 32 int8 q;
//            x[i] = d·q[i]
//   kv_q4_0: n/32 blocks of 18 bytes: binary16 d, then 16 bytes whose low
//            nibble holds element j and high nibble element j+16;
//            x[i] = d·(nibble(i) − 8)
//
// The stores quantize exactly as gguf's reference quantizers do
// (ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref, built without FMA
// contraction), so the GPU cache holds the bytes the CPU cache holds for
// the same input: every product and sum is rounded on its own (__fmul_rn,
// __fadd_rn) and divisions are IEEE (the default -prec-div=true).

#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

// kv_rowbytes is the size of a row of n elements of type T (n a multiple
// of T::QK).
template <class T> __device__ __forceinline__ size_t kv_rowbytes(int n)
{
    return (size_t)(n / T::QK) * T::BYTES;
}

__device__ __forceinline__ float kv_half(const uint8_t *p)
{
    return __half2float(__ushort_as_half(*reinterpret_cast<const unsigned short *>(p)));
}

struct kv_f32 {
    static constexpr int QK = 1, BYTES = 4;
    static __device__ __forceinline__ float get(const uint8_t *row, int d)
    {
        return reinterpret_cast<const float *>(row)[d];
    }
    // store_row writes n values of src at dst; every thread of the block
    // calls it.
    static __device__ __forceinline__ void store_row(uint8_t *dst, const float *src, int n)
    {
        float *o = reinterpret_cast<float *>(dst);
        for (int j = threadIdx.x; j < n; j += blockDim.x)
            o[j] = src[j];
    }
};

struct kv_f16 {
    static constexpr int QK = 1, BYTES = 2;
    static __device__ __forceinline__ float get(const uint8_t *row, int d)
    {
        return __half2float(reinterpret_cast<const __half *>(row)[d]);
    }
    static __device__ __forceinline__ void store_row(uint8_t *dst, const float *src, int n)
    {
        __half *o = reinterpret_cast<__half *>(dst);
        for (int j = threadIdx.x; j < n; j += blockDim.x)
            o[j] = __float2half_rn(src[j]);
    }
};

// kv_clamp limits a rounded level to [lo, hi], NaN to 0 (as the Go
// quantizers' clamp does).
__device__ __forceinline__ int kv_clamp(float r, float lo, float hi)
{
    if (r != r)
        return 0;
    return (int)fminf(fmaxf(r, lo), hi);
}

struct kv_q8_0 {
    static constexpr int QK = 32, BYTES = 34;
    static __device__ __forceinline__ float get(const uint8_t *row, int d)
    {
        const uint8_t *b = row + (d >> 5) * BYTES;
        return kv_half(b) * (float)(int8_t)b[2 + (d & 31)];
    }
    // store_row quantizes as quantize_row_q8_0_ref: amax = max |x|, d =
    // amax/127 (stored as binary16), q = roundf(x·(1/d)) with the FP32 d.
    // One warp per block of 32; blockDim.x is a multiple of 32.
    static __device__ __forceinline__ void store_row(uint8_t *dst, const float *src, int n)
    {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
        for (int b = warp; b < n / 32; b += nw) {
            const float x = src[b * 32 + lane];
            float amax = fabsf(x);
#pragma unroll
            for (int off = 16; off > 0; off /= 2)
                amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
            const float d = amax / 127.0f;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            uint8_t *blk = dst + (size_t)b * BYTES;
            blk[2 + lane] = (uint8_t)(int8_t)kv_clamp(roundf(__fmul_rn(x, id)), -128.0f, 127.0f);
            if (lane == 0)
                *reinterpret_cast<unsigned short *>(blk) = __half_as_ushort(__float2half_rn(d));
        }
    }
};

struct kv_q4_0 {
    static constexpr int QK = 32, BYTES = 18;
    static __device__ __forceinline__ float get(const uint8_t *row, int d)
    {
        const uint8_t *b = row + (d >> 5) * BYTES;
        const int e = d & 31;
        const int v = b[2 + (e & 15)];
        return kv_half(b) * (float)((e < 16 ? v & 15 : v >> 4) - 8);
    }
    // store_row quantizes as quantize_row_q4_0_ref: m = the element of
    // largest magnitude (the first on ties; 0 when all are 0), d = m/−8
    // (stored as binary16), q = min(15, trunc(x·(1/d) + 8.5)). One warp
    // per block of 32.
    static __device__ __forceinline__ void store_row(uint8_t *dst, const float *src, int n)
    {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
        for (int b = warp; b < n / 32; b += nw) {
            const float x = src[b * 32 + lane];
            // NaN never wins (|NaN| > amax is false in the reference).
            float a = x != x ? -1.0f : fabsf(x);
            int at = lane;
#pragma unroll
            for (int off = 16; off > 0; off /= 2) {
                const float oa = __shfl_xor_sync(0xffffffffu, a, off);
                const int oat = __shfl_xor_sync(0xffffffffu, at, off);
                if (oa > a || (oa == a && oat < at)) {
                    a = oa;
                    at = oat;
                }
            }
            const float xm = __shfl_sync(0xffffffffu, x, at);
            const float m = a > 0.0f ? xm : 0.0f;
            const float d = m / -8.0f;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            const int lv = kv_clamp(truncf(__fadd_rn(__fmul_rn(x, id), 8.5f)), 0.0f, 15.0f);
            const int hi = __shfl_down_sync(0xffffffffu, lv, 16);
            uint8_t *blk = dst + (size_t)b * BYTES;
            if (lane < 16)
                blk[2 + lane] = (uint8_t)(lv | (hi << 4));
            if (lane == 0)
                *reinterpret_cast<unsigned short *>(blk) = __half_as_ushort(__float2half_rn(d));
        }
    }
};

// kv_blocks<T> reads the 32-element blocks of a quantized row type by
// 16-bit words, for the decode kernel: a block is HW halfwords, the first
// its binary16 scale d. Four consecutive elements e0..e0+3 of a block (e0
// a multiple of 4) lie in the two halfwords at ofs(e0); prep turns those
// two (as one little-endian word) into four bytes b_k whose levels
// kv_level(b, k, T::BIAS) are the elements e0+k divided by d. QUANT is
// false for the types without blocks, whose members are never used.
template <class T> struct kv_blocks {
    static constexpr bool QUANT = false;
    static constexpr int HW = 1;
    static __device__ __forceinline__ int ofs(int) { return 0; }
    static __device__ __forceinline__ unsigned prep(unsigned, int) { return 0; }
    static __device__ __forceinline__ float bias() { return 0.0f; }
};

// q8_0: bytes are two's-complement levels; flipping the sign bit makes
// them q+128.
template <> struct kv_blocks<kv_q8_0> {
    static constexpr bool QUANT = true;
    static constexpr int HW = 17;
    static __device__ __forceinline__ int ofs(int e0) { return 1 + e0 / 2; }
    static __device__ __forceinline__ unsigned prep(unsigned w, int) { return w ^ 0x80808080u; }
    static __device__ __forceinline__ float bias() { return 8388608.0f + 128.0f; }
};

// q4_0: element e < 16 is the low nibble of byte e, e ≥ 16 the high
// nibble of byte e−16; the nibble n is the level n−8.
template <> struct kv_blocks<kv_q4_0> {
    static constexpr bool QUANT = true;
    static constexpr int HW = 9;
    static __device__ __forceinline__ int ofs(int e0) { return 1 + (e0 & 15) / 2; }
    static __device__ __forceinline__ unsigned prep(unsigned w, int e0)
    {
        return (e0 & 16 ? w >> 4 : w) & 0x0F0F0F0Fu;
    }
    static __device__ __forceinline__ float bias() { return 8388608.0f + 8.0f; }
};

// kv_level returns byte k of b (0..255) minus bias − 2^23 as a float,
// exactly, without an integer conversion: the byte becomes the low
// mantissa bits of 2^23 (0x4B000000), and the subtraction is exact.
__device__ __forceinline__ float kv_level(unsigned b, int k, float bias)
{
    return __int_as_float((int)__byte_perm(b, 0x4B000000u, 0x7540 + k)) - bias;
}

// kv_word returns the little-endian word of the halfwords lo, hi.
__device__ __forceinline__ unsigned kv_word(unsigned short lo, unsigned short hi)
{
    return (unsigned)lo | (unsigned)hi << 16;
}
