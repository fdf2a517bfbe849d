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
// Two paths, chosen by the instantiation (n is rounded up to the next N):
//
// n = 1 (matvec_body, gateup_body): one warp computes R rows of W against
// all n rows of X: each lane loads 16 bytes (8 halves) of each of its R
// rows per step, U steps in flight, and the matching 2×16 bytes of every X
// row through the read-only cache. Lane sums are reduced with shuffles. A
// block holds 8 rows of W (8/R warps). When k is not a multiple of 8 a
// scalar loop is used instead.
//
// 2 ≤ N ≤ 16 (matvec_tiled, gateup_tiled, described before them): the warps
// of a block walk k together over tiles of X staged in shared memory, each
// weight converted to FP32 once and used for all n rows.
//
// In both, lane l owns chunks l, l+32, l+64, ... (8 consecutive elements
// each) of every weight row and accumulates them in that order, and the 32
// lane sums are combined by the same xor butterfly, so the accumulation
// order of a row does not depend on N, R or n: a batch of rows gives
// bit-identical results to the same rows one at a time.
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

// ---------------------------------------------------------------------------
// Batched path (N ≥ 2): X staged in shared memory, a block's warps walking k
// together.
//
// Per weight half the batched product does N FMAs, and each lane needs the
// matching X values of all N rows. Read through L1 by every warp (the n = 1
// path), X costs 2N/R bytes of cache traffic per weight byte, from an L1 that
// on Maxwell is small (24 KB: X of 16 rows at k = 4096 is 256 KB, so it
// thrashes and X comes from L2) and slow (the texture path); and at the
// register budget of 16 rows the compiler converted each weight once per
// (weight, X row) pair, one F2F per FMA, at a quarter of the FMA rate. Here
// the W warps of a block (W·R weight rows) stream k in tiles of 256·T
// elements; each tile of X (N rows) is loaded from global memory once per
// block into a double-buffered shared-memory tile while the block computes
// on the previous one (one __syncthreads per tile). X then costs 2n/(W·R)
// bytes of L2 traffic per weight byte (at most 1 with the shapes below) and
// 2N/R = N/2 bytes of shared-memory reads, the fastest on-chip path
// (Maxwell: 128 B/clock/SM next to 128 FMA/clock/SM, so from n = 16 the
// shared-memory reads and the FMAs each need ~2/3 of an M40 SM at 288 GB/s
// of weights). Each weight is converted to FP32 once (R·4 floats per
// half-chunk) and used for all N rows.
//
// Shared-memory layout, conflict-free: a lane's 8 values of a row are split
// into two float4 planes (elements 0-3 and 4-7 of each chunk), so the 32
// lanes read 32 consecutive float4 (512 bytes) per plane; the staging
// stores are permuted so that each quarter-warp also writes 128 contiguous
// bytes. The rows of X are read in groups of 4 so that 4 loads are in
// flight per branch on n.
//
// Bit-identity with the n = 1 path: lane l still owns chunks l, l+32, ...
// of every weight row, in that order, with the 8 elements of a chunk in
// order, and the lane sums are combined with the same xor butterfly
// (warp_scatter below gives each lane the same bits as warp_sum would).
//
// Occupancy on the M40 (64 K registers, 96 KB shared memory, 64 warps per
// SM): see the instantiations at the end of the file.

// Staging: the block's 32·W threads copy a tile of X (N rows of 256·T
// floats, N·T·64 float4) from global to shared memory, S float4 each:
// thread j takes float4 c of tile row i0 + s·SR for s < S, where i0 and c
// come from j (SR = 32·W/(64·T) rows per pass). The float4 are permuted
// within each group of 16 so that each quarter-warp stores 8 consecutive
// lanes of one plane (128 contiguous bytes, no bank conflict); the warp's
// global loads still cover 512 contiguous bytes.
template <int T, int W>
struct Stage {
    static constexpr int SR = 32 * W / (64 * T);
    int i0, chunk, plane, dst0;
    __device__ __forceinline__ Stage()
    {
        static_assert((32 * W) % (64 * T) == 0, "a staging pass must cover whole tile rows");
        i0 = threadIdx.x / (64 * T);
        const int c = threadIdx.x % (64 * T);
        const int cp = (c & ~15) | ((c & 7) << 1) | ((c >> 3) & 1);
        chunk = cp >> 1; // chunk within the tile, 0 .. 32·T-1
        plane = cp & 1;
        dst0 = ((i0 * T + (chunk >> 5)) * 2 + plane) * 32 + (chunk & 31);
    }
};

