// bench_activations.c: kernel_bench's harnesses of the kernels that move activations: the
// loaders, the whitening layer, the per-channel statistics, the 2x2 max pool and
// BatchNorm + activation (see kernel_bench.h). Activations are NHWC rows x c; the
// reference's per-channel functions take them as they are, as NCHW with n = rows, hw = 1.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernel_bench.h"
#include "reference.h"

enum { TRAIN_IMAGES = 50000 };  // CIFAR-10's training set: the train loader gathers from all of it
static const uint64_t SEED = 20240501;

// A random fp16 activation of rows x c on the device (per-channel mean and std as
// random_activation); *values gets its values as floats.
static void *device_activation(float **values, size_t rows, int c, const float *mean, const float *std) {
    uint16_t *halves = HOST_HALVES(rows * c);
    *values = HOST_FLOATS(rows * c);
    random_activation(halves, *values, rows, c, mean, std, 0);
    return dev_upload(halves, rows * c * sizeof(uint16_t));
}

// c values uniform in [lo, hi), each with a random sign when signed_.
static float *channel_values(int c, double lo, double hi, int signed_) {
    float *v = HOST_FLOATS(c);
    for (int ch = 0; ch < c; ch++) v[ch] = (float)(signed_ ? signed_uniform(lo, hi) : uniform(lo, hi));
    return v;
}

static float *upload_floats(const float *host, size_t count) { return dev_upload(host, count * sizeof(float)); }

// GPU fp16 values that differ from (half) of the reference's floats.
static double half_mismatches(const void *got_d, const float *want, size_t count) {
    uint16_t *got = HOST_HALVES(count);
    download(got, got_d, count * sizeof(uint16_t));
    size_t mismatches = 0;
    for (size_t i = 0; i < count; i++) mismatches += got[i] != float_to_half(want[i]);
    return (double)mismatches;
}

// Per-channel sums [0, c) and sums of squares [c, 2c) of rows x c values, in double.
static float *channel_sums(const float *x, size_t rows, int c) {
    double *acc = host_buffer(2 * (size_t)c * sizeof(double));
    for (size_t r = 0; r < rows; r++)
        for (int ch = 0; ch < c; ch++) {
            double v = x[r * c + ch];
            acc[ch] += v;
            acc[c + ch] += v * v;
        }
    float *sums = HOST_FLOATS(2 * c);
    for (int i = 0; i < 2 * c; i++) sums[i] = (float)acc[i];
    return sums;
}

// Compares the per-channel sums and squares of GPU stats partials with want (channel_sums).
static void compare_stats(Check *result, const void *partials_d, int n_blocks, int c, const float *want) {
    const float *got = sum_partials(partials_d, n_blocks, 2 * c);
    compare(result, "sums", rel_error(got, want, c), 1e-5);
    compare(result, "squares", rel_error(got + c, want + c, c), 1e-5);
}

// ---- loaders ------------------------------------------------------------------------------

typedef struct {
    Cifar10Split split;  // random images and labels (host)
    Recipe recipe;       // airbench94's translation and cutout, the record's jitter, at the bench's batch
    int batch_index, epoch;
    uint8_t *images_d, *labels_d, *batch_labels_d;
    void *x_d;           // the loaded batch or view: fp16 NCHW
} Loader;

static Loader *make_loader(int n_images, int batch) {
    Loader *l = host_buffer(sizeof *l);
    size_t image_bytes = (size_t)n_images * CIFAR10_IMAGE_BYTES;
    l->split = (Cifar10Split){n_images, host_buffer(image_bytes), host_buffer(n_images)};
    random_bytes(l->split.images, image_bytes, 256);
    random_bytes(l->split.labels, n_images, NET_CLASSES);
    l->images_d = dev_upload(l->split.images, image_bytes);
    l->labels_d = dev_upload(l->split.labels, n_images);
    l->batch_labels_d = dev_alloc(batch);
    l->x_d = dev_alloc((size_t)batch * CIFAR10_IMAGE_BYTES * sizeof(uint16_t));
    l->recipe = RECIPE_94;
    l->recipe.batch_size = batch;
    l->recipe.jitter_brightness = 0.1399;  // the 2025 record's amplitudes (issue 14)
    l->recipe.jitter_contrast = 0.1308;
    l->batch_index = n_images / batch / 2;  // mid-epoch
    l->epoch = 3;
    return l;
}

// Where the loader's batch starts in the stream of epochs (recipe_batch_first's epoch mode).
static int64_t loader_first(const Loader *l) {
    return (int64_t)l->epoch * l->split.n + (int64_t)l->batch_index * l->recipe.batch_size;
}

static void prepare_train_loader(Case *c, const Shape *s, int group) {
    (void)group;
    c->state = make_loader(TRAIN_IMAGES, s->batch);
    snprintf(c->shape, sizeof c->shape, "%d of %d images", s->batch, TRAIN_IMAGES);
    c->bytes = (double)s->batch * (CIFAR10_IMAGE_BYTES * (1 + 2) + 2);  // bytes in, fp16 out, labels
}

