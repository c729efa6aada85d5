/* Matrix products of activations (float32, or rounded to int8: see "int8 activations" below) with
   quantized (or float32) weights, for decoding on a CPU.

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
#include <stdlib.h>
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
   (the block's weights stay in the L1 cache across the B rows). Output o of row b lands at y[b * m + o].

   Each product's loop over blocks is an OpenMP work-sharing loop (rows_*), not a parallel region of its
   own: the matmul_* functions open a region around one, and the decode step (decode.c) calls them all
   inside the one region of its token, so that a token's threads start once, not once per product. */

/* where a product's outputs go: y (B, m), plus bias (m) where not NULL, added to what y holds where
   `add` (a residual: y + (x W^T + bias), the order NumPy's y = x @ W.T; y += b; r = r + y takes) */
typedef struct { float *y; const float *bias; int add; } dest;

INLINE void store(dest d, int b, int m, int o, const float *out, int R) {
    float *y = d.y + (int64_t)b * m + o;
    for (int r = 0; r < R; r++) {
        float v = d.bias ? out[r] + d.bias[o + r] : out[r];
        y[r] = d.add ? y[r] + v : v;
    }
}

static void rows_q8(dest d, const float *x, const int8_t *q, const float *scale, int B, int n, int m, int group) {
    int groups = n / group;
    #pragma omp for schedule(static)
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
            store(d, b, m, o, out, R);
        }
    }
}

void matmul_q8(float *y, const float *x, const int8_t *q, const float *scale,
               int B, int n, int m, int group, int threads) {
    dest d = {y, 0, 0};
    #pragma omp parallel num_threads(threads)
    rows_q8(d, x, q, scale, B, n, m, group);
}

/* xsum (B, n / group): each group's sum of x (group_sums), read where there are mins or an offset */
static void rows_q4(dest d, const float *x, const uint8_t *q, const float *scale, const float *mins,
                    const float *lut, float offset, const float *xsum, int B, int n, int m, int group) {
    int groups = n / group;
    int shifted = mins || offset != 0.0f;
    #pragma omp for schedule(static)
    for (int o = 0; o < m; o += ROWS) {
        float out[ROWS];
        int R = m - o < ROWS ? m - o : ROWS;
        const uint8_t *qo = q + (int64_t)o * (n / 2);
        const float *so = scale + (int64_t)o * groups;
        for (int b = 0; b < B; b++) {
            if (R == ROWS) block_q4(out, qo, so, lut, x + (int64_t)b * n, n, group, ROWS);
            else for (int r = 0; r < R; r++) block_q4(out + r, qo + (int64_t)r * (n / 2), so + r * groups, lut, x + (int64_t)b * n, n, group, 1);
            if (shifted)
                for (int r = 0; r < R; r++)
                    out[r] += offset_sum(mins ? mins + (int64_t)(o + r) * groups : 0, offset, so + r * groups, xsum + b * groups, groups);
            store(d, b, m, o, out, R);
        }
    }
}

/* xsum: scratch of B * n / group floats (used with mins or an offset) */
void matmul_q4(float *y, const float *x, const uint8_t *q, const float *scale, const float *mins,
               const float *lut, float offset, float *xsum, int B, int n, int m, int group, int threads) {
    dest d = {y, 0, 0};
    if (mins || offset != 0.0f) group_sums(xsum, x, B, n, group);
    #pragma omp parallel num_threads(threads)
    rows_q4(d, x, q, scale, mins, lut, offset, xsum, B, n, m, group);
}

static void rows_f32(dest d, const float *x, const float *w, int B, int n, int m) {
    #pragma omp for schedule(static)
    for (int o = 0; o < m; o += ROWS) {
        float out[ROWS];
        int R = m - o < ROWS ? m - o : ROWS;
        const float *wo = w + (int64_t)o * n;
        for (int b = 0; b < B; b++) {
            const float *xb = x + (int64_t)b * n;
            if (n % VLEN) for (int r = 0; r < R; r++) out[r] = row_plain_f32(wo + (int64_t)r * n, xb, n);
            else if (R == ROWS) block_f32(out, wo, xb, n, ROWS);
            else for (int r = 0; r < R; r++) block_f32(out + r, wo + (int64_t)r * n, xb, n, 1);
            store(d, b, m, o, out, R);
        }
    }
}

