// Elementwise kernels of the forward pass: embedding gather, SwiGLU,
// residual add, bias add and row gather. FP32 activations; the embedding
// table is FP16 storage converted on load. Compiled for compute capability
// 5.2 (no FP16 arithmetic).
//
// Layout convention (row-major (rows, cols)):
//
//   activations  (n, cols)   FP32, row i at i*cols
//   table        (vocab, dim) FP16, ggml ne=[dim, vocab]
//
// Every kernel is a grid-stride loop, so any grid is correct; the launchers
// in ptx/ops.go size grids to cover the data once. Kernel parameters are
// listed in ptx/kernels.go (kernelTable).

#include <cuda_fp16.h>

// dst[i, :] = float(table[tokens[i], :]) for i = blockIdx.y < n.
// Grid (x: column blocks, y: n).
extern "C" __global__ void __launch_bounds__(256)
embed_f16(float *__restrict__ dst, const __half *__restrict__ table,
          const int *__restrict__ tokens, int n, int dim)
{
    const int i = blockIdx.y;
    if (i >= n)
        return;
    const __half *row = table + (size_t)tokens[i] * dim;
    float *out = dst + (size_t)i * dim;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < dim; j += gridDim.x * blockDim.x)
        out[j] = __half2float(row[j]);
}

// dst[j] = silu(gate[j]) * up[j] = gate[j] / (1 + exp(-gate[j])) * up[j]
// for j < count. dst may alias gate or up.
extern "C" __global__ void __launch_bounds__(256)
swiglu_f32(float *dst, const float *gate, const float *up, int count)
{
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < count; j += gridDim.x * blockDim.x) {
        const float g = gate[j];
        dst[j] = g / (1.0f + expf(-g)) * up[j];
    }
}

// dst[j] += x[j] for j < count.
extern "C" __global__ void __launch_bounds__(256)
add_f32(float *dst, const float *x, int count)
{
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < count; j += gridDim.x * blockDim.x)
        dst[j] += x[j];
}

// y[i, j] += b[j] for i < n, j < m: y is (n, m), b is (1, m).
extern "C" __global__ void __launch_bounds__(256)
add_bias_f32(float *y, const float *__restrict__ b, int n, int m)
{
    const long long total = (long long)n * m;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x)
        y[t] += b[t % m];
}

// dst[j, :] = src[rows[j], :] for j = blockIdx.y < nrows; rows are device
// indices. dst and src are (·, cols). Grid (x: column blocks, y: nrows).
extern "C" __global__ void __launch_bounds__(256)
gather_rows_f32(float *__restrict__ dst, const float *__restrict__ src,
                const int *__restrict__ rows, int nrows, int cols)
{
    const int j = blockIdx.y;
    if (j >= nrows)
        return;
    const float *in = src + (size_t)rows[j] * cols;
    float *out = dst + (size_t)j * cols;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
        out[c] = in[c];
}
