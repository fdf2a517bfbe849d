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
// One warp computes R rows of W against all n rows of X: each lane loads
// 16 bytes (8 halves) of each of its R rows per step, U steps in flight,
// and the matching 2×16 bytes of every X row once for
// all R rows (X is small and stays in L1/L2; loading it once per R rows
// keeps the cache traffic per weight byte bounded as N grows). Lane sums are
// reduced with shuffles. A block holds 8 rows of W (8/R warps). When k is
// not a multiple of 8 a scalar loop is used instead.
//
// The accumulation order of a row does not depend on N, R or n, so a batch
// of rows gives bit-identical results to the same rows one at a time.
// Kernel parameters are listed in ptx/kernels.go.

#include <cuda_fp16.h>
#include "reduce.cuh"

// dot8 accumulates the 8 weights in wv times xa, xb into s, in order.
__device__ __forceinline__ float dot8(float s, uint4 wv, float4 xa, float4 xb)
{
    const __half2 *h = reinterpret_cast<const __half2 *>(&wv);
    const float2 w0 = __half22float2(h[0]), w1 = __half22float2(h[1]);
    const float2 w2 = __half22float2(h[2]), w3 = __half22float2(h[3]);
    s = fmaf(w0.x, xa.x, s);
    s = fmaf(w0.y, xa.y, s);
    s = fmaf(w1.x, xa.z, s);
    s = fmaf(w1.y, xa.w, s);
    s = fmaf(w2.x, xb.x, s);
    s = fmaf(w2.y, xb.y, s);
    s = fmaf(w3.x, xb.z, s);
    s = fmaf(w3.y, xb.w, s);
    return s;
}

// dot_rows adds this lane's share of W_r·X[i, :] to acc[r][i] for the R
// weight rows wr[r] (k halves each), U steps (R·U loads) in flight.
template <int N, int R, int U>
__device__ __forceinline__ void dot_rows(float (&acc)[R][N], const __half *const (&wr)[R],
                                         const float *__restrict__ x, int n, int k, int lane)
{
    if ((k & 7) == 0) {
        const int k8 = k >> 3;
        int q = lane;
        for (; q + 32 * (U - 1) < k8; q += 32 * U) {
            uint4 a[R][U];
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < R; r++)
                    a[r][u] = __ldg(reinterpret_cast<const uint4 *>(wr[r]) + q + 32 * u);
#pragma unroll
            for (int u = 0; u < U; u++) {
#pragma unroll
                for (int i = 0; i < N; i++) {
                    if (i < n) {
                        const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)i * k) + 2 * (q + 32 * u);
                        const float4 xa = __ldg(xp), xb = __ldg(xp + 1);
#pragma unroll
                        for (int r = 0; r < R; r++)
                            acc[r][i] = dot8(acc[r][i], a[r][u], xa, xb);
                    }
                }
            }
        }
        for (; q < k8; q += 32) {
            uint4 a[R];
#pragma unroll
            for (int r = 0; r < R; r++)
                a[r] = __ldg(reinterpret_cast<const uint4 *>(wr[r]) + q);
#pragma unroll
            for (int i = 0; i < N; i++) {
                if (i < n) {
                    const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)i * k) + 2 * q;
                    const float4 xa = __ldg(xp), xb = __ldg(xp + 1);
#pragma unroll
                    for (int r = 0; r < R; r++)
                        acc[r][i] = dot8(acc[r][i], a[r], xa, xb);
                }
            }
        }
    } else {
        for (int q = lane; q < k; q += 32) {
#pragma unroll
            for (int i = 0; i < N; i++) {
                if (i < n) {
                    const float xv = __ldg(x + (size_t)i * k + q);
#pragma unroll
                    for (int r = 0; r < R; r++)
                        acc[r][i] = fmaf(__half2float(wr[r][q]), xv, acc[r][i]);
                }
            }
        }
    }
}

