/* Matrix products of float32 activations with quantized (or float32) weights, for decoding on a CPU.

   y (B, m) = x (B, n) @ W^T, where W (m, n) is stored row by row in groups of `group` values:
     8-bit:  W[o, i] = scale[o, i / group] * q[o, i]                       (q int8)
     4-bit:  W[o, i] = scale[o, i / group] * (lut[nibble(o, i)] + offset) + mins[o, i / group]
     float:  W[o, i] as float32
   4-bit values are packed per 32 as GGUF's Q4_0: byte j of a 32-block holds element j in its low
   nibble and element j + 16 in its high nibble. `mins` may be NULL; `lut` NULL means lut[v] = v (a
   conversion instead of a table lookup: q4_0 passes its -8 in `offset`, int4 its offsets in `mins`).
   The offsets multiply each group's sum of activations (xsum), once per group, not per weight.

   Decoding one token reads every weight once, so the time should be the bytes read. Two things
   keep the arithmetic from being the limit instead: a block of ROWS weight rows is multiplied at
   once (each activation vector loaded feeds ROWS multiply-adds, and the ROWS running sums are
   independent, so the loop never waits on one add's latency), and the vectors are as wide as the
   compiler targets (-march=native): AVX-512, AVX2 + FMA, or one float in plain C. Blocks of rows
   are split over threads (OpenMP). Sums are float32, in a fixed order per build: results equal a
   float32 matmul with the dequantized weights up to float32 rounding. */

#include <stdint.h>
#include <math.h>
#include <string.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#define ROWS 4  /* weight rows per block: 4 independent sums hide the 4-cycle latency of an FMA */
#define INLINE static inline __attribute__((always_inline))

#ifdef __AVX2__
INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#endif

/* ---- vectors of VLEN floats: the few operations the kernels need, per instruction set.
   vf a vector, vi the same number of int32; nibbles(p, shift): the low (shift 0) or high (shift 4) 4 bits of bytes p[0..VLEN);
   table/lookup: a 16-entry float table held in registers, and its values at VLEN nibbles. */
#if defined(__AVX512F__)
#define VLEN 16
typedef __m512 vf;
typedef __m512i vi;
typedef __m512 vtable;
INLINE vf vzero(void) { return _mm512_setzero_ps(); }
INLINE vf vset1(float a) { return _mm512_set1_ps(a); }
INLINE vf vload(const float *p) { return _mm512_loadu_ps(p); }
INLINE vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
INLINE float vsum(vf v) { return _mm512_reduce_add_ps(v); }
INLINE vf load_i8(const int8_t *q) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q))); }
INLINE vi nibbles(const uint8_t *p, int shift) {
    vi b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    return shift ? _mm512_srli_epi32(b, 4) : _mm512_and_si512(b, _mm512_set1_epi32(15));
}
INLINE vf to_float(vi v) { return _mm512_cvtepi32_ps(v); }
INLINE vtable load_table(const float *lut) { return _mm512_loadu_ps(lut); }
INLINE vf lookup(vi v, vtable t) { return _mm512_permutexvar_ps(v, t); }
#elif defined(__AVX2__) && defined(__FMA__)
#define VLEN 8
typedef __m256 vf;
typedef __m256i vi;
typedef struct { __m256 lo, hi; } vtable;
INLINE vf vzero(void) { return _mm256_setzero_ps(); }
INLINE vf vset1(float a) { return _mm256_set1_ps(a); }
INLINE vf vload(const float *p) { return _mm256_loadu_ps(p); }
INLINE vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
INLINE float vsum(vf v) { return hsum(v); }
INLINE vf load_i8(const int8_t *q) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q))); }
INLINE vi nibbles(const uint8_t *p, int shift) {
    vi b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return shift ? _mm256_srli_epi32(b, 4) : _mm256_and_si256(b, _mm256_set1_epi32(15));
}
INLINE vf to_float(vi v) { return _mm256_cvtepi32_ps(v); }
INLINE vtable load_table(const float *lut) { vtable t = {_mm256_loadu_ps(lut), _mm256_loadu_ps(lut + 8)}; return t; }
INLINE vf lookup(vi v, vtable t) {  /* two 8-entry permutes, picked by bit 3 of each nibble */
    vf lo = _mm256_permutevar8x32_ps(t.lo, v), hi = _mm256_permutevar8x32_ps(t.hi, v);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(v, 28)));
}
#else
#define VLEN 1
typedef float vf;
typedef int vi;
typedef const float *vtable;
INLINE vf vzero(void) { return 0.0f; }
INLINE vf vset1(float a) { return a; }
INLINE vf vload(const float *p) { return *p; }
INLINE vf vfma(vf a, vf b, vf c) { return a * b + c; }
INLINE float vsum(vf v) { return v; }
INLINE vf load_i8(const int8_t *q) { return (float)*q; }
INLINE vi nibbles(const uint8_t *p, int shift) { return (*p >> shift) & 15; }
INLINE vf to_float(vi v) { return (float)v; }
INLINE vtable load_table(const float *lut) { return lut; }
INLINE vf lookup(vi v, vtable t) { return t[v]; }
#endif

