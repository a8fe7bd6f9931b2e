// kernels_features.c: the loaders, whitening, statistics and BatchNorm + activation
// launchers of kernels.h (kernels/data.cu, whiten.cu, stats.cu, bn_gelu.cu) on the CPU
// (host.h). Each writes every element its kernel writes, with the kernel's rounding points
// where they matter (the loaders are bit-exact: augment.h's choices and values). Per-block
// partial sums split the rows over the kernels' blocks as the kernels do (block_rows), each
// block's sum in double, so that any reduction over the blocks gives the total.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "augment.h"
#include "host.h"
#include "kernels.h"
#include "net.h"
#include "test_helpers.h"

#define IMAGE_PIXELS 3072                                   // 3 x 32 x 32
#define WHITEN_POSITIONS (WHITEN_SIDE * WHITEN_SIDE)        // output rows per image: 961
#define STATS_ELEMENTS_PER_BLOCK 8192                       // stats.cu's
#define COV_MAX_BLOCKS 256                                  // whiten.cu's
#define GELU_SQRT1_2 0.70710678118654752440f                // 1 / sqrt(2)
#define GELU_INV_SQRT_2PI 0.39894228040143267794f           // 1 / sqrt(2 pi)

// ---- memcheck ------------------------------------------------------------------------------

typedef struct {
    const void *p;
    size_t bytes;
} Region;

// Whether every region of more than 0 bytes lies inside one allocation (NULL does not).
static int all_inside(const Region *regions, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (regions[i].bytes && !host_inside_allocation(regions[i].p, regions[i].bytes)) return 0;
    return 1;
}

#define ALL_INSIDE(...) \
    all_inside((const Region[]){__VA_ARGS__}, sizeof((const Region[]){__VA_ARGS__}) / sizeof(Region))

// count elements of `size` bytes, 0 for count <= 0.
static size_t bytes_of(long long count, size_t size) { return count > 0 ? (size_t)count * size : 0; }

// The extent of an optional buffer: 0 (unchecked) when it is NULL.
static size_t optional(const void *p, size_t bytes) { return p ? bytes : 0; }

// ---- values ----------------------------------------------------------------------------------

static float half_at(const __half *p, size_t i) { return half_to_float(p[i].x); }
static void set_half(__half *p, size_t i, float v) { p[i].x = float_to_half(v); }

// kernel_common.h's exact GELU and SiLU, and their derivatives.
static float gelu(float x) { return 0.5f * x * (1.0f + erff(x * GELU_SQRT1_2)); }

static float gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * GELU_SQRT1_2));
    float pdf = expf(-0.5f * x * x) * GELU_INV_SQRT_2PI;
    return cdf + x * pdf;
}

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
static float silu(float x) { return x * sigmoid(x); }

static float silu_grad(float x) {
    float s = sigmoid(x);
    return s * (1.0f + x * (1.0f - s));
}

static int known_activation(int activation) { return activation == ACTIVATION_GELU || activation == ACTIVATION_SILU; }
static float activate(int activation, float z) { return activation == ACTIVATION_SILU ? silu(z) : gelu(z); }
static float activate_grad(int activation, float z) {
    return activation == ACTIVATION_SILU ? silu_grad(z) : gelu_grad(z);
}

// ---- block partials --------------------------------------------------------------------------

// Rows [*row0, *row1) of block b of `blocks` over `rows` rows: kernel_common.h's block_rows.
static void block_rows(int rows, int blocks, int b, int *row0, int *row1) {
    int per_block = (rows + blocks - 1) / blocks;
    *row0 = b * per_block;
    *row1 = rows < *row0 + per_block ? rows : *row0 + per_block;
}

// Row r's c terms of a per-channel reduction: a[0..c) and, for a two-sum reduction, b[0..c).
typedef void RowTerms(const void *ctx, int r, float *a, float *b);

