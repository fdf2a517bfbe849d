// Matrix-vector products for decode: FP16 weights, FP32 activations, FP32
// arithmetic, for up to 16 activation rows at once (batched decode), so
// that every weight byte is read from memory once per step whatever the
// batch. Compiled for compute capability 5.2 (no FP16 arithmetic: halves are
// converted to float before use).
//
// Layout convention (row-major (rows, cols), k innermost):
//
//   W  (m, k)  FP16   weight, m rows of k (ggml ne=[k, m])
//   X  (n, k)  FP32   activation rows, n ≤ N
//   Y  (n, m)  FP32   Y[i, r] = Σ_l X[i, l]·W[r, l] (+ bias[r])
//
// One warp computes one row of W against all n rows of X: each lane loads
// 16 bytes of W (8 halves) per step, two steps in flight, and the matching
// 2×16 bytes of each X row (X is small and stays in L1/L2). Lane sums are
// reduced with shuffles. Blocks are 256 threads (8 rows of W). When k is
// not a multiple of 8 a scalar loop is used instead.
//
// The accumulation order of a row does not depend on N or n, so a batch of
// rows gives bit-identical results to the same rows one at a time.
// Kernel parameters are listed in ptx/kernels.go.

#include <cuda_fp16.h>
#include "reduce.cuh"

// fma8 accumulates the 8 weights in wv times X[i, 8q..8q+7] into acc[i].
template <int N>
__device__ __forceinline__ void fma8(float (&acc)[N], uint4 wv, const float *__restrict__ x, int n, int k, int q)
{
    const __half2 *h = reinterpret_cast<const __half2 *>(&wv);
    const float2 w0 = __half22float2(h[0]), w1 = __half22float2(h[1]);
    const float2 w2 = __half22float2(h[2]), w3 = __half22float2(h[3]);
#pragma unroll
    for (int i = 0; i < N; i++) {
        if (i < n) {
            const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)i * k) + 2 * q;
            const float4 a = __ldg(xp), b = __ldg(xp + 1);
            float s = acc[i];
            s = fmaf(w0.x, a.x, s);
            s = fmaf(w0.y, a.y, s);
            s = fmaf(w1.x, a.z, s);
            s = fmaf(w1.y, a.w, s);
            s = fmaf(w2.x, b.x, s);
            s = fmaf(w2.y, b.y, s);
            s = fmaf(w3.x, b.z, s);
            s = fmaf(w3.y, b.w, s);
            acc[i] = s;
        }
    }
}

// fma1 accumulates one weight times X[i, q] into acc[i].
template <int N>
__device__ __forceinline__ void fma1(float (&acc)[N], float wv, const float *__restrict__ x, int n, int k, int q)
{
#pragma unroll
    for (int i = 0; i < N; i++)
        if (i < n)
            acc[i] = fmaf(wv, __ldg(x + (size_t)i * k + q), acc[i]);
}

// dot_rows adds this lane's share of W[r, :]·X[i, :] to acc[i] for the
// weight row wr, and of a second row wr2 into acc2 when TWO.
template <int N, bool TWO>
__device__ __forceinline__ void dot_rows(float (&acc)[N], float (&acc2)[N], const __half *__restrict__ wr,
                                         const __half *__restrict__ wr2, const float *__restrict__ x,
                                         int n, int k, int lane)
{
    if ((k & 7) == 0) {
        const uint4 *w8 = reinterpret_cast<const uint4 *>(wr);
        const uint4 *v8 = reinterpret_cast<const uint4 *>(wr2);
        const int k8 = k >> 3;
        int q = lane;
        for (; q + 32 < k8; q += 64) {
            const uint4 a = __ldg(w8 + q), b = __ldg(w8 + q + 32);
            uint4 c, d;
            if (TWO) {
                c = __ldg(v8 + q);
                d = __ldg(v8 + q + 32);
            }
            fma8<N>(acc, a, x, n, k, q);
            fma8<N>(acc, b, x, n, k, q + 32);
            if (TWO) {
                fma8<N>(acc2, c, x, n, k, q);
                fma8<N>(acc2, d, x, n, k, q + 32);
            }
        }
        if (q < k8) {
            fma8<N>(acc, __ldg(w8 + q), x, n, k, q);
            if (TWO)
                fma8<N>(acc2, __ldg(v8 + q), x, n, k, q);
        }
    } else {
        for (int q = lane; q < k; q += 32) {
            fma1<N>(acc, __half2float(wr[q]), x, n, k, q);
            if (TWO)
                fma1<N>(acc2, __half2float(wr2[q]), x, n, k, q);
        }
    }
}

