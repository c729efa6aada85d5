/* Exact int8 x int8 -> int32 matrix products, and the whole W8A8 layer (SmoothQuant) around them:

     acc[b, o] = sum_i x[b, i] * w[o, i]                     exactly, in int32
     y[b, o]   = acc[b, o] * sx[b] * sw[o] + bias[o],         x[b] = round(xf[b] / sx[b]), sx[b] = max |xf[b]| / 127

   One of four inner loops, chosen when -march=native compiles this file on the machine that runs it:
   - AVX512-VNNI (vpdpbusd on 512 bits, e.g. Sapphire Rapids, Zen 4): 16 outputs x 4 inputs per instruction.
   - AVX-VNNI (the same instruction on 256 bits, e.g. Alder Lake): 8 outputs x 4 inputs.
     vpdpbusd multiplies unsigned by signed bytes, so both take the activations offset by 128 (x + 128,
     0..255) and subtract 128 * sum_i w[o, i] (wsum) from each output.
   - AVX2 (vpmaddwd, e.g. Zen 2/3): weights (when packed) and activations (when rounded) widened to int16;
     one instruction multiplies 8 outputs x 2 inputs and adds each pair in int32. Exact for every int8,
     unlike vpmaddubsw, whose int16 pair sums saturate (255 * 127 * 2 > 32767). Same instruction count per
     product as vpmaddubsw with the sign trick (sign, maddubs, madd, add per 32 products).
   - plain C on the AVX2 layout anywhere else (and in the tests, to check the layout itself).
   Products are exact; int32 cannot overflow below n = 2^31 / 128^2 / 2 = 65536 inputs.

   Layout: panels of 16 output rows; step k of a panel holds w[16p + j, KG k + t] at element (16 k + j) KG + t
   (KG = 4 bytes, or 2 int16: 64 bytes a step). One 512-bit load (or two 256-bit ones) gives a step.
   The activations are rows of NK * KG values (padding stands for 0) of ROWS rows at a time.

   Work: tiles of ROWS rows x TILE_OUT outputs, whole inner dimension, accumulators in registers. Tasks are
   (chunk of rows, output tile), shared out dynamically (a thread the OS parks on a busy machine does not
   hold the others up), row chunks small enough for the chunk's activations to stay in L2 while every
   output tile streams past them. A layer is one parallel region: round the rows, then the tiles, whose
   epilogue writes float outputs directly (no int32 matrix in memory). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define CHUNK_BYTES (256 * 1024)

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define PATH "avx512-vnni"
#define VNNI 1
#define TILE_OUT 32
#define ROWS 6  /* 12 accumulators of 32 registers */
#elif defined(__AVXVNNI__)
#define PATH "avx-vnni"
#define VNNI 1
#define TILE_OUT 16
#define ROWS 6  /* 12 accumulators, 2 weights, 1 activation: 15 of 16 registers */
#elif defined(__AVX2__)
#define PATH "avx2"
#define VNNI 0
#define TILE_OUT 16
#define ROWS 5  /* 10 accumulators, 2 weights, 1 activation, 1 product: 6 rows would spill one */
#else
#define PATH "c"
#define VNNI 0
#define TILE_OUT 16
#define ROWS 6
#endif

#if VNNI
typedef uint8_t act_t;  /* x + 128 */
typedef int8_t w_t;
#define KG 4
#define OFFSET 128
#else
typedef int16_t act_t;
typedef int16_t w_t;
#define KG 2
#define OFFSET 0
#endif
#define STEP (16 * KG)  /* elements of one panel step (64 bytes) */

const char *kernel_path(void) { return PATH; }
int tile_rows(void) { return ROWS; }
int group_inputs(void) { return KG; }
int activation_bytes(void) { return (int)sizeof(act_t); }

/* w (m, n) int8 -> panels (m / 16, nk, STEP) w_t, nk = ceil(n / KG), m a multiple of 16 */
void pack_weights(w_t *panels, const int8_t *w, int m, int n, int nk) {
    memset(panels, 0, (size_t)m * nk * KG * sizeof(w_t));
    for (int o = 0; o < m; o++)
        for (int i = 0; i < n; i++)
            panels[((size_t)(o / 16) * nk + i / KG) * STEP + (o % 16) * KG + i % KG] = w[(size_t)o * n + i];
}

