// Top-k selection of logits on the GPU, so that only k candidates per row
// cross to the host. Compiled for compute capability 5.2.
//
// Order: candidate a comes before b when a's value is larger, or the values
// are equal and a's id is lower (the order the sampler breaks ties in).
// NaN values are treated as -Inf. Padding past the end of a row is (-Inf,
// INT_MAX), after every real candidate; the final pass reports its id as -1.
//
// Layout convention (row-major (rows, cols)):
//
//   inv, ini  (rows, cols)          candidate values and ids; ini = 0 means
//                                   the ids are the column indices (logits)
//   outv, outi (rows, chunks, k)    the first k of each chunk, in order
//
// Kernel parameters are listed in ptx/kernels.go.

#include <climits>

#define TOPK_CHUNK 2048 // candidates sorted by one block
#define TOPK_THREADS 1024

__device__ __forceinline__ bool topk_before(float av, int ai, float bv, int bi)
{
    return av > bv || (av == bv && ai < bi);
}

// topk_pass: block (x: chunk, y: row) bitonic-sorts TOPK_CHUNK candidates
// of its row in shared memory and writes the first k (k ≤ TOPK_CHUNK/2).
// Repeated passes over the outputs reduce a row to k candidates. Block:
// 1024 threads, one comparator each.
extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
topk_pass(float *__restrict__ outv, int *__restrict__ outi, const float *__restrict__ inv,
          const int *__restrict__ ini, int cols, int k, int final)
{
    __shared__ float sv[TOPK_CHUNK];
    __shared__ int si[TOPK_CHUNK];
    const int tid = threadIdx.x;
    const int row = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x;
    const float *vr = inv + (size_t)row * cols;
    const int *ir = ini ? ini + (size_t)row * cols : nullptr;
    for (int t = tid; t < TOPK_CHUNK; t += blockDim.x) {
        const int c = chunk * TOPK_CHUNK + t;
        float v = -INFINITY;
        int id = INT_MAX;
        if (c < cols) {
            v = vr[c];
            if (isnan(v))
                v = -INFINITY;
            id = ir ? ir[c] : c;
        }
        sv[t] = v;
        si[t] = id;
    }
    for (int size = 2; size <= TOPK_CHUNK; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            const int i = 2 * tid - (tid & (stride - 1));
            const int j = i + stride;
            const float vi = sv[i], vj = sv[j];
            const int ii = si[i], ij = si[j];
            const bool fwd = (i & size) == 0;
            if (fwd ? topk_before(vj, ij, vi, ii) : topk_before(vi, ii, vj, ij)) {
                sv[i] = vj;
                sv[j] = vi;
                si[i] = ij;
                si[j] = ii;
            }
        }
    }
    __syncthreads();
    for (int t = tid; t < k; t += blockDim.x) {
        const size_t o = ((size_t)row * chunks + chunk) * k + t;
        int id = si[t];
        if (final && id == INT_MAX)
            id = -1;
        outv[o] = sv[t];
        outi[o] = id;
    }
}
