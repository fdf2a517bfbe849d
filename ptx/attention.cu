// Causal grouped-query attention over the FP16 KV cache. FP32 queries,
// outputs and arithmetic; keys and values are FP16 storage converted on
// load. Compiled for compute capability 5.2.
//
// Layout convention (row-major (rows, cols)):
//
//   q      (n, heads*hd)        FP32 query rows, head h at h*hd
//   dst    (n, heads*vd)        FP32 output rows, head h at h*vd
//   kc, vc (slots, ctx, kvheads*hd / kvheads*vd)  FP16 cache of one layer:
//          the key row of (slot s, position p) at (s*ctx + p)*kvheads*hd
//   seq, pos (n)                int32 slot and position of each query
//   part   (n, heads, splits, vd+2)  FP32 partial results of the split
//          decode kernel: max score m, sum of exp l, then vd unnormalized
//          outputs, for positions [split*chunk, (split+1)*chunk)
//   cnt    (n, gridDim.x of attn_decode) int32 arrival counters, zero
//          between launches
//
// Query i attends to positions 0..pos[i] of slot seq[i]; query head h reads
// KV head h / (heads/kvheads). Scores are scale·(q·k), softmax in FP32.
// Kernel parameters are listed in ptx/kernels.go.

#include <cuda_fp16.h>
#include "reduce.cuh"

// Keys per step of the decode kernel's online softmax, and per warp of
// its four.
#define DEC_SUB 64
#define DEC_WARPS 4
#define DEC_KPW (DEC_SUB / DEC_WARPS)