/* float32 weights w (m, n): the output head kept in float, and float checkpoints' layers */
void matmul_f32(float *y, const float *x, const float *w, int B, int n, int m, int threads) {
    dest d = {y, 0, 0};
    #pragma omp parallel num_threads(threads)
    rows_f32(d, x, w, B, n, m);
}

/* ---- int8 activations, as llama.cpp multiplies q8_0/q4_0: x is rounded to int8 in blocks of 32
   (xd = max |x| / 127 per block, as GGUF's Q8_0), once per call, and each block's dot product with
   a weight block is exact, in int32:
       y[o] = sum over blocks b of  scale[o, b * 32 / group] * xd[b] * dot(weights of block b, xq of block b)
   (+ the mins' share for int4). No longer the float product with the dequantized weights: the
   activations' rounding adds an error of about 0.5/127 of each block's largest value.

   The byte products (VNNI's vpdpbusd: 64 products summed in fours into 16 int32 lanes, added to an
   accumulator; AVX2's vpmaddubsw + vpmaddwd) take one unsigned and one signed operand, so the weights
   are made the unsigned side u = v - k, with k a constant:
     4-bit: u = the nibble (0..15), k = q4_0's offset -8 (or 0 for int4, whose mins are added per group);
     8-bit: u = q + 128, which is q with its top bit flipped (one xor), k = -128.
   The constant comes back through the activations: sum (u + k) x = sum u x + k sum x, so each int32
   lane starts from k times the sum of its own 4 activations (`corr`, worked out once per call) and
   nothing is added per weight. Where vpmaddubsw stands in for VNNI, its int16 pair sums would
   saturate at 2 * 255 * 127, so 8-bit weights take |q| and x with q's sign there instead (k = 0).

   Speed: a block of A8_ROWS weight rows shares each activation vector loaded, and the scales are
   applied per lane in float: each lane's int32 sum times (its block's weight scale x its block's
   xd), the xd lanes laid out once per call (xdv). The lanes are summed once per row, at the end.
   On one core of this Xeon (AVX-512 VNNI), 768 x 2048 in the L2 cache, weight bytes per second:
   8-bit 13.9 GB/s with float32 activations (matmul_q8), 27.9 here; q4_0 7.5 and 24.4. */

#if defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
/* one zmm holds 64 activations: two blocks per step. A 4-bit step's 32 packed bytes (blocks b, c)
   are loaded into both halves; the lower half keeps the low nibbles, the upper half the high ones, left
   in place (byte & 0xF0 = 16 x the nibble, one `and` instead of a shift and an `and`): elements b 0-15,
   c 0-15, b 16-31, c 16-31 -- so x is laid out that way (a8_element) and no shuffle runs per row. The
   upper lanes' factor 16 is taken out through their corr (x 16) and xdv (/ 16, exact: a power of 2),
   a8_lane_shift. A last step with a single block loads half (masked: the padding multiplies zero
   activations). */
#define STEP 2  /* blocks per step */
#define LANE 4  /* activation bytes summed in one int32 lane */
#define Q8_K (-128)
typedef __m512i vbytes;
typedef __m512i vint;
typedef __m512 vacc;
INLINE vbytes a8_load(const int8_t *x) { return _mm512_loadu_si512(x); }
INLINE vint a8_corr(const int32_t *c) { return _mm512_loadu_si512(c); }
INLINE vacc a8_xd(const float *xdv) { return _mm512_loadu_ps(xdv); }
INLINE vacc a8_zero(void) { return _mm512_setzero_ps(); }
INLINE float a8_total(vacc v) { return _mm512_reduce_add_ps(v); }
INLINE vint a8_dot8(const int8_t *q, vbytes x, vint corr, int whole) {
    __m512i w = whole ? _mm512_loadu_si512(q) : _mm512_maskz_loadu_epi8(0xFFFFFFFFull, q);
    return _mm512_dpbusd_epi32(corr, _mm512_xor_si512(w, _mm512_set1_epi8(-128)), x);
}
INLINE vint a8_dot4(const uint8_t *q, vbytes x, vint corr, int whole) {
    __m256i p = whole ? _mm256_loadu_si256((const __m256i *)q) : _mm256_maskz_loadu_epi8(0xFFFF, q);
    __m512i nibbles = _mm512_inserti64x4(_mm512_set1_epi8(0x0F), _mm256_set1_epi8((char)0xF0), 1);
    return _mm512_dpbusd_epi32(corr, _mm512_and_si512(_mm512_broadcast_i64x4(p), nibbles), x);
}
/* the weight scales of step t's blocks, per lane: lanes 0-7 block b, 8-15 block c (8-bit); lanes
   0-3 and 8-11 b, 4-7 and 12-15 c (4-bit). Groups of 64 or more (or one group per row) hold both. */
