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
