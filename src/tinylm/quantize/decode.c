/* One decode token through the whole model in one call: llama2.c run.c's forward(), for both of
   tinylm's families, on the NumPy runtime's weights and KV cache (tinylm.runtime, tinylm.quantize.decode).

   A batch-1 decode step is a few dozen small matrix products; done from Python, the steps between
   them (norms, rotation, cache writes, activations, residual adds: ~20 NumPy calls a layer), the
   ctypes calls and a thread start per product took about a quarter of a token's time. Here the token
   costs one call, and its threads start once: one OpenMP parallel region runs every layer, the
   products and the attention split over the threads (kernels.c's work-sharing loops, each ending in a
   barrier), the small steps between them done by every thread alike (see `own`).

   The numbers are the runtime's Python forward pass (its reference), up to float32 rounding: the same
   kernels multiply the same matrices; only the order of a norm's sums, the FMA contractions and
   expf / tanhf differ. */

#include "kernels.c"
#ifdef _OPENMP
#include <omp.h>
INLINE int thread_num(void) { return omp_get_thread_num(); }
#else
INLINE int thread_num(void) { return 0; }
#endif

/* how a matrix is multiplied: as kernels.py's matmul chooses for a batch of one row */
enum { MAT_F32, MAT_Q8, MAT_Q4, MAT_INT8 };  /* float; 8-bit or 4-bit with float32 activations; int8 activations */

typedef struct {
    int kind, bits, group, n, m;  /* W (m, n) */
    float offset;                 /* 4-bit forms: added to each value (q4_0's -8) */
    const void *q;                /* float32 rows, int8 values or packed nibbles */
    const float *scale, *mins, *lut, *bias;  /* NULL where absent (lut NULL: the nibble itself) */
} matrix;

typedef struct {
    const float *attn_norm, *attn_norm_bias, *mlp_norm, *mlp_norm_bias;  /* biases NULL: none */
    matrix wqkv, wo, w1, w2;  /* w1: SwiGLU's gate rows, then its up rows */
} layer;

typedef struct {
    int dim, n_layers, n_heads, kv_heads, head_dim, context;
    int rmsnorm;   /* else LayerNorm */
    int mlp;       /* MLP_* */
    double eps;
    const float *tok_emb;   /* (vocab, dim) */
    const float *pos_emb;   /* (context, dim), or NULL: RoPE */
    const float *rotation;  /* RoPE: (context, head_dim / 2) pairs (cos, sin) */
    const float *norm, *norm_bias;
    matrix head;
    const layer *layers;
} model;

enum { MLP_SWIGLU, MLP_GELU_TANH, MLP_GELU_EXACT };

/* The scratch a step works in, carved from one block of decode_scratch_bytes(): what the threads share
   (the products' outputs, each thread writing its own rows), then each thread's own. The small steps
   between the products (norms, rotation, activations, rounding the activations to int8) are done by
   every thread alike, into its own buffers, rather than by one while the others wait: a token's threads
   then meet only where a product or the attention ends. */
typedef struct {
    float *x, *qkv, *att, *h, *scores;  /* residual stream, projections, attention output, MLP hidden, scores */
} shared;

typedef struct {
    float *xb, *qkv, *h, *xsum;  /* a product's input; the rotated projections; the activated hidden values */
    char *act;    /* one row of int8 activations: a8_row's scratch */
    act_row row;  /* the row prepared there last */
} own;

static int widest(const model *M) {  /* the longest row any matrix multiplies */
    const layer *L = M->layers;
    int n = M->head.n;
    n = L->wqkv.n > n ? L->wqkv.n : n;
    n = L->wo.n > n ? L->wo.n : n;
    return L->w2.n > n ? L->w2.n : n;
}

/* 64-byte aligned float buffers of the given sizes from base (NULL: sizes only); returns the bytes taken */
static size_t take(char *base, float **parts[], const size_t *sizes, int count) {
    size_t at = 0;
    for (int i = 0; i < count; i++) {
        if (base) *parts[i] = (float *)(base + at);
        at += (sizes[i] * sizeof(float) + 63) / 64 * 64;
    }
    return at;
}