// Up to three products that share X, in one launch (the Q, K and V
// projections; or a plain product with m2 = m3 = 0): warp rows [0, m1) of
// the concatenated output come from W1 into Y1 (n, m1), then m2 rows from
// W2 into Y2 (n, m2), then m3 from W3 into Y3 (n, m3). A bias pointer of 0
// means no bias. Grid (ceil((m1+m2+m3)/8)).
template <int N>
__device__ __forceinline__ void
matvec_body(float *__restrict__ y1, float *__restrict__ y2, float *__restrict__ y3, const float *__restrict__ x,
            const __half *__restrict__ w1, const __half *__restrict__ w2, const __half *__restrict__ w3,
            const float *__restrict__ b1, const float *__restrict__ b2, const float *__restrict__ b3,
            int n, int m1, int m2, int m3, int k)
{
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * 8 + threadIdx.x / 32;
    const __half *w;
    float *y;
    const float *b;
    int r, m;
    if (row < m1) {
        w = w1, y = y1, b = b1, r = row, m = m1;
    } else if (row < m1 + m2) {
        w = w2, y = y2, b = b2, r = row - m1, m = m2;
    } else if (row < m1 + m2 + m3) {
        w = w3, y = y3, b = b3, r = row - m1 - m2, m = m3;
    } else {
        return;
    }
    float acc[N], unused[N];
#pragma unroll
    for (int i = 0; i < N; i++)
        acc[i] = 0.0f;
    dot_rows<N, false>(acc, unused, w + (size_t)r * k, nullptr, x, n, k, lane);
    const float add = b ? b[r] : 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) {
        const float s = warp_sum(acc[i]);
        if (lane == i && i < n)
            y[(size_t)i * m + r] = s + add;
    }
}

// The gate and up projections with SwiGLU applied on the way out:
//
//   g = X·Wgᵀ, u = X·Wuᵀ;  hb[i, r] = g / (1 + exp(-g)) * u;  hb2[i, r] = u
//
// replacing two products and swiglu_f32 (the gate product is never
// stored). Wg and Wu are (m, k); hb and hb2 (n, m). Grid (ceil(m/8)).
template <int N>
__device__ __forceinline__ void
gateup_body(float *__restrict__ hb, float *__restrict__ hb2, const float *__restrict__ x,
            const __half *__restrict__ wg, const __half *__restrict__ wu, int n, int m, int k)
{
    const int lane = threadIdx.x % 32;
    const int r = blockIdx.x * 8 + threadIdx.x / 32;
    if (r >= m)
        return;
    float g[N], u[N];
#pragma unroll
    for (int i = 0; i < N; i++)
        g[i] = u[i] = 0.0f;
    dot_rows<N, true>(g, u, wg + (size_t)r * k, wu + (size_t)r * k, x, n, k, lane);
#pragma unroll
    for (int i = 0; i < N; i++) {
        const float gs = warp_sum(g[i]);
        const float us = warp_sum(u[i]);
        if (lane == i && i < n) {
            hb[(size_t)i * m + r] = gs / (1.0f + expf(-gs)) * us;
            hb2[(size_t)i * m + r] = us;
        }
    }
}

#define MATVEC(N)                                                                                    \
    extern "C" __global__ void __launch_bounds__(256)                                                \
    matvec_f16_n##N(float *y1, float *y2, float *y3, const float *x, const __half *w1,               \
                    const __half *w2, const __half *w3, const float *b1, const float *b2,            \
                    const float *b3, int n, int m1, int m2, int m3, int k)                           \
    {                                                                                                \
        matvec_body<N>(y1, y2, y3, x, w1, w2, w3, b1, b2, b3, n, m1, m2, m3, k);                     \
    }                                                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                                \
    gateup_f16_n##N(float *hb, float *hb2, const float *x, const __half *wg, const __half *wu,       \
                    int n, int m, int k)                                                             \
    {                                                                                                \
        gateup_body<N>(hb, hb2, x, wg, wu, n, m, k);                                                 \
    }

// n is rounded up to the next instantiation; rows past n are skipped.
MATVEC(1)
MATVEC(2)
MATVEC(4)
MATVEC(8)
MATVEC(16)