// attn_decode is split-KV (flash-decoding) attention: block (x: KV head kh
// and a group of up to hpb of its query heads, y: split, z: query row i)
// folds positions [y*chunk, min((y+1)*chunk, pos[i]+1)) into a running
// max, sum and output per query head, DEC_SUB keys at a time, and writes
// them to part. Splits past the query's position return at once. The last
// block of a (row, head group) to finish — it counts arrivals in cnt and
// resets the counter — merges the splits into dst:
//
//   dst[i, h] = Σ_s e^(m_s−M)·o_s / Σ_s e^(m_s−M)·l_s,  M = max_s m_s
//
// Each warp owns DEC_KPW keys of a step. It loads all of their key rows
// (16 bytes per lane, hd/8 lanes per key) before using any, then all of
// their value rows, so that a step waits for memory about twice whatever
// the group size; every loaded row serves all the block's query heads.
// Block: 128 threads. Dynamic shared memory: hpb*(hd + DEC_SUB + 5*vd + 3)
// floats.
extern "C" __global__ void __launch_bounds__(128)
attn_decode(float *__restrict__ part, float *__restrict__ dst, int *__restrict__ cnt,
            const float *__restrict__ q, const __half *__restrict__ kc, const __half *__restrict__ vc,
            const int *__restrict__ seq, const int *__restrict__ pos,
            int n, int heads, int kvheads, int hd, int vd, int ctx, int chunk, int hpb, float scale)
{
    __shared__ int last;
    extern __shared__ float sm[];
    const int i = blockIdx.z;
    const int G = heads / kvheads;
    const int nsub = (G + hpb - 1) / hpb;
    const int kh = blockIdx.x / nsub;
    const int g0 = (blockIdx.x % nsub) * hpb;
    const int gn = min(hpb, G - g0);
    const int splits = gridDim.y;
    const int npos = pos[i] + 1;
    const int start = blockIdx.y * chunk;
    if (i >= n || start >= npos)
        return;
    const int end = min(start + chunk, npos);
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, nwarps = blockDim.x / 32;

    float *qs = sm;                  // [hpb][hd]
    float *sc = qs + hpb * hd;       // [hpb][DEC_SUB] scores, then weights
    float *os = sc + hpb * DEC_SUB;  // [hpb][vd] running outputs
    float *red = os + hpb * vd;      // [DEC_WARPS][hpb][vd] per-warp sums
    float *ms = red + DEC_WARPS * hpb * vd; // [hpb] running max
    float *ls = ms + hpb;            // [hpb] running sum
    float *al = ls + hpb;            // [hpb] rescale of this step

    const int kcols = kvheads * hd, vcols = kvheads * vd;
    const int h0 = kh * G + g0;
    const float *qrow = q + (size_t)i * heads * hd + (size_t)h0 * hd;
    for (int t = tid; t < gn * hd; t += blockDim.x)
        qs[t] = qrow[t];
    for (int t = tid; t < gn * vd; t += blockDim.x)
        os[t] = 0.0f;
    if (tid < gn) {
        ms[tid] = -INFINITY;
        ls[tid] = 0.0f;
    }
    __syncthreads();

    const size_t slot = (size_t)seq[i] * ctx;
    const __half *kbase = kc + slot * kcols + (size_t)kh * hd;
    const __half *vbase = vc + slot * vcols + (size_t)kh * vd;
    // Keys are read 16 bytes per lane by groups of lpk = hd/8 lanes (a
    // power of two up to 16) when the rows allow it; values as half2 by
    // whole warps when vd is even and at most 128.
    const int lpk = hd / 8;
    const bool kvec = (hd % 8 == 0) && lpk <= 16 && (lpk & (lpk - 1)) == 0 && (kcols % 8 == 0);
    const bool vvec = (vd % 2 == 0) && vd <= 128;

    for (int b0 = start; b0 < end; b0 += DEC_SUB) {
        const int L = min(DEC_SUB, end - b0);
        if (kvec) {
            const int kpw = 32 / lpk;                   // keys per warp per load
            const int steps = (DEC_KPW + kpw - 1) / kpw; // at most 8
            const int sub = lane % lpk;                 // this lane's 8 dims
            uint4 kr[8];
#pragma unroll
            for (int t = 0; t < 8; t++) {
                const int jj = t * kpw + lane / lpk;
                const int j = warp * DEC_KPW + jj;
                kr[t] = make_uint4(0, 0, 0, 0);
                if (t < steps && jj < DEC_KPW && j < L)
                    kr[t] = *reinterpret_cast<const uint4 *>(kbase + (size_t)(b0 + j) * kcols + sub * 8);
            }
            for (int g = 0; g < gn; g++) {
                const float4 qa = *reinterpret_cast<const float4 *>(qs + g * hd + sub * 8);
                const float4 qb = *reinterpret_cast<const float4 *>(qs + g * hd + sub * 8 + 4);
#pragma unroll
                for (int t = 0; t < 8; t++) {
                    if (t >= steps)
                        break;
                    const __half2 *h2 = reinterpret_cast<const __half2 *>(&kr[t]);
                    const float2 k0 = __half22float2(h2[0]), k1 = __half22float2(h2[1]);
                    const float2 k2 = __half22float2(h2[2]), k3 = __half22float2(h2[3]);
                    float s = qa.x * k0.x;
                    s = fmaf(qa.y, k0.y, s);
                    s = fmaf(qa.z, k1.x, s);
                    s = fmaf(qa.w, k1.y, s);
                    s = fmaf(qb.x, k2.x, s);
                    s = fmaf(qb.y, k2.y, s);
                    s = fmaf(qb.z, k3.x, s);
                    s = fmaf(qb.w, k3.y, s);
                    for (int off = lpk / 2; off > 0; off /= 2)
                        s += __shfl_xor_sync(0xffffffffu, s, off);
                    const int jj = t * kpw + lane / lpk;
                    const int j = warp * DEC_KPW + jj;
                    if (sub == 0 && jj < DEC_KPW && j < L)
                        sc[g * DEC_SUB + j] = s * scale;
                }
            }
        } else {
            for (int t = tid; t < gn * L; t += blockDim.x) {
                const int g = t / L, j = t % L;
                const __half *kr = kbase + (size_t)(b0 + j) * kcols;
                const float *qg = qs + g * hd;
                float s = 0.0f;
                for (int d = 0; d < hd; d++)
                    s = fmaf(qg[d], __half2float(kr[d]), s);
                sc[g * DEC_SUB + j] = s * scale;
            }
        }
        __syncthreads();

        for (int g = warp; g < gn; g += nwarps) {
            float mx = -INFINITY;
            for (int j = lane; j < L; j += 32)
                mx = fmaxf(mx, sc[g * DEC_SUB + j]);
            mx = warp_max(mx);
            const float mold = ms[g];
            const float mnew = fmaxf(mold, mx);
            float sum = 0.0f;
            for (int j = lane; j < L; j += 32) {
                const float e = expf(sc[g * DEC_SUB + j] - mnew);
                sc[g * DEC_SUB + j] = e;
                sum += e;
            }
            sum = warp_sum(sum);
            if (lane == 0) {
                const float a = expf(mold - mnew);
                al[g] = a;
                ls[g] = ls[g] * a + sum;
                ms[g] = mnew;
            }
        }
        __syncthreads();

        if (vvec) {
            const int npair = vd / 2;
            const __half2 *vb2 = reinterpret_cast<const __half2 *>(vbase + (size_t)b0 * vcols);
            __half2 vr[DEC_KPW][2];
#pragma unroll
            for (int t = 0; t < DEC_KPW; t++) {
                const int j = warp * DEC_KPW + t;
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const int p = lane + 32 * c;
                    vr[t][c] = __float2half2_rn(0.0f);
                    if (j < L && p < npair)
                        vr[t][c] = vb2[(size_t)j * (vcols / 2) + p];
                }
            }
            for (int g = 0; g < gn; g++) {
                float2 acc[2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
#pragma unroll
                for (int t = 0; t < DEC_KPW; t++) {
                    const int j = warp * DEC_KPW + t;
                    const float pj = j < L ? sc[g * DEC_SUB + j] : 0.0f;
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        const float2 f = __half22float2(vr[t][c]);
                        acc[c].x = fmaf(pj, f.x, acc[c].x);
                        acc[c].y = fmaf(pj, f.y, acc[c].y);
                    }
                }
                float *rw = red + ((size_t)warp * hpb + g) * vd;
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const int p = lane + 32 * c;
                    if (p < npair) {
                        rw[2 * p] = acc[c].x;
                        rw[2 * p + 1] = acc[c].y;
                    }
                }
            }
            __syncthreads();
            for (int t = tid; t < gn * vd; t += blockDim.x) {
                const int g = t / vd, d = t % vd;
                float acc = 0.0f;
#pragma unroll
                for (int w = 0; w < DEC_WARPS; w++)
                    acc += red[((size_t)w * hpb + g) * vd + d];
                os[t] = os[t] * al[g] + acc;
            }
        } else {
            for (int t = tid; t < gn * vd; t += blockDim.x) {
                const int g = t / vd, d = t % vd;
                const float *p = sc + g * DEC_SUB;
                const __half *vcol = vbase + (size_t)b0 * vcols + d;
                float acc = 0.0f;
                for (int j = 0; j < L; j++)
                    acc = fmaf(p[j], __half2float(vcol[(size_t)j * vcols]), acc);
                os[t] = os[t] * al[g] + acc;
            }
        }
        __syncthreads();
    }

    const int w = vd + 2;
    for (int t = tid; t < gn * w; t += blockDim.x) {
        const int g = t / w, c = t % w;
        const float val = c == 0 ? ms[g] : c == 1 ? ls[g] : os[g * vd + c - 2];
        part[(((size_t)i * heads + h0 + g) * splits + blockIdx.y) * w + c] = val;
    }

    // Count this block in; the last of the splits holding positions
    // merges them.
    const int nv = min(splits, (npos + chunk - 1) / chunk);
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        int *c = cnt + (size_t)i * gridDim.x + blockIdx.x;
        last = atomicAdd(c, 1) == nv - 1;
        if (last)
            *c = 0;
    }
    __syncthreads();
    if (!last)
        return;
    __threadfence();
    for (int g = warp; g < gn; g += nwarps) {
        const float *pp = part + ((size_t)i * heads + h0 + g) * splits * w;
        float M = -INFINITY;
        for (int sp = lane; sp < nv; sp += 32)
            M = fmaxf(M, __ldcg(pp + (size_t)sp * w));
        M = warp_max(M);
        float L = 0.0f;
        for (int sp = lane; sp < nv; sp += 32)
            L += expf(__ldcg(pp + (size_t)sp * w) - M) * __ldcg(pp + (size_t)sp * w + 1);
        L = warp_sum(L);
        if (lane == 0) {
            ms[g] = M;
            ls[g] = L;
        }
    }
    __syncthreads();
    for (int t = tid; t < gn * vd; t += blockDim.x) {
        const int g = t / vd, d = t % vd;
        const float *pp = part + ((size_t)i * heads + h0 + g) * splits * w;
        const float M = ms[g];
        float o = 0.0f;
        for (int sp = 0; sp < nv; sp++)
            o += expf(__ldcg(pp + (size_t)sp * w) - M) * __ldcg(pp + (size_t)sp * w + 2 + d);
        dst[(size_t)i * heads * vd + (size_t)(h0 + g) * vd + d] = o / ls[g];
    }
}