static size_t carve_shared(const model *M, char *base, shared *s) {
    const layer *L = M->layers;
    size_t sizes[5] = {M->dim, L->wqkv.m, L->wo.n, L->w1.m, (size_t)M->n_heads * M->context};
    return take(base, (float **[]){&s->x, &s->qkv, &s->att, &s->h, &s->scores}, sizes, 5);
}

static size_t carve_own(const model *M, char *base, own *me) {
    const layer *L = M->layers;
    int n = widest(M);
    size_t sizes[4] = {n, L->wqkv.m, L->w2.n, n / 32 + 1};
    size_t at = take(base, (float **[]){&me->xb, &me->qkv, &me->h, &me->xsum}, sizes, 4);
    if (base) me->act = base + at;
    return at + a8_row_bytes(n);
}

/* bytes of scratch decode_step needs for up to `threads` threads (to be 64-byte aligned) */
size_t decode_scratch_bytes(const model *M, int threads) {
    shared s;
    own me;
    return carve_shared(M, 0, &s) + (size_t)threads * carve_own(M, 0, &me);
}

/* ---- the steps between the products, each on one row of n values */

static void norm(const model *M, float *out, const float *x, const float *w, const float *b) {
    int n = M->dim;
    if (M->rmsnorm) {  /* as the runtime: the sum of squares in float32, the scale in double */
        float scale = (float)(1.0 / sqrt((double)dot(x, x, n) / n + M->eps));
        for (int i = 0; i < n; i++) out[i] = x[i] * (w[i] * scale);
        return;
    }
    float mean = 0.0f;  /* as the runtime: float32 throughout */
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) out[i] = x[i] - mean;
    float inv = 1.0f / sqrtf(dot(out, out, n) / n + M->eps);
    for (int i = 0; i < n; i++) out[i] = out[i] * inv * w[i] + (b ? b[i] : 0.0f);
}