INLINE vacc a8_scales(const float *s, int t, int group, int bits, int whole) {
    if (group != 32 || !whole) return _mm512_set1_ps(s[t * STEP * 32 / group]);
    __m512i lanes = bits == 8 ? _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
                              : _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
    __m128 two = _mm_castpd_ps(_mm_load_sd((const double *)(s + t * STEP)));
    return _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(two));
}
INLINE vacc a8_fma(vint d, vacc scales, vacc xd, vacc acc) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(scales, xd), acc);
}
/* round 16 values v (already divided by the block's scale) half away from zero, as roundf: the
   whole part, plus one where the rest is at least a half (v - trunc(v) is exact), with v's sign */
INLINE __m128i round16(__m512 v) {
    __m512 a = _mm512_abs_ps(v), whole = _mm512_roundscale_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(a, whole), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512 r = _mm512_mask_add_ps(whole, up, whole, _mm512_set1_ps(1.0f));
    r = _mm512_or_ps(r, _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));
    return _mm512_cvtsepi32_epi8(_mm512_cvttps_epi32(r));
}
/* one block of 32 activations x rounded into q; returns its scale */
INLINE float a8_round_block(int8_t *q, const float *x) {
    __m512 lo = _mm512_loadu_ps(x), hi = _mm512_loadu_ps(x + 16);
    float d = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi))) / 127.0f;
    __m512 id = _mm512_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
    _mm_storeu_si128((__m128i *)q, round16(_mm512_mul_ps(lo, id)));
    _mm_storeu_si128((__m128i *)(q + 16), round16(_mm512_mul_ps(hi, id)));
    return d;
}
/* which element of the row sits at position p of the vectors (see above; n or more: padding) */
/* log2 of the factor lane j's products carry (4: the high nibbles, kept in place) */
INLINE int a8_lane_shift(int j, int bits) { return bits == 4 && j % 16 >= 8 ? 4 : 0; }
INLINE int a8_element(int p, int bits) {
    if (bits == 8) return p;
    int e = p % 64;  /* 16 of b, 16 of c, 16 of b, 16 of c */
    return p - e + e / 16 % 2 * 32 + e / 32 * 16 + e % 16;
}
#elif defined(__AVX2__) && defined(__FMA__)
/* one ymm holds a block of 32 activations, in order (a 4-bit block's low nibbles, then its high) */
#define STEP 1
#define LANE 4
typedef __m256i vbytes;
typedef __m256i vint;
typedef __m256 vacc;
INLINE vbytes a8_load(const int8_t *x) { return _mm256_loadu_si256((const __m256i *)x); }
INLINE vint a8_corr(const int32_t *c) { return _mm256_loadu_si256((const __m256i *)c); }
INLINE vacc a8_xd(const float *xdv) { return _mm256_loadu_ps(xdv); }
INLINE vacc a8_zero(void) { return _mm256_setzero_ps(); }
INLINE float a8_total(vacc v) { return hsum(v); }
#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
#define Q8_K (-128)
INLINE vint a8_dpbusd(vint acc, __m256i u, __m256i s) {
#ifdef __AVXVNNI__
    return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
    return _mm256_dpbusd_epi32(acc, u, s);
#endif
}
INLINE vint a8_dot8(const int8_t *q, vbytes x, vint corr, int whole) {
    (void)whole;
    __m256i w = _mm256_loadu_si256((const __m256i *)q);
    return a8_dpbusd(corr, _mm256_xor_si256(w, _mm256_set1_epi8(-128)), x);
}
#else  /* pairs of products as int16 (at most 2 * 128 * 127 with the sign trick: no saturation), then
         sums of pairs */