static cudaError_t run_train_loader(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Loader *l = c->state;
    const Recipe *r = &l->recipe;
    return CALL_AS(launch_train_loader, launch)(l->x_d, l->batch_labels_d, l->images_d, l->labels_d, l->split.n,
                                                r->batch_size, NULL, loader_first(l), SEED, r->translate,
                                                TRANSLATE_RANDOM, r->cutout, (float)r->jitter_brightness,
                                                (float)r->jitter_contrast, stream);
}

static void check_train_loader(const Case *c, Check *result) {
    const Loader *l = c->state;
    int batch = l->recipe.batch_size;
    size_t count = (size_t)batch * CIFAR10_IMAGE_BYTES;
    float *want = HOST_FLOATS(count);
    uint8_t *want_labels = host_buffer(batch), *got_labels = host_buffer(batch);
    ref_train_batch(want, want_labels, &l->split, l->split.n, &l->recipe, SEED, loader_first(l), NULL, batch);
    download(got_labels, l->batch_labels_d, batch);
    size_t label_mismatches = 0;
    for (int i = 0; i < batch; i++) label_mismatches += got_labels[i] != want_labels[i];
    compare(result, "pixels differing", half_mismatches(l->x_d, want, count), 0);
    compare(result, "labels differing", (double)label_mismatches, 0);
}

const Harness TRAIN_LOADER = {0, prepare_train_loader, run_train_loader, check_train_loader, free_all};

// The test-time view of `batch` images: mirrored, shifted by (-1, -1).
enum { EVAL_FLIP = 1, EVAL_SHIFT = -1 };

static void prepare_eval_loader(Case *c, const Shape *s, int group) {
    (void)group;
    c->state = make_loader(s->batch, s->batch);
    snprintf(c->shape, sizeof c->shape, "%d images", s->batch);
    c->bytes = (double)s->batch * CIFAR10_IMAGE_BYTES * (1 + 2);
}

static cudaError_t run_eval_loader(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Loader *l = c->state;
    return CALL_AS(launch_eval_loader, launch)(l->x_d, l->images_d, l->split.n, EVAL_FLIP, EVAL_SHIFT, stream);
}

// The reference's tta_view is static in reference.c: written out with the same augment.h call.
static void check_eval_loader(const Case *c, Check *result) {
    const Loader *l = c->state;
    size_t count = (size_t)l->split.n * CIFAR10_IMAGE_BYTES;
    float *normalized = HOST_FLOATS(count), *want = HOST_FLOATS(count);
    ref_normalize_images(normalized, l->split.images, l->split.n);
    for (size_t plane = 0; plane < (size_t)l->split.n * 3; plane++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                int sy, sx;
                aug_source_pixel(y, x, EVAL_SHIFT, EVAL_SHIFT, EVAL_FLIP, &sy, &sx);
                want[plane * 1024 + y * 32 + x] = normalized[plane * 1024 + sy * 32 + sx];
            }
    compare(result, "pixels differing", half_mismatches(l->x_d, want, count), 0);
}

const Harness EVAL_LOADER = {0, prepare_eval_loader, run_eval_loader, check_eval_loader, free_all};

// ---- whitening ----------------------------------------------------------------------------

enum { WHITEN_POSITIONS = 31 * 31 };

typedef struct {
    int n;
    float *x, *weight, *bias;   // host: images (fp16 values, NCHW), the 24 x 12 filters, bias
    float *d_out;               // host, NHWC (bias backward)
    void *x_d, *out_d, *d_out_d;
    float *weight_d, *bias_d, *partials_d;
} Whiten;

static Whiten *make_whiten(Case *c, int n) {
    Whiten *w = host_buffer(sizeof *w);
    w->n = n;
    w->x_d = device_activation(&w->x, (size_t)n * 3 * 32 * 32, 1, NULL, NULL);
    w->weight = HOST_FLOATS(WHITEN_WIDTH * COV_DIM);
    w->bias = HOST_FLOATS(WHITEN_WIDTH);
    random_floats(w->weight, WHITEN_WIDTH * COV_DIM, 0.0, 0.5);
    random_floats(w->bias, WHITEN_WIDTH, 0.0, 0.3);
    w->weight_d = upload_floats(w->weight, WHITEN_WIDTH * COV_DIM);
    w->bias_d = upload_floats(w->bias, WHITEN_WIDTH);
    c->state = w;
    c->bytes = (double)n * (CIFAR10_IMAGE_BYTES + WHITEN_POSITIONS * WHITEN_WIDTH) * 2;  // fp16 in and out
    return w;
}

// The reference's pre-activations (NCHW) of the whitening conv.
static float *whiten_z(const Whiten *w) {
    float *z = HOST_FLOATS((size_t)w->n * WHITEN_POSITIONS * WHITEN_WIDTH);
    ref_conv_forward(z, w->x, w->weight, w->bias, w->n, 3, 32, 32, WHITEN_WIDTH, WHITEN_KERNEL, 0);
    return z;
}