/* acc (ROWS, TILE_OUT) = ROWS activation rows (stride xs) times TILE_OUT / 16 panels (stride ps) */
#if VNNI && TILE_OUT == 32
static void tile(int32_t *acc, const act_t *x, size_t xs, const w_t *p, size_t ps, int nk) {
    __m512i a[ROWS][2];
    for (int r = 0; r < ROWS; r++) a[r][0] = a[r][1] = _mm512_setzero_si512();
    for (int k = 0; k < nk; k++) {
        __m512i w0 = _mm512_loadu_si512(p + (size_t)k * STEP), w1 = _mm512_loadu_si512(p + ps + (size_t)k * STEP);
        for (int r = 0; r < ROWS; r++) {
            int32_t four;
            memcpy(&four, x + r * xs + (size_t)k * KG, 4);
            __m512i xb = _mm512_set1_epi32(four);
            a[r][0] = _mm512_dpbusd_epi32(a[r][0], xb, w0);
            a[r][1] = _mm512_dpbusd_epi32(a[r][1], xb, w1);
        }
    }
    for (int r = 0; r < ROWS; r++) {
        _mm512_storeu_si512(acc + r * TILE_OUT, a[r][0]);
        _mm512_storeu_si512(acc + r * TILE_OUT + 16, a[r][1]);
    }
}
#elif defined(__AVX2__)
/* AVX-VNNI or AVX2: one panel, its two 256-bit halves (outputs 0-7, 8-15) */
static void tile(int32_t *acc, const act_t *x, size_t xs, const w_t *p, size_t ps, int nk) {
    (void)ps;
    __m256i a[ROWS][2];
    for (int r = 0; r < ROWS; r++) a[r][0] = a[r][1] = _mm256_setzero_si256();
    for (int k = 0; k < nk; k++) {
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(p + (size_t)k * STEP));
        __m256i w1 = _mm256_loadu_si256((const __m256i *)(p + (size_t)k * STEP + STEP / 2));
        for (int r = 0; r < ROWS; r++) {
            int32_t group;  /* 4 bytes or 2 int16 */
            memcpy(&group, x + r * xs + (size_t)k * KG, 4);
            __m256i xb = _mm256_set1_epi32(group);
#if VNNI
            a[r][0] = _mm256_dpbusd_avx_epi32(a[r][0], xb, w0);
            a[r][1] = _mm256_dpbusd_avx_epi32(a[r][1], xb, w1);
#else
            a[r][0] = _mm256_add_epi32(a[r][0], _mm256_madd_epi16(xb, w0));
            a[r][1] = _mm256_add_epi32(a[r][1], _mm256_madd_epi16(xb, w1));
#endif
        }
    }
    for (int r = 0; r < ROWS; r++) {
        _mm256_storeu_si256((__m256i *)(acc + r * TILE_OUT), a[r][0]);
        _mm256_storeu_si256((__m256i *)(acc + r * TILE_OUT + 8), a[r][1]);
    }
}
#else
static void tile(int32_t *acc, const act_t *x, size_t xs, const w_t *p, size_t ps, int nk) {
    (void)ps;
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < TILE_OUT; j++) {
            int32_t s = 0;
            for (int k = 0; k < nk; k++)
                for (int t = 0; t < KG; t++) s += (int32_t)x[r * xs + (size_t)k * KG + t] * p[(size_t)k * STEP + j * KG + t];
            acc[r * TILE_OUT + j] = s;
        }
}
#endif

/* One product: x (b_pad, nk * KG) act_t times the panels; int32 results to acc (b_pad, m) or, given
   sx, float results y = acc * sx[b] * sw[o] (+ bias[o]) to y (b_pad, m). */
struct job {
    const act_t *x;
    const w_t *panels;
    const int32_t *wsum;
    int b_pad, nk, m;
    int32_t *acc;
    float *y;
    const float *sx, *sw, *bias;
};

static void store(const struct job *j, const int32_t *acc, int b, int o) {
    for (int r = 0; r < ROWS; r++)
        for (int t = 0; t < TILE_OUT; t++) {
            int32_t v = acc[r * TILE_OUT + t] - OFFSET * j->wsum[o + t];
            size_t at = (size_t)(b + r) * j->m + o + t;
            if (j->y == NULL)
                j->acc[at] = v;
            else
                j->y[at] = (float)v * j->sx[b + r] * j->sw[o + t] + (j->bias ? j->bias[o + t] : 0.0f);
        }
}