// stage_load fetches tile t of X (rows < n, chunks < k8) into xr.
template <int N, int T, int W, int S>
__device__ __forceinline__ void stage_load(float4 (&xr)[S], const Stage<T, W> &st, const float4 *__restrict__ x4,
                                           int n, int k8, int t)
{
    const int q = t * 32 * T + st.chunk;
#pragma unroll
    for (int s = 0; s < S; s++) {
        const int i = st.i0 + s * Stage<T, W>::SR;
        if (i < n && q < k8)
            xr[s] = __ldg(x4 + (size_t)i * (2 * k8) + 2 * q + st.plane);
    }
}

// stage_store writes what stage_load fetched into the buffer xb.
template <int N, int T, int W, int S>
__device__ __forceinline__ void stage_store(const float4 (&xr)[S], const Stage<T, W> &st, float4 *xb, int n, int k8,
                                            int t)
{
    const int q = t * 32 * T + st.chunk;
#pragma unroll
    for (int s = 0; s < S; s++) {
        const int i = st.i0 + s * Stage<T, W>::SR;
        if (i < n && q < k8)
            xb[st.dst0 + s * Stage<T, W>::SR * T * 64] = xr[s];
    }
}

// load_w fetches this lane's chunks of tile t of its R weight rows.
template <int R, int T>
__device__ __forceinline__ void load_w(uint4 (&w)[T][R], const __half *const (&wr)[R], int k8, int t, int lane)
{
#pragma unroll
    for (int s = 0; s < T; s++) {
        const int q = (t * T + s) * 32 + lane;
        if (q < k8) {
#pragma unroll
            for (int r = 0; r < R; r++)
                w[s][r] = __ldg(reinterpret_cast<const uint4 *>(wr[r]) + q);
        }
    }
}

// tile_dot adds tile t (weights w, X in buffer xb) to acc.
template <int N, int R, int T>
__device__ __forceinline__ void tile_dot(float (&acc)[R][N], const uint4 (&w)[T][R], const float4 *xb, int n,
                                         int k8, int t, int lane)
{
#pragma unroll
    for (int s = 0; s < T; s++) {
        if ((t * T + s) * 32 + lane >= k8)
            break;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float wf[R][4];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const __half2 *hp = reinterpret_cast<const __half2 *>(&w[s][r]);
                const float2 a = __half22float2(hp[2 * h]), b = __half22float2(hp[2 * h + 1]);
                wf[r][0] = a.x, wf[r][1] = a.y, wf[r][2] = b.x, wf[r][3] = b.y;
            }
            // Rows in groups of G: one branch and G shared-memory loads in
            // flight per group; rows of the last group past n are computed
            // (on stale shared memory) and never stored.
            constexpr int G = N < 4 ? N : 4;
#pragma unroll
            for (int i0 = 0; i0 < N; i0 += G) {
                if (i0 < n) {
                    float4 xv[G];
#pragma unroll
                    for (int g = 0; g < G; g++)
                        xv[g] = xb[(((i0 + g) * T + s) * 2 + h) * 32 + lane];
#pragma unroll
                    for (int g = 0; g < G; g++)
#pragma unroll
                        for (int r = 0; r < R; r++) {
                            float a = acc[r][i0 + g];
                            a = fmaf(wf[r][0], xv[g].x, a);
                            a = fmaf(wf[r][1], xv[g].y, a);
                            a = fmaf(wf[r][2], xv[g].z, a);
                            a = fmaf(wf[r][3], xv[g].w, a);
                            acc[r][i0 + g] = a;
                        }
                }
            }
        }
    }
}