// partials[k][0..c) = sum of a over block k's rows and, when two, partials[k][c..2c) = sum of
// b, for each of `blocks` blocks (in double, in row order).
static void block_partials(float *partials, int blocks, int rows, int c, int two, RowTerms *terms,
                           const void *ctx) {
    int width = two ? 2 * c : c;
#pragma omp parallel for schedule(dynamic)
    for (int k = 0; k < blocks; k++) {
        double sum[width];
        float a[c], b[c];
        int row0, row1;
        memset(sum, 0, sizeof sum);
        block_rows(rows, blocks, k, &row0, &row1);
        for (int r = row0; r < row1; r++) {
            terms(ctx, r, a, b);
            for (int ch = 0; ch < c; ch++) sum[ch] += a[ch];
            if (two)
                for (int ch = 0; ch < c; ch++) sum[c + ch] += b[ch];
        }
        for (int i = 0; i < width; i++) partials[(size_t)k * width + i] = (float)sum[i];
    }
}

// Column col of n_blocks rows of `stride` floats, added in block order in double.
static double column_total(const float *partials, int n_blocks, int stride, int col) {
    double total = 0.0;
    for (int b = 0; b < n_blocks; b++) total += partials[(size_t)b * stride + col];
    return total;
}

// ---- data ------------------------------------------------------------------------------------

// What happens to one image (data.cu's ImageView): its source index, flip, shift, cutout
// square (size 0: none), brightness and contrast.
typedef struct {
    uint32_t image;
    int flip, dy, dx, cut_y, cut_x, cut_size;
    float brightness, contrast;
} ImageView;

// dst (3 x 32 x 32 fp16) = the view of its source image: data.cu's write_view.
static void write_view(__half *dst, const uint8_t *images, const ImageView *v) {
    const uint8_t *src = images + (size_t)v->image * IMAGE_PIXELS;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                int sy, sx;
                aug_source_pixel(y, x, v->dy, v->dx, v->flip, &sy, &sx);
                int cut = v->cut_size && y >= v->cut_y && y < v->cut_y + v->cut_size && x >= v->cut_x &&
                          x < v->cut_x + v->cut_size;
                float value = aug_jitter_apply(aug_normalize(src[(c * 32 + sy) * 32 + sx], c), v->brightness,
                                               v->contrast);
                set_half(dst, (c * 32 + y) * 32 + x, cut ? 0.0f : value);
            }
}

// The training augmentation settings of a launch_train_loader call.
typedef struct {
    uint64_t seed;
    int n_train, translate, translate_mode, cutout;
    float jitter_brightness, jitter_contrast;
} TrainAugment;

// The view of example `position` of the training stream: augment.h's calls in
// train_loader_kernel's order.
static ImageView train_view(const TrainAugment *a, int64_t position) {
    uint32_t epoch;
    ImageView v = {0};
    v.image = aug_stream_image(a->seed, position, (uint32_t)a->n_train, &epoch);
    v.flip = aug_flip(a->seed, epoch, v.image);
    v.cut_size = a->cutout;
    if (a->translate)
        aug_translate(a->seed, (TranslateMode)a->translate_mode, a->translate, epoch, v.image, &v.dy, &v.dx);
    if (a->cutout) aug_cutout(a->seed, a->cutout, epoch, v.image, &v.cut_y, &v.cut_x);
    aug_jitter(a->seed, a->jitter_brightness, a->jitter_contrast, epoch, v.image, &v.brightness, &v.contrast);
    return v;
}

// Row i = the augmented view of training example first + (rows ? rows[i] : i), and its label.
cudaError_t launch_train_loader(__half *x, uint8_t *batch_labels, const uint8_t *images, const uint8_t *labels,
                                int n_train, int n, const int *rows, int64_t first, uint64_t seed, int translate,
                                int translate_mode, int cutout, float jitter_brightness, float jitter_contrast,
                                cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    if (!ALL_INSIDE({x, bytes_of((long long)n * IMAGE_PIXELS, sizeof(__half))}, {batch_labels, (size_t)n},
                    {images, bytes_of((long long)n_train * IMAGE_PIXELS, 1)}, {labels, bytes_of(n_train, 1)},
                    {rows, optional(rows, (size_t)n * sizeof(int))}))
        return cudaErrorIllegalAddress;
    const TrainAugment a = {seed, n_train, translate, translate_mode, cutout, jitter_brightness, jitter_contrast};
#pragma omp parallel for schedule(static)
    for (int row = 0; row < n; row++) {
        ImageView v = train_view(&a, first + (rows ? rows[row] : row));
        write_view(x + (size_t)row * IMAGE_PIXELS, images, &v);
        batch_labels[row] = labels[v.image];
    }
    return cudaSuccess;
}