/* RoPE: each pair (a, b) of the query and key heads turned by its angle at `pos` (a complex product) */
static void rotate(const model *M, float *qk, int pos) {
    int half = M->head_dim / 2;
    const float *rot = M->rotation + (int64_t)pos * half * 2;
    for (int h = 0; h < M->n_heads + M->kv_heads; h++)
        for (int i = 0; i < half; i++) {
            float *p = qk + (int64_t)h * M->head_dim + 2 * i;
            float a = p[0], b = p[1], c = rot[2 * i], s = rot[2 * i + 1];
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
}

/* erf as the runtime's Python path has it (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7), not
   erff: the step gives that path's numbers, and with int8 activations a difference of 1e-7 can turn an
   activation's rounding the other way */
static float erf_as(float x) {
    float a = fabsf(x), t = 1.0f / (1.0f + 0.3275911f * a);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    return copysignf(1.0f - poly * expf(-a * a), x);
}

/* h (w1's outputs) -> out, the MLP's `hidden` values */
static void activate(const model *M, float *out, const float *h, int hidden) {
    if (M->mlp == MLP_SWIGLU) {  /* silu(gate) * up */
        for (int i = 0; i < hidden; i++) out[i] = h[i] / (1.0f + expf(-h[i])) * h[hidden + i];
    } else if (M->mlp == MLP_GELU_TANH) {
        const float c = (float)sqrt(2.0 / 3.14159265358979323846);
        for (int i = 0; i < hidden; i++) {
            float x = h[i];
            out[i] = 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
        }
    } else {
        const float c = (float)(1.0 / sqrt(2.0));
        for (int i = 0; i < hidden; i++) out[i] = 0.5f * h[i] * (1.0f + erf_as(h[i] * c));
    }
}

/* ---- the products: what the matrix needs from its input row (each thread its own), then its rows
   split over the threads */

static void prepare(const matrix *W, const float *x, own *me) {
    if (W->kind == MAT_INT8) me->row = a8_row(me->act, me->xsum, x, W->n, W->group, W->bits, W->bits == 8 ? Q8_K : (int)W->offset);
    else if (W->kind == MAT_Q4 && (W->mins || W->offset != 0.0f)) group_sums(me->xsum, x, 1, W->n, W->group);
}

/* y = x W^T (+ bias), or y += that where `add`; inside the region: every thread calls it, and all wait at its end */
static void product(const matrix *W, float *y, const float *x, const own *me, int add) {
    dest d = {y, W->bias, add};
    switch (W->kind) {
    case MAT_F32: rows_f32(d, x, W->q, 1, W->n, W->m); break;
    case MAT_Q8: rows_q8(d, x, W->q, W->scale, 1, W->n, W->m, W->group); break;
    case MAT_Q4: rows_q4(d, x, W->q, W->scale, W->mins, W->lut, W->offset, me->xsum, 1, W->n, W->m, W->group); break;
    default: rows_int8(d, &me->row, me->xsum, W->q, W->scale, W->mins, 1, W->n, W->m, W->group, W->bits);
    }
}

/* Token `token` at position `pos` of cache row `row`: logits (vocab) = the model's output, with the
   token's keys and values written into the caches, each (n_layers, rows, kv_heads, context, head_dim).
   scratch: decode_scratch_bytes(M, threads), 64-byte aligned. */
void decode_step(const model *M, float *logits, float *k_cache, float *v_cache, int rows, int row, int token,
                 int pos, char *scratch, int threads) {
    shared s;
    own mine;
    size_t own_bytes = carve_own(M, 0, &mine);
    char *owned = scratch + carve_shared(M, scratch, &s);
    int dim = M->dim, H = M->n_heads, KV = M->kv_heads, hs = M->head_dim;
    int64_t plane = (int64_t)KV * M->context * hs;  /* one layer's cache row */
    float scale = (float)(1.0 / sqrt((double)hs));
    memcpy(s.x, M->tok_emb + (int64_t)token * dim, dim * sizeof(float));
    if (M->pos_emb)
        for (int i = 0; i < dim; i++) s.x[i] += M->pos_emb[(int64_t)pos * dim + i];
    #pragma omp parallel num_threads(threads)
    {
        own me;
        carve_own(M, owned + thread_num() * own_bytes, &me);
        for (int l = 0; l < M->n_layers; l++) {
            const layer *L = M->layers + l;
            float *kc = k_cache + ((int64_t)l * rows + row) * plane, *vc = v_cache + ((int64_t)l * rows + row) * plane;
            /* attention: project, rotate, attend over positions 0..pos (this one's key and value from
               me.qkv, while one thread stores them in the cache) */
            norm(M, me.xb, s.x, L->attn_norm, L->attn_norm_bias);
            prepare(&L->wqkv, me.xb, &me);
            product(&L->wqkv, s.qkv, me.xb, &me, 0);
            memcpy(me.qkv, s.qkv, L->wqkv.m * sizeof(float));
            if (!M->pos_emb) rotate(M, me.qkv, pos);
            const float *k = me.qkv + (int64_t)H * hs, *v = me.qkv + (int64_t)(H + KV) * hs;
            #pragma omp single nowait
            for (int h = 0; h < KV; h++) {
                memcpy(kc + ((int64_t)h * M->context + pos) * hs, k + (int64_t)h * hs, hs * sizeof(float));
                memcpy(vc + ((int64_t)h * M->context + pos) * hs, v + (int64_t)h * hs, hs * sizeof(float));
            }
            heads(s.att, me.qkv, kc, vc, k, v, s.scores, H, KV, M->context, hs, pos + 1, scale);
            prepare(&L->wo, s.att, &me);
            product(&L->wo, s.x, s.att, &me, 1);
            /* MLP */
            norm(M, me.xb, s.x, L->mlp_norm, L->mlp_norm_bias);
            prepare(&L->w1, me.xb, &me);
            product(&L->w1, s.h, me.xb, &me, 0);
            activate(M, me.h, s.h, L->w2.n);
            prepare(&L->w2, me.h, &me);
            product(&L->w2, s.x, me.h, &me, 1);
        }
        norm(M, me.xb, s.x, M->norm, M->norm_bias);
        prepare(&M->head, me.xb, &me);
        product(&M->head, logits, me.xb, &me, 0);
    }
}