/* ---- one block of R <= ROWS weight rows times one activation row x: y[r] for r < R.
   Each is inlined with R constant (ROWS, or 1 for the last rows), so the R sums live in registers. */

/* 8-bit rows q (R rows of n), scales s (R rows of n / group); group a multiple of VLEN */
INLINE void block_q8(float *y, const int8_t *q, const float *s, const float *x, int n, int group, int R) {
    vf total[ROWS], acc[ROWS];
    for (int r = 0; r < R; r++) total[r] = vzero();
    for (int g = 0; g < n; g += group) {
        for (int r = 0; r < R; r++) acc[r] = vzero();
        for (int i = g; i < g + group; i += VLEN) {
            vf xv = vload(x + i);
            for (int r = 0; r < R; r++) acc[r] = vfma(load_i8(q + (int64_t)r * n + i), xv, acc[r]);
        }
        for (int r = 0; r < R; r++) total[r] = vfma(vset1(s[r * (n / group) + g / group]), acc[r], total[r]);
    }
    for (int r = 0; r < R; r++) y[r] = vsum(total[r]);
}

/* 4-bit rows (R rows of n / 2 packed bytes), table lut (NULL: the nibble itself), scales s;
   group a multiple of 32. The offsets (mins) are added by the caller. */
INLINE void block_q4(float *y, const uint8_t *q, const float *s, const float *lut, const float *x,
                     int n, int group, int R) {
    vf total[ROWS], acc[ROWS];
    vtable t = load_table(lut ? lut : (const float *)x);  /* unused without a table */
    for (int r = 0; r < R; r++) total[r] = vzero();
    for (int g = 0; g < n; g += group) {
        for (int r = 0; r < R; r++) acc[r] = vzero();
        for (int b = g; b < g + group; b += 32)  /* one packed block: 16 bytes, 32 values */
            for (int e = 0; e < 32; e += VLEN) {  /* values e..e+VLEN of the block */
                vf xv = vload(x + b + e);
                for (int r = 0; r < R; r++) {
                    vi v = nibbles(q + (int64_t)r * (n / 2) + b / 2 + e % 16, e < 16 ? 0 : 4);
                    acc[r] = vfma(lut ? lookup(v, t) : to_float(v), xv, acc[r]);
                }
            }
        for (int r = 0; r < R; r++) total[r] = vfma(vset1(s[r * (n / group) + g / group]), acc[r], total[r]);
    }
    for (int r = 0; r < R; r++) y[r] = vsum(total[r]);
}

