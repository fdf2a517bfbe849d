// The KV-cache store and attention kernels for every pair of cache types
// (kvcache.cuh: f32, f16, q8_0, q4_0 rows) but f16 keys with f16 values,
// which rope.cu (kv_append, rope_append) and attention.cu (attn_decode,
// attn_prefill_hD) serve. FP32 activations and arithmetic: cached values
// are converted to FP32 as they are read. Compiled for compute capability
// 5.2.
//
// Layout convention (row-major (rows, cols)):
//
//   k, v   (n, kcols / vcols)  FP32 rows to store
//   q      (n, heads*hd)       FP32 query rows, head h at h*hd
//   dst    (n, heads*vd)       FP32 output rows, head h at h*vd
//   kc, vc (slots, ctx, row)   the cache of one layer: the row of (slot s,
//          position p) at byte (s*ctx + p)*R, R = the row bytes of kcols
//          (vcols) elements of the key (value) type; KV head kh of a row
//          at the row bytes of kh*hd (kh*vd) elements
//   seq, pos (n)               int32 slot and position of each row
//   part, cnt                  as attn_decode's (attention.cu)
//
// Kernel names end in the key and value types: kv_append_q8_0_q4_0 stores
// q8_0 keys and q4_0 values. A quantized type needs its head dims (and so
// kcols/vcols) to be multiples of 32. Kernel parameters are listed in
// ptx/kernels.go.

#include "kvcache.cuh"
#include "reduce.cuh"

// kv_append_K_V: rows i < n of k and v, converted to the cache types, at
// (seq[i], pos[i]). Grid (n), one block per row; blockDim.x a multiple of
// 32.
template <class KT, class VT>
__device__ __forceinline__ void kv_append_body(uint8_t *__restrict__ kc, uint8_t *__restrict__ vc,
                                               const float *__restrict__ k, const float *__restrict__ v,
                                               const int *__restrict__ seq, const int *__restrict__ pos, int n,
                                               int ctx, int kcols, int vcols)
{
    const int i = blockIdx.x;
    if (i >= n)
        return;
    const size_t at = (size_t)seq[i] * ctx + pos[i];
    KT::store_row(kc + at * kv_rowbytes<KT>(kcols), k + (size_t)i * kcols, kcols);
    VT::store_row(vc + at * kv_rowbytes<VT>(vcols), v + (size_t)i * vcols, vcols);
}

// rope_append_K_V: rope_append (rope.cu) storing the cache types: rotates
// row i of q (n, qcols) and k (n, kcols) in place, then stores the rotated
// k row and the v row. Grid (n).
template <class KT, class VT>
__device__ __forceinline__ void
rope_append_body(float *q, float *k, const float *__restrict__ v, uint8_t *__restrict__ kc,
                 uint8_t *__restrict__ vc, const float2 *__restrict__ cs, const int *__restrict__ seq,
                 const int *__restrict__ pos, int n, int qcols, int kcols, int vcols, int headDim,
                 int ropeDim, int neox, int ctx)
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
        const int a = neox ? j : 2 * j;
        const int b = neox ? j + half : 2 * j + 1;
        const float x0 = hp[a], x1 = hp[b];
        hp[a] = x0 * c[j].x - x1 * c[j].y;
        hp[b] = x0 * c[j].y + x1 * c[j].x;
    }
    __syncthreads();
    const size_t at = (size_t)seq[i] * ctx + pos[i];
    KT::store_row(kc + at * kv_rowbytes<KT>(kcols), kr, kcols);
    VT::store_row(vc + at * kv_rowbytes<VT>(vcols), v + (size_t)i * vcols, vcols);
}

#define DEC_SUB 64
#define DEC_WARPS 4
#define DEC_KPW (DEC_SUB / DEC_WARPS)

// warp_sum_half is one step of warp_sum16: v[t] and v[t+C] of lanes l and
// l^O summed into v[t], the lanes with bit O set keeping the upper half.
template <int C, int O> __device__ __forceinline__ void warp_sum_half(float (&v)[16], int lane)
{
    const bool up = (lane & O) != 0;
#pragma unroll
    for (int t = 0; t < C; t++) {
        const float send = up ? v[t] : v[t + C];
        const float keep = up ? v[t + C] : v[t];
        v[t] = keep + __shfl_xor_sync(0xffffffffu, send, O);
    }
}