// attn_prefill computes attention for QT = 4*RW consecutive query rows
// (block x) of one query head (block y), with hd = vd = HD. Keys and values
// are staged through shared memory KT at a time and shared by the tile's
// rows; each warp owns RW rows and keeps their running max, sum and output
// (HD/32 dims per lane) in registers. Rows of the tile are taken in runs
// of one slot, so mixed batches are correct too. Block: 128 threads.
template <int HD, int RW>
__device__ __forceinline__ void
attn_prefill_body(float *__restrict__ dst, const float *__restrict__ q, const __half *__restrict__ kc,
                  const __half *__restrict__ vc, const int *__restrict__ seq, const int *__restrict__ pos,
                  int n, int heads, int kvheads, int ctx, float scale)
{
    constexpr int QT = 4 * RW, KT = 32, DPL = (HD + 31) / 32;
    __shared__ float qs[QT][HD];
    __shared__ float ks[KT][HD + 1];
    __shared__ float vs[KT][HD];
    __shared__ float ps[4][RW][KT];

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int tile0 = blockIdx.x * QT;
    const int h = blockIdx.y;
    const int kh = h / (heads / kvheads);
    const int rows = min(QT, n - tile0);
    const int kcols = kvheads * HD;

    for (int t = tid; t < QT * HD; t += blockDim.x) {
        const int r = t / HD, d = t % HD;
        qs[r][d] = r < rows ? q[(size_t)(tile0 + r) * heads * HD + (size_t)h * HD + d] : 0.0f;
    }

    float m[RW], l[RW], o[RW][DPL];
#pragma unroll
    for (int rr = 0; rr < RW; rr++) {
        m[rr] = -INFINITY;
        l[rr] = 0.0f;
#pragma unroll
        for (int c = 0; c < DPL; c++)
            o[rr][c] = 0.0f;
    }

    for (int r0 = 0; r0 < rows;) {
        const int s0 = seq[tile0 + r0];
        int r1 = r0 + 1;
        while (r1 < rows && seq[tile0 + r1] == s0)
            r1++;
        int kmax = 0;
        for (int r = r0; r < r1; r++)
            kmax = max(kmax, pos[tile0 + r] + 1);
        const __half *kb = kc + (size_t)s0 * ctx * kcols + (size_t)kh * HD;
        const __half *vb = vc + (size_t)s0 * ctx * kcols + (size_t)kh * HD;

        for (int kt = 0; kt < kmax; kt += KT) {
            __syncthreads(); // the previous tile (and qs) is complete
            for (int t = tid; t < KT * HD; t += blockDim.x) {
                const int j = t / HD, d = t % HD;
                float kv = 0.0f, vv = 0.0f;
                if (kt + j < kmax) {
                    kv = __half2float(kb[(size_t)(kt + j) * kcols + d]);
                    vv = __half2float(vb[(size_t)(kt + j) * kcols + d]);
                }
                ks[j][d] = kv;
                vs[j][d] = vv;
            }
            __syncthreads();
#pragma unroll
            for (int rr = 0; rr < RW; rr++) {
                const int r = warp * RW + rr;
                if (r < r0 || r >= r1)
                    continue;
                const int p = pos[tile0 + r];
                if (kt > p)
                    continue;
                const int j = kt + lane;
                float s = 0.0f;
#pragma unroll 16
                for (int d = 0; d < HD; d++)
                    s = fmaf(qs[r][d], ks[lane][d], s);
                s = j > p ? -INFINITY : s * scale;
                const float mnew = fmaxf(m[rr], warp_max(s));
                const float e = j > p ? 0.0f : expf(s - mnew);
                const float sum = warp_sum(e);
                const float alpha = expf(m[rr] - mnew);
                l[rr] = l[rr] * alpha + sum;
                m[rr] = mnew;
                ps[warp][rr][lane] = e;
                __syncwarp();
#pragma unroll
                for (int c = 0; c < DPL; c++) {
                    const int d = lane + 32 * c;
                    if (d < HD) {
                        float acc = o[rr][c] * alpha;
#pragma unroll 8
                        for (int jj = 0; jj < KT; jj++)
                            acc = fmaf(ps[warp][rr][jj], vs[jj][d], acc);
                        o[rr][c] = acc;
                    }
                }
                __syncwarp();
            }
        }
        r0 = r1;
    }

#pragma unroll
    for (int rr = 0; rr < RW; rr++) {
        const int r = warp * RW + rr;
        if (r >= rows)
            continue;
        float *out = dst + (size_t)(tile0 + r) * heads * HD + (size_t)h * HD;
#pragma unroll
        for (int c = 0; c < DPL; c++) {
            const int d = lane + 32 * c;
            if (d < HD)
                out[d] = o[rr][c] / l[rr];
        }
    }
}

#define ATTN_PREFILL(HD, RW)                                                                          \
    extern "C" __global__ void __launch_bounds__(128)                                                 \
    attn_prefill_h##HD(float *__restrict__ dst, const float *__restrict__ q,                          \
                       const __half *__restrict__ kc, const __half *__restrict__ vc,                  \
                       const int *__restrict__ seq, const int *__restrict__ pos, int n, int heads,    \
                       int kvheads, int ctx, float scale)                                             \
    {                                                                                                 \
        attn_prefill_body<HD, RW>(dst, q, kc, vc, seq, pos, n, heads, kvheads, ctx, scale);           \
    }

// Query tile rows: 32 (RW 8) up to head dim 64; 16 for 128, to stay within
// 48 KB of shared memory.
ATTN_PREFILL(8, 8)
ATTN_PREFILL(16, 8)
ATTN_PREFILL(32, 8)
ATTN_PREFILL(64, 8)
ATTN_PREFILL(128, 4)