// dot_rows_tiled is dot_rows for N ≥ 2 with X staged through xs (2 buffers
// of N·T·64 float4). Every thread of the block must call it: it
// synchronizes the block once per tile. U tiles of weights are in flight
// per lane (R·T·U·16 bytes) while one tile is computed.
template <int N, int R, int T, int U, int W>
__device__ __forceinline__ void dot_rows_tiled(float (&acc)[R][N], const __half *const (&wr)[R],
                                               const float *__restrict__ x, int n, int k, float4 *xs)
{
    const int lane = threadIdx.x % 32;
    if ((k & 7) != 0) { // no 16-byte path: the generic scalar loop, same order
        dot_rows<N, R, 1>(acc, wr, x, n, k, lane);
        return;
    }
    constexpr int TILE = N * T * 64;
    constexpr int S = TILE / (32 * W) > 0 ? TILE / (32 * W) : 1;
    const Stage<T, W> st;
    const int k8 = k >> 3;
    const int tiles = (k8 + 32 * T - 1) / (32 * T);
    const float4 *x4 = reinterpret_cast<const float4 *>(x);
    float4 xr[S];
    uint4 w[U][T][R];
#pragma unroll
    for (int u = 0; u < U; u++)
        if (u < tiles)
            load_w<R, T>(w[u], wr, k8, u, lane);
    stage_load<N, T, W, S>(xr, st, x4, n, k8, 0);
    stage_store<N, T, W, S>(xr, st, xs, n, k8, 0);
    __syncthreads();
    for (int t = 0; t < tiles; t += U) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int tt = t + u;
            if (tt >= tiles)
                break;
            if (tt + 1 < tiles)
                stage_load<N, T, W, S>(xr, st, x4, n, k8, tt + 1);
            uint4 cur[T][R];
#pragma unroll
            for (int s = 0; s < T; s++)
#pragma unroll
                for (int r = 0; r < R; r++)
                    cur[s][r] = w[u][s][r];
            if (tt + U < tiles)
                load_w<R, T>(w[u], wr, k8, tt + U, lane);
            tile_dot<N, R, T>(acc, cur, xs + (tt & 1) * TILE, n, k8, tt, lane);
            if (tt + 1 < tiles)
                stage_store<N, T, W, S>(xr, st, xs + ((tt + 1) & 1) * TILE, n, k8, tt + 1);
            __syncthreads();
        }
    }
}

// scatter_step is one xor step of warp_scatter: while more than one value
// is held, the lanes with the OFF bit set keep the upper half of them, the
// others the lower half, and each adds what its partner sends.
template <int N, int OFF>
__device__ __forceinline__ void scatter_step(float (&v)[N], int lane)
{
    constexpr int C = N * OFF / 16 > 1 ? N * OFF / 16 : 1; // values still held
    if (C > 1) {
        const bool hi = lane & OFF;
#pragma unroll
        for (int j = 0; j < C / 2; j++) {
            const float send = hi ? v[j] : v[j + C / 2];
            const float keep = hi ? v[j + C / 2] : v[j];
            v[j] = keep + __shfl_xor_sync(0xffffffffu, send, OFF);
        }
    } else {
        v[0] += __shfl_xor_sync(0xffffffffu, v[0], OFF);
    }
}

// warp_scatter sums v[i] over the warp for every i < N (N a power of two,
// at most 32) in N - 1 + log2(32/N) shuffles instead of warp_sum's 5·N.
// Lane l ends with the sum of v[l·N/32], bit-identical to warp_sum(v[l·N/32]):
// every addition has the same two operands as in warp_sum's butterfly.
template <int N>
__device__ __forceinline__ float warp_scatter(float (&v)[N], int lane)
{
    scatter_step<N, 16>(v, lane);
    scatter_step<N, 8>(v, lane);
    scatter_step<N, 4>(v, lane);
    scatter_step<N, 2>(v, lane);
    scatter_step<N, 1>(v, lane);
    return v[0];
}