// warp_sum16 sums each of v[0..15] over the warp in 16 shuffles (not 80):
// halving the values at every step. Afterwards lane l holds in v[0] the
// sum of v[l >> 1].
__device__ __forceinline__ void warp_sum16(float (&v)[16])
{
    const int lane = threadIdx.x % 32;
    warp_sum_half<8, 16>(v, lane);
    warp_sum_half<4, 8>(v, lane);
    warp_sum_half<2, 4>(v, lane);
    warp_sum_half<1, 2>(v, lane);
    v[0] += __shfl_xor_sync(0xffffffffu, v[0], 1);
}

// decode_keys_q writes to sc[g*DEC_SUB + j] the scaled scores of query
// heads g < gn (queries in qs, (gn, hd)) against keys j < L of the step
// at b0, of the quantized type KT with hd = 8·LPK, LPK 4, 8 or 16 (lpk).
// Lane l of warp w takes elements 8·(l % lpk).. of the keys w·DEC_KPW +
// t·(32/lpk) + l/lpk: all of the warp's loads are issued before any is
// used (keys past L read key 0 of the step and are not stored), and each
// quarter block is one scale, four halfword loads and, per query head,
// eight FMAs and a multiply by the scale.
template <class KT, int LPK>
__device__ __forceinline__ void decode_keys_q(float *sc, const float *qs, const uint8_t *kbase, size_t krb,
                                              int b0, int L, int gn, float scale)
{
    using B = kv_blocks<KT>;
    constexpr int hd = 8 * LPK, lpk = LPK, kpw = 32 / LPK, steps = DEC_KPW / kpw;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int sub = lane % lpk, e0 = 8 * (sub % 4), o = B::ofs(e0);
    // Rows by pointer increments, not 64-bit products; keys past L read
    // the step's first row.
    const int j0 = warp * DEC_KPW + lane / lpk;
    const unsigned short *first = reinterpret_cast<const unsigned short *>(kbase + (size_t)b0 * krb) + (sub / 4) * B::HW;
    const unsigned short *next = first + (size_t)j0 * (krb / 2);
    const size_t stride = kpw * (krb / 2);
    float kd[steps];
    unsigned kw[steps][2];
#pragma unroll
    for (int t = 0; t < steps; t++, next += stride) {
        const unsigned short *hb = j0 + t * kpw < L ? next : first;
        const unsigned short h0 = __ldg(hb), h1 = __ldg(hb + o), h2 = __ldg(hb + o + 1);
        const unsigned short h3 = __ldg(hb + o + 2), h4 = __ldg(hb + o + 3);
        kd[t] = __half2float(__ushort_as_half(h0));
        kw[t][0] = B::prep(kv_word(h1, h2), e0);
        kw[t][1] = B::prep(kv_word(h3, h4), e0 + 4);
    }
    const float bias = B::bias();
    for (int g = 0; g < gn; g++) {
        const float4 qa = *reinterpret_cast<const float4 *>(qs + g * hd + sub * 8);
        const float4 qb = *reinterpret_cast<const float4 *>(qs + g * hd + sub * 8 + 4);
#pragma unroll
        for (int t = 0; t < steps; t++) {
            float s = qa.x * kv_level(kw[t][0], 0, bias);
            s = fmaf(qa.y, kv_level(kw[t][0], 1, bias), s);
            s = fmaf(qa.z, kv_level(kw[t][0], 2, bias), s);
            s = fmaf(qa.w, kv_level(kw[t][0], 3, bias), s);
            s = fmaf(qb.x, kv_level(kw[t][1], 0, bias), s);
            s = fmaf(qb.y, kv_level(kw[t][1], 1, bias), s);
            s = fmaf(qb.z, kv_level(kw[t][1], 2, bias), s);
            s = fmaf(qb.w, kv_level(kw[t][1], 3, bias), s);
            s *= kd[t];
#pragma unroll
            for (int off = lpk / 2; off > 0; off /= 2)
                s += __shfl_xor_sync(0xffffffffu, s, off);
            const int j = warp * DEC_KPW + t * kpw + lane / lpk;
            if (sub == 0 && j < L)
                sc[g * DEC_SUB + j] = s * scale;
        }
    }
}