#define Q8_K 0
INLINE vint a8_dpbusd(vint acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
INLINE vint a8_dot8(const int8_t *q, vbytes x, vint corr, int whole) {
    (void)whole;
    __m256i w = _mm256_loadu_si256((const __m256i *)q);
    return a8_dpbusd(corr, _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}
#endif
INLINE vint a8_dot4(const uint8_t *q, vbytes x, vint corr, int whole) {
    (void)whole;
    __m128i p = _mm_loadu_si128((const __m128i *)q), low4 = _mm_set1_epi8(15);
    __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(p, 4), low4), _mm_and_si128(p, low4));
    return a8_dpbusd(corr, u, x);
}
INLINE vacc a8_scales(const float *s, int t, int group, int bits, int whole) {
    (void)bits, (void)whole;
    return _mm256_set1_ps(s[t * 32 / group]);
}
INLINE vacc a8_fma(vint d, vacc scales, vacc xd, vacc acc) {
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(scales, xd), acc);
}
INLINE int a8_lane_shift(int j, int bits) { (void)j, (void)bits; return 0; }
INLINE int a8_element(int p, int bits) { (void)bits; return p; }
/* as round16 above, 8 values, as int32 */
INLINE __m256i round8(__m256 v) {
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
    __m256 whole = _mm256_round_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 up = _mm256_cmp_ps(_mm256_sub_ps(a, whole), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 r = _mm256_add_ps(whole, _mm256_and_ps(up, _mm256_set1_ps(1.0f)));
    return _mm256_cvttps_epi32(_mm256_or_ps(r, _mm256_and_ps(v, _mm256_set1_ps(-0.0f))));
}
INLINE float a8_round_block(int8_t *q, const float *x) {
    __m256 v[4], amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v[i]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    float d = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m))) / 127.0f;
    __m256 id = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
    __m256i r[4];
    for (int i = 0; i < 4; i++) r[i] = round8(_mm256_mul_ps(v[i], id));
    /* int32 -> int8: the packs work within 128-bit halves; the last step puts the 4-byte runs in order */
    __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, bytes);
    return d;
}
#else
/* plain C: a "lane" is a whole block */
#define STEP 1
#define LANE 32
#define Q8_K 0
typedef const int8_t *vbytes;
typedef int32_t vint;
typedef float vacc;
INLINE vbytes a8_load(const int8_t *x) { return x; }
INLINE vint a8_corr(const int32_t *c) { return *c; }
INLINE vacc a8_xd(const float *xdv) { return *xdv; }
INLINE vacc a8_zero(void) { return 0.0f; }
INLINE float a8_total(vacc v) { return v; }
INLINE vint a8_dot8(const int8_t *q, vbytes x, vint corr, int whole) {
    (void)whole;
    for (int j = 0; j < 32; j++) corr += q[j] * x[j];
    return corr;
}
INLINE vint a8_dot4(const uint8_t *q, vbytes x, vint corr, int whole) {
    (void)whole;
    for (int j = 0; j < 16; j++) corr += (q[j] & 15) * x[j] + (q[j] >> 4) * x[j + 16];
    return corr;
}
INLINE vacc a8_scales(const float *s, int t, int group, int bits, int whole) {
    (void)bits, (void)whole;
    return s[t * 32 / group];
}
INLINE vacc a8_fma(vint d, vacc scales, vacc xd, vacc acc) { return (float)d * (scales * xd) + acc; }
INLINE int a8_lane_shift(int j, int bits) { (void)j, (void)bits; return 0; }
INLINE int a8_element(int p, int bits) { (void)bits; return p; }
INLINE float a8_round_block(int8_t *q, const float *x) {
    float amax = 0.0f;
    for (int i = 0; i < 32; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < 32; i++) q[i] = (int8_t)roundf(x[i] * id);
    return d;
}
#endif

#define STEP_BYTES (32 * STEP)  /* activations per step */
#define A8_ROWS 4  /* weight rows per block (8 measured no faster) */
/* Rows are read A8_AHEAD rows ahead into the cache (prefetch), where the hardware's own prefetching
   fell short: without it a large 8-bit matrix read from the L3 cache or memory streamed at 10.6 GB/s
   on one core of this Xeon, with it 16.6 (4-bit 18.2 -> 22.8); an fp32 matrix already streams at 22-24. */
