/* One decode token through the whole model in one call: llama2.c run.c's forward(), for both of
   tinylm's families, on the NumPy runtime's weights and KV cache (tinylm.runtime, tinylm.quantize.decode).

   A batch-1 decode step is a few dozen small matrix products; done from Python, the steps between
   them (norms, rotation, cache writes, activations, residual adds: ~20 NumPy calls a layer), the
   ctypes calls and a thread start per product took about a quarter of a token's time. Here the token
   costs one call, and its threads start once: one OpenMP parallel region runs every layer, the
   products and the attention split over the threads (kernels.c's work-sharing loops), the small steps
   between them on one thread (`single`, whose end is a barrier).

   The numbers are the runtime's Python forward pass (its reference), up to float32 rounding: the same
   kernels multiply the same matrices; only the order of a norm's sums, the FMA contractions and
   expf / tanhf differ. */

#include "kernels.c"

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

/* the scratch a step works in, carved from one block of decode_scratch_bytes() */
typedef struct {
    float *x, *xb, *qkv, *att, *h, *scores, *xsum;
    char *act;    /* one row of int8 activations: a8_row's scratch */
    act_row row;  /* the row prepared there last */
} buffers;

static int widest(const model *M) {  /* the longest row any matrix multiplies */
    const layer *L = M->layers;
    int n = M->head.n;
    n = L->wqkv.n > n ? L->wqkv.n : n;
    n = L->wo.n > n ? L->wo.n : n;
    return L->w2.n > n ? L->w2.n : n;
}

static size_t carve(const model *M, char *base, buffers *s) {
    const layer *L = M->layers;
    int n = widest(M);
    size_t sizes[7] = {M->dim, n, L->wqkv.m, L->wo.n, L->w1.m, (size_t)M->n_heads * M->context, n / 32 + 1};
    float **parts[7] = {&s->x, &s->xb, &s->qkv, &s->att, &s->h, &s->scores, &s->xsum};
    size_t at = 0;
    for (int i = 0; i < 7; i++) {
        if (base) *parts[i] = (float *)(base + at);
        at += (sizes[i] * sizeof(float) + 63) / 64 * 64;
    }
    if (base) s->act = base + at;
    return at + a8_row_bytes(n);
}

/* bytes of scratch decode_step needs (to be 64-byte aligned) */
size_t decode_scratch_bytes(const model *M) {
    buffers s;
    return carve(M, 0, &s);
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

/* h (w1's outputs) -> the MLP's hidden values, in place, in the first `hidden` of h */
static void activate(const model *M, float *h, int hidden) {
    if (M->mlp == MLP_SWIGLU) {  /* silu(gate) * up */
        for (int i = 0; i < hidden; i++) h[i] = h[i] / (1.0f + expf(-h[i])) * h[hidden + i];
    } else if (M->mlp == MLP_GELU_TANH) {
        const float c = (float)sqrt(2.0 / 3.14159265358979323846);
        for (int i = 0; i < hidden; i++) {
            float x = h[i];
            h[i] = 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
        }
    } else {
        const float c = (float)(1.0 / sqrt(2.0));
        for (int i = 0; i < hidden; i++) h[i] = 0.5f * h[i] * (1.0f + erf_as(h[i] * c));
    }
}

/* ---- the products: what the matrix needs from its input row before its rows are split over the
   threads (run by one thread), then the split */

static void prepare(const matrix *W, const float *x, buffers *s) {
    if (W->kind == MAT_INT8) s->row = a8_row(s->act, s->xsum, x, W->n, W->group, W->bits, W->bits == 8 ? Q8_K : (int)W->offset);
    else if (W->kind == MAT_Q4 && (W->mins || W->offset != 0.0f)) group_sums(s->xsum, x, 1, W->n, W->group);
}

/* y = x W^T (+ bias), or y += that where `add`; inside the region: every thread calls it */
static void product(const matrix *W, float *y, const float *x, const buffers *s, int add) {
    dest d = {y, W->bias, add};
    switch (W->kind) {
    case MAT_F32: rows_f32(d, x, W->q, 1, W->n, W->m); break;
    case MAT_Q8: rows_q8(d, x, W->q, W->scale, 1, W->n, W->m, W->group); break;
    case MAT_Q4: rows_q4(d, x, W->q, W->scale, W->mins, W->lut, W->offset, s->xsum, 1, W->n, W->m, W->group); break;
    default: rows_int8(d, &s->row, s->xsum, W->q, W->scale, W->mins, 1, W->n, W->m, W->group, W->bits);
    }
}

/* Token `token` at position `pos` of cache row `row`: logits (vocab) = the model's output, with the
   token's keys and values written into the caches, each (n_layers, rows, kv_heads, context, head_dim).
   scratch: decode_scratch_bytes(M), 64-byte aligned. */
void decode_step(const model *M, float *logits, float *k_cache, float *v_cache, int rows, int row, int token,
                 int pos, char *scratch, int threads) {
    buffers s;
    carve(M, scratch, &s);
    int dim = M->dim, H = M->n_heads, KV = M->kv_heads, hs = M->head_dim;
    int64_t plane = (int64_t)KV * M->context * hs;  /* one layer's cache row */
    float scale = (float)(1.0 / sqrt((double)hs));
    memcpy(s.x, M->tok_emb + (int64_t)token * dim, dim * sizeof(float));
    if (M->pos_emb)
        for (int i = 0; i < dim; i++) s.x[i] += M->pos_emb[(int64_t)pos * dim + i];
    #pragma omp parallel num_threads(threads)
    {
        for (int l = 0; l < M->n_layers; l++) {
            const layer *L = M->layers + l;
            float *kc = k_cache + ((int64_t)l * rows + row) * plane, *vc = v_cache + ((int64_t)l * rows + row) * plane;
            /* attention: project, rotate, store the key and value, attend over positions 0..pos */
            #pragma omp single
            {
                norm(M, s.xb, s.x, L->attn_norm, L->attn_norm_bias);
                prepare(&L->wqkv, s.xb, &s);
            }
            product(&L->wqkv, s.qkv, s.xb, &s, 0);
            #pragma omp single
            {
                if (!M->pos_emb) rotate(M, s.qkv, pos);
                for (int h = 0; h < KV; h++) {
                    memcpy(kc + ((int64_t)h * M->context + pos) * hs, s.qkv + (int64_t)(H + h) * hs, hs * sizeof(float));
                    memcpy(vc + ((int64_t)h * M->context + pos) * hs, s.qkv + (int64_t)(H + KV + h) * hs, hs * sizeof(float));
                }
            }
            heads(s.att, s.qkv, kc, vc, s.scores, H, KV, M->context, hs, pos + 1, scale);
            #pragma omp single
            prepare(&L->wo, s.att, &s);
            product(&L->wo, s.x, s.att, &s, 1);
            /* MLP */
            #pragma omp single
            {
                norm(M, s.xb, s.x, L->mlp_norm, L->mlp_norm_bias);
                prepare(&L->w1, s.xb, &s);
            }
            product(&L->w1, s.h, s.xb, &s, 0);
            #pragma omp single
            {
                activate(M, s.h, L->w2.n);
                prepare(&L->w2, s.h, &s);
            }
            product(&L->w2, s.x, s.h, &s, 1);
        }
        #pragma omp single
        {
            norm(M, s.xb, s.x, M->norm, M->norm_bias);
            prepare(&M->head, s.xb, &s);
        }
        product(&M->head, logits, s.xb, &s, 0);
    }
}