// Row i = test image (indices ? indices[i] : i), mirrored if flip, shifted by (shift, shift).
static void eval_views(__half *x, const uint8_t *images, const int *indices, int n, int flip, int shift) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < n; row++) {
        ImageView v = {indices ? (uint32_t)indices[row] : (uint32_t)row, flip, shift, shift, 0, 0, 0, 0.0f, 1.0f};
        write_view(x + (size_t)row * IMAGE_PIXELS, images, &v);
    }
}

// x = the normalized test views of images [0, n).
cudaError_t launch_eval_loader(__half *x, const uint8_t *images, int n, int flip, int shift, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    if (!ALL_INSIDE({x, bytes_of((long long)n * IMAGE_PIXELS, sizeof(__half))},
                    {images, bytes_of((long long)n * IMAGE_PIXELS, 1)}))
        return cudaErrorIllegalAddress;
    eval_views(x, images, NULL, n, flip, shift);
    return cudaSuccess;
}

// x = the normalized test views of images indices[0..n).
cudaError_t launch_eval_loader_indexed(__half *x, const uint8_t *images, const int *indices, int n, int flip,
                                       int shift, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    if (!ALL_INSIDE({x, bytes_of((long long)n * IMAGE_PIXELS, sizeof(__half))}, {indices, (size_t)n * sizeof(int)}))
        return cudaErrorIllegalAddress;
    for (int row = 0; row < n; row++)
        if (!host_inside_allocation(images + (size_t)(uint32_t)indices[row] * IMAGE_PIXELS, IMAGE_PIXELS))
            return cudaErrorIllegalAddress;
    eval_views(x, images, indices, n, flip, shift);
    return cudaSuccess;
}

// ---- whitening -------------------------------------------------------------------------------

// Offset in a CHW 32 x 32 image of tap r = (channel * 2 + dy) * 2 + dx of the patch at (y, x).
static int tap_offset(int r, int y, int x) { return (r / 4) * 1024 + (y + (r / 2) % 2) * 32 + x + r % 2; }

// Block b's sums of the 78 upper-triangle patch products over images b, b + blocks, ...
static void covariance_block(float *partial, const uint8_t *images, int n, int b, int blocks) {
    double acc[COV_ENTRIES] = {0};
    float pixels[IMAGE_PIXELS], v[COV_DIM];
    for (int img = b; img < n; img += blocks) {
        const uint8_t *src = images + (size_t)img * IMAGE_PIXELS;
        for (int i = 0; i < IMAGE_PIXELS; i++) pixels[i] = aug_normalize(src[i], i / 1024);
        for (int p = 0; p < WHITEN_POSITIONS; p++) {
            for (int r = 0; r < COV_DIM; r++) v[r] = pixels[tap_offset(r, p / WHITEN_SIDE, p % WHITEN_SIDE)];
            for (int i = 0, e = 0; i < COV_DIM; i++)
                for (int j = i; j < COV_DIM; j++, e++) acc[e] += (double)v[i] * v[j];
        }
    }
    for (int e = 0; e < COV_ENTRIES; e++) partial[e] = (float)acc[e];
}

int patch_cov_blocks(int n) { return n < 1 ? 1 : n < COV_MAX_BLOCKS ? n : COV_MAX_BLOCKS; }

// partials[b][78] = the patch products of block b's images (b, b + blocks, ...), uncentred.
cudaError_t launch_patch_covariance(float *partials, const uint8_t *images, int n, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    int blocks = patch_cov_blocks(n);
    if (!ALL_INSIDE({partials, bytes_of((long long)blocks * COV_ENTRIES, sizeof(float))},
                    {images, bytes_of((long long)n * IMAGE_PIXELS, 1)}))
        return cudaErrorIllegalAddress;
#pragma omp parallel for schedule(dynamic)
    for (int b = 0; b < blocks; b++) covariance_block(partials + (size_t)b * COV_ENTRIES, images, n, b, blocks);
    return cudaSuccess;
}