#define A8_AHEAD 16

/* xq (n) int8, xd (n / 32) float: x's blocks of 32 rounded as GGUF's Q8_0 (without fp16 scales),
   halves away from zero as roundf */
void quantize_act(int8_t *xq, float *xd, const float *x, int n) {
    for (int b = 0; b < n; b += 32) xd[b / 32] = a8_round_block(xq + b, x + b);
}

/* One activation row as the kernel reads it, padded to whole steps (npad values; zeros past n). */
typedef struct {
    int8_t *x;     /* npad values: element a8_element(p) at p */
    int32_t *corr; /* npad / LANE: k times each lane's sum of x (times 2^a8_lane_shift) */
    float *xdv;    /* npad / LANE: each lane's block scale xd (over 2^a8_lane_shift) */
} act_row;

/* x (n floats) -> a: rounded, laid out for `bits`-bit weights with constant k; xq, xd: scratch of n and
   n / 32; xsum (n / group): each group's sum of the rounded activations (for int4's mins) */
INLINE void prepare_act(act_row a, int8_t *xq, float *xd, float *xsum, const float *x, int n, int npad,
                        int bits, int k, int group) {
    quantize_act(xq, xd, x, n);
    for (int p = 0; p < npad; p += 16) {  /* the layouts move runs of 16 */
        int e = a8_element(p, bits);
        if (e < n) memcpy(a.x + p, xq + e, 16);
        else memset(a.x + p, 0, 16);
    }
    for (int j = 0; j < npad / LANE; j++) {
        int e = a8_element(j * LANE, bits), t = 0;
        for (int i = j * LANE; i < (j + 1) * LANE; i++) t += a.x[i];
        int shift = a8_lane_shift(j, bits);
        a.corr[j] = k * t * (1 << shift);
        a.xdv[j] = e < n ? ldexpf(xd[e / 32], -shift) : 0.0f;
    }
    for (int g = 0; g < n / group; g++) {
        float s = 0.0f;
        for (int b = g * group / 32; b < (g + 1) * group / 32; b++) {
            int t = 0;
            for (int i = b * 32; i < b * 32 + 32; i++) t += xq[i];
            s += xd[b] * (float)t;
        }
        xsum[g] = s;
    }
}

/* step t of R <= A8_ROWS rows (bits-bit weights q, rows of row_bytes; scales s, rows of `groups`) */
INLINE void step_a8(vacc *acc, const void *q, const float *s, act_row a, int t, int row_bytes, int groups,
                    int group, int bits, int whole, int R) {
    vbytes x = a8_load(a.x + t * STEP_BYTES);
    vint corr = a8_corr(a.corr + t * STEP_BYTES / LANE);
    vacc xd = a8_xd(a.xdv + t * STEP_BYTES / LANE);
    for (int r = 0; r < R; r++) {
        const uint8_t *qr = (const uint8_t *)q + (int64_t)r * row_bytes + t * STEP_BYTES * bits / 8;
        __builtin_prefetch(qr + (int64_t)A8_AHEAD * row_bytes);  /* see A8_AHEAD */
        vint d = bits == 8 ? a8_dot8((const int8_t *)qr, x, corr, whole) : a8_dot4(qr, x, corr, whole);
        acc[r] = a8_fma(d, a8_scales(s + r * groups, t, group, bits, whole), xd, acc[r]);
    }
}

/* R <= A8_ROWS rows times one prepared activation row: y[r] (without the mins' share) */
INLINE void block_a8(float *y, const void *q, const float *s, act_row a, int n, int group, int bits, int R) {
    int whole_steps = n / STEP_BYTES, row_bytes = n * bits / 8;
    vacc acc[A8_ROWS];
    for (int r = 0; r < R; r++) acc[r] = a8_zero();
    for (int t = 0; t < whole_steps; t++) step_a8(acc, q, s, a, t, row_bytes, n / group, group, bits, 1, R);
    if (n % STEP_BYTES) step_a8(acc, q, s, a, whole_steps, row_bytes, n / group, group, bits, 0, R);
    for (int r = 0; r < R; r++) y[r] = a8_total(acc[r]);
}