static void prepare_whiten_forward(Case *c, const Shape *s, int group) {
    (void)group;
    Whiten *w = make_whiten(c, s->batch);
    w->out_d = dev_alloc((size_t)w->n * WHITEN_POSITIONS * WHITEN_WIDTH * sizeof(uint16_t));
    snprintf(c->shape, sizeof c->shape, "%dx3x32x32 -> 31x31x24", s->batch);
}

static cudaError_t run_whiten_forward(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Whiten *w = c->state;
    return CALL_AS(launch_whiten_forward, launch)(w->out_d, w->x_d, w->weight_d, w->bias_d, w->n, stream);
}

static void check_whiten_forward(const Case *c, Check *result) {
    const Whiten *w = c->state;
    size_t count = (size_t)w->n * WHITEN_POSITIONS * WHITEN_WIDTH;
    float *act = HOST_FLOATS(count);
    ref_gelu_forward(act, whiten_z(w), count);
    compare(result, "out", rel_error(download_nchw(w->out_d, w->n, WHITEN_POSITIONS, WHITEN_WIDTH), act, count), 2e-3);
}

const Harness WHITEN_FORWARD = {0, prepare_whiten_forward, run_whiten_forward, check_whiten_forward, free_all};

static void prepare_whiten_bias_backward(Case *c, const Shape *s, int group) {
    (void)group;
    Whiten *w = make_whiten(c, s->batch);
    size_t rows = (size_t)w->n * WHITEN_POSITIONS;
    w->d_out_d = device_activation(&w->d_out, rows, WHITEN_WIDTH, channel_values(WHITEN_WIDTH, 0.2, 0.7, 1),
                                   channel_values(WHITEN_WIDTH, 0.5, 0.5, 0));
    w->partials_d = dev_alloc((size_t)stats_blocks((int)rows, WHITEN_WIDTH) * WHITEN_WIDTH * sizeof(float));
    snprintf(c->shape, sizeof c->shape, "%dx31x31x24", s->batch);
}

static cudaError_t run_whiten_bias_backward(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Whiten *w = c->state;
    return CALL_AS(launch_whiten_bias_backward, launch)(w->partials_d, w->x_d, w->d_out_d, w->weight_d, w->bias_d,
                                                        w->n, stream);
}

// d_bias = the conv's bias gradient of d_out * GELU'(z).
static void check_whiten_bias_backward(const Case *c, Check *result) {
    const Whiten *w = c->state;
    size_t count = (size_t)w->n * WHITEN_POSITIONS * WHITEN_WIDTH;
    float *d_out = HOST_FLOATS(count), *d_z = HOST_FLOATS(count), want[WHITEN_WIDTH];
    nhwc_to_nchw(d_out, w->d_out, w->n, WHITEN_POSITIONS, WHITEN_WIDTH);
    ref_gelu_backward(d_z, d_out, whiten_z(w), count);
    ref_conv_backward(NULL, NULL, want, d_z, w->x, w->weight, w->n, 3, 32, 32, WHITEN_WIDTH, WHITEN_KERNEL, 0);
    const float *got = sum_partials(w->partials_d, stats_blocks(w->n * WHITEN_POSITIONS, WHITEN_WIDTH), WHITEN_WIDTH);
    compare(result, "d_bias", rel_error(got, want, WHITEN_WIDTH), 1e-5);
}

const Harness WHITEN_BIAS_BACKWARD = {0, prepare_whiten_bias_backward, run_whiten_bias_backward,
                                      check_whiten_bias_backward, free_all};

// ---- statistics and the 2x2 max pool ------------------------------------------------------

typedef struct {
    int n, side, c;        // input n x side x side x c (side: the pooled side for channel_stats)
    float *in;             // host values
    void *in_d, *out_d;    // out: the pooled output (maxpool2_stats)
    uint8_t *argmax_d;
    float *partials_d;
} Stats;

static Stats *make_stats(Case *c, const Shape *s, int group, int side) {
    Stats *t = host_buffer(sizeof *t);
    t->n = s->batch;
    t->side = side;
    t->c = s->widths[group];
    size_t rows = (size_t)t->n * side * side;
    t->in_d = device_activation(&t->in, rows, t->c, channel_values(t->c, -1.0, 1.0, 0),
                                channel_values(t->c, 0.5, 2.0, 0));
    int pooled_rows = t->n * group_pooled_side(group) * group_pooled_side(group);
    t->partials_d = dev_alloc((size_t)stats_blocks(pooled_rows, t->c) * 2 * t->c * sizeof(float));
    snprintf(c->shape, sizeof c->shape, "g%d %dx%dx%dx%d", group, t->n, side, side, t->c);
    c->state = t;
    return t;
}

static void prepare_channel_stats(Case *c, const Shape *s, int group) {
    Stats *t = make_stats(c, s, group, group_pooled_side(group));
    c->bytes = (double)t->n * t->side * t->side * t->c * 2;
}

