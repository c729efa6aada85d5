/* Causal self-attention for small heads (head size up to 32), float32 on a CPU: forward and backward,
   for training. Loaded by small_attention.py, which makes it a PyTorch op.

   Shapes, with B batch rows, T positions, H query heads, KV key/value heads (H a multiple of KV; query
   head h reads kv head h / (H / KV): grouped-query attention), hs the head size:
     q (B, T, H, hs), k and v (B, T, KV, hs): the last two dimensions contiguous, the batch and position
       strides given (in floats), so the q/k/v slices of one fused projection are read where they lie;
     y (B, T, H, hs) and the gradients dq, dk, dv: contiguous; lse (B, H, T).

   Row i of a head: s_j = scale * q_i . k_j for keys j <= i,  p_j = exp(s_j - lse_i),
   lse_i = log(sum_j exp(s_j)),  y_i = sum_j p_j v_j.
   The backward pass recomputes p from the saved lse instead of storing the T x T probabilities:
     dv_j += p_j do_i,  dp_j = do_i . v_j,  ds_j = p_j (dp_j - D_i) with D_i = do_i . y_i,
     dq_i = scale * sum_j ds_j k_j,  dk_j += scale * ds_j q_i.

   Why not PyTorch's flash kernel: its blocked matrix products are built for head sizes of 64 and more;
   at head size 8 a score costs 8 multiply-adds, and moving the blocks around costs more than that.
   Here every loop runs over keys, LANES at a time, which the compiler turns into vector instructions
   (-O3 -march=native) whatever the head size: a head's keys and values are first copied transposed,
   (hs, T), so that LANES consecutive keys of one head-size component are contiguous. With hs <= 32
   and contexts of a few thousand positions, those copies, one row of scores and the gradients of k
   and v fit in the core's L1/L2 caches, and a row's softmax is exact in two passes over its scores
   (no running-max rescaling as in flash attention, which exists for rows that do not fit on chip).
   Measured (forward + backward, one thread, CPU time): 2.3-2.6x faster than SDPA at head size 8
   (stories260K's shape), 1.4-1.5x at 16, 1.1-1.3x at 32 (gpt-micro's and the quick start's shapes), where
   y = P V and dq = dS K accumulate along the head size (weighted_rows) instead of across keys.

   Threads: the forward pass splits (batch row, query head) pairs; the backward pass splits (batch
   row, kv head) pairs, so the G query heads that add into one kv head's dk/dv run on one thread and
   need no locks. Pairs are handed out one at a time (schedule dynamic), so that a thread the OS
   holds back on a busy machine does not leave a fixed share behind. Sums are float32 in a fixed
   order: results do not depend on the thread count. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16    /* keys per vector: one AVX-512 register of floats, two of AVX2 */
_Static_assert(LANES == 16, "causal() and vsum() spell out 16 lanes");
#define MAX_HS 32   /* head sizes up to this: the size of the per-row arrays of queries, dy and results */
#define ROWS 4      /* query rows per pass over the keys: each key or value vector loaded serves 4 rows */
#define CHUNK 8     /* head-size components per pass of weighted_sums */
#define INLINE static inline __attribute__((always_inline))
/* Unroll the next loop completely where its count is a constant: with hs known, a loop over the head
   size becomes hs instructions whose accumulators live in registers (GCC and Clang read this pragma). */
#define UNROLL _Pragma("GCC unroll 32")

/* LANES floats (or int32) as one value: GCC's and Clang's vector extensions. Arithmetic on them is
   elementwise and compiles to the widest vector instructions -march=native offers, without
   intrinsics; vloadu/vstoreu read and write LANES floats at any address (the memcpy becomes one
   unaligned vector move). */
typedef float vec __attribute__((vector_size(4 * LANES)));
typedef int32_t ivec __attribute__((vector_size(4 * LANES)));

