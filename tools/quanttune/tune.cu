// quanttune times the quantized mat-vec kernels of ptx/quant.cu over block
// shapes (N activation rows, NP staged rows, KC staged columns, R rows per
// warp, P units in flight) on 7B matrix shapes, to choose the shapes the
// MATVEC_Q lines instantiate. Build here, run on the GPU machine:
//
//   nvcc -O3 -gencode arch=compute_52,code=compute_52 -cudart static -o quanttune tools/quanttune/tune.cu
//   ./quanttune
//
// Weights are random halves rotated through more than the L2; each
// configuration runs 100 launches captured in one CUDA graph.
#include "../../ptx/quant.cu"
#include <cstdio>
#include <vector>
#include <cuda_runtime.h>
typedef void (*kfn)(float *, const float *, const unsigned char *, const unsigned char *, const unsigned char *, const float *, int, int, int);
#define TUNE(T, N, NP, KC, R, P) \
  extern "C" __global__ void __launch_bounds__(256) tune_##T##_##N##_##NP##_##KC##_##R##_##P(float *y, const float *x, const unsigned char *p0, const unsigned char *p1, const unsigned char *p2, const float *bias, int n, int m, int k) { \
    const qouts o = {{y, nullptr, nullptr}, {{p0, p1, p2}, {nullptr, nullptr, nullptr}, {nullptr, nullptr, nullptr}}, {bias, nullptr, nullptr}, {m, 0, 0}}; \
    if (N == 1) matvec_q<T, KC, R, (P ? P : 1), false>(o, x, k); else matvec_qb<T, N, NP, KC, R, false>(o, x, n, k); }
// P is the units in flight at N = 1; batched shapes (N > 1) ignore it.
#define SHAPES(X, T) X(T,1,1,8192,2,4) X(T,1,1,8192,4,2) X(T,1,1,8192,2,2) \
  X(T,4,4,1024,1,0) X(T,4,4,1024,2,0) X(T,4,4,1024,4,0) X(T,4,4,2048,2,0) \
  X(T,8,8,1024,1,0) X(T,8,8,1024,2,0) X(T,8,8,1024,4,0) X(T,8,4,1024,2,0) \
  X(T,16,8,1024,1,0) X(T,16,8,1024,2,0) X(T,16,4,1024,2,0)
#define NSHAPES 14
SHAPES(TUNE, Q4_0) SHAPES(TUNE, Q8_0) SHAPES(TUNE, Q4_K) SHAPES(TUNE, Q6_K)
struct cfg { const char *name; kfn f; int N, R; };
#define C(T,N,NP,KC,R,P) {#T " N" #N " NP" #NP " KC" #KC " R" #R " P" #P, tune_##T##_##N##_##NP##_##KC##_##R##_##P, N, R},
int main() {
  struct { int type; double bpw; double scale_frac; cfg cs[NSHAPES]; } types[] = {
    {0, 34.0/32, 2.0/34, {SHAPES(C, Q8_0)}}, {1, 18.0/32, 2.0/18, {SHAPES(C, Q4_0)}}, {8, 144.0/256, 16.0/144, {SHAPES(C, Q4_K)}}, {10, 210.0/256, 2.0/210, {SHAPES(C, Q6_K)}},
  };
  int shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {32000, 4096}};
  size_t pool = 1024u << 20;
  unsigned char *buf; cudaMalloc(&buf, pool);
  std::vector<unsigned short> h(pool / 2);
  for (size_t i = 0; i < h.size(); i++) h[i] = 0x2000 + (i * 2654435761u >> 20) % 0x1000;
  cudaMemcpy(buf, h.data(), pool, cudaMemcpyHostToDevice);
  float *x, *y; cudaMalloc(&x, 4 * 16 * 11008); cudaMalloc(&y, 4 * 16 * 32000);
  cudaMemset(x, 0, 4 * 16 * 11008);
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  for (auto &t : types) for (auto &sh : shapes) {
    int m = sh[0], k = sh[1];
    double bytes = (double)m * k * t.bpw;
    size_t wb = ((size_t)bytes + 4095 + 512) & ~(size_t)4095;
    int copies = pool / wb; if (copies > 64) copies = 64;
    for (auto &c : t.cs) {
      if (c.N > 1 && k != 4096) continue;
      const int iters = 100;
      cudaStream_t st; cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
      cudaGraph_t g; cudaGraphExec_t ge;
      cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal);
      for (int i = 0; i < iters; i++) {
        unsigned char *base = buf + (size_t)(i % copies) * wb;
        unsigned char *p1 = base + (size_t)(bytes * (1 - t.scale_frac));
        p1 = (unsigned char *)(((size_t)p1 + 255) & ~(size_t)255);
        c.f<<<(m + 8 * c.R - 1) / (8 * c.R), 256, 0, st>>>(y, x, base, p1, p1, nullptr, c.N, m, k);
      }
      cudaStreamEndCapture(st, &g); cudaGraphInstantiate(&ge, g, nullptr, nullptr, 0);
      for (int w = 0; w < 2; w++) {
        cudaEventRecord(a, st); cudaGraphLaunch(ge, st); cudaEventRecord(b, st); cudaEventSynchronize(b);
        float ms; cudaEventElapsedTime(&ms, a, b);
        if (w == 1) printf("%-34s m=%d k=%d %8.2f us %6.0f GB/s\n", c.name, m, k, ms * 1000 / iters, bytes / (ms / iters * 1e-3) / 1e9);
      }
      cudaGraphExecDestroy(ge); cudaGraphDestroy(g); cudaStreamDestroy(st);
    }
  }
  printf("last error: %s\n", cudaGetErrorString(cudaGetLastError()));
}
