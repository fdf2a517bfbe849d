// Rotary position embedding and the FP16 KV-cache append. FP32
// activations, FP32 arithmetic; angles in FP64, as the CPU reference
// computes them. Compiled for compute capability 5.2.
//
// Layout convention (row-major (rows, cols)):
//
//   x      (n, cols)  FP32, heads of headDim consecutive values
//   cs     (n, half)  float2 (cos, sin) of token i, pair j; half = ropeDim/2
//   invf   (half)     FP64 inverse frequencies base^(-2j/ropeDim) / factor[j]
//   kc, vc (slots, ctx, kcols / vcols)  FP16 cache of one layer:
//                     the row of (slot s, position p) at (s*ctx + p)*cols
//   seq, pos (n)      int32 slot and position of each token (device copies
//                     of the batch)
//
// Pairing: norm style rotates (x[2j], x[2j+1]); NeoX style (x[j], x[j+half]).
// Dimensions of a head past ropeDim are left alone. Kernel parameters are
// listed in ptx/kernels.go.

#include <cuda_fp16.h>

// cs[i, j] = (cos θ, sin θ), θ = (pos[i] · freqScale) · invf[j], in FP64,
// rounded to FP32. One table serves every layer of a forward pass.
extern "C" __global__ void __launch_bounds__(256)
rope_table(float2 *__restrict__ cs, const int *__restrict__ pos, const double *__restrict__ invf,
           int n, int half, float freqScale)
{
    const int total = n * half;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int i = t / half, j = t % half;
        const double p = (double)pos[i] * (double)freqScale;
        double s, c;
        sincos(p * invf[j], &s, &c);
        cs[t] = make_float2((float)c, (float)s);
    }
}

// rotate_pair rotates pair j of the head at h by the angle in c.
__device__ __forceinline__ void rotate_pair(float *h, int j, int half, int neox, float2 c)
{
    const int a = neox ? j : 2 * j;
    const int b = neox ? j + half : 2 * j + 1;
    const float x0 = h[a], x1 = h[b];
    h[a] = x0 * c.x - x1 * c.y;
    h[b] = x0 * c.y + x1 * c.x;
}

// In place: every head of the first n rows of x (n, cols) is rotated by
// its token's angles. One thread per (row, head, pair).
extern "C" __global__ void __launch_bounds__(256)
rope_f32(float *x, const float2 *__restrict__ cs, int n, int cols, int headDim, int ropeDim, int neox)
{
    const int half = ropeDim / 2;
    const int heads = cols / headDim;
    const long long total = (long long)n * heads * half;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int j = (int)(t % half);
        const long long r = t / half;
        const int h = (int)(r % heads), i = (int)(r / heads);
        rotate_pair(x + (size_t)i * cols + (size_t)h * headDim, j, half, neox, cs[(size_t)i * half + j]);
    }
}

// Stores row i of k (n, kcols) and v (n, vcols), rounded to FP16, at
// (seq[i], pos[i]) of the layer's caches. Grid (n), one block per row.
extern "C" __global__ void __launch_bounds__(1024)
kv_append(__half *__restrict__ kc, __half *__restrict__ vc, const float *__restrict__ k,
          const float *__restrict__ v, const int *__restrict__ seq, const int *__restrict__ pos,
          int n, int ctx, int kcols, int vcols)
{
    const int i = blockIdx.x;
    if (i >= n)
        return;
    const size_t at = (size_t)seq[i] * ctx + pos[i];
    __half *kd = kc + at * kcols;
    __half *vd = vc + at * vcols;
    const float *ks = k + (size_t)i * kcols;
    const float *vs = v + (size_t)i * vcols;
    for (int j = threadIdx.x; j < kcols; j += blockDim.x)
        kd[j] = __float2half_rn(ks[j]);
    for (int j = threadIdx.x; j < vcols; j += blockDim.x)
        vd[j] = __float2half_rn(vs[j]);
}

// The fused rope_f32(q), rope_f32(k), kv_append(k, v): rotates row i of q
// (n, qcols) and k (n, kcols) in place, then stores the rotated k row and
// the v row (n, vcols) in the caches as kv_append does. Grid (n): one block
// owns one row of q, k and v, so the block barrier orders the rotation of k
// before its store. Block: up to 1024 threads.
extern "C" __global__ void __launch_bounds__(1024)
rope_append(float *q, float *k, const float *__restrict__ v, __half *__restrict__ kc,
            __half *__restrict__ vc, const float2 *__restrict__ cs, const int *__restrict__ seq,
            const int *__restrict__ pos, int n, int qcols, int kcols, int vcols,
            int headDim, int ropeDim, int neox, int ctx)
{
    const int i = blockIdx.x;
    if (i >= n)
        return;
    const int half = ropeDim / 2;
    const int qh = qcols / headDim, kh = kcols / headDim;
    const float2 *c = cs + (size_t)i * half;
    float *qr = q + (size_t)i * qcols;
    float *kr = k + (size_t)i * kcols;
    for (int t = threadIdx.x; t < (qh + kh) * half; t += blockDim.x) {
        const int h = t / half, j = t % half;
        float *hp = h < qh ? qr + (size_t)h * headDim : kr + (size_t)(h - qh) * headDim;
        rotate_pair(hp, j, half, neox, c[j]);
    }
    __syncthreads();
    const size_t at = (size_t)seq[i] * ctx + pos[i];
    __half *kd = kc + at * kcols;
    __half *vd = vc + at * vcols;
    const float *vr = v + (size_t)i * vcols;
    for (int j = threadIdx.x; j < kcols; j += blockDim.x)
        kd[j] = __float2half_rn(kr[j]);
    for (int j = threadIdx.x; j < vcols; j += blockDim.x)
        vd[j] = __float2half_rn(vr[j]);
}
