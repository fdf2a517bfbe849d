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
// This is the prompt-processing product (many rows of X). Decode-sized
// products (n ≤ 16) use the matvec kernels in matvec.cu, which read every
// weight once for all rows; ptx/gemm.go chooses between them.
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

// dst[i] = (half)src[i], round to nearest even; |src| > 65504 becomes ±Inf.
// Feeds cuBLAS GemmEx, which has no FP16 × FP32 input combination.
extern "C" __global__ void
convert_f32_f16(__half *__restrict__ dst, const float *__restrict__ src, int count)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}