static cudaError_t run_channel_stats(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Stats *t = c->state;
    return CALL_AS(launch_channel_stats, launch)(t->partials_d, t->in_d, t->n * t->side * t->side, t->c, stream);
}

static void check_channel_stats(const Case *c, Check *result) {
    const Stats *t = c->state;
    int rows = t->n * t->side * t->side;
    compare_stats(result, t->partials_d, stats_blocks(rows, t->c), t->c, channel_sums(t->in, rows, t->c));
}

const Harness CHANNEL_STATS = {1, prepare_channel_stats, run_channel_stats, check_channel_stats, free_all};

static void prepare_maxpool2_stats(Case *c, const Shape *s, int group) {
    Stats *t = make_stats(c, s, group, group_conv_side(group));
    int pooled = t->side / 2;
    t->out_d = dev_alloc((size_t)t->n * pooled * pooled * t->c * sizeof(uint16_t));
    t->argmax_d = dev_alloc((size_t)t->n * pooled * pooled * t->c);
    c->bytes = (double)t->n * t->c * (t->side * t->side * 2 + pooled * pooled * (2 + 1));
}

static cudaError_t run_maxpool2_stats(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Stats *t = c->state;
    return CALL_AS(launch_maxpool2_stats, launch)(t->out_d, t->argmax_d, t->partials_d, t->in_d, t->n, t->side,
                                                  t->side, t->c, stream);
}

// GPU argmax bytes (NHWC, window position q = 2 dy + dx) that differ from the reference's
// (NCHW, flat index in the h x h plane).
static double argmax_mismatches(const uint8_t *argmax_d, const int *want, int n, int h, int c) {
    int side = h / 2;
    size_t count = (size_t)n * side * side * c, mismatches = 0;
    uint8_t *got = host_buffer(count);
    download(got, argmax_d, count);
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < side; oy++)
            for (int ox = 0; ox < side; ox++)
                for (int ch = 0; ch < c; ch++) {
                    int q = got[(((size_t)b * side + oy) * side + ox) * c + ch];
                    int flat = q < 4 ? (2 * oy + q / 2) * h + 2 * ox + q % 2 : -1;
                    mismatches += flat != want[(((size_t)b * c + ch) * side + oy) * side + ox];
                }
    return (double)mismatches;
}

static void check_maxpool2_stats(const Case *c, Check *result) {
    const Stats *t = c->state;
    int pooled = t->side / 2, hw = pooled * pooled;
    size_t in_count = (size_t)t->n * t->side * t->side * t->c, count = (size_t)t->n * hw * t->c;
    float *in = HOST_FLOATS(in_count), *want = HOST_FLOATS(count), *want_nhwc = HOST_FLOATS(count);
    int *argmax = host_buffer(count * sizeof(int));
    nhwc_to_nchw(in, t->in, t->n, t->side * t->side, t->c);
    ref_maxpool_forward(want, argmax, in, t->n, t->c, t->side, t->side, 2);
    compare(result, "out", rel_error(download_nchw(t->out_d, t->n, hw, t->c), want, count), 0);
    compare(result, "argmax differing", argmax_mismatches(t->argmax_d, argmax, t->n, t->side, t->c), 0);
    nchw_to_nhwc(want_nhwc, want, t->n, hw, t->c);
    const float *want_sums = channel_sums(want_nhwc, (size_t)t->n * hw, t->c);
    compare_stats(result, t->partials_d, stats_blocks(t->n * hw, t->c), t->c, want_sums);
}

const Harness MAXPOOL2_STATS = {1, prepare_maxpool2_stats, run_maxpool2_stats, check_maxpool2_stats, free_all};

// ---- the finalize kernels: block partials of a layer's rows -----------------------------

typedef struct {
    int n_blocks, c, count;            // count: rows, the values per channel
    float *partials;                   // host, n_blocks x 2c
    float *running_mean, *running_var; // host, before the launch
    float *partials_d, *out_a_d, *out_b_d, *running_mean_d, *running_var_d;
} Finalize;