/* float32 rows w (R rows of n); n a multiple of VLEN */
INLINE void block_f32(float *y, const float *w, const float *x, int n, int R) {
    vf acc[ROWS];
    for (int r = 0; r < R; r++) acc[r] = vzero();
    for (int i = 0; i < n; i += VLEN) {
        vf xv = vload(x + i);
        for (int r = 0; r < R; r++) acc[r] = vfma(vload(w + (int64_t)r * n + i), xv, acc[r]);
    }
    for (int r = 0; r < R; r++) y[r] = vsum(acc[r]);
}

/* the offsets' share of one output: sum over groups of (mins[g] + offset * s[g]) * xsum[g] */
static float offset_sum(const float *mins, float offset, const float *s, const float *xsum, int groups) {
    float t = 0.0f;
    for (int g = 0; g < groups; g++) t += ((mins ? mins[g] : 0.0f) + offset * s[g]) * xsum[g];
    return t;
}

/* xsum (B, groups): each group's sum of x */
static void group_sums(float *xsum, const float *x, int B, int n, int group) {
    for (int b = 0; b < B; b++)
        for (int g = 0; g < n / group; g++) {
            float s = 0.0f;
            for (int i = 0; i < group; i++) s += x[(int64_t)b * n + g * group + i];
            xsum[b * (n / group) + g] = s;
        }
}

/* sum_i W[o, i] x[i] over one row in plain C, for rows that do not fit the vector loops */
static float row_plain_q8(const int8_t *q, const float *s, const float *x, int n, int group) {
    float total = 0.0f;
    for (int g = 0; g < n; g += group) {
        float acc = 0.0f;
        for (int i = g; i < g + group; i++) acc += (float)q[i] * x[i];
        total += s[g / group] * acc;
    }
    return total;
}

static float row_plain_f32(const float *w, const float *x, int n) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += w[i] * x[i];
    return acc;
}

/* ---- the products: blocks of ROWS rows split over threads, each block against every activation row
   (the block's weights stay in the L1 cache across the B rows). Output o of row b lands at y[b * m + o]. */

void matmul_q8(float *y, const float *x, const int8_t *q, const float *scale,
               int B, int n, int m, int group, int threads) {
    int groups = n / group;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int o = 0; o < m; o += ROWS) {
        float out[ROWS];
        int R = m - o < ROWS ? m - o : ROWS;
        const int8_t *qo = q + (int64_t)o * n;
        const float *so = scale + (int64_t)o * groups;
        for (int b = 0; b < B; b++) {
            const float *xb = x + (int64_t)b * n;
            if (group % VLEN) for (int r = 0; r < R; r++) out[r] = row_plain_q8(qo + (int64_t)r * n, so + r * groups, xb, n, group);
            else if (R == ROWS) block_q8(out, qo, so, xb, n, group, ROWS);
            else for (int r = 0; r < R; r++) block_q8(out + r, qo + (int64_t)r * n, so + r * groups, xb, n, group, 1);
            for (int r = 0; r < R; r++) y[(int64_t)b * m + o + r] = out[r];
        }
    }
}

/* xsum: scratch of B * n / group floats (used with mins or an offset) */
void matmul_q4(float *y, const float *x, const uint8_t *q, const float *scale, const float *mins,
               const float *lut, float offset, float *xsum, int B, int n, int m, int group, int threads) {
    int groups = n / group;
    int shifted = mins || offset != 0.0f;
    if (shifted) group_sums(xsum, x, B, n, group);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int o = 0; o < m; o += ROWS) {
        float out[ROWS];
        int R = m - o < ROWS ? m - o : ROWS;
        const uint8_t *qo = q + (int64_t)o * (n / 2);
        const float *so = scale + (int64_t)o * groups;
        for (int b = 0; b < B; b++) {
            if (R == ROWS) block_q4(out, qo, so, lut, x + (int64_t)b * n, n, group, ROWS);
            else for (int r = 0; r < R; r++) block_q4(out + r, qo + (int64_t)r * (n / 2), so + r * groups, lut, x + (int64_t)b * n, n, group, 1);
            for (int r = 0; r < R; r++) {
                if (shifted)
                    out[r] += offset_sum(mins ? mins + (int64_t)(o + r) * groups : 0, offset, so + r * groups, xsum + b * groups, groups);
                y[(int64_t)b * m + o + r] = out[r];
            }
        }
    }
}