INLINE void rows_a8(float *out, const void *q, const float *s, act_row a, int n, int group, int bits, int R) {
    if (R == A8_ROWS) block_a8(out, q, s, a, n, group, bits, A8_ROWS);
    else for (int r = 0; r < R; r++)
        block_a8(out + r, (const uint8_t *)q + (int64_t)r * n * bits / 8, s + r * (n / group), a, n, group,
                 bits, 1);
}

/* bytes of one activation row's scratch for a8_row: x, corr and xdv (npad bytes each, whole vectors:
   64-byte aligned, so that no load splits a cache line), then xq and xd; rounded up to 64 bytes */
static size_t a8_row_bytes(int n) {
    int npad = (n + STEP_BYTES - 1) / STEP_BYTES * STEP_BYTES;
    return (3 * (size_t)npad + n + n / 32 * 4 + 63) / 64 * 64;
}

/* x (n floats) rounded and laid out for `bits`-bit weights with constant k in p (a8_row_bytes(n),
   64-byte aligned); xsum (n / group) */
static act_row a8_row(char *p, float *xsum, const float *x, int n, int group, int bits, int k) {
    int npad = (n + STEP_BYTES - 1) / STEP_BYTES * STEP_BYTES;
    act_row a = {(int8_t *)p, (int32_t *)(p + npad), (float *)(p + 2 * npad)};
    int8_t *xq = (int8_t *)(p + 3 * npad);
    float *xd = (float *)(p + 3 * npad + n);
    if (bits == 8) prepare_act(a, xq, xd, xsum, x, n, npad, 8, k, group);
    else prepare_act(a, xq, xd, xsum, x, n, npad, 4, k, group);
    return a;
}

/* the weights (q, bits-bit) times B prepared activation rows acts, with their xsum (B, n / group) */
static void rows_int8(dest d, const act_row *acts, const float *xsum, const void *q, const float *scale,
                      const float *mins, int B, int n, int m, int group, int bits) {
    int groups = n / group;
    #pragma omp for schedule(static)
    for (int o = 0; o < m; o += A8_ROWS) {
        float out[A8_ROWS];
        int R = m - o < A8_ROWS ? m - o : A8_ROWS;
        const uint8_t *qo = (const uint8_t *)q + (int64_t)o * n * bits / 8;
        const float *so = scale + (int64_t)o * groups;
        for (int b = 0; b < B; b++) {
            if (bits == 8) rows_a8(out, qo, so, acts[b], n, group, 8, R);
            else rows_a8(out, qo, so, acts[b], n, group, 4, R);
            if (mins)
                for (int r = 0; r < R; r++)
                    out[r] += offset_sum(mins + (int64_t)(o + r) * groups, 0.0f, so + r * groups, xsum + b * groups, groups);
            store(d, b, m, o, out, R);
        }
    }
}

/* y (B, m) = x (B, n, float32, rounded here) @ W^T for 8-bit (q8) or linear 4-bit (q4: v = nibble +
   offset, an integer) weights, scales (m, n / group), optional mins. n and group are multiples of 32;
   on AVX-512 a group other than 32 must be a multiple of 64 or n (a step's two blocks share a scale).
   Returns 0, or -1 without memory for the scratch. */