// decode_values_q writes to red[(w*hpb + g)*vd + d] warp w's share of
// the outputs of query heads g < gn: Σ_j sc[g*DEC_SUB + j]·v_j[d] over
// its DEC_KPW keys j < L of the step at b0, values of the quantized type
// VT with vd ≤ 128. Lane l takes elements 4l..4l+3 (a scale and two
// halfwords per key, all loaded before any is used; lanes past vd idle);
// per key and head, one multiply of the weight by the scale and four FMAs.
template <class VT>
__device__ __forceinline__ void decode_values_q(float *red, const float *sc, const uint8_t *vbase, size_t vrb,
                                                int b0, int L, int vd, int gn, int hpb)
{
    using B = kv_blocks<VT>;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int e0 = 4 * lane, o = B::ofs(e0 % 32);
    const bool on = e0 < vd;
    const int blk = on ? lane / 8 : 0;
    const unsigned short *first = reinterpret_cast<const unsigned short *>(vbase + (size_t)b0 * vrb) + blk * B::HW;
    const unsigned short *next = first + (size_t)(warp * DEC_KPW) * (vrb / 2);
    float vdd[DEC_KPW];
    unsigned vw[DEC_KPW];
#pragma unroll
    for (int t = 0; t < DEC_KPW; t++, next += vrb / 2) {
        const int j = warp * DEC_KPW + t;
        const unsigned short *hb = j < L ? next : first;
        const unsigned short h0 = __ldg(hb), h1 = __ldg(hb + o), h2 = __ldg(hb + o + 1);
        vdd[t] = j < L ? __half2float(__ushort_as_half(h0)) : 0.0f;
        vw[t] = B::prep(kv_word(h1, h2), e0 % 32);
    }
    const float bias = B::bias();
    for (int g = 0; g < gn; g++) {
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int t = 0; t < DEC_KPW; t++) {
            const int j = warp * DEC_KPW + t;
            const float w = (j < L ? sc[g * DEC_SUB + j] : 0.0f) * vdd[t];
            acc.x = fmaf(w, kv_level(vw[t], 0, bias), acc.x);
            acc.y = fmaf(w, kv_level(vw[t], 1, bias), acc.y);
            acc.z = fmaf(w, kv_level(vw[t], 2, bias), acc.z);
            acc.w = fmaf(w, kv_level(vw[t], 3, bias), acc.w);
        }
        if (on) {
            float *rw = red + ((size_t)warp * hpb + g) * vd + e0;
            rw[0] = acc.x;
            rw[1] = acc.y;
            rw[2] = acc.z;
            rw[3] = acc.w;
        }
    }
}