INLINE vec vloadu(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
INLINE void vstoreu(float *p, vec v) { memcpy(p, &v, sizeof v); }
INLINE vec vsplat(float a) { return a - (vec){}; }  /* (a, a, ..., a) */
INLINE vec vselect(ivec mask, vec a, vec b) { return (vec)((mask & (ivec)a) | (~mask & (ivec)b)); }
/* The sum of a vector's lanes, halving in registers: lanes u and u + 8 added as two 8-lane halves, then
   u and u + 4, then the last four. __builtin_shufflevector (GCC 12+, Clang) picks the halves; going
   through memory instead made the forward pass ~30% slower. */
typedef float vec8 __attribute__((vector_size(32)));
typedef float vec4 __attribute__((vector_size(16)));
INLINE float vsum(vec v) {
    vec8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
           + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    vec4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* The largest lane (once per row: through memory is fine). */
INLINE float vmaxall(vec v) {
    float x[LANES];
    memcpy(x, &v, sizeof x);
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int u = 0; u < w; u++) x[u] = x[u + w] > x[u] ? x[u + w] : x[u];
    return x[0];
}

/* Keys j0 .. j0 + LANES - 1 that row i may see (j <= i): all ones where it may, zeros elsewhere. */
INLINE ivec causal(int j0, int i) {
    ivec j = j0 + (ivec){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return j <= i;
}

typedef struct {
    const float *q, *k, *v;
    int64_t qb, qt, kb, kt, vb, vt;  /* batch and position strides of q, k, v, in floats */
    int B, T, H, KV, hs;
    float scale;
} Shape;

/* exp(x) for x <= 0, in plain arithmetic on vectors (libm's expf would be one call per float):
   exp(x) = 2^t with t = x log2(e) = n + f, n an integer and |f| <= 1/2; 2^n is built in the float's
   exponent bits and 2^f = e^(f ln 2) is its Taylor series to degree 7 (relative error < 1e-8, below
   float32 rounding). x is clamped at -87 (e^-87 ~ 1.6e-38, the smallest normal float) so that n stays
   in the exponent's range; callers zero the masked keys themselves. */
INLINE vec exp_neg(vec x) {
    x = vselect(x > -87.0f, x, vsplat(-87.0f));
    vec t = x * 1.442695041f;
    vec n = (t + 12582912.0f) - 12582912.0f;  /* round to nearest: adding 1.5 * 2^23 pushes out the fraction */
    vec f = (t - n) * 0.6931471806f;          /* f ln 2, |.| <= 0.347 */
    vec p = vsplat(1.0f / 5040);
    p = p * f + 1.0f / 720;
    p = p * f + 1.0f / 120;
    p = p * f + 1.0f / 24;
    p = p * f + 1.0f / 6;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    ivec bits = (__builtin_convertvector(n, ivec) + 127) << 23;  /* 2^n: n + 127 in the exponent field */
    return p * (vec)bits;
}

/* Copy one (batch row, kv head)'s keys or values x (T, hs; position stride xt) transposed into xt_out
   (hs, Tp): xt_out[d * Tp + j] = x[j, d], zeros for the padding positions T <= j < Tp. */
static void transpose_in(float *out, const float *x, int64_t xt, int T, int Tp, int hs) {
    for (int d = 0; d < hs; d++) {
        for (int j = 0; j < T; j++) out[(int64_t)d * Tp + j] = x[(int64_t)j * xt + d];
        for (int j = T; j < Tp; j++) out[(int64_t)d * Tp + j] = 0.0f;
    }
}

/* Scores of a query row against keys j0 .. j0 + LANES - 1: sum_d qs[d] * kT[d, j0 ..], qs the query
   row already multiplied by the scale. */
INLINE vec scores(const float *qs, const float *kT, int64_t Tp, int j0, const int hs) {
    vec s = {};
    for (int d = 0; d < hs; d++) s += qs[d] * vloadu(kT + d * Tp + j0);
    return s;
}

/* out[r][d] = sum_j w[r, j] xT[d, j] over keys j < n, for ROWS rows of weights w (ROWS, Tp) and the
   transposed keys or values xT (hs, Tp): y = P V in the forward pass, dq = dS K in the backward pass.
   CHUNK head-size components at a time, so that the ROWS x CHUNK vectors of partial sums stay in
   registers whatever the head size (all hs of them at once spill at hs >= 16). */
INLINE void weighted_sums(float out[ROWS][MAX_HS], const float *w, const float *xT, int Tp, int n, const int hs) {
    for (int dc = 0; dc < hs; dc += CHUNK) {
        const int width = hs - dc < CHUNK ? hs - dc : CHUNK;
        vec acc[ROWS][CHUNK] = {};
        for (int j0 = 0; j0 < n; j0 += LANES) {
            vec wr[ROWS];
            UNROLL
            for (int r = 0; r < ROWS; r++) wr[r] = vloadu(w + r * Tp + j0);
            UNROLL
            for (int d = 0; d < width; d++) {
                const vec xd = vloadu(xT + (dc + d) * Tp + j0);
                UNROLL
                for (int r = 0; r < ROWS; r++) acc[r][d] += wr[r] * xd;
            }
        }
        UNROLL
        for (int r = 0; r < ROWS; r++)
            UNROLL
            for (int d = 0; d < width; d++) out[r][dc + d] = vsum(acc[r][d]);
    }
}

/* The same sums from x in its own layout (rows j at x + j * xs, hs contiguous floats), for head sizes that are
   whole vectors (16, 32): each weight w[r, j] is broadcast and multiplies x's row j, hs / LANES vectors, into
   accumulators over the head size, so no sum across lanes is left at the end. weighted_sums reduces ROWS x hs
   vectors across their lanes per call, which at a few hundred keys per row cost about as much as the products
   (gpt-micro's attention, one thread, CPU time: forward 7.2-8.1 -> 6.1-6.7 ms). Keys j < n, n at most the rows
   of x. */
INLINE void weighted_rows(float out[ROWS][MAX_HS], const float *w, int Tp, const float *x, int64_t xs, int n,
                          const int hs) {
    vec acc[ROWS][MAX_HS / LANES] = {};
    for (int j = 0; j < n; j++) {
        const float *xj = x + j * xs;
        UNROLL
        for (int c = 0; c < hs / LANES; c++) {
            const vec xc = vloadu(xj + c * LANES);
            UNROLL
            for (int r = 0; r < ROWS; r++) acc[r][c] += w[r * Tp + j] * xc;
        }
    }
    UNROLL
    for (int r = 0; r < ROWS; r++)
        UNROLL
        for (int c = 0; c < hs / LANES; c++) vstoreu(out[r] + c * LANES, acc[r][c]);
}

/* One (batch row b, query head h): y and lse of every row, ROWS rows at a time (each key vector loaded
   serves ROWS rows). srow is scratch for ROWS rows of scores (ROWS, Tp), kT and vT for the transposed
   keys and values (hs, Tp). hs is a compile-time constant at the call sites in attention_forward, so
   the loops over it unroll and the accumulators stay in registers. */
INLINE void forward_head(const Shape *a, float *y, float *lse, int b, int h, float *kT, float *vT, float *srow,
                         const int hs) {
    const int T = a->T, Tp = (T + LANES - 1) / LANES * LANES, kvh = h / (a->H / a->KV);
    const float *v = a->v + b * a->vb + (int64_t)kvh * hs;
    transpose_in(kT, a->k + b * a->kb + (int64_t)kvh * hs, a->kt, T, Tp, hs);
    if (hs % LANES) transpose_in(vT, v, a->vt, T, Tp, hs);
    for (int i0 = 0; i0 < T; i0 += ROWS) {
        /* row i0 + r, or -1 past the end (a row that sees no key and is not written) */
        int rows[ROWS];
        float qs[ROWS][MAX_HS];
        UNROLL
        for (int r = 0; r < ROWS; r++) {
            rows[r] = i0 + r < T ? i0 + r : -1;
            const float *qi = a->q + b * a->qb + (rows[r] < 0 ? i0 : rows[r]) * a->qt + (int64_t)h * hs;
            UNROLL
            for (int d = 0; d < hs; d++) qs[r][d] = qi[d] * a->scale;
        }
        const int last = i0 + ROWS - 1 < T ? i0 + ROWS - 1 : T - 1;
        const int n = last / LANES * LANES + LANES;  /* keys 0..last, rounded up to whole vectors */
        /* pass 1: scores, keys after the row at -inf (they do not exist for it), and their maximum */
        vec top[ROWS];
        UNROLL
        for (int r = 0; r < ROWS; r++) top[r] = vsplat(-INFINITY);
        for (int j0 = 0; j0 < n; j0 += LANES) {
            vec s[ROWS] = {};
            UNROLL
            for (int d = 0; d < hs; d++) {
                const vec kd = vloadu(kT + d * Tp + j0);
                UNROLL
                for (int r = 0; r < ROWS; r++) s[r] += qs[r][d] * kd;
            }
            UNROLL
            for (int r = 0; r < ROWS; r++) {
                s[r] = vselect(causal(j0, rows[r]), s[r], vsplat(-INFINITY));
                vstoreu(srow + r * Tp + j0, s[r]);
                top[r] = vselect(s[r] > top[r], s[r], top[r]);
            }
        }
        float m[ROWS];
        UNROLL
        for (int r = 0; r < ROWS; r++) m[r] = vmaxall(top[r]);
        /* pass 2: p = exp(s - m) in place of s, zero at the masked keys, and their sum l */
        float l[ROWS];
        UNROLL
        for (int r = 0; r < ROWS; r++) {
            vec sum = {};
            for (int j0 = 0; j0 < n; j0 += LANES) {
                const vec p = vselect(causal(j0, rows[r]), exp_neg(vloadu(srow + r * Tp + j0) - m[r]), (vec){});
                vstoreu(srow + r * Tp + j0, p);
                sum += p;
            }
            l[r] = vsum(sum);
        }
        /* y = sum_j p_j v_j / l */
        float o[ROWS][MAX_HS];
        if (hs % LANES) weighted_sums(o, srow, vT, Tp, n, hs);
        else weighted_rows(o, srow, Tp, v, a->vt, last + 1, hs);
        for (int r = 0; r < ROWS && rows[r] >= 0; r++) {
            float *yi = y + (((int64_t)b * T + rows[r]) * a->H + h) * hs;
            UNROLL
            for (int d = 0; d < hs; d++) yi[d] = o[r][d] / l[r];
            lse[((int64_t)b * a->H + h) * T + rows[r]] = m[r] + logf(l[r]);
        }
    }
}

/* y (B, T, H, hs) and lse (B, H, T) of causal attention; 0, or 1 when out of memory. */
int attention_forward(float *y, float *lse, const float *q, const float *k, const float *v, int64_t qb,
                      int64_t qt, int64_t kb, int64_t kt, int64_t vb, int64_t vt, int B, int T, int H, int KV,
                      int hs, float scale, int threads) {
    const Shape a = {q, k, v, qb, qt, kb, kt, vb, vt, B, T, H, KV, hs, scale};
    const int64_t Tp = (T + LANES - 1) / LANES * LANES;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|: failed)
    {
        float *buf = aligned_alloc(64, (2 * hs + ROWS) * Tp * sizeof(float));
        failed = buf == NULL;
        #pragma omp for schedule(dynamic)
        for (int bh = 0; bh < B * H; bh++) {
            if (buf == NULL) continue;
            float *kT = buf, *vT = buf + hs * Tp, *srow = buf + 2 * hs * Tp;
            switch (hs) {  /* the common head sizes get their own unrolled copy */
            case 8: forward_head(&a, y, lse, bh / H, bh % H, kT, vT, srow, 8); break;
            case 16: forward_head(&a, y, lse, bh / H, bh % H, kT, vT, srow, 16); break;
            case 32: forward_head(&a, y, lse, bh / H, bh % H, kT, vT, srow, 32); break;
            default: forward_head(&a, y, lse, bh / H, bh % H, kT, vT, srow, hs);
            }
        }
        free(buf);
    }
    return failed;
}

/* One (batch row b, kv head kvh): dq of its G query heads, dk and dv of the kv head, ROWS query rows at a
   time (each key vector loaded, and each dk/dv vector updated, serves ROWS rows). Scratch: kT, vT, and
   the gradients dkT, dvT, each (hs, Tp). */
INLINE void backward_head(const Shape *a, const float *dy, const float *y, const float *lse, float *dq,
                          float *dk, float *dv, int b, int kvh, float *kT, float *vT, float *dkT, float *dvT,
                          float *dsrow, const int hs) {
    const int T = a->T, Tp = (T + LANES - 1) / LANES * LANES, G = a->H / a->KV;
    transpose_in(kT, a->k + b * a->kb + (int64_t)kvh * hs, a->kt, T, Tp, hs);
    transpose_in(vT, a->v + b * a->vb + (int64_t)kvh * hs, a->vt, T, Tp, hs);
    memset(dkT, 0, (size_t)hs * Tp * sizeof(float));
    memset(dvT, 0, (size_t)hs * Tp * sizeof(float));
    for (int h = kvh * G; h < (kvh + 1) * G; h++) {
        for (int i0 = 0; i0 < T; i0 += ROWS) {
            /* per row: its index (-1 past the end: it sees no key, so it adds nothing), the query times the
               scale, dy, lse and D = dy . y */
            int rows[ROWS];
            float qs[ROWS][MAX_HS], dyr[ROWS][MAX_HS], L[ROWS], D[ROWS];
            UNROLL
            for (int r = 0; r < ROWS; r++) {
                const int i = i0 + r < T ? i0 + r : i0;
                rows[r] = i0 + r < T ? i : -1;
                const int64_t row = (((int64_t)b * T + i) * a->H + h) * hs;  /* of y, dy */
                const float *qi = a->q + b * a->qb + i * a->qt + (int64_t)h * hs;
                L[r] = lse[((int64_t)b * a->H + h) * T + i];
                D[r] = 0.0f;
                UNROLL
                for (int d = 0; d < hs; d++) {
                    qs[r][d] = qi[d] * a->scale;
                    dyr[r][d] = dy[row + d];
                    D[r] += dyr[r][d] * y[row + d];
                }
            }
            const int last = i0 + ROWS - 1 < T ? i0 + ROWS - 1 : T - 1;
            const int n = last / LANES * LANES + LANES;
            for (int j0 = 0; j0 < n; j0 += LANES) {
                vec s[ROWS] = {}, dp[ROWS] = {}, p[ROWS], ds[ROWS];
                UNROLL
                for (int d = 0; d < hs; d++) {
                    const vec kd = vloadu(kT + d * Tp + j0), vd = vloadu(vT + d * Tp + j0);
                    UNROLL
                    for (int r = 0; r < ROWS; r++) {
                        s[r] += qs[r][d] * kd;
                        dp[r] += dyr[r][d] * vd;
                    }
                }
                UNROLL
                for (int r = 0; r < ROWS; r++) {
                    p[r] = vselect(causal(j0, rows[r]), exp_neg(s[r] - L[r]), (vec){});
                    ds[r] = p[r] * (dp[r] - D[r]);
                    vstoreu(dsrow + r * Tp + j0, ds[r]);  /* for dq below */
                }
                UNROLL
                for (int d = 0; d < hs; d++) {
                    float *dvd = dvT + d * Tp + j0, *dkd = dkT + d * Tp + j0;
                    vec gv = vloadu(dvd), gk = vloadu(dkd);
                    UNROLL
                    for (int r = 0; r < ROWS; r++) {
                        gv += p[r] * dyr[r][d];
                        gk += ds[r] * qs[r][d];  /* the scale rides on qs */
                    }
                    vstoreu(dvd, gv);
                    vstoreu(dkd, gk);
                }
            }
            float g[ROWS][MAX_HS];  /* dq = scale * sum_j ds_j k_j */
            if (hs % LANES) weighted_sums(g, dsrow, kT, Tp, n, hs);
            else weighted_rows(g, dsrow, Tp, a->k + b * a->kb + (int64_t)kvh * hs, a->kt, last + 1, hs);
            for (int r = 0; r < ROWS && rows[r] >= 0; r++) {
                float *dqi = dq + (((int64_t)b * T + rows[r]) * a->H + h) * hs;
                UNROLL
                for (int d = 0; d < hs; d++) dqi[d] = g[r][d] * a->scale;
            }
        }
    }
    for (int j = 0; j < T; j++) {  /* back to (B, T, KV, hs) */
        const int64_t row = (((int64_t)b * T + j) * a->KV + kvh) * hs;
        UNROLL
        for (int d = 0; d < hs; d++) {
            dk[row + d] = dkT[(int64_t)d * Tp + j];
            dv[row + d] = dvT[(int64_t)d * Tp + j];
        }
    }
}

/* dq (B, T, H, hs), dk and dv (B, T, KV, hs) from dy = dL/dy (contiguous, as y) and the forward pass's
   y and lse; 0, or 1 when out of memory. */
int attention_backward(float *dq, float *dk, float *dv, const float *dy, const float *y, const float *lse,
                       const float *q, const float *k, const float *v, int64_t qb, int64_t qt, int64_t kb,
                       int64_t kt, int64_t vb, int64_t vt, int B, int T, int H, int KV, int hs, float scale,
                       int threads) {
    const Shape a = {q, k, v, qb, qt, kb, kt, vb, vt, B, T, H, KV, hs, scale};
    const int64_t Tp = (T + LANES - 1) / LANES * LANES;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|: failed)
    {
        float *buf = aligned_alloc(64, (4 * hs + ROWS) * Tp * sizeof(float));
        failed = buf == NULL;
        #pragma omp for schedule(dynamic)
        for (int bk = 0; bk < B * KV; bk++) {
            if (buf == NULL) continue;
            float *kT = buf, *vT = buf + hs * Tp, *dkT = buf + 2 * hs * Tp, *dvT = buf + 3 * hs * Tp;
            float *dsrow = buf + 4 * hs * Tp;
            const int b = bk / KV, kvh = bk % KV;
            switch (hs) {
            case 8: backward_head(&a, dy, y, lse, dq, dk, dv, b, kvh, kT, vT, dkT, dvT, dsrow, 8); break;
            case 16: backward_head(&a, dy, y, lse, dq, dk, dv, b, kvh, kT, vT, dkT, dvT, dsrow, 16); break;
            case 32: backward_head(&a, dy, y, lse, dq, dk, dv, b, kvh, kT, vT, dkT, dvT, dsrow, 32); break;
            default: backward_head(&a, dy, y, lse, dq, dk, dv, b, kvh, kT, vT, dkT, dvT, dsrow, hs);
            }
        }
        free(buf);
    }
    return failed;
}
