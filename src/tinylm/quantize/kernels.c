/* Matrix products of float32 activations with quantized weights, for decoding on a CPU.

   y (B, m) = x (B, n) @ W^T, where W (m, n) is stored row by row in groups of `group` values:
     8-bit:  W[o, i] = scale[o, i / group] * q[o, i]                       (q int8)
     4-bit:  W[o, i] = scale[o, i / group] * lut[nibble(o, i)] + mins[o, i / group]
   4-bit values are packed per 32 as GGUF's Q4_0: byte j of a 32-block holds element j in its low
   nibble and element j + 16 in its high nibble. `mins` may be NULL; `lut` NULL means lut[v] = v (a
   conversion instead of a table lookup: q4_0 and int4 pass their offsets in `mins`).

   Decoding one token reads every weight once, so the time is the bytes read: the loops read each
   weight row once for all B activation rows, rows are split over threads (OpenMP), and the inner
   dot products use AVX2 + FMA when the compiler targets them (-march=native), plain C otherwise.
   Sums are float32, in a fixed order per build: results equal a float32 matmul with the
   dequantized weights up to float32 rounding. */

#include <stdint.h>
#include <math.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#ifdef __AVX2__
static float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* sum_i q[i] * x[i] * scale[i / group] over one row of n values */
static float row_q8(const int8_t *q, const float *x, const float *scale, int n, int group) {
#ifdef __AVX2__
    if (group % 8 == 0) {
        __m256 total = _mm256_setzero_ps();
        for (int g = 0; g < n; g += group) {
            __m256 acc = _mm256_setzero_ps();
            for (int i = g; i < g + group; i += 8) {
                __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(w), _mm256_loadu_ps(x + i), acc);
            }
            total = _mm256_fmadd_ps(_mm256_set1_ps(scale[g / group]), acc, total);
        }
        return hsum(total);
    }
#endif
    float total = 0.0f;
    for (int g = 0; g < n; g += group) {
        float acc = 0.0f;
        for (int i = g; i < g + group; i++) acc += (float)q[i] * x[i];
        total += scale[g / group] * acc;
    }
    return total;
}

#ifdef __AVX2__
/* the values of the 8 nibbles in the low 8 bytes of v: lut[v] by two 8-entry permutes picked by bit 3,
   or v itself */
static inline __m256 decode8(__m128i v, const float *lut, __m256 lut_lo, __m256 lut_hi) {
    __m256i idx = _mm256_cvtepu8_epi32(v);
    if (!lut) return _mm256_cvtepi32_ps(idx);
    __m256 lo = _mm256_permutevar8x32_ps(lut_lo, idx), hi = _mm256_permutevar8x32_ps(lut_hi, idx);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}
#endif

/* sum_i (scale * lut[nibble] + min) * x[i] over one row; xsum[g] = sum of x over group g */
static float row_q4(const uint8_t *q, const float *x, const float *scale, const float *mins,
                    const float *xsum, const float *lut, int n, int group) {
    float total = 0.0f;
#ifdef __AVX2__
    const __m256 lut_lo = lut ? _mm256_loadu_ps(lut) : _mm256_setzero_ps();
    const __m256 lut_hi = lut ? _mm256_loadu_ps(lut + 8) : _mm256_setzero_ps();
    const __m128i low4 = _mm_set1_epi8(15);
    __m256 vtotal = _mm256_setzero_ps();
    for (int g = 0; g < n; g += group) {
        __m256 acc = _mm256_setzero_ps();
        for (int b = g; b < g + group; b += 32) {  /* one packed block: 16 bytes, 32 values */
            __m128i bytes = _mm_loadu_si128((const __m128i *)(q + b / 2));
            __m128i lo = _mm_and_si128(bytes, low4), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low4);
            const float *xb = x + b;
            acc = _mm256_fmadd_ps(decode8(lo, lut, lut_lo, lut_hi), _mm256_loadu_ps(xb), acc);
            acc = _mm256_fmadd_ps(decode8(_mm_srli_si128(lo, 8), lut, lut_lo, lut_hi), _mm256_loadu_ps(xb + 8), acc);
            acc = _mm256_fmadd_ps(decode8(hi, lut, lut_lo, lut_hi), _mm256_loadu_ps(xb + 16), acc);
            acc = _mm256_fmadd_ps(decode8(_mm_srli_si128(hi, 8), lut, lut_lo, lut_hi), _mm256_loadu_ps(xb + 24), acc);
        }
        vtotal = _mm256_fmadd_ps(_mm256_set1_ps(scale[g / group]), acc, vtotal);
    }
    total = hsum(vtotal);