// attn_decode_K_V is attn_decode (attention.cu) over caches of any type,
// with the same grid, split, merge and shared memory (hpb*(hd + DEC_SUB +
// 5*vd + 3) floats), so the same DecodePlan serves both. Each warp owns
// DEC_KPW keys of a step. f32 and f16 halves: lane l reads dims l, l+32,
// ... of each row, keys 128 dims at a time: the scores of the warp's keys
// are warp sums, reduced together (warp_sum16); values up to 128 dims are
// read the same way into registers, all of a warp's keys before any is
// used; wider ones by one thread per output dim. Quantized halves:
// decode_keys_q (head dims 32, 64, 128; others one thread per key) and
// decode_values_q (up to 128 dims; wider ones one thread per output dim).
// Block: 128 threads.
template <class KT, class VT>
__device__ __forceinline__ void
attn_decode_body(float *__restrict__ part, float *__restrict__ dst, int *__restrict__ cnt,
                 const float *__restrict__ q, const uint8_t *__restrict__ kc, const uint8_t *__restrict__ vc,
                 const int *__restrict__ seq, const int *__restrict__ pos, int n, int heads, int kvheads,
                 int hd, int vd, int ctx, int chunk, int hpb, float scale, float *sm, int &last)
{
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

    float *qs = sm;
    float *sc = qs + hpb * hd;
    float *os = sc + hpb * DEC_SUB;
    float *red = os + hpb * vd;
    float *ms = red + DEC_WARPS * hpb * vd;
    float *ls = ms + hpb;
    float *al = ls + hpb;

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
    const size_t krb = kv_rowbytes<KT>(kvheads * hd), vrb = kv_rowbytes<VT>(kvheads * vd);
    const uint8_t *kbase = kc + slot * krb + kv_rowbytes<KT>(kh * hd);
    const uint8_t *vbase = vc + slot * vrb + kv_rowbytes<VT>(kh * vd);

    // Quantized keys of up to 128 dims are read as attn_decode reads f16
    // ones: hd/8 lanes per key (hd 32, 64 or 128), 8 elements a lane
    // (a quarter block: its scale and four halfwords); quantized values
    // of up to 128 dims 4 elements a lane (a scale and two halfwords).
    const bool kq = kv_blocks<KT>::QUANT && (hd == 32 || hd == 64 || hd == 128);
    const bool vq = kv_blocks<VT>::QUANT && vd <= 128;

    for (int b0 = start; b0 < end; b0 += DEC_SUB) {
        const int L = min(DEC_SUB, end - b0);
        if (kq) {
            if (hd == 128)
                decode_keys_q<KT, 16>(sc, qs, kbase, krb, b0, L, gn, scale);
            else if (hd == 64)
                decode_keys_q<KT, 8>(sc, qs, kbase, krb, b0, L, gn, scale);
            else
                decode_keys_q<KT, 4>(sc, qs, kbase, krb, b0, L, gn, scale);
        } else if (kv_blocks<KT>::QUANT) {
            // Other quantized keys: one thread per (head, key), few
            // registers (the fast path's count sets the kernel's).
            for (int t = tid; t < gn * L; t += blockDim.x) {
                const int g = t / L, j = t % L;
                const uint8_t *row = kbase + (size_t)(b0 + j) * krb;
                float s = 0.0f;
                for (int d = 0; d < hd; d++)
                    s = fmaf(qs[g * hd + d], KT::get(row, d), s);
                sc[g * DEC_SUB + j] = s * scale;
            }
        }
        for (int c0 = 0; c0 < (kv_blocks<KT>::QUANT ? 0 : hd); c0 += 128) {
            float kr[DEC_KPW][4];
#pragma unroll
            for (int t = 0; t < DEC_KPW; t++) {
                const int j = warp * DEC_KPW + t;
                const uint8_t *row = kbase + (size_t)(b0 + j) * krb;
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int d = c0 + 32 * c + lane;
                    kr[t][c] = j < L && d < hd ? KT::get(row, d) : 0.0f;
                }
            }
            for (int g = 0; g < gn; g++) {
                float qv[4];
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int d = c0 + 32 * c + lane;
                    qv[c] = d < hd ? qs[g * hd + d] : 0.0f;
                }
                float s[DEC_KPW];
#pragma unroll
                for (int t = 0; t < DEC_KPW; t++) {
                    s[t] = qv[0] * kr[t][0];
                    s[t] = fmaf(qv[1], kr[t][1], s[t]);
                    s[t] = fmaf(qv[2], kr[t][2], s[t]);
                    s[t] = fmaf(qv[3], kr[t][3], s[t]);
                }
                warp_sum16(s);
                const int j = warp * DEC_KPW + lane / 2;
                if (lane % 2 == 0 && j < L) {
                    const float acc = c0 == 0 ? s[0] : sc[g * DEC_SUB + j] + s[0];
                    sc[g * DEC_SUB + j] = c0 + 128 >= hd ? acc * scale : acc;
                }
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

        if (vq) {
            decode_values_q<VT>(red, sc, vbase, vrb, b0, L, vd, gn, hpb);
            __syncthreads();
            for (int t = tid; t < gn * vd; t += blockDim.x) {
                const int g = t / vd, d = t % vd;
                float acc = 0.0f;
#pragma unroll
                for (int w = 0; w < DEC_WARPS; w++)
                    acc += red[((size_t)w * hpb + g) * vd + d];
                os[t] = os[t] * al[g] + acc;
            }
        } else if (vd <= 128 && !kv_blocks<VT>::QUANT) {
            float vr[DEC_KPW][4];
#pragma unroll
            for (int t = 0; t < DEC_KPW; t++) {
                const int j = warp * DEC_KPW + t;
                const uint8_t *row = vbase + (size_t)(b0 + j) * vrb;
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int d = 32 * c + lane;
                    vr[t][c] = j < L && d < vd ? VT::get(row, d) : 0.0f;
                }
            }
            for (int g = 0; g < gn; g++) {
                float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int t = 0; t < DEC_KPW; t++) {
                    const int j = warp * DEC_KPW + t;
                    const float pj = j < L ? sc[g * DEC_SUB + j] : 0.0f;
#pragma unroll
                    for (int c = 0; c < 4; c++)
                        acc[c] = fmaf(pj, vr[t][c], acc[c]);
                }
                float *rw = red + ((size_t)warp * hpb + g) * vd;
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int d = 32 * c + lane;
                    if (d < vd)
                        rw[d] = acc[c];
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
                float acc = 0.0f;
                for (int j = 0; j < L; j++)
                    acc = fmaf(p[j], VT::get(vbase + (size_t)(b0 + j) * vrb, d), acc);
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
        float Ls = 0.0f;
        for (int sp = lane; sp < nv; sp += 32)
            Ls += expf(__ldcg(pp + (size_t)sp * w) - M) * __ldcg(pp + (size_t)sp * w + 1);
        Ls = warp_sum(Ls);
        if (lane == 0) {
            ms[g] = M;
            ls[g] = Ls;
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

// attn_prefill_K_V_hD is attn_prefill_hD (attention.cu) over caches of any
// type: QT = 4*RW query rows of one head per block, keys and values staged
// through shared memory as FP32, KT at a time. hd = vd = HD. Block: 128
// threads.
template <class KTy, class VTy, int HD, int RW>
__device__ __forceinline__ void
attn_prefill_body(float *__restrict__ dst, const float *__restrict__ q, const uint8_t *__restrict__ kc,
                  const uint8_t *__restrict__ vc, const int *__restrict__ seq, const int *__restrict__ pos,
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
    const size_t krb = kv_rowbytes<KTy>(kvheads * HD), vrb = kv_rowbytes<VTy>(kvheads * HD);

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
        const uint8_t *kb = kc + (size_t)s0 * ctx * krb + kv_rowbytes<KTy>(kh * HD);
        const uint8_t *vb = vc + (size_t)s0 * ctx * vrb + kv_rowbytes<VTy>(kh * HD);

        for (int kt = 0; kt < kmax; kt += KT) {
            __syncthreads();
            for (int t = tid; t < KT * HD; t += blockDim.x) {
                const int j = t / HD, d = t % HD;
                float kv = 0.0f, vv = 0.0f;
                if (kt + j < kmax) {
                    kv = KTy::get(kb + (size_t)(kt + j) * krb, d);
                    vv = VTy::get(vb + (size_t)(kt + j) * vrb, d);
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

// KV_STORE(K, V) defines kv_append_K_V and rope_append_K_V; KV_DECODE(K,
// V, B) attn_decode_K_V; KV_PREFILL(K, V, HD, RW) attn_prefill_K_V_hHD.
#define KV_STORE(K, V)                                                                                \
    extern "C" __global__ void __launch_bounds__(1024)                                                \
    kv_append_##K##_##V(uint8_t *__restrict__ kc, uint8_t *__restrict__ vc,                           \
                        const float *__restrict__ k, const float *__restrict__ v,                     \
                        const int *__restrict__ seq, const int *__restrict__ pos, int n, int ctx,     \
                        int kcols, int vcols)                                                         \
    {                                                                                                 \
        kv_append_body<kv_##K, kv_##V>(kc, vc, k, v, seq, pos, n, ctx, kcols, vcols);                 \
    }                                                                                                 \
    extern "C" __global__ void __launch_bounds__(1024)                                                \
    rope_append_##K##_##V(float *q, float *k, const float *__restrict__ v, uint8_t *__restrict__ kc,  \
                          uint8_t *__restrict__ vc, const float2 *__restrict__ cs,                    \
                          const int *__restrict__ seq, const int *__restrict__ pos, int n, int qcols, \
                          int kcols, int vcols, int headDim, int ropeDim, int neox, int ctx)          \
    {                                                                                                 \
        rope_append_body<kv_##K, kv_##V>(q, k, v, kc, vc, cs, seq, pos, n, qcols, kcols, vcols,       \
                                         headDim, ropeDim, neox, ctx);                                \
    }

// KV_DECODE(K, V, B): B the decode kernel's launch bounds. A decode
// block is latency-bound (two memory round trips a step): with both
// halves quantized the kernel fits 80 registers, six blocks per
// multiprocessor (KV_PAIR_Q); other pairs keep the compiler's choice.
#define KV_DECODE(K, V, B)                                                                            \
    extern "C" __global__ void __launch_bounds__ B                                                    \
    attn_decode_##K##_##V(float *__restrict__ part, float *__restrict__ dst, int *__restrict__ cnt,   \
                          const float *__restrict__ q, const uint8_t *__restrict__ kc,                \
                          const uint8_t *__restrict__ vc, const int *__restrict__ seq,                \
                          const int *__restrict__ pos, int n, int heads, int kvheads, int hd, int vd, \
                          int ctx, int chunk, int hpb, float scale)                                   \
    {                                                                                                 \
        __shared__ int last;                                                                          \
        extern __shared__ float sm[];                                                                 \
        attn_decode_body<kv_##K, kv_##V>(part, dst, cnt, q, kc, vc, seq, pos, n, heads, kvheads, hd,  \
                                         vd, ctx, chunk, hpb, scale, sm, last);                       \
    }

#define KV_PREFILL(K, V, HD, RW)                                                                      \
    extern "C" __global__ void __launch_bounds__(128)                                                 \
    attn_prefill_##K##_##V##_h##HD(float *__restrict__ dst, const float *__restrict__ q,              \
                                   const uint8_t *__restrict__ kc, const uint8_t *__restrict__ vc,    \
                                   const int *__restrict__ seq, const int *__restrict__ pos, int n,   \
                                   int heads, int kvheads, int ctx, float scale)                      \
    {                                                                                                 \
        attn_prefill_body<kv_##K, kv_##V, HD, RW>(dst, q, kc, vc, seq, pos, n, heads, kvheads, ctx,   \
                                                  scale);                                             \
    }