// Partials of stats_blocks(rows, c) blocks, as the layer at `group` has: per block, sums
// [0, c) and sums of squares [c, 2c) of its rows of values with mean m and variance v per
// channel (1% noise), so that E[x^2] - m^2 is a variance well away from 0.
static Finalize *make_finalize(Case *c, const Shape *s, int group) {
    Finalize *f = host_buffer(sizeof *f);
    int side = group_pooled_side(group);
    f->c = s->widths[group];
    f->count = s->batch * side * side;
    f->n_blocks = stats_blocks(f->count, f->c);
    f->partials = HOST_FLOATS((size_t)f->n_blocks * 2 * f->c);
    float *m = channel_values(f->c, -1.0, 1.0, 0), *v = channel_values(f->c, 0.5, 2.0, 0);
    double rows_per_block = (double)f->count / f->n_blocks;
    for (int b = 0; b < f->n_blocks; b++)
        for (int ch = 0; ch < f->c; ch++) {
            float *p = f->partials + (size_t)b * 2 * f->c + ch;
            p[0] = (float)(rows_per_block * m[ch] * (1.0 + 0.01 * normal()));
            p[f->c] = (float)(rows_per_block * (m[ch] * m[ch] + v[ch]) * (1.0 + 0.01 * normal()));
        }
    f->partials_d = upload_floats(f->partials, (size_t)f->n_blocks * 2 * f->c);
    f->out_a_d = dev_alloc(2 * (size_t)f->c * sizeof(float));
    f->out_b_d = dev_alloc(2 * (size_t)f->c * sizeof(float));
    snprintf(c->shape, sizeof c->shape, "g%d c=%d, %d blocks", group, f->c, f->n_blocks);
    c->bytes = (double)f->n_blocks * 2 * f->c * 4;
    c->state = f;
    return f;
}

// The column sums of the host partials, in double.
static double *partial_totals(const Finalize *f) {
    double *totals = host_buffer(2 * (size_t)f->c * sizeof(double));
    for (int b = 0; b < f->n_blocks; b++)
        for (int i = 0; i < 2 * f->c; i++) totals[i] += f->partials[(size_t)b * 2 * f->c + i];
    return totals;
}

static void prepare_bn_finalize(Case *c, const Shape *s, int group) {
    Finalize *f = make_finalize(c, s, group);
    f->running_mean = channel_values(f->c, -0.5, 0.5, 0);
    f->running_var = channel_values(f->c, 0.5, 2.0, 0);
    f->running_mean_d = upload_floats(f->running_mean, f->c);
    f->running_var_d = upload_floats(f->running_var, f->c);
    c->bytes += (double)f->c * 4 * 6;  // mean and rstd out, running stats in and out
}

static cudaError_t run_bn_finalize(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Finalize *f = c->state;
    return CALL_AS(launch_bn_finalize, launch)(f->out_a_d, f->out_b_d, f->running_mean_d, f->running_var_d,
                                               f->partials_d, f->n_blocks, f->c, f->count, (float)RECIPE_94.bn_eps,
                                               (float)RECIPE_94.bn_keep, stream);
}

static void check_bn_finalize(const Case *c, Check *result) {
    const Finalize *f = c->state;
    const double *totals = partial_totals(f);
    float *mean = HOST_FLOATS(f->c), *var = HOST_FLOATS(f->c), *rstd = HOST_FLOATS(f->c);
    for (int ch = 0; ch < f->c; ch++) {
        double m = totals[ch] / f->count, v = fmax(totals[f->c + ch] / f->count - m * m, 0.0);
        mean[ch] = (float)m;
        var[ch] = (float)v;
        rstd[ch] = (float)(1.0 / sqrt(v + RECIPE_94.bn_eps));
    }
    float *running_mean = HOST_FLOATS(f->c), *running_var = HOST_FLOATS(f->c);
    memcpy(running_mean, f->running_mean, f->c * sizeof(float));
    memcpy(running_var, f->running_var, f->c * sizeof(float));
    ref_batchnorm_update_running(running_mean, running_var, mean, var, f->count, f->c, (float)RECIPE_94.bn_keep);
    compare(result, "mean", rel_error(download_floats(f->out_a_d, f->c), mean, f->c), 1e-5);
    compare(result, "rstd", rel_error(download_floats(f->out_b_d, f->c), rstd, f->c), 1e-5);
    compare(result, "running mean", rel_error(download_floats(f->running_mean_d, f->c), running_mean, f->c), 1e-5);
    compare(result, "running var", rel_error(download_floats(f->running_var_d, f->c), running_var, f->c), 1e-5);
}

const Harness BN_FINALIZE = {1, prepare_bn_finalize, run_bn_finalize, check_bn_finalize, free_all};

static void prepare_bn_backward_finalize(Case *c, const Shape *s, int group) {
    Finalize *f = make_finalize(c, s, group);
    c->bytes += (double)f->c * 4 * 3;  // d_bias and the two means out
}

static cudaError_t run_bn_backward_finalize(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Finalize *f = c->state;
    return CALL_AS(launch_bn_backward_finalize, launch)(f->out_a_d, f->out_b_d, f->partials_d, f->n_blocks, f->c,
                                                        f->count, stream);
}

// d_bias = the first half of the totals; sums = both halves / count.
static void check_bn_backward_finalize(const Case *c, Check *result) {
    const Finalize *f = c->state;
    const double *totals = partial_totals(f);
    float *d_bias = HOST_FLOATS(f->c), *means = HOST_FLOATS(2 * f->c);
    for (int i = 0; i < 2 * f->c; i++) means[i] = (float)(totals[i] / f->count);
    for (int ch = 0; ch < f->c; ch++) d_bias[ch] = (float)totals[ch];
    compare(result, "d_bias", rel_error(download_floats(f->out_a_d, f->c), d_bias, f->c), 1e-6);
    compare(result, "sums", rel_error(download_floats(f->out_b_d, 2 * f->c), means, 2 * f->c), 1e-6);
}