/* float32 weights w (m, n): the output head kept in float, and float checkpoints' layers */
void matmul_f32(float *y, const float *x, const float *w, int B, int n, int m, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int o = 0; o < m; o += ROWS) {
        float out[ROWS];
        int R = m - o < ROWS ? m - o : ROWS;
        const float *wo = w + (int64_t)o * n;
        for (int b = 0; b < B; b++) {
            const float *xb = x + (int64_t)b * n;
            if (n % VLEN) for (int r = 0; r < R; r++) out[r] = row_plain_f32(wo + (int64_t)r * n, xb, n);
            else if (R == ROWS) block_f32(out, wo, xb, n, ROWS);
            else for (int r = 0; r < R; r++) block_f32(out + r, wo + (int64_t)r * n, xb, n, 1);
            for (int r = 0; r < R; r++) y[(int64_t)b * m + o + r] = out[r];
        }
    }
}

/* ---- int8 activations, as llama.cpp multiplies q8_0/q4_0: x is rounded to int8 in blocks of 32
   (xd = max |x| / 127 per block), and each block's dot product is integer (AVX2: 32 products a
   maddubs). Faster, but no longer the float product with the dequantized weights: the activations'
   rounding adds an error of about 0.5/127 of each block's largest value. */

/* xq (n) int8, xd (n / 32) float: x's blocks of 32 rounded as GGUF's Q8_0 (without fp16 scales) */
void quantize_act(int8_t *xq, float *xd, const float *x, int n) {
    for (int b = 0; b < n; b += 32) {
        float amax = 0.0f;
        for (int i = b; i < b + 32; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        for (int i = b; i < b + 32; i++) xq[i] = (int8_t)roundf(x[i] * id);
        xd[b / 32] = d;
    }
}

#ifdef __AVX2__
/* 8 int32 partial sums of the products of 32 weights (signed int8, or 4-bit unsigned from 16 packed
   bytes) with 32 int8 activations */
static inline __m256i dot32(const int8_t *q8, const uint8_t *q4, const int8_t *xq) {
    __m256i x = _mm256_loadu_si256((const __m256i *)xq), w;
    if (q8) {  /* the products take unsigned by signed bytes: move q's sign onto x */
        w = _mm256_loadu_si256((const __m256i *)q8);
        x = _mm256_sign_epi8(x, w);
        w = _mm256_sign_epi8(w, w);
    } else {
        __m128i bytes = _mm_loadu_si128((const __m128i *)q4), low4 = _mm_set1_epi8(15);
        w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(bytes, 4), low4), _mm_and_si128(bytes, low4));
    }
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)  /* VNNI: products and sums in one instruction */
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x);
#else  /* pairs of products as int16 (at most 2 * 127 * 127: no saturation), then sums of pairs */
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
#endif
}
#endif

/* one output of matmul_act8: row o's weights (q8 or q4), activation row xb with block scales db */
static float row_act8(const int8_t *q8, const uint8_t *q4, const int8_t *xb, const float *db, const float *s,
                      const float *mins, float offset, const float *xsum, int n, int group) {
    float total = 0.0f;
#ifdef __AVX2__
    __m256 vtotal = _mm256_setzero_ps();
    for (int g = 0; g < n; g += group) {
        __m256 acc = _mm256_setzero_ps();
        for (int k = g; k < g + group; k += 32) {
            __m256i d = q8 ? dot32(q8 + k, 0, xb + k) : dot32(0, q4 + k / 2, xb + k);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(db[k / 32]), acc);
        }
        vtotal = _mm256_fmadd_ps(_mm256_set1_ps(s[g / group]), acc, vtotal);
    }
    total = hsum(vtotal);