// z[0..24) at output position pos of one fp16 CHW image: bias, then the 12 taps by fma in
// order (whiten.cu's whiten_z).
static void whiten_z(float z[WHITEN_WIDTH], const __half *image, int pos, const float *weight, const float *bias) {
    float patch[COV_DIM];
    for (int r = 0; r < COV_DIM; r++) patch[r] = half_at(image, tap_offset(r, pos / WHITEN_SIDE, pos % WHITEN_SIDE));
    for (int k = 0; k < WHITEN_WIDTH; k++) {
        float acc = bias[k];
        for (int r = 0; r < COV_DIM; r++) acc = fmaf(weight[k * COV_DIM + r], patch[r], acc);
        z[k] = acc;
    }
}

// The 288 weights and 24 biases of the whitening conv, as the whitening kernels read them.
#define WHITEN_PARAMS(weight, bias) \
    {weight, WHITEN_WIDTH * COV_DIM * sizeof(float)}, {bias, WHITEN_WIDTH * sizeof(float)}

// out (n*961 x 24 NHWC) = GELU(conv2x2(x, weight) + bias).
cudaError_t launch_whiten_forward(__half *out, const __half *x, const float *weight, const float *bias, int n,
                                  cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    if (!ALL_INSIDE({out, bytes_of((long long)n * WHITEN_POSITIONS * WHITEN_WIDTH, sizeof(__half))},
                    {x, bytes_of((long long)n * IMAGE_PIXELS, sizeof(__half))}, WHITEN_PARAMS(weight, bias)))
        return cudaErrorIllegalAddress;
#pragma omp parallel for schedule(static)
    for (int img = 0; img < n; img++)
        for (int pos = 0; pos < WHITEN_POSITIONS; pos++) {
            float z[WHITEN_WIDTH];
            whiten_z(z, x + (size_t)img * IMAGE_PIXELS, pos, weight, bias);
            size_t row = (size_t)img * WHITEN_POSITIONS + pos;
            for (int k = 0; k < WHITEN_WIDTH; k++) set_half(out, row * WHITEN_WIDTH + k, gelu(z[k]));
        }
    return cudaSuccess;
}

typedef struct {
    const __half *x, *d_out;
    const float *weight, *bias;
} WhitenGrad;

// Output row r's d_out * GELU'(z), z recomputed from x.
static void whiten_bias_terms(const void *ctx, int r, float *a, float *b) {
    const WhitenGrad *g = ctx;
    float z[WHITEN_WIDTH];
    (void)b;
    whiten_z(z, g->x + (size_t)(r / WHITEN_POSITIONS) * IMAGE_PIXELS, r % WHITEN_POSITIONS, g->weight, g->bias);
    for (int k = 0; k < WHITEN_WIDTH; k++) a[k] = half_at(g->d_out, (size_t)r * WHITEN_WIDTH + k) * gelu_grad(z[k]);
}

// partials[block][24] = sums over the block's output rows of d_out * GELU'(z).
cudaError_t launch_whiten_bias_backward(float *partials, const __half *x, const __half *d_out, const float *weight,
                                        const float *bias, int n, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    int rows = n * WHITEN_POSITIONS, blocks = stats_blocks(rows, WHITEN_WIDTH);
    if (!ALL_INSIDE({partials, bytes_of((long long)blocks * WHITEN_WIDTH, sizeof(float))},
                    {x, bytes_of((long long)n * IMAGE_PIXELS, sizeof(__half))},
                    {d_out, bytes_of((long long)rows * WHITEN_WIDTH, sizeof(__half))}, WHITEN_PARAMS(weight, bias)))
        return cudaErrorIllegalAddress;
    const WhitenGrad g = {x, d_out, weight, bias};
    block_partials(partials, blocks, rows, WHITEN_WIDTH, 0, whiten_bias_terms, &g);
    return cudaSuccess;
}