const Harness BN_BACKWARD_FINALIZE = {1, prepare_bn_backward_finalize, run_bn_backward_finalize,
                                      check_bn_backward_finalize, free_all};

// ---- BatchNorm + activation -----------------------------------------------------------------

// A BatchNorm + activation layer of rows x c: the BN input with per-channel means and
// spreads and its batch statistics, the bias, the residual (when residual), d_out with
// per-channel offsets (so that the backward sums are not cancellation noise), the
// reference's dz = d_out * act'(z), and its per-channel sum dz [0, c) and sum dz * xhat
// [c, 2c). act is the shape's activation (--activation; the header line names it).
typedef struct {
    int rows, c, residual;
    Activation activation;
    float *in, *res, *d_out;           // host values (fp16)
    float *mean, *var, *bias;          // host, per channel
    float *d_z;                        // host: the reference's dz (backward harnesses)
    double *dz_sums;                   // host: sum dz, sum dz * xhat (backward harnesses)
    void *in_d, *res_d, *d_out_d, *d_res_d;
    void *out_d;                       // the forward's out, or backward_apply's d_in
    float *mean_d, *rstd_d, *bias_d, *sums_d, *partials_d;
} BnLayer;

// The reference's pre-activation z = BN(in) + bias [+ residual] (eval mode with the batch
// statistics is training mode's formula).
static float *bn_z(const BnLayer *l) {
    size_t count = (size_t)l->rows * l->c;
    float *z = HOST_FLOATS(count);
    ref_batchnorm_forward_eval(z, l->in, l->bias, l->mean, l->var, l->rows, l->c, 1, (float)RECIPE_94.bn_eps);
    if (l->residual)
        for (size_t i = 0; i < count; i++) z[i] += l->res[i];
    return z;
}

// The forward inputs at rows x c; backward adds d_out, dz, its sums, their means for the
// apply kernels (sums_d), and the partials and gradient buffers.
static void make_bn_layer(BnLayer *l, int rows, int c, int residual, Activation activation, int backward) {
    size_t count = (size_t)rows * c;
    *l = (BnLayer){.rows = rows, .c = c, .residual = residual, .activation = activation};
    l->in_d = device_activation(&l->in, rows, c, channel_values(c, -1.0, 1.0, 0), channel_values(c, 0.5, 2.0, 0));
    if (residual) l->res_d = device_activation(&l->res, rows, c, NULL, NULL);
    const float *moments = channel_sums(l->in, rows, c);
    l->mean = HOST_FLOATS(c);
    l->var = HOST_FLOATS(c);
    float *rstd = HOST_FLOATS(c);
    for (int ch = 0; ch < c; ch++) {
        double m = (double)moments[ch] / rows, v = fmax((double)moments[c + ch] / rows - m * m, 0.0);
        l->mean[ch] = (float)m;
        l->var[ch] = (float)v;
        rstd[ch] = (float)(1.0 / sqrt(v + RECIPE_94.bn_eps));
    }
    l->bias = channel_values(c, -0.5, 0.5, 0);
    l->mean_d = upload_floats(l->mean, c);
    l->rstd_d = upload_floats(rstd, c);
    l->bias_d = upload_floats(l->bias, c);
    l->out_d = dev_alloc(count * sizeof(uint16_t));
    if (!backward) return;
    l->d_out_d = device_activation(&l->d_out, rows, c, channel_values(c, 0.2, 0.7, 1), channel_values(c, 0.5, 0.5, 0));
    l->d_z = HOST_FLOATS(count);
    ref_activation_backward(l->activation, l->d_z, l->d_out, bn_z(l), count);
    l->dz_sums = host_buffer(2 * (size_t)c * sizeof(double));
    for (size_t i = 0; i < count; i++) {
        int ch = (int)(i % c);
        l->dz_sums[ch] += l->d_z[i];
        l->dz_sums[c + ch] += l->d_z[i] * ((l->in[i] - (double)l->mean[ch]) * rstd[ch]);
    }
    float *means = HOST_FLOATS(2 * c);
    for (int i = 0; i < 2 * c; i++) means[i] = (float)(l->dz_sums[i] / rows);
    l->sums_d = upload_floats(means, 2 * c);
    l->partials_d = dev_alloc((size_t)stats_blocks(rows, c) * 2 * c * sizeof(float));
    if (residual) l->d_res_d = dev_alloc(count * sizeof(uint16_t));
}

// A harness's layer at `group`: rows = batch x pooled side^2, c = the group's width.
static BnLayer *bn_case(Case *c, const Shape *s, int group, int residual, int backward) {
    BnLayer *l = host_buffer(sizeof *l);
    int side = group_pooled_side(group);
    make_bn_layer(l, s->batch * side * side, s->widths[group], residual, s->activation, backward);
    snprintf(c->shape, sizeof c->shape, "g%d %dx%dx%dx%d%s", group, s->batch, side, side, l->c,
             residual ? " +res" : "");
    c->state = l;
    return l;
}

