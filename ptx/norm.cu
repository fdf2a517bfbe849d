// RMS normalization kernels: FP32 activations, FP32 weights (norm weights
// stay FP32 on the GPU), FP32 arithmetic. Compiled for compute capability
// 5.2.
//
// Layout convention (row-major (rows, cols)): x and dst are (n, cols), the
// weight w is (1, cols) (or (1, headDim) for the per-head variant).
//
//   rmsnorm(x)[j] = x[j] * (1 / sqrt(mean(x²) + eps)) * w[j]
//
// One block normalizes one row: a row is read once into registers'
// worth of partial sums and written once, so each kernel moves the least
// possible bytes. Kernel parameters are listed in ptx/kernels.go.

#include "reduce.cuh"

// dst[i] = rmsnorm(x[i]) * w for the row i = blockIdx.x. dst may alias x.
// Block: 256 threads, or up to 1024 when there are few rows.
extern "C" __global__ void __launch_bounds__(1024)
rmsnorm_f32(float *dst, const float *x, const float *__restrict__ w, int cols, float eps)
{
    __shared__ float scratch[32];
    const float *xr = x + (size_t)blockIdx.x * cols;
    float *dr = dst + (size_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = xr[j];
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, scratch);
    const float scale = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        dr[j] = xr[j] * scale * w[j];
}

// The fused residual add and norm of consecutive layers:
//
//   x[i] += d[i];  dst[i] = rmsnorm(x[i]) * w
//
// for the row i = blockIdx.x. It replaces add_f32 followed by rmsnorm_f32
// (one read of x less, one launch less). dst may alias d: every thread
// reads d[j] before it writes dst[j], for the same j. Block: 256 threads,
// or up to 1024 when there are few rows.
extern "C" __global__ void __launch_bounds__(1024)
add_rmsnorm_f32(float *x, const float *d, float *dst, const float *__restrict__ w, int cols, float eps)
{
    __shared__ float scratch[32];
    float *xr = x + (size_t)blockIdx.x * cols;
    const float *drow = d + (size_t)blockIdx.x * cols;
    float *out = dst + (size_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = xr[j] + drow[j];
        xr[j] = v;
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, scratch);
    const float scale = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        out[j] = xr[j] * scale * w[j];
}

// In place, each head (headDim consecutive values) of the first n rows of
// x (n, cols) is normalized with the shared weight w (1, headDim). One warp
// per head: grid (x: ceil(heads/8), y: n), block 256 (8 warps).
extern "C" __global__ void __launch_bounds__(256)
head_rmsnorm_f32(float *x, const float *__restrict__ w, int n, int cols, int headDim, float eps)
{
    const int lane = threadIdx.x % 32;
    const int head = blockIdx.x * 8 + threadIdx.x / 32;
    const int i = blockIdx.y;
    if (i >= n || (head + 1) * headDim > cols)
        return;
    float *h = x + (size_t)i * cols + (size_t)head * headDim;
    float ss = 0.0f;
    for (int j = lane; j < headDim; j += 32) {
        const float v = h[j];
        ss = fmaf(v, v, ss);
    }
    ss = warp_sum(ss);
    const float scale = 1.0f / sqrtf(ss / (float)headDim + eps);
    for (int j = lane; j < headDim; j += 32)
        h[j] = h[j] * scale * w[j];
}