#else
    for (int g = 0; g < n; g += group) {
        float acc = 0.0f;
        for (int b = g; b < g + group; b += 32) {
            for (int j = 0; j < 16; j++) {
                uint8_t byte = q[b / 2 + j];
                float lo = lut ? lut[byte & 15] : (float)(byte & 15), hi = lut ? lut[byte >> 4] : (float)(byte >> 4);
                acc += lo * x[b + j] + hi * x[b + j + 16];
            }
        }
        total += scale[g / group] * acc;
    }
#endif
    if (mins)
        for (int g = 0; g < n / group; g++) total += mins[g] * xsum[g];
    return total;
}

void matmul_q8(float *y, const float *x, const int8_t *q, const float *scale,
               int B, int n, int m, int group, int threads) {
    int groups = n / group;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int o = 0; o < m; o++)
        for (int b = 0; b < B; b++)
            y[(int64_t)b * m + o] = row_q8(q + (int64_t)o * n, x + (int64_t)b * n, scale + (int64_t)o * groups, n, group);
}

/* xsum: scratch of B * n / group floats (used when mins is not NULL) */
void matmul_q4(float *y, const float *x, const uint8_t *q, const float *scale, const float *mins,
               const float *lut, float *xsum, int B, int n, int m, int group, int threads) {
    int groups = n / group;
    if (mins)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < groups; g++) {
                float s = 0.0f;
                for (int i = 0; i < group; i++) s += x[(int64_t)b * n + g * group + i];
                xsum[b * groups + g] = s;
            }
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int o = 0; o < m; o++)
        for (int b = 0; b < B; b++)
            y[(int64_t)b * m + o] = row_q4(q + (int64_t)o * (n / 2), x + (int64_t)b * n, scale + (int64_t)o * groups,
                                           mins ? mins + (int64_t)o * groups : 0, xsum + b * groups, lut, n, group);
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
    __m256i x = _mm256_loadu_si256((const __m256i *)xq), p;
    if (q8) {  /* maddubs multiplies unsigned by signed: move q's sign onto x */
        __m256i w = _mm256_loadu_si256((const __m256i *)q8);
        p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    } else {
        __m128i bytes = _mm_loadu_si128((const __m128i *)q4), low4 = _mm_set1_epi8(15);
        __m256i w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(bytes, 4), low4), _mm_and_si128(bytes, low4));
        p = _mm256_maddubs_epi16(w, x);
    }
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}
#endif

/* one output of matmul_act8: row o's weights (q8 or q4), activation row xb with block scales db */
static float row_act8(const int8_t *q8, const uint8_t *q4, const int8_t *xb, const float *db, const float *s,
                      const float *mins, const float *xsum, int n, int group) {
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
    if (mins)
        for (int g = 0; g < n / group; g++) total += mins[g] * xsum[g];
    return total;
}

/* y (B, m) from activations quantized by quantize_act (xq (B, n), xd (B, n / 32)) and 8-bit (q8) or
   linear 4-bit (q4, lut[v] = v) weights; xsum: scratch of B * n / group floats (used with mins).
   group is a multiple of 32. */
void matmul_act8(float *y, const int8_t *xq, const float *xd, float *xsum, const int8_t *q8,
                 const uint8_t *q4, const float *scale, const float *mins, int B, int n, int m, int group,
                 int threads) {
    int groups = n / group, row_bytes = q8 ? n : n / 2;
    if (mins)  /* each group's sum of the rounded activations, d * sum(xq) per block */
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
                                             mins ? mins + (int64_t)o * groups : 0, xsum + b * groups, n, group);
}
