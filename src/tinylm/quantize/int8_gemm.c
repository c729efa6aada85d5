/* Exact int8 x int8 -> int32 matrix product for W8A8 layers (SmoothQuant):

     y (B, m) = x (B, n) @ w^T,   x, w int8,   y[b, o] = sum_i x[b, i] * w[o, i]   exactly, in int32

   The weights are repacked once (pack_weights) into panels of 16 output rows, 4 inputs at a time:
   panel p, step k holds w[16p + j, 4k + t] at byte 64k + 4j + t. One 512-bit load then gives 16
   outputs x 4 inputs, and AVX512-VNNI's vpdpbusd adds the 4 products of each output to its int32
   lane, with no horizontal sums. vpdpbusd multiplies unsigned by signed bytes, so the activations
   arrive offset by 128 (xu = x + 128, 0..255) and each output subtracts 128 * sum_i w[o, i] (wsum).
   Products are exact and int32 cannot overflow below n = 2^31 / 128^2 / 2 = 65536 inputs.

   Tiles of ROWS activation rows x 32 outputs (12 accumulators); the caller pads x to a multiple of
   ROWS rows and 4 inputs, and m to a multiple of 32 (zero rows). Panels are split over threads. Plain
   C (same layout, same sums) where the compiler does not target AVX512-VNNI. */

#include <stdint.h>
#include <string.h>
#include <math.h>
#ifdef __AVX512VNNI__
#include <immintrin.h>
#endif

#define ROWS 6

/* w (m, n) int8 -> panels (m / 16, n4, 64) bytes, n4 = ceil(n / 4) (m a multiple of 16) */
void pack_weights(int8_t *panels, const int8_t *w, int m, int n, int n4) {
    memset(panels, 0, (size_t)m * n4 * 4);
    for (int o = 0; o < m; o++)
        for (int i = 0; i < n; i++)
            panels[((size_t)(o / 16) * n4 + i / 4) * 64 + (o % 16) * 4 + i % 4] = w[(size_t)o * n + i];
}

#ifdef __AVX512VNNI__
/* ROWS rows of xu (stride n4 * 4 bytes) times two panels (32 outputs) -> y (stride m) */
static void tile(int32_t *y, const uint8_t *xu, const int8_t *p0, const int8_t *p1, const int32_t *wsum,
                 int n4, int m) {
    __m512i acc[ROWS][2];
    for (int r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
    for (int k = 0; k < n4; k++) {
        __m512i w0 = _mm512_loadu_si512(p0 + (size_t)k * 64), w1 = _mm512_loadu_si512(p1 + (size_t)k * 64);
        for (int r = 0; r < ROWS; r++) {
            int32_t four;
            memcpy(&four, xu + (size_t)r * n4 * 4 + (size_t)k * 4, 4);
            __m512i xb = _mm512_set1_epi32(four);
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], xb, w0);
            acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], xb, w1);
        }
    }
    __m512i c0 = _mm512_slli_epi32(_mm512_loadu_si512(wsum), 7), c1 = _mm512_slli_epi32(_mm512_loadu_si512(wsum + 16), 7);
    for (int r = 0; r < ROWS; r++) {
        _mm512_storeu_si512(y + (size_t)r * m, _mm512_sub_epi32(acc[r][0], c0));
        _mm512_storeu_si512(y + (size_t)r * m + 16, _mm512_sub_epi32(acc[r][1], c1));
    }
}
#else
static void tile(int32_t *y, const uint8_t *xu, const int8_t *p0, const int8_t *p1, const int32_t *wsum,
                 int n4, int m) {
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < 32; j++) {
            const int8_t *p = j < 16 ? p0 : p1;
            int32_t acc = 0;
            for (int k = 0; k < n4 * 4; k++) acc += (int32_t)xu[(size_t)r * n4 * 4 + k] * p[(k / 4) * 64 + (j % 16) * 4 + k % 4];
            y[(size_t)r * m + j] = acc - 128 * wsum[j];
        }
}
#endif

/* y (B, m) int32 = (xu - 128) (B, n4 * 4) @ w^T; B a multiple of ROWS, m of 32 */
void matmul_i8(int32_t *y, const uint8_t *xu, const int8_t *panels, const int32_t *wsum, int B, int n4, int m,
               int threads) {
    int pairs = m / 32;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int q = 0; q < pairs; q++) {
        const int8_t *p0 = panels + (size_t)(2 * q) * n4 * 64, *p1 = p0 + (size_t)n4 * 64;
        for (int b = 0; b < B; b += ROWS)
            tile(y + (size_t)b * m + 32 * q, xu + (size_t)b * n4 * 4, p0, p1, wsum + 32 * q, n4, m);
    }
}

/* x (B, n) float32 -> xu (b_pad, n4 * 4) = round(x / s) + 128 and s (b_pad,), s = max |x| / 127 per row
   (1 for a row of zeros; padding rows and columns stand for 0). Rounds half to even, divides (not
   multiplies by 1 / s), as w8a8_linear.quantize_tokens does, so both give the same integers. */
void quantize_rows(uint8_t *xu, float *s, const float *x, int B, int b_pad, int n, int n4, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < b_pad; b++) {
        uint8_t *row = xu + (size_t)b * n4 * 4;
        memset(row, 128, (size_t)n4 * 4);
        if (b >= B) { s[b] = 0.0f; continue; }
        const float *xr = x + (size_t)b * n;
        float amax = 0.0f;
        for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(xr[i]));
        float scale = amax / 127.0f;
        if (!(scale > 0.0f)) scale = 1.0f;
        s[b] = scale;
        for (int i = 0; i < n; i++) {
            float v = nearbyintf(xr[i] / scale);
            row[i] = (uint8_t)(int)(fminf(fmaxf(v, -127.0f), 127.0f) + 128.0f);
        }
    }
}

/* y (b_pad, m) float32 = acc * sx[b] * sw[o] (+ bias[o]): the int32 products back to activations' units */
void rescale(float *y, const int32_t *acc, const float *sx, const float *sw, const float *bias, int b_pad, int m,
             int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < b_pad; b++)
        for (int o = 0; o < m; o++) {
            float v = (float)acc[(size_t)b * m + o] * sx[b] * sw[o];
            y[(size_t)b * m + o] = bias ? v + bias[o] : v;
        }
}