// fp16 tensors of the layer's size a kernel reads and writes.
static double bn_bytes(const BnLayer *l, int tensors) { return (double)l->rows * l->c * 2 * tensors; }

static void prepare_bn_gelu_forward(Case *c, const Shape *s, int group) {
    BnLayer *l = bn_case(c, s, group, 0, 0);
    c->bytes = bn_bytes(l, 2);
}

static void prepare_bn_gelu_forward_residual(Case *c, const Shape *s, int group) {
    BnLayer *l = bn_case(c, s, group, 1, 0);
    c->bytes = bn_bytes(l, 3);
}

static cudaError_t run_bn_gelu_forward(const Case *c, KernelFn launch, cudaStream_t stream) {
    const BnLayer *l = c->state;
    return CALL_AS(launch_bn_gelu_forward, launch)(l->out_d, l->in_d, l->res_d, l->mean_d, l->rstd_d, l->bias_d,
                                                   l->rows, l->c, l->activation, stream);
}

static void check_bn_gelu_forward(const Case *c, Check *result) {
    const BnLayer *l = c->state;
    size_t count = (size_t)l->rows * l->c;
    float *act = HOST_FLOATS(count);
    ref_activation_forward(l->activation, act, bn_z(l), count);
    compare(result, "out", rel_error(download_halves(l->out_d, count), act, count), 2e-3);
}

const Harness BN_GELU_FORWARD = {1, prepare_bn_gelu_forward, run_bn_gelu_forward, check_bn_gelu_forward, free_all};
const Harness BN_GELU_FORWARD_RESIDUAL = {1, prepare_bn_gelu_forward_residual, run_bn_gelu_forward,
                                          check_bn_gelu_forward, free_all};

static void prepare_bn_gelu_backward_reduce(Case *c, const Shape *s, int group) {
    BnLayer *l = bn_case(c, s, group, 0, 1);
    c->bytes = bn_bytes(l, 2);
}

static cudaError_t run_bn_gelu_backward_reduce(const Case *c, KernelFn launch, cudaStream_t stream) {
    const BnLayer *l = c->state;
    return CALL_AS(launch_bn_gelu_backward_reduce, launch)(l->partials_d, l->d_out_d, l->in_d, l->res_d, l->mean_d,
                                                           l->rstd_d, l->bias_d, l->rows, l->c, l->activation,
                                                           stream);
}

// The partials' totals against sum dz and sum dz * xhat.
static void check_bn_gelu_backward_reduce(const Case *c, Check *result) {
    const BnLayer *l = c->state;
    float *want = HOST_FLOATS(2 * l->c);
    for (int i = 0; i < 2 * l->c; i++) want[i] = (float)l->dz_sums[i];
    const float *got = sum_partials(l->partials_d, stats_blocks(l->rows, l->c), 2 * l->c);
    compare(result, "sum dz", rel_error(got, want, l->c), 1e-5);
    compare(result, "sum dz*xhat", rel_error(got + l->c, want + l->c, l->c), 1e-5);
}

const Harness BN_GELU_BACKWARD_REDUCE = {1, prepare_bn_gelu_backward_reduce, run_bn_gelu_backward_reduce,
                                         check_bn_gelu_backward_reduce, free_all};

// With the residual (airbench96's third conv of a group): in, d_out and the residual read.
static void prepare_bn_gelu_backward_reduce_residual(Case *c, const Shape *s, int group) {
    BnLayer *l = bn_case(c, s, group, 1, 1);
    c->bytes = bn_bytes(l, 3);
}

const Harness BN_GELU_BACKWARD_REDUCE_RESIDUAL = {1, prepare_bn_gelu_backward_reduce_residual,
                                                  run_bn_gelu_backward_reduce, check_bn_gelu_backward_reduce,
                                                  free_all};

// The reference's gradient of the BN input (rows x c).
static float *bn_input_grad(const BnLayer *l) {
    float *d_in = HOST_FLOATS((size_t)l->rows * l->c), *d_bias = HOST_FLOATS(l->c);
    ref_batchnorm_backward(d_in, d_bias, l->d_z, l->in, l->mean, l->var, l->rows, l->c, 1, (float)RECIPE_94.bn_eps);
    return d_in;
}

static void prepare_bn_gelu_backward_apply(Case *c, const Shape *s, int group) {
    BnLayer *l = bn_case(c, s, group, 0, 1);
    c->bytes = bn_bytes(l, 3);
}

static void prepare_bn_gelu_backward_apply_residual(Case *c, const Shape *s, int group) {
    BnLayer *l = bn_case(c, s, group, 1, 1);
    c->bytes = bn_bytes(l, 5);
}

