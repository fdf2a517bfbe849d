// Matrix products with FP16 weights and FP32 activations (FP16 storage,
// FP32 arithmetic). Compiled for compute capability 5.2: no FP16 arithmetic,
// no tensor cores; every half is converted to float before it is used.
//
// Layout convention (row-major (rows, cols), k innermost everywhere):
//
//   W  (m, k)  FP16   weight matrix, m rows of k (ggml ne=[k, m])
//   X  (n, k)  FP32   activations, n rows of k
//   Y  (n, m)  FP32   Y[i, j] = sum_l X[i, l] * W[j, l]   (Y = X · Wᵀ)
//
// Kernel parameters are listed in ptx/kernels.go (kernelTable); a test checks
// that table against the PTX built from this file.

#include <cuda_fp16.h>

// Tiled GEMM: one 256-thread block computes a GEMM_TN × GEMM_TM tile of Y,
// staging GEMM_TK-wide slices of X and W through shared memory. Each thread
// owns a 4 × 4 micro-tile. Out-of-range rows and columns load as zero and are
// not stored, so any n, m, k is valid.
#define GEMM_TN 64  // rows of X and Y per block
#define GEMM_TM 64  // rows of W (columns of Y) per block
#define GEMM_TK 32  // k per shared-memory stage
#define GEMM_PAD 4  // keeps float4 rows 16-byte aligned

extern "C" __global__ void __launch_bounds__(256)
gemm_f16w_f32(float *__restrict__ y, const float *__restrict__ x,
              const __half *__restrict__ w, int n, int m, int k)
{
    // Stored k-major so that the inner loop reads contiguous rows.
    __shared__ __align__(16) float xs[GEMM_TK][GEMM_TN + GEMM_PAD];
    __shared__ __align__(16) float ws[GEMM_TK][GEMM_TM + GEMM_PAD];

    const int tid = threadIdx.x;
    const int n0 = blockIdx.y * GEMM_TN;
    const int m0 = blockIdx.x * GEMM_TM;
    const int tx = tid % 16; // column group: Y columns m0 + 4*tx .. +3
    const int ty = tid / 16; // row group: Y rows n0 + 4*ty .. +3
    const int lk = tid % 32; // k offset this thread loads
    const int lr = tid / 32; // first row this thread loads (then +8, +16, ...)

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += GEMM_TK) {
        const int kk = k0 + lk;
        const bool kin = kk < k;
        // A warp loads 32 consecutive k of one row: coalesced.
#pragma unroll
        for (int r = lr; r < GEMM_TN; r += 8) {
            const int row = n0 + r;
            xs[lk][r] = (kin && row < n) ? x[(size_t)row * k + kk] : 0.0f;
        }
#pragma unroll
        for (int r = lr; r < GEMM_TM; r += 8) {
            const int row = m0 + r;
            ws[lk][r] = (kin && row < m) ? __half2float(w[(size_t)row * k + kk]) : 0.0f;
        }
        __syncthreads();

#pragma unroll 8
        for (int l = 0; l < GEMM_TK; l++) {
            const float4 a = *reinterpret_cast<const float4 *>(&xs[l][4 * ty]);
            const float4 b = *reinterpret_cast<const float4 *>(&ws[l][4 * tx]);
            const float av[4] = {a.x, a.y, a.z, a.w};
            const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int row = n0 + 4 * ty + i;
        if (row >= n)
            break;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int col = m0 + 4 * tx + j;
            if (col < m)
                y[(size_t)row * m + col] = acc[i][j];
        }
    }
}

// Matrix-vector form for small n (decode): one warp per row of W, blockIdx.y
// selects the row of X. W is read once per row of X, so this is the shape for
// n = 1..3, where the tiled kernel would leave most of each tile empty.
// Blocks are 256 threads (8 warps, 8 rows of W).
extern "C" __global__ void __launch_bounds__(256)
gemv_f16w_f32(float *__restrict__ y, const float *__restrict__ x,
              const __half *__restrict__ w, int n, int m, int k)
{
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * 8 + threadIdx.x / 32;
    const int i = blockIdx.y;
    if (row >= m || i >= n)
        return;
    const __half *wr = w + (size_t)row * k;
    const float *xr = x + (size_t)i * k;
    float sum = 0.0f;

    // Vector path: 4 halves (8 bytes) of W and 4 floats (16 bytes) of X per
    // lane per step, when the rows are aligned for it.
    const bool vec = (k % 4 == 0) && ((size_t)wr % 8 == 0) && ((size_t)xr % 16 == 0);
    int l = 0;
    if (vec) {
        const uint2 *w4 = reinterpret_cast<const uint2 *>(wr);
        const float4 *x4 = reinterpret_cast<const float4 *>(xr);
        const int k4 = k / 4;
        for (int q = lane; q < k4; q += 32) {
            const uint2 wv = w4[q];
            const float4 xv = x4[q];
            const __half2 w01 = *reinterpret_cast<const __half2 *>(&wv.x);
            const __half2 w23 = *reinterpret_cast<const __half2 *>(&wv.y);
            const float2 f01 = __half22float2(w01);
            const float2 f23 = __half22float2(w23);
            sum = fmaf(f01.x, xv.x, sum);
            sum = fmaf(f01.y, xv.y, sum);
            sum = fmaf(f23.x, xv.z, sum);
            sum = fmaf(f23.y, xv.w, sum);
        }
        l = k; // done
    }
    for (int q = l + lane; q < k; q += 32)
        sum = fmaf(__half2float(wr[q]), xr[q], sum);

#pragma unroll
    for (int off = 16; off > 0; off /= 2)
        sum += __shfl_down_sync(0xffffffffu, sum, off);
    if (lane == 0)
        y[(size_t)i * m + row] = sum;
}

// dst[i] = (half)src[i], round to nearest even; |src| > 65504 becomes ±Inf.
// Feeds cuBLAS GemmEx, which has no FP16 × FP32 input combination.
extern "C" __global__ void
convert_f32_f16(__half *__restrict__ dst, const float *__restrict__ src, int count)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}