/* every tile of the product; call inside a parallel region (the tasks are shared out) or outside it */
static void tiles(const struct job *j) {
    size_t xs = (size_t)j->nk * KG, ps = (size_t)j->nk * STEP;
    int chunk = (int)(CHUNK_BYTES / (xs * sizeof(act_t))) / ROWS * ROWS;
    chunk = chunk < ROWS ? ROWS : chunk;
    int chunks = (j->b_pad + chunk - 1) / chunk, outs = j->m / TILE_OUT;
#pragma omp for schedule(dynamic)
    for (int task = 0; task < chunks * outs; task++) {
        int c = task / outs, o = task % outs * TILE_OUT;
        int32_t acc[ROWS * TILE_OUT];
        for (int b = c * chunk; b < j->b_pad && b < (c + 1) * chunk; b += ROWS) {
            tile(acc, j->x + b * xs, xs, j->panels + (size_t)(o / 16) * ps, ps, j->nk);
            store(j, acc, b, o);
        }
    }
}

/* acc (b_pad, m) int32 = x (b_pad, n) int8 @ w^T; b_pad a multiple of ROWS, m of 32 */
int matmul_i8(int32_t *acc, const int8_t *x, const w_t *panels, const int32_t *wsum, int b_pad, int n, int m,
              int threads) {
    int nk = (n + KG - 1) / KG;
    act_t *xa = malloc((size_t)b_pad * nk * KG * sizeof(act_t));
    if (!xa) return 1;
    for (int b = 0; b < b_pad; b++)
        for (int i = 0; i < nk * KG; i++) xa[(size_t)b * nk * KG + i] = (act_t)((i < n ? x[(size_t)b * n + i] : 0) + OFFSET);
    struct job j = {xa, panels, wsum, b_pad, nk, m, acc, NULL, NULL, NULL, NULL};
#pragma omp parallel num_threads(threads)
    tiles(&j);
    free(xa);
    return 0;
}

/* row b of x (B, n) float32 -> xa row (nk * KG act_t) = round(x / s) (+ OFFSET), s[b] = max |x| / 127
   (1 for a row of zeros; rows past B stand for 0). Rounds half to even and divides (not multiplies by
   1 / s), as w8a8_linear.quantize_tokens does, so both give the same integers. max |x| compares the
   bit patterns of |x| as integers (the same order for floats that are not NaN), which vectorizes. */
static void round_row(act_t *xa, float *s, const float *x, int b, int B, int n, int nk) {
    act_t *row = xa + (size_t)b * nk * KG;
    for (int i = 0; i < nk * KG; i++) row[i] = OFFSET;
    if (b >= B) { s[b] = 0.0f; return; }
    const float *xr = x + (size_t)b * n;
    uint32_t top = 0;
    for (int i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, xr + i, 4);
        bits &= 0x7fffffffu;
        top = bits > top ? bits : top;
    }
    float amax;
    memcpy(&amax, &top, 4);
    float scale = amax / 127.0f;
    if (!(scale > 0.0f)) scale = 1.0f;
    s[b] = scale;
    for (int i = 0; i < n; i++) {
        float v = nearbyintf(xr[i] / scale);
        v = v > 127.0f ? 127.0f : v;
        v = v < -127.0f ? -127.0f : v;
        row[i] = (act_t)((int)v + OFFSET);
    }
}

/* The W8A8 layer: y (b_pad, m) float32 from x (B, n) float32; xa (b_pad, nk * KG) act_t and sx (b_pad,)
   are the caller's scratch; b_pad a multiple of ROWS, m of 32 */
void linear_w8a8(float *y, act_t *xa, float *sx, const float *x, const w_t *panels, const int32_t *wsum,
                 const float *sw, const float *bias, int B, int b_pad, int n, int m, int threads) {
    int nk = (n + KG - 1) / KG;
    struct job j = {xa, panels, wsum, b_pad, nk, m, NULL, y, sx, sw, bias};
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int b = 0; b < b_pad; b++) round_row(xa, sx, x, b, B, n, nk);
        tiles(&j);
    }
}
