// Quantized weights kept quantized on the GPU: matrix-vector products for
// decode, embedding rows, and dequantization to FP16 for the prompt GEMMs.
// FP32 arithmetic; compiled for compute capability 5.2 (no dp4a, no FP16
// arithmetic).
//
// Storage ("planes", written by the loader from the GGUF blocks, the same
// bytes regrouped so that every load is 16-byte aligned): a matrix of m
// rows of k elements (k a multiple of 32, ggml ne=[k, m]) is
//
//   qs  quants, row r at r*QB*k/32 bytes (QB bytes per block of 32):
//       Q8_0: 32 int8 per block, element j at byte j (QB = 32)
//       Q4_0: 16 bytes per block, element j in the low nibble of byte j
//             and element j+16 in its high nibble, as in GGUF (QB = 16)
//   d   the blocks' FP16 scales, row r at r*(k/32): value = d * q
//       (Q4_0: d * (q - 8))
//
// A block's contribution to a dot product is d * Σ q_j x_j (Q4_0:
// d * (Σ q_j x_j - 8 Σ x_j)), summed in element order; each lane owns
// blocks lane, lane+32, ... of a row, and the 32 lane sums are combined by
// the xor butterfly of warp_sum, so a row's result does not depend on how
// many activation rows are computed with it: batched rows are
// bit-identical to single ones.
//
// Kernel parameters are listed in ptx/kernels.go.

#include <cuda_fp16.h>
#include "reduce.cuh"

enum { Q8_0 = 0, Q4_0 = 1 };

template <int T> struct qtraits;
template <> struct qtraits<Q8_0> {
    static constexpr int block_bytes = 32;
};
template <> struct qtraits<Q4_0> {
    static constexpr int block_bytes = 16;
};

// block_dot returns Σ_j w_j x_j over block b of row qs (Q8_0: w = q; Q4_0:
// w = q - 8, computed as Σ q x - 8 Σ x), x the block's 32 activations.
template <int T>
__device__ __forceinline__ float block_dot(const unsigned char *__restrict__ qs, int b,
                                           const float *__restrict__ x);

template <>
__device__ __forceinline__ float block_dot<Q8_0>(const unsigned char *__restrict__ qs, int b,
                                                 const float *__restrict__ x)
{
    const uint4 *q4 = reinterpret_cast<const uint4 *>(qs) + 2 * b;
    const uint4 qa = __ldg(q4), qb = __ldg(q4 + 1);
    const unsigned int w[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
    const float4 *x4 = reinterpret_cast<const float4 *>(x);
    float s = 0.0f;
#pragma unroll
    for (int v = 0; v < 8; v++) {
        const float4 xv = __ldg(x4 + v);
        const int u = (int)w[v];
        // Sign-extend each byte: the shifts keep it to integer operations.
        s = fmaf((float)((u << 24) >> 24), xv.x, s);
        s = fmaf((float)((u << 16) >> 24), xv.y, s);
        s = fmaf((float)((u << 8) >> 24), xv.z, s);
        s = fmaf((float)(u >> 24), xv.w, s);
    }
    return s;
}

template <>
__device__ __forceinline__ float block_dot<Q4_0>(const unsigned char *__restrict__ qs, int b,
                                                 const float *__restrict__ x)
{
    const uint4 q = __ldg(reinterpret_cast<const uint4 *>(qs) + b);
    const unsigned int w[4] = {q.x, q.y, q.z, q.w};
    const float4 *x4 = reinterpret_cast<const float4 *>(x);
    float s = 0.0f, sx = 0.0f;
#pragma unroll
    for (int v = 0; v < 4; v++) {
        const float4 lo = __ldg(x4 + v), hi = __ldg(x4 + 4 + v);
        const unsigned int u = w[v];
        s = fmaf((float)(u & 15), lo.x, s);
        s = fmaf((float)((u >> 8) & 15), lo.y, s);
        s = fmaf((float)((u >> 16) & 15), lo.z, s);
        s = fmaf((float)((u >> 24) & 15), lo.w, s);
        s = fmaf((float)((u >> 4) & 15), hi.x, s);
        s = fmaf((float)((u >> 12) & 15), hi.y, s);
        s = fmaf((float)((u >> 20) & 15), hi.z, s);
        s = fmaf((float)(u >> 28), hi.w, s);
        sx += (lo.x + lo.y) + (lo.z + lo.w) + (hi.x + hi.y) + (hi.z + hi.w);
    }
    return fmaf(-8.0f, sx, s);
}

// Y[i, r] = Σ_l X[i, l] * W[r, l] (+ bias[r]) for i < n ≤ N, r < m: W (m, k)
// in planes qs, d; X (n, k) FP32; Y (n, m) FP32; bias 0 or (1, m). A warp
// computes R rows, so that each activation value loaded serves R weight
// rows; 8 warps per block of 256 threads; grid ceil(m/(8R)). A row past m
// is computed on row m-1's data and not stored.
template <int T, int N, int R>
__device__ __forceinline__ void matvec_q(float *__restrict__ y, const float *__restrict__ x,
                                         const unsigned char *__restrict__ qs, const __half *__restrict__ d,
                                         const float *__restrict__ bias, int n, int m, int k)
{
    const int lane = threadIdx.x % 32;
    const int r0 = (blockIdx.x * 8 + threadIdx.x / 32) * R;
    if (r0 >= m)
        return;
    const int kb = k / 32;
    const unsigned char *row[R];
    const __half *dr[R];
#pragma unroll
    for (int s = 0; s < R; s++) {
        const int r = min(r0 + s, m - 1);
        row[s] = qs + (size_t)r * kb * qtraits<T>::block_bytes;
        dr[s] = d + (size_t)r * kb;
    }
    float acc[R][N];
#pragma unroll
    for (int s = 0; s < R; s++)
#pragma unroll
        for (int i = 0; i < N; i++)
            acc[s][i] = 0.0f;
    for (int b = lane; b < kb; b += 32) {
        float db[R];
#pragma unroll
        for (int s = 0; s < R; s++)
            db[s] = __half2float(dr[s][b]);
#pragma unroll
        for (int i = 0; i < N; i++) {
            if (i < n) {
                const float *xb = x + (size_t)i * k + 32 * b;
#pragma unroll
                for (int s = 0; s < R; s++)
                    acc[s][i] = fmaf(db[s], block_dot<T>(row[s], b, xb), acc[s][i]);
            }
        }
    }
#pragma unroll
    for (int s = 0; s < R; s++) {
        const int r = r0 + s;
        const float add = (bias && r < m) ? bias[r] : 0.0f;
#pragma unroll
        for (int i = 0; i < N; i++) {
            const float v = warp_sum(acc[s][i]);
            if (r < m && lane == i && i < n)
                y[(size_t)i * m + r] = v + add;
        }
    }
}

// The instantiations: R rows per warp, fewer for the wide batches (their
// accumulators take R·N registers).
#define MATVEC_Q(name, T, N, R)                                                                                   \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        name(float *__restrict__ y, const float *__restrict__ x, const unsigned char *__restrict__ qs,             \
             const __half *__restrict__ d, const float *__restrict__ bias, int n, int m, int k)                    \
    {                                                                                                              \
        matvec_q<T, N, R>(y, x, qs, d, bias, n, m, k);                                                             \
    }