// ---- per-channel statistics ----------------------------------------------------------------

int stats_blocks(int rows, int c) {
    long long blocks = ((long long)rows * c + STATS_ELEMENTS_PER_BLOCK - 1) / STATS_ELEMENTS_PER_BLOCK;
    if (blocks > STATS_MAX_BLOCKS) blocks = STATS_MAX_BLOCKS;
    if (blocks > rows) blocks = rows;
    return blocks < 1 ? 1 : (int)blocks;
}

// out[k] = sum over the n_blocks blocks of partials[block][k], k < width.
cudaError_t launch_reduce_partials(float *out, const float *partials, int n_blocks, int width, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (width <= 0) return cudaSuccess;
    if (!ALL_INSIDE({out, (size_t)width * sizeof(float)},
                    {partials, bytes_of((long long)n_blocks * width, sizeof(float))}))
        return cudaErrorIllegalAddress;
    for (int k = 0; k < width; k++) out[k] = (float)column_total(partials, n_blocks, width, k);
    return cudaSuccess;
}

typedef struct {
    const __half *in;
    int c;
} ChannelStats;

// Row r's values and their squares.
static void channel_stats_terms(const void *ctx, int r, float *a, float *b) {
    const ChannelStats *s = ctx;
    for (int ch = 0; ch < s->c; ch++) {
        a[ch] = half_at(s->in, (size_t)r * s->c + ch);
        b[ch] = a[ch] * a[ch];
    }
}

// partials[block][2c] = per-channel sums and sums of squares of in (rows x c).
cudaError_t launch_channel_stats(float *partials, const __half *in, int rows, int c, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    int blocks = stats_blocks(rows, c);
    if (!ALL_INSIDE({partials, bytes_of((long long)blocks * 2 * c, sizeof(float))},
                    {in, bytes_of((long long)rows * c, sizeof(__half))}))
        return cudaErrorIllegalAddress;
    const ChannelStats s = {in, c};
    block_partials(partials, blocks, rows, c, 1, channel_stats_terms, &s);
    return cudaSuccess;
}

typedef struct {
    __half *out;
    uint8_t *argmax;
    const __half *in;
    int h, w, c;
} MaxPool2;

// Pools output row r (window positions q = 2 dy + dx, the first max kept) into out and
// argmax; its values and their squares are the stats terms.
static void maxpool2_terms(const void *ctx, int r, float *a, float *b) {
    const MaxPool2 *m = ctx;
    int oh = m->h / 2, ow = m->w / 2, img = r / (oh * ow), oy = r % (oh * ow) / ow, ox = r % ow;
    size_t window = (((size_t)img * m->h + 2 * oy) * m->w + 2 * ox) * m->c, at = (size_t)r * m->c;
    for (int ch = 0; ch < m->c; ch++) {
        float best = half_at(m->in, window + ch);
        int best_q = 0;
        for (int q = 1; q < 4; q++) {
            float v = half_at(m->in, window + ((size_t)(q >> 1) * m->w + (q & 1)) * m->c + ch);
            if (v > best) {
                best = v;
                best_q = q;
            }
        }
        set_half(m->out, at + ch, best);
        m->argmax[at + ch] = (uint8_t)best_q;
        a[ch] = best;
        b[ch] = best * best;
    }
}

// out = 2x2 max pool of in (floor), argmax = window position of the max, and the stats
// partials of out.
cudaError_t launch_maxpool2_stats(__half *out, uint8_t *argmax, float *partials, const __half *in, int n, int h,
                                  int w, int c, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    int oh = h / 2, ow = w / 2, rows = n * oh * ow, blocks = stats_blocks(rows, c);
    // the last input element read: image n-1, pixel (2oh - 1, 2ow - 1), channel c - 1
    long long in_end = rows > 0 ? (((long long)(n - 1) * h + 2 * oh - 1) * w + 2 * ow) * c : 0;
    if (!ALL_INSIDE({out, bytes_of((long long)rows * c, sizeof(__half))}, {argmax, bytes_of((long long)rows * c, 1)},
                    {partials, bytes_of((long long)blocks * 2 * c, sizeof(float))},
                    {in, bytes_of(in_end, sizeof(__half))}))
        return cudaErrorIllegalAddress;
    const MaxPool2 m = {out, argmax, in, h, w, c};
    block_partials(partials, blocks, rows, c, 1, maxpool2_terms, &m);
    return cudaSuccess;
}