int matmul_a8(float *y, const float *x, const int8_t *q8, const uint8_t *q4, const float *scale,
              const float *mins, int offset, int B, int n, int m, int group, int threads) {
    int groups = n / group, bits = q8 ? 8 : 4, k = q8 ? Q8_K : offset;
    size_t per_row = a8_row_bytes(n), bytes = B * per_row + (size_t)B * groups * 4;
    char *scratch = aligned_alloc(64, (bytes + 63) / 64 * 64);  /* the rows' scratch, then their xsum */
    if (!scratch) return -1;
    act_row *acts = malloc(B * sizeof(act_row));
    if (!acts) { free(scratch); return -1; }
    float *xsum = (float *)(scratch + B * per_row);
    for (int b = 0; b < B; b++)
        acts[b] = a8_row(scratch + b * per_row, xsum + b * groups, x + (int64_t)b * n, n, group, bits, k);
    dest d = {y, 0, 0};
    const void *q = q8 ? (const void *)q8 : (const void *)q4;
    #pragma omp parallel num_threads(threads)
    rows_int8(d, acts, xsum, q, scale, mins, B, n, m, group, bits);
    free(acts);
    free(scratch);
    return 0;
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

/* y (hs) = sum over t < n of a[t] * v[t * hs ...]: the attention-weighted sum of n value rows. The sums
   stay in registers, VLEN values each, across all n rows (summing into y in memory instead makes each
   row wait for the previous row's store), in chunks of up to WSUM vectors of a row. */
#define WSUM 4
static void weighted_sum(float *y, const float *a, const float *v, int n, int hs) {
    int i = 0;
    while (i + VLEN <= hs) {
        int parts = (hs - i) / VLEN < WSUM ? (hs - i) / VLEN : WSUM;
        vf acc[WSUM];
        for (int j = 0; j < parts; j++) acc[j] = vzero();
        for (int t = 0; t < n; t++) {
            vf at = vset1(a[t]);
            for (int j = 0; j < parts; j++) acc[j] = vfma(at, vload(v + (int64_t)t * hs + i + j * VLEN), acc[j]);
        }
        for (int j = 0; j < parts; j++) memcpy(y + i + j * VLEN, &acc[j], sizeof(vf));
        i += parts * VLEN;
    }
    for (; i < hs; i++) {  /* what is left of a row that is not whole vectors */
        float s = 0.0f;
        for (int t = 0; t < n; t++) s += a[t] * v[(int64_t)t * hs + i];
        y[i] = s;
    }
}

/* Rows read this far ahead are asked for in advance (prefetch): a head's keys and values were written
   over earlier tokens and have since been pushed out of the core's caches by a token's worth of weights */
#define KV_AHEAD 8

/* y (H, hs) = softmax(q k^T * scale) v for each of the H query heads, q (H, hs); keys and values are
   one cache row, (KV, context, hs), of which the first n positions are read; query head h uses
   kv head h / (H / KV). scores: scratch of H * n floats. Heads are split over threads (a work-sharing
   loop, as the products'): each reads its own keys and values, so on a long prefix the heads' reads
   add up to as much as a small matrix.
   knew, vnew (KV, hs), where not NULL: the last position's keys and values, read there instead of from
   the cache (the decode step's threads attend before the cache row is written, without waiting for it) */
static void heads(float *y, const float *q, const float *k, const float *v, const float *knew, const float *vnew,
                  float *scores, int H, int KV, int context, int hs, int n, float scale) {
    #pragma omp for schedule(static)
    for (int h = 0; h < H; h++) {
        int g = h / (H / KV);  /* its kv head */
        const float *kh = k + (int64_t)g * context * hs, *vh = v + (int64_t)g * context * hs;
        int cached = knew ? n - 1 : n;  /* positions read from the cache */
        float *sh = scores + (int64_t)h * n, top = -INFINITY, total = 0.0f;
        for (int t = 0; t < n; t++) {
            const float *kt = t < cached ? kh + (int64_t)t * hs : knew + (int64_t)g * hs;
            for (int b = 0; b < hs * (int)sizeof(float); b += 64) {  /* this row's next keys and its values */
                __builtin_prefetch((const char *)(kt + KV_AHEAD * hs) + b);
                __builtin_prefetch((const char *)(vh + (int64_t)(t + KV_AHEAD) * hs) + b);
            }
            sh[t] = dot(q + (int64_t)h * hs, kt, hs) * scale;
            top = sh[t] > top ? sh[t] : top;
        }
        for (int t = 0; t < n; t++) total += sh[t] = expf(sh[t] - top);
        float *yh = y + (int64_t)h * hs, inv = 1.0f / total;
        for (int t = 0; t < n; t++) sh[t] *= inv;
        weighted_sum(yh, sh, vh, cached, hs);
        if (cached < n)  /* the new position's values */
            for (int i = 0; i < hs; i++) yh[i] += sh[cached] * vnew[(int64_t)g * hs + i];
    }
}

void attend_one(float *y, const float *q, const float *k, const float *v, float *scores, int H, int KV,
                int context, int hs, int n, float scale, int threads) {
    #pragma omp parallel num_threads(threads)
    heads(y, q, k, v, 0, 0, scores, H, KV, context, hs, n, scale);
}