// matvec_tiled is matvec_body for N ≥ 2: grid (ceil((m1+m2+m3)/(W·R))),
// block 32·W threads, W·R rows of W per block.
template <int N, int R, int T, int U, int W>
__device__ __forceinline__ void
matvec_tiled(float *__restrict__ y1, float *__restrict__ y2, float *__restrict__ y3, const float *__restrict__ x,
             const __half *__restrict__ w1, const __half *__restrict__ w2, const __half *__restrict__ w3,
             const float *__restrict__ b1, const float *__restrict__ b2, const float *__restrict__ b3, int n,
             int m1, int m2, int m3, int k, float4 *xs)
{
    const int lane = threadIdx.x % 32;
    const int row0 = blockIdx.x * (W * R) + (threadIdx.x / 32) * R;
    const int rows = m1 + m2 + m3;
    const __half *wr[R];
#pragma unroll
    for (int s = 0; s < R; s++) {
        // Rows past the end (last block only) compute a valid row and are
        // not stored: every warp takes part in the block's staging.
        const int row = min(row0 + s, rows - 1);
        wr[s] = row < m1 ? w1 + (size_t)row * k
                         : (row < m1 + m2 ? w2 + (size_t)(row - m1) * k : w3 + (size_t)(row - m1 - m2) * k);
    }
    float acc[R][N];
#pragma unroll
    for (int s = 0; s < R; s++)
#pragma unroll
        for (int i = 0; i < N; i++)
            acc[s][i] = 0.0f;
    dot_rows_tiled<N, R, T, U, W>(acc, wr, x, n, k, xs);
    const int i = lane * N / 32;
#pragma unroll
    for (int s = 0; s < R; s++) {
        const float v = warp_scatter<N>(acc[s], lane);
        const int row = row0 + s;
        if (row < rows && lane % (32 / N) == 0 && i < n) {
            float *y = y1;
            const float *b = b1;
            int r = row, m = m1;
            if (row >= m1 + m2) {
                y = y3, b = b3, r = row - m1 - m2, m = m3;
            } else if (row >= m1) {
                y = y2, b = b2, r = row - m1, m = m2;
            }
            y[(size_t)i * m + r] = v + (b ? b[r] : 0.0f);
        }
    }
}

// gateup_tiled is gateup_body for N ≥ 2: R/2 rows of hb per warp, grid
// (ceil(m/(W·R/2))), block 32·W threads.
template <int N, int R, int T, int U, int W>
__device__ __forceinline__ void gateup_tiled(float *__restrict__ hb, float *__restrict__ hb2,
                                             const float *__restrict__ x, const __half *__restrict__ wg,
                                             const __half *__restrict__ wu, int n, int m, int k, float4 *xs)
{
    constexpr int P = R / 2;
    const int lane = threadIdx.x % 32;
    const int r0 = blockIdx.x * (W * P) + (threadIdx.x / 32) * P;
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
    dot_rows_tiled<N, R, T, U, W>(acc, wr, x, n, k, xs);
    const int i = lane * N / 32;
#pragma unroll
    for (int p = 0; p < P; p++) {
        const int r = r0 + p;
        const float gs = warp_scatter<N>(acc[2 * p], lane);
        const float us = warp_scatter<N>(acc[2 * p + 1], lane);
        if (r < m && lane % (32 / N) == 0 && i < n) {
            hb[(size_t)i * m + r] = gs / (1.0f + expf(-gs)) * us;
            hb2[(size_t)i * m + r] = us;
        }
    }
}

#define MATVEC_PARAMS                                                                                  \
    float *y1, float *y2, float *y3, const float *x, const __half *w1, const __half *w2, const __half *w3, \
        const float *b1, const float *b2, const float *b3, int n, int m1, int m2, int m3, int k
#define GATEUP_PARAMS float *hb, float *hb2, const float *x, const __half *wg, const __half *wu, int n, int m, int k