// Head dims of the prefill kernels: 8 and 16 only without a quantized
// type (blocks of 32); 32 query rows per block up to 64, 16 for 128.
#define KV_PREFILL_Q(K, V)                                                                            \
    KV_PREFILL(K, V, 32, 8)                                                                           \
    KV_PREFILL(K, V, 64, 8)                                                                           \
    KV_PREFILL(K, V, 128, 4)
#define KV_PREFILL_ALL(K, V)                                                                          \
    KV_PREFILL(K, V, 8, 8)                                                                            \
    KV_PREFILL(K, V, 16, 8)                                                                           \
    KV_PREFILL_Q(K, V)

#define KV_PAIR(K, V)                                                                                 \
    KV_STORE(K, V)                                                                                    \
    KV_DECODE(K, V, (128))
#define KV_PAIR_Q(K, V)                                                                               \
    KV_STORE(K, V)                                                                                    \
    KV_DECODE(K, V, (128, 6))

// Every pair but f16/f16 (rope.cu, attention.cu).
KV_PAIR(f32, f32)
KV_PAIR(f32, f16)
KV_PAIR(f32, q8_0)
KV_PAIR(f32, q4_0)
KV_PAIR(f16, f32)
KV_PAIR(f16, q8_0)
KV_PAIR(f16, q4_0)
KV_PAIR(q8_0, f32)
KV_PAIR(q8_0, f16)
KV_PAIR_Q(q8_0, q8_0)
KV_PAIR_Q(q8_0, q4_0)
KV_PAIR(q4_0, f32)
KV_PAIR(q4_0, f16)
KV_PAIR_Q(q4_0, q8_0)
KV_PAIR_Q(q4_0, q4_0)

KV_PREFILL_ALL(f32, f32)
KV_PREFILL_ALL(f32, f16)
KV_PREFILL_Q(f32, q8_0)
KV_PREFILL_Q(f32, q4_0)
KV_PREFILL_ALL(f16, f32)
KV_PREFILL_Q(f16, q8_0)
KV_PREFILL_Q(f16, q4_0)
KV_PREFILL_Q(q8_0, f32)
KV_PREFILL_Q(q8_0, f16)
KV_PREFILL_Q(q8_0, q8_0)
KV_PREFILL_Q(q8_0, q4_0)
KV_PREFILL_Q(q4_0, f32)
KV_PREFILL_Q(q4_0, f16)
KV_PREFILL_Q(q4_0, q8_0)
KV_PREFILL_Q(q4_0, q4_0)