// mean, rstd = 1/sqrt(biased var + eps) from n_blocks stats partials of count values per
// channel; running = keep*running + (1-keep)*batch (unbiased var) unless running_mean is NULL.
cudaError_t launch_bn_finalize(float *mean, float *rstd, float *running_mean, float *running_var,
                               const float *partials, int n_blocks, int c, int count, float eps, float keep,
                               cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (c <= 0) return cudaSuccess;
    size_t channel_bytes = (size_t)c * sizeof(float);
    if (!ALL_INSIDE({mean, channel_bytes}, {rstd, channel_bytes}, {running_mean, optional(running_mean, channel_bytes)},
                    {running_var, optional(running_mean, channel_bytes)},
                    {partials, bytes_of((long long)n_blocks * 2 * c, sizeof(float))}))
        return cudaErrorIllegalAddress;
    for (int ch = 0; ch < c; ch++) {
        double sum = column_total(partials, n_blocks, 2 * c, ch);
        double sum_sq = column_total(partials, n_blocks, 2 * c, c + ch);
        double m = sum / count, var = fmax(sum_sq / count - m * m, 0.0);
        mean[ch] = (float)m;
        rstd[ch] = (float)(1.0 / sqrt(var + (double)eps));
        if (running_mean) {
            double unbiased = count > 1 ? var * count / (count - 1.0) : var, k = keep;
            running_mean[ch] = (float)(k * running_mean[ch] + (1.0 - k) * m);
            running_var[ch] = (float)(k * running_var[ch] + (1.0 - k) * unbiased);
        }
    }
    return cudaSuccess;
}

// Eval mode: mean = running_mean, rstd = 1/sqrt(running_var + eps).
cudaError_t launch_bn_eval_params(float *mean, float *rstd, const float *running_mean, const float *running_var,
                                  int c, float eps, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (c <= 0) return cudaSuccess;
    size_t channel_bytes = (size_t)c * sizeof(float);
    if (!ALL_INSIDE({mean, channel_bytes}, {rstd, channel_bytes}, {running_mean, channel_bytes},
                    {running_var, channel_bytes}))
        return cudaErrorIllegalAddress;
    for (int ch = 0; ch < c; ch++) {
        mean[ch] = running_mean[ch];
        rstd[ch] = (float)(1.0 / sqrt((double)running_var[ch] + (double)eps));
    }
    return cudaSuccess;
}

// ---- BatchNorm + activation --------------------------------------------------------------

// A BatchNorm + activation layer's inputs, as bn_gelu.cu's kernels read them (residual NULL:
// none; d_out and sums only in the backward passes).
typedef struct {
    const __half *in, *residual, *d_out;
    const float *mean, *rstd, *bias, *sums;
    int c, activation;
} BnLayer;

// z of element `at` (channel ch): (x - mean) * rstd + bias by one fma (bn_z), + residual.
static float bn_z(const BnLayer *l, size_t at, int ch) {
    float z = fmaf(half_at(l->in, at) - l->mean[ch], l->rstd[ch], l->bias[ch]);
    return l->residual ? z + half_at(l->residual, at) : z;
}

// dz = d_out * act'(z) of element `at`, and its xhat = (x - mean) * rstd.
static float bn_dz(const BnLayer *l, size_t at, int ch, float *xhat) {
    *xhat = (half_at(l->in, at) - l->mean[ch]) * l->rstd[ch];
    return half_at(l->d_out, at) * activate_grad(l->activation, bn_z(l, at, ch));
}

// The BN-input gradient rstd * (dz - mean dz - xhat * mean dz*xhat).
static float bn_input_grad(const BnLayer *l, float dz, float xhat, int ch) {
    return l->rstd[ch] * (dz - l->sums[ch] - xhat * l->sums[l->c + ch]);
}