#else
    for (int g = 0; g < n; g += group) {
        float acc = 0.0f;
        for (int k = g; k < g + group; k += 32) {
            int d = 0;
            for (int j = 0; j < 32; j++)
                d += (q8 ? q8[k + j] : (j < 16 ? q4[k / 2 + j] & 15 : q4[k / 2 + j - 16] >> 4)) * xb[k + j];
            acc += db[k / 32] * (float)d;
        }
        total += s[g / group] * acc;
    }
#endif
    if (mins || offset != 0.0f) total += offset_sum(mins, offset, s, xsum, n / group);
    return total;
}

/* y (B, m) from activations quantized by quantize_act (xq (B, n), xd (B, n / 32)) and 8-bit (q8) or
   linear 4-bit (q4, lut[v] = v) weights; xsum: scratch of B * n / group floats (used with mins or an
   offset). group is a multiple of 32. */
void matmul_act8(float *y, const int8_t *xq, const float *xd, float *xsum, const int8_t *q8,
                 const uint8_t *q4, const float *scale, const float *mins, float offset, int B, int n, int m,
                 int group, int threads) {
    int groups = n / group, row_bytes = q8 ? n : n / 2;
    if (mins || offset != 0.0f)  /* each group's sum of the rounded activations, d * sum(xq) per block */
        for (int b = 0; b < B; b++)
            for (int g = 0; g < groups; g++) {
                float s = 0.0f;
                for (int k = g * group; k < (g + 1) * group; k += 32) {
                    int t = 0;
                    for (int j = 0; j < 32; j++) t += xq[(int64_t)b * n + k + j];
                    s += xd[(int64_t)b * (n / 32) + k / 32] * (float)t;
                }
                xsum[b * groups + g] = s;
            }
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int o = 0; o < m; o++)
        for (int b = 0; b < B; b++)
            y[(int64_t)b * m + o] = row_act8(q8 ? q8 + (int64_t)o * row_bytes : 0, q4 ? q4 + (int64_t)o * row_bytes : 0,
                                             xq + (int64_t)b * n, xd + (int64_t)b * (n / 32), scale + (int64_t)o * groups,
                                             mins ? mins + (int64_t)o * groups : 0, offset, xsum + b * groups, n, group);
}

/* ---- attention of one new token, for the NumPy runtime's decode steps: a dozen small NumPy calls
   per layer (scores, softmax, weighted sum) cost more than the arithmetic, which is small here. */

static float dot(const float *a, const float *b, int n) {
    vf acc = vzero();
    int i = 0;
    for (; i + VLEN <= n; i += VLEN) acc = vfma(vload(a + i), vload(b + i), acc);
    float s = vsum(acc);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y += a * x over n values (vectorised by the compiler) */
static void axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* y (H, hs) = softmax(q k^T * scale) v for each of the H query heads, q (H, hs); keys and values are
   one cache row, (KV, context, hs), of which the first n positions are read; query head h uses
   kv head h / (H / KV). scores: scratch of n floats. */
void attend_one(float *y, const float *q, const float *k, const float *v, float *scores, int H, int KV,
                int context, int hs, int n, float scale) {
    for (int h = 0; h < H; h++) {
        int64_t kv = (int64_t)(h / (H / KV)) * context * hs;
        float top = -INFINITY, total = 0.0f;
        for (int t = 0; t < n; t++) {
            scores[t] = dot(q + (int64_t)h * hs, k + kv + (int64_t)t * hs, hs) * scale;
            top = scores[t] > top ? scores[t] : top;
        }
        for (int t = 0; t < n; t++) total += scores[t] = expf(scores[t] - top);
        float *yh = y + (int64_t)h * hs;
        memset(yh, 0, hs * sizeof(float));
        for (int t = 0; t < n; t++) axpy(yh, scores[t] / total, v + kv + (int64_t)t * hs, hs);
    }
}