// Up to three products that share X, in one launch (the Q, K and V
// projections; or a plain product with m2 = m3 = 0): rows [0, m1) of the
// concatenated output come from W1 into Y1 (n, m1), then m2 rows from W2
// into Y2 (n, m2), then m3 from W3 into Y3 (n, m3). A bias pointer of 0
// means no bias. Grid (ceil((m1+m2+m3)/8)), block 256/R threads.
template <int N, int R, int U>
__device__ __forceinline__ void
matvec_body(float *__restrict__ y1, float *__restrict__ y2, float *__restrict__ y3, const float *__restrict__ x,
            const __half *__restrict__ w1, const __half *__restrict__ w2, const __half *__restrict__ w3,
            const float *__restrict__ b1, const float *__restrict__ b2, const float *__restrict__ b3,
            int n, int m1, int m2, int m3, int k)
{
    const int lane = threadIdx.x % 32;
    const int row0 = blockIdx.x * 8 + (threadIdx.x / 32) * R;
    const int rows = m1 + m2 + m3;
    if (row0 >= rows)
        return;
    const __half *wr[R];
    float *yr[R];
    const float *br[R];
    int rr[R], mr[R];
#pragma unroll
    for (int s = 0; s < R; s++) {
        int row = row0 + s;
        if (row >= rows)
            row = row0; // a valid row, computed twice and not stored
        if (row < m1) {
            wr[s] = w1, yr[s] = y1, br[s] = b1, rr[s] = row, mr[s] = m1;
        } else if (row < m1 + m2) {
            wr[s] = w2, yr[s] = y2, br[s] = b2, rr[s] = row - m1, mr[s] = m2;
        } else {
            wr[s] = w3, yr[s] = y3, br[s] = b3, rr[s] = row - m1 - m2, mr[s] = m3;
        }
        wr[s] += (size_t)rr[s] * k;
    }
    float acc[R][N];
#pragma unroll
    for (int s = 0; s < R; s++)
#pragma unroll
        for (int i = 0; i < N; i++)
            acc[s][i] = 0.0f;
    dot_rows<N, R, U>(acc, wr, x, n, k, lane);
#pragma unroll
    for (int s = 0; s < R; s++) {
        const bool valid = row0 + s < rows;
        const float add = (valid && br[s]) ? br[s][rr[s]] : 0.0f;
#pragma unroll
        for (int i = 0; i < N; i++) {
            const float v = warp_sum(acc[s][i]);
            if (valid && lane == i && i < n)
                yr[s][(size_t)i * mr[s] + rr[s]] = v + add;
        }
    }
}

// The gate and up projections with SwiGLU applied on the way out:
//
//   g = X·Wgᵀ, u = X·Wuᵀ;  hb[i, r] = g / (1 + exp(-g)) * u;  hb2[i, r] = u
//
// replacing two products and swiglu_f32 (the gate product is never
// stored). Wg and Wu are (m, k); hb and hb2 (n, m). A warp computes R/2
// rows of each, eight loads in flight per lane. Grid (ceil(m/8)): 8 rows
// of hb per block, block 512/R threads.
template <int N, int R>
__device__ __forceinline__ void
gateup_body(float *__restrict__ hb, float *__restrict__ hb2, const float *__restrict__ x,
            const __half *__restrict__ wg, const __half *__restrict__ wu, int n, int m, int k)
{
    constexpr int P = R / 2; // rows of hb per warp
    const int lane = threadIdx.x % 32;
    const int r0 = blockIdx.x * 8 + (threadIdx.x / 32) * P;
    if (r0 >= m)
        return;
    const __half *wr[R];
#pragma unroll
    for (int p = 0; p < P; p++) {
        const int r = min(r0 + p, m - 1);
        wr[2 * p] = wg + (size_t)r * k;
        wr[2 * p + 1] = wu + (size_t)r * k;
    }
    float acc[R][N];
#pragma unroll
    for (int s = 0; s < R; s++)
#pragma unroll
        for (int i = 0; i < N; i++)
            acc[s][i] = 0.0f;
    dot_rows<N, R, 8 / R>(acc, wr, x, n, k, lane);
#pragma unroll
    for (int p = 0; p < P; p++) {
        const int r = r0 + p;
#pragma unroll
        for (int i = 0; i < N; i++) {
            const float gs = warp_sum(acc[2 * p][i]);
            const float us = warp_sum(acc[2 * p + 1][i]);
            if (r < m && lane == i && i < n) {
                hb[(size_t)i * m + r] = gs / (1.0f + expf(-gs)) * us;
                hb2[(size_t)i * m + r] = us;
            }
        }
    }
}

// R, the weight rows per warp (RG for gateup, counting gate and up rows),
// grows with N so that each X value loaded serves more weight rows; U
// steps stay in flight per lane, so that R·U·16 bytes per lane cover the
// memory latency with the fewer warps that larger R leaves.
#define MATVEC(N, R, U, RG)                                                                          \
    extern "C" __global__ void __launch_bounds__(256 / R)                                            \
    matvec_f16_n##N(float *y1, float *y2, float *y3, const float *x, const __half *w1,               \
                    const __half *w2, const __half *w3, const float *b1, const float *b2,            \
                    const float *b3, int n, int m1, int m2, int m3, int k)                           \
    {                                                                                                \
        matvec_body<N, R, U>(y1, y2, y3, x, w1, w2, w3, b1, b2, b3, n, m1, m2, m3, k);               \
    }                                                                                                \
    extern "C" __global__ void __launch_bounds__(512 / RG)                                           \
    gateup_f16_n##N(float *hb, float *hb2, const float *x, const __half *wg, const __half *wu,       \
                    int n, int m, int k)                                                             \
    {                                                                                                \
        gateup_body<N, RG>(hb, hb2, x, wg, wu, n, m, k);                                             \
    }

// n is rounded up to the next instantiation; rows past n are skipped.
MATVEC(1, 1, 4, 2)
MATVEC(2, 1, 4, 2)
MATVEC(4, 1, 4, 2)
MATVEC(8, 4, 2, 4)
MATVEC(16, 4, 2, 4)