// n = 1: the generic path, one weight row per warp (two for gateup, gate
// and up), four 16-byte loads in flight per lane, 8 weight rows per block.
extern "C" __global__ void __launch_bounds__(256) matvec_f16_n1(MATVEC_PARAMS)
{
    matvec_body<1, 1, 4>(y1, y2, y3, x, w1, w2, w3, b1, b2, b3, n, m1, m2, m3, k);
}
extern "C" __global__ void __launch_bounds__(256) gateup_f16_n1(GATEUP_PARAMS)
{
    gateup_body<1, 2>(hb, hb2, x, wg, wu, n, m, k);
}

// n ≤ N, 2 ≤ N ≤ 16: the tiled path with R weight rows per warp (gateup:
// R/2 gate and R/2 up rows), W warps per block, tiles of T chunks (256·T
// elements) and U tiles of weights in flight. Rows past n are skipped (in
// groups of 4). ptx/ops.go launches them with 32·W threads and W·R rows of
// W (gateup: W·R/2 rows of hb) per block.
//
// Registers (ptxas -v, sm_52) and what fits on one M40 SM (64 K registers
// allocated 8 per thread at a time, 96 KB of shared memory):
//
//   matvec  N=2: 128 regs, 8 KB smem, 4 warps → 4 blocks, 16 warps
//           N=4:  96 regs, 8 KB,      4 warps → 5 blocks, 20 warps
//           N=8: 128 regs, 16 KB,     4 warps → 4 blocks, 16 warps
//           N=16: 165 regs, 32 KB,    8 warps → 1 block,   8 warps
//   gateup  N=2: 122, 8 KB, 4 warps → 4 blocks; N=4: 96, 8 KB, 4 → 5;
//           N=8: 119, 16 KB, 8 warps → 2 blocks (16 warps); N=16: 159,
//           32 KB, 8 warps → 1 block (8 warps)
//
// One tile ahead is in flight per lane (R·T·16 = 64 bytes, N=2: 128) while
// one is computed: at 8 warps per SM that is 16 KB per SM, 384 KB on 24
// SMs, well above the ~150 KB that 288 GB/s at ~500 ns needs. Blocks of
// four warps (16 rows) up to N = 8 keep more blocks than SMs on large GPUs
// for small matrices (TinyLlama's 2048 rows: 128 blocks); eight warps halve
// the L2 traffic for X where it is largest (N = 16) or the grid is large
// anyway (gateup). More weight rows per warp (R = 8) would halve the
// shared-memory reads but needs ~220 registers at N = 8 and was slower on
// an H200 at TinyLlama's shapes (docs/PERFORMANCE.md).
#define MATVEC_TILED(N, R, T, U, W)                                                                    \
    extern "C" __global__ void __launch_bounds__(32 * W) matvec_f16_n##N(MATVEC_PARAMS)               \
    {                                                                                                  \
        __shared__ float4 xs[2 * N * T * 64];                                                          \
        matvec_tiled<N, R, T, U, W>(y1, y2, y3, x, w1, w2, w3, b1, b2, b3, n, m1, m2, m3, k, xs);      \
    }
#define GATEUP_TILED(N, R, T, U, W)                                                                    \
    extern "C" __global__ void __launch_bounds__(32 * W) gateup_f16_n##N(GATEUP_PARAMS)               \
    {                                                                                                  \
        __shared__ float4 xs[2 * N * T * 64];                                                          \
        gateup_tiled<N, R, T, U, W>(hb, hb2, x, wg, wu, n, m, k, xs);                                  \
    }

MATVEC_TILED(2, 4, 2, 1, 4)
MATVEC_TILED(4, 4, 1, 1, 4)
MATVEC_TILED(8, 4, 1, 1, 4)
MATVEC_TILED(16, 4, 1, 1, 8)
GATEUP_TILED(2, 4, 2, 1, 4)
GATEUP_TILED(4, 4, 1, 1, 4)
GATEUP_TILED(8, 4, 1, 1, 8)
GATEUP_TILED(16, 4, 1, 1, 8)