// The extents of the per-channel parameters mean, rstd, bias (c floats each).
#define BN_PARAMS(mean, rstd, bias, c) \
    {mean, bytes_of(c, sizeof(float))}, {rstd, bytes_of(c, sizeof(float))}, {bias, bytes_of(c, sizeof(float))}

// out = act((in - mean) * rstd + bias [+ residual]).
cudaError_t launch_bn_gelu_forward(__half *out, const __half *in, const __half *residual, const float *mean,
                                   const float *rstd, const float *bias, int rows, int c, int activation,
                                   cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (!known_activation(activation)) return cudaErrorInvalidValue;
    if (rows <= 0) return cudaSuccess;
    size_t bytes = bytes_of((long long)rows * c, sizeof(__half));
    if (!ALL_INSIDE({out, bytes}, {in, bytes}, {residual, optional(residual, bytes)}, BN_PARAMS(mean, rstd, bias, c)))
        return cudaErrorIllegalAddress;
    const BnLayer l = {in, residual, NULL, mean, rstd, bias, NULL, c, activation};
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int ch = 0; ch < c; ch++) {
            size_t at = (size_t)r * c + ch;
            set_half(out, at, activate(activation, bn_z(&l, at, ch)));
        }
    return cudaSuccess;
}

// Row r's dz and dz * xhat.
static void bn_backward_terms(const void *ctx, int r, float *a, float *b) {
    const BnLayer *l = ctx;
    for (int ch = 0; ch < l->c; ch++) {
        float xhat;
        a[ch] = bn_dz(l, (size_t)r * l->c + ch, ch, &xhat);
        b[ch] = a[ch] * xhat;
    }
}

// partials[block][2c] = per-channel (sum dz, sum dz * xhat), dz = d_out * act'(z).
cudaError_t launch_bn_gelu_backward_reduce(float *partials, const __half *d_out, const __half *in,
                                           const __half *residual, const float *mean, const float *rstd,
                                           const float *bias, int rows, int c, int activation,
                                           cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (!known_activation(activation)) return cudaErrorInvalidValue;
    int blocks = stats_blocks(rows, c);
    size_t bytes = bytes_of((long long)rows * c, sizeof(__half));
    if (!ALL_INSIDE({partials, bytes_of((long long)blocks * 2 * c, sizeof(float))}, {d_out, bytes}, {in, bytes},
                    {residual, optional(residual, bytes)}, BN_PARAMS(mean, rstd, bias, c)))
        return cudaErrorIllegalAddress;
    const BnLayer l = {in, residual, d_out, mean, rstd, bias, NULL, c, activation};
    block_partials(partials, blocks, rows, c, 1, bn_backward_terms, &l);
    return cudaSuccess;
}

// d_bias = sum dz; sums = (mean dz, mean dz * xhat) over count values, from n_blocks partials.
cudaError_t launch_bn_backward_finalize(float *d_bias, float *sums, const float *partials, int n_blocks, int c,
                                        int count, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (c <= 0) return cudaSuccess;
    if (!ALL_INSIDE({d_bias, (size_t)c * sizeof(float)}, {sums, (size_t)2 * c * sizeof(float)},
                    {partials, bytes_of((long long)n_blocks * 2 * c, sizeof(float))}))
        return cudaErrorIllegalAddress;
    for (int ch = 0; ch < c; ch++) {
        double sum_dz = column_total(partials, n_blocks, 2 * c, ch);
        double sum_dz_xhat = column_total(partials, n_blocks, 2 * c, c + ch);
        d_bias[ch] = (float)sum_dz;
        sums[ch] = (float)(sum_dz / count);
        sums[c + ch] = (float)(sum_dz_xhat / count);
    }
    return cudaSuccess;
}