static cudaError_t run_bn_gelu_backward_apply(const Case *c, KernelFn launch, cudaStream_t stream) {
    const BnLayer *l = c->state;
    return CALL_AS(launch_bn_gelu_backward_apply, launch)(l->out_d, l->d_res_d, l->d_out_d, l->in_d, l->res_d,
                                                          l->mean_d, l->rstd_d, l->bias_d, l->sums_d, l->rows, l->c,
                                                          l->activation, stream);
}

// d_in (in out_d) and, with the residual, d_residual = dz.
static void check_bn_gelu_backward_apply(const Case *c, Check *result) {
    const BnLayer *l = c->state;
    size_t count = (size_t)l->rows * l->c;
    compare(result, "d_in", rel_error(download_halves(l->out_d, count), bn_input_grad(l), count), 2e-3);
    if (l->residual) compare(result, "d_residual", rel_error(download_halves(l->d_res_d, count), l->d_z, count), 2e-3);
}

const Harness BN_GELU_BACKWARD_APPLY = {1, prepare_bn_gelu_backward_apply, run_bn_gelu_backward_apply,
                                        check_bn_gelu_backward_apply, free_all};
const Harness BN_GELU_BACKWARD_APPLY_RESIDUAL = {1, prepare_bn_gelu_backward_apply_residual,
                                                 run_bn_gelu_backward_apply, check_bn_gelu_backward_apply, free_all};

// The pooled layer of a group (its first conv's BN) and the max pool in front of it.
typedef struct {
    BnLayer bn;          // rows = n x pooled side^2
    int n, h;            // the pre-pool activation: n x h x h x c
    int *argmax;         // host: each window's max as the reference's flat index (NCHW)
    uint8_t *argmax_d;   // the same, as window positions q = 2 dy + dx (NHWC)
    void *d_prepool_d;
} BnPool;

static void prepare_bn_gelu_backward_apply_pool(Case *c, const Shape *s, int group) {
    BnPool *p = host_buffer(sizeof *p);
    int side = group_pooled_side(group), ch_count = s->widths[group];
    p->n = s->batch;
    p->h = group_conv_side(group);
    make_bn_layer(&p->bn, p->n * side * side, ch_count, 0, s->activation, 1);
    size_t count = (size_t)p->bn.rows * ch_count, prepool = (size_t)p->n * p->h * p->h * ch_count;
    uint8_t *q = host_buffer(count);
    p->argmax = host_buffer(count * sizeof(int));
    for (int b = 0; b < p->n; b++)
        for (int oy = 0; oy < side; oy++)
            for (int ox = 0; ox < side; ox++)
                for (int ch = 0; ch < ch_count; ch++) {
                    int k = (int)(next_u64() % 4);
                    q[(((size_t)b * side + oy) * side + ox) * ch_count + ch] = (uint8_t)k;
                    p->argmax[(((size_t)b * ch_count + ch) * side + oy) * side + ox] =
                        (2 * oy + k / 2) * p->h + 2 * ox + k % 2;
                }
    p->argmax_d = dev_upload(q, count);
    p->d_prepool_d = dev_alloc(prepool * sizeof(uint16_t));
    snprintf(c->shape, sizeof c->shape, "g%d %dx%dx%dx%d -> %dx%d", group, p->n, side, side, ch_count, p->h, p->h);
    c->bytes = (double)count * (2 + 2 + 1) + (double)prepool * 2;  // in, d_out, argmax; d_prepool
    c->state = p;
}

static cudaError_t run_bn_gelu_backward_apply_pool(const Case *c, KernelFn launch, cudaStream_t stream) {
    const BnPool *p = c->state;
    const BnLayer *l = &p->bn;
    return CALL_AS(launch_bn_gelu_backward_apply_pool, launch)(p->d_prepool_d, l->d_out_d, l->in_d, p->argmax_d,
                                                               l->mean_d, l->rstd_d, l->bias_d, l->sums_d, p->n, p->h,
                                                               p->h, l->c, l->activation, stream);
}

// The BN input gradient routed back through the max pool by the reference.
static void check_bn_gelu_backward_apply_pool(const Case *c, Check *result) {
    const BnPool *p = c->state;
    const BnLayer *l = &p->bn;
    int side = p->h / 2;
    size_t prepool = (size_t)p->n * p->h * p->h * l->c;
    float *d_pooled = HOST_FLOATS((size_t)l->rows * l->c), *want = HOST_FLOATS(prepool);
    nhwc_to_nchw(d_pooled, bn_input_grad(l), p->n, side * side, l->c);
    ref_maxpool_backward(want, d_pooled, p->argmax, p->n, l->c, p->h, p->h, 2);
    compare(result, "d_prepool", rel_error(download_nchw(p->d_prepool_d, p->n, p->h * p->h, l->c), want, prepool),
            2e-3);
}

const Harness BN_GELU_BACKWARD_APPLY_POOL = {1, prepare_bn_gelu_backward_apply_pool, run_bn_gelu_backward_apply_pool,
                                             check_bn_gelu_backward_apply_pool, free_all};