MATVEC_Q(matvec_q8_0_n1, Q8_0, 1, 4)
MATVEC_Q(matvec_q8_0_n4, Q8_0, 4, 4)
MATVEC_Q(matvec_q8_0_n16, Q8_0, 16, 2)
MATVEC_Q(matvec_q4_0_n1, Q4_0, 1, 4)
MATVEC_Q(matvec_q4_0_n4, Q4_0, 4, 4)
MATVEC_Q(matvec_q4_0_n16, Q4_0, 16, 2)

// dequant writes element j of block b of row r (one thread per element).
template <int T>
__device__ __forceinline__ float dequant(const unsigned char *__restrict__ qs, const __half *__restrict__ d,
                                         size_t r, int k, int j);

template <>
__device__ __forceinline__ float dequant<Q8_0>(const unsigned char *__restrict__ qs, const __half *__restrict__ d,
                                               size_t r, int k, int j)
{
    const signed char q = (signed char)qs[r * k + j];
    return __half2float(d[r * (k / 32) + j / 32]) * (float)q;
}

template <>
__device__ __forceinline__ float dequant<Q4_0>(const unsigned char *__restrict__ qs, const __half *__restrict__ d,
                                               size_t r, int k, int j)
{
    const int b = j / 32, e = j % 32;
    const unsigned char byte = qs[r * (k / 2) + (size_t)b * 16 + (e & 15)];
    const int q = e < 16 ? (byte & 15) : (byte >> 4);
    return __half2float(d[r * (k / 32) + b]) * (float)(q - 8);
}

// dst (rows, k) FP16 = W (rows, k), for the prompt GEMMs. Grid-stride over
// rows*k elements.
#define DEQUANT_F16(name, T)                                                                                     \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        name(__half *__restrict__ dst, const unsigned char *__restrict__ qs, const __half *__restrict__ d,          \
             int rows, int k)                                                                                      \
    {                                                                                                              \
        const long long total = (long long)rows * k;                                                               \
        for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;                            \
             t += (long long)gridDim.x * blockDim.x)                                                               \
            dst[t] = __float2half_rn(dequant<T>(qs, d, (size_t)(t / k), k, (int)(t % k)));                         \
    }

DEQUANT_F16(dequant_q8_0_f16, Q8_0)
DEQUANT_F16(dequant_q4_0_f16, Q4_0)

// dst[i, :] = W[tokens[i], :] as FP32, for i = blockIdx.y < n: the
// embedding lookup from a quantized table. Grid (x: column blocks, y: n).
#define EMBED_Q(name, T)                                                                                         \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        name(float *__restrict__ dst, const unsigned char *__restrict__ qs, const __half *__restrict__ d,           \
             const int *__restrict__ tokens, int n, int k)                                                          \
    {                                                                                                              \
        const int i = blockIdx.y;                                                                                  \
        if (i >= n)                                                                                                \
            return;                                                                                                \
        const size_t r = (size_t)tokens[i];                                                                        \
        float *out = dst + (size_t)i * k;                                                                          \
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < k; j += gridDim.x * blockDim.x)                     \
            out[j] = dequant<T>(qs, d, r, k, j);                                                                   \
    }

EMBED_Q(embed_q8_0, Q8_0)
EMBED_Q(embed_q4_0, Q4_0)