// d_in = rstd * (dz - mean dz - xhat * mean dz*xhat); d_residual (unless NULL) = dz.
cudaError_t launch_bn_gelu_backward_apply(__half *d_in, __half *d_residual, const __half *d_out, const __half *in,
                                          const __half *residual, const float *mean, const float *rstd,
                                          const float *bias, const float *sums, int rows, int c, int activation,
                                          cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (!known_activation(activation)) return cudaErrorInvalidValue;
    if (rows <= 0) return cudaSuccess;
    size_t bytes = bytes_of((long long)rows * c, sizeof(__half));
    if (!ALL_INSIDE({d_in, bytes}, {d_residual, optional(d_residual, bytes)}, {d_out, bytes}, {in, bytes},
                    {residual, optional(residual, bytes)}, BN_PARAMS(mean, rstd, bias, c),
                    {sums, bytes_of(2LL * c, sizeof(float))}))
        return cudaErrorIllegalAddress;
    const BnLayer l = {in, residual, d_out, mean, rstd, bias, sums, c, activation};
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int ch = 0; ch < c; ch++) {
            size_t at = (size_t)r * c + ch;
            float xhat, dz = bn_dz(&l, at, ch, &xhat);
            set_half(d_in, at, bn_input_grad(&l, dz, xhat, ch));
            if (d_residual) set_half(d_residual, at, dz);
        }
    return cudaSuccess;
}

// Pooled row r's BN-input gradient into its input window at the argmax position, zeros at
// the other three; the last pooled column (row) also zeroes the input column w-1 (row h-1)
// that the floor pool dropped when w (h) is odd, and the last pooled pixel the corner.
static void apply_pool_row(__half *d_prepool, const uint8_t *argmax, const BnLayer *l, int r, int h, int w) {
    int c = l->c, oh = h / 2, ow = w / 2, img = r / (oh * ow), oy = r % (oh * ow) / ow, ox = r % ow;
    int last_col = (w & 1) && ox == ow - 1, last_row = (h & 1) && oy == oh - 1;
    __half *corner = d_prepool + (((size_t)img * h + 2 * oy) * w + 2 * ox) * c;  // input pixel (2oy, 2ox)
    size_t pixel_bytes = (size_t)c * sizeof(__half);
    for (int ch = 0; ch < c; ch++) {
        size_t at = (size_t)r * c + ch;
        float xhat, dz = bn_dz(l, at, ch, &xhat), grad = bn_input_grad(l, dz, xhat, ch);
        for (int q = 0; q < 4; q++)
            set_half(corner, ((size_t)(q >> 1) * w + (q & 1)) * c + ch, argmax[at] == q ? grad : 0.0f);
    }
    if (last_col) {
        memset(corner + (size_t)2 * c, 0, pixel_bytes);
        memset(corner + ((size_t)w + 2) * c, 0, pixel_bytes);
    }
    if (last_row) {
        memset(corner + (size_t)2 * w * c, 0, pixel_bytes);
        memset(corner + ((size_t)2 * w + 1) * c, 0, pixel_bytes);
    }
    if (last_row && last_col) memset(corner + ((size_t)2 * w + 2) * c, 0, pixel_bytes);
}

// d_prepool (n x h x w x c) = the BN-input gradient at each 2x2 window's argmax, 0 elsewhere.
cudaError_t launch_bn_gelu_backward_apply_pool(__half *d_prepool, const __half *d_out, const __half *in,
                                               const uint8_t *argmax, const float *mean, const float *rstd,
                                               const float *bias, const float *sums, int n, int h, int w, int c,
                                               int activation, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (!known_activation(activation)) return cudaErrorInvalidValue;
    int rows = n * (h / 2) * (w / 2);
    if (rows <= 0) return cudaSuccess;
    size_t bytes = bytes_of((long long)rows * c, sizeof(__half));
    if (!ALL_INSIDE({d_prepool, bytes_of((long long)n * h * w * c, sizeof(__half))}, {d_out, bytes}, {in, bytes},
                    {argmax, bytes_of((long long)rows * c, 1)}, BN_PARAMS(mean, rstd, bias, c),
                    {sums, bytes_of(2LL * c, sizeof(float))}))
        return cudaErrorIllegalAddress;
    const BnLayer l = {in, NULL, d_out, mean, rstd, bias, sums, c, activation};
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) apply_pool_row(d_prepool, argmax, &l, r, h, w);
    return cudaSuccess;
}
