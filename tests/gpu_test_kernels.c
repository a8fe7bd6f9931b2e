// gpu_test_kernels.c: every kernel of kernels.h against the CPU reference (reference.c).
//
// Each check draws fresh random inputs, fills every GPU output with NaN bytes (0xff)
// before the launch so that an element a kernel forgets to write shows up, converts the
// GPU's NHWC fp16 results to NCHW floats, and prints the relative error
// ||gpu - ref|| / ||ref|| next to its bound: fp16 outputs ~2e-3, fp32 outputs ~1e-5, and 0
// where the result must be exact (loaders: the GPU half equals (half) of the reference
// float; max pools; seeded init: bit-identical; argmax positions: equal). Inputs of the
// reductions have per-channel offsets, so that the sums compared are not cancellation
// noise. Timing is dev/kernel_bench's job.
//
// --small runs every check at small shapes, for compute-sanitizer (dev/gpu_sanitize.sh):
// see run_checks for what each shape keeps covered. Exits 2 without a GPU or on a bad flag.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_test.h"
#include "kernels.h"
#include "reference.h"

// ----------------------------------------------------------------------------
// Loaders.

// The GPU loader's n rows (at rows, host, or NULL) from stream position `first` against
// ref_train_batch's: every pixel the half of the reference's float, every label equal.
static void check_train_loader(const Cifar10Split *split, const uint8_t *images_d, const uint8_t *labels_d,
                               const Recipe *recipe, uint64_t seed, int64_t first, const int *rows, int n,
                               const char *what) {
    size_t count = (size_t)n * CIFAR10_IMAGE_BYTES;
    float *want = HOST_FLOATS(count);
    uint8_t *want_labels = host_buffer(n), *got_labels = host_buffer(n);
    ref_train_batch(want, want_labels, split, split->n, recipe, seed, first, rows, n);
    void *x_d = dev_alloc(count * sizeof(uint16_t));
    uint8_t *batch_labels_d = dev_alloc(n);
    const int *rows_d = rows ? dev_upload(rows, (size_t)n * sizeof(int)) : NULL;
    LAUNCH(launch_train_loader(x_d, batch_labels_d, images_d, labels_d, split->n, n, rows_d, first, seed,
                               recipe->translate, recipe->translate_mode, recipe->cutout,
                               (float)recipe->jitter_brightness, (float)recipe->jitter_contrast, 0));
    uint16_t *got = HOST_HALVES(count);
    download(got, x_d, count * sizeof(uint16_t));
    download(got_labels, batch_labels_d, n);
    size_t pixel_mismatches = 0, label_mismatches = 0;
    for (size_t i = 0; i < count; i++) pixel_mismatches += got[i] != float_to_half(want[i]);
    for (int i = 0; i < n; i++) label_mismatches += got_labels[i] != want_labels[i];
    check_error((double)pixel_mismatches, 0, "train_loader %s: pixels differing", what);
    check_error((double)label_mismatches, 0, "train_loader %s: labels differing", what);
}

// Image counts and batch sizes divided by `divisor` (1, or 8 with --small: batches of 32, 32,
// 25 and 16 from 625 images keep the odd batch and every batch index inside the epoch).
static void test_loaders(int divisor) {
    printf("loaders\n");
    const int N_TRAIN = 5000 / divisor, N_EVAL = 300 / divisor;
    uint8_t *images = host_buffer((size_t)N_TRAIN * CIFAR10_IMAGE_BYTES), *labels = host_buffer(N_TRAIN);
    random_bytes(images, (size_t)N_TRAIN * CIFAR10_IMAGE_BYTES, 256);
    random_bytes(labels, N_TRAIN, 10);
    Cifar10Split split = {N_TRAIN, images, labels};
    uint8_t *images_d = dev_upload(images, (size_t)N_TRAIN * CIFAR10_IMAGE_BYTES);
    uint8_t *labels_d = dev_upload(labels, N_TRAIN);
    const uint64_t seed = 20240501;
    // jitter: the record's amplitudes, brightness or contrast alone, and wide ones (with cutout)
    const struct {
        int batch, batch_index, epoch, translate, cutout;
        TranslateMode mode;
        float brightness, contrast;
    } cases[] = {
        {256, 3, 5, 2, 0, TRANSLATE_RANDOM, 0, 0},
        {256, 7, 30, 4, 12, TRANSLATE_DERANDOMIZED, 0, 0},
        {200, 2, 4, 2, 0, TRANSLATE_DERANDOMIZED, 0, 0},
        {128, 0, 1, 0, 0, TRANSLATE_RANDOM, 0, 0},
        {256, 5, 2, 2, 0, TRANSLATE_RANDOM, 0.1399f, 0.1308f},
        {256, 1, 9, 4, 12, TRANSLATE_RANDOM, 0.1399f, 0.1308f},
        {200, 4, 6, 2, 0, TRANSLATE_DERANDOMIZED, 0.25f, 0},
        {128, 3, 3, 0, 0, TRANSLATE_RANDOM, 0, 0.3f},
        {256, 2, 17, 4, 12, TRANSLATE_DERANDOMIZED, 0.9f, 0.9f},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        Recipe recipe = RECIPE_94;
        recipe.batch_size = cases[k].batch / divisor;
        recipe.translate = cases[k].translate;
        recipe.cutout = cases[k].cutout;
        recipe.translate_mode = cases[k].mode;
        recipe.jitter_brightness = cases[k].brightness;
        recipe.jitter_contrast = cases[k].contrast;
        int64_t first = (int64_t)cases[k].epoch * N_TRAIN + (int64_t)cases[k].batch_index * recipe.batch_size;
        char what[128];
        snprintf(what, sizeof what, "batch %d T=%d %s cutout=%d jitter %g,%g", recipe.batch_size, cases[k].translate,
                 cases[k].mode == TRANSLATE_DERANDOMIZED ? "derandomized" : "random", cases[k].cutout,
                 cases[k].brightness, cases[k].contrast);
        check_train_loader(&split, images_d, labels_d, &recipe, seed, first, NULL, recipe.batch_size, what);
    }
    // 96-filter's batches: continuous, one running from the end of data epoch 2 into epoch
    // 3 (each part with its own epoch's order, flips and shifts), and some of its rows, as
    // data filtering loads its kept examples (every third, and the last).
    Recipe filter = RECIPE_96_FILTER;
    filter.batch_size = 256 / divisor;
    int64_t first = 3LL * N_TRAIN - filter.batch_size / 3;
    int rows[256], n_rows = 0;
    for (int i = 0; i < filter.batch_size; i += 3) rows[n_rows++] = i;
    if (rows[n_rows - 1] != filter.batch_size - 1) rows[n_rows++] = filter.batch_size - 1;
    check_train_loader(&split, images_d, labels_d, &filter, seed, first, NULL, filter.batch_size,
                       "continuous across epochs 2 and 3");
    check_train_loader(&split, images_d, labels_d, &filter, seed, first, rows, n_rows, "kept rows across epochs");
    // Test views: the reference's tta_view on normalized images (static in reference.c,
    // so written out here with the same augment.h call).
    size_t count = (size_t)N_EVAL * CIFAR10_IMAGE_BYTES;
    float *normalized = HOST_FLOATS(count);
    ref_normalize_images(normalized, images, N_EVAL);
    uint16_t *got = HOST_HALVES(count);
    for (int flip = 0; flip < 2; flip++)
        for (int shift = -1; shift <= 1; shift++) {
            void *x_d = dev_alloc(count * sizeof(uint16_t));
            LAUNCH(launch_eval_loader(x_d, images_d, N_EVAL, flip, shift, 0));
            download(got, x_d, count * sizeof(uint16_t));
            size_t mismatches = 0;
            for (int b = 0; b < N_EVAL; b++)
                for (int c = 0; c < 3; c++)
                    for (int y = 0; y < 32; y++)
                        for (int x = 0; x < 32; x++) {
                            int sy, sx;
                            aug_source_pixel(y, x, shift, shift, flip, &sy, &sx);
                            size_t plane = ((size_t)b * 3 + c) * 1024;
                            mismatches += got[plane + y * 32 + x] != float_to_half(normalized[plane + sy * 32 + sx]);
                        }
            check_error((double)mismatches, 0, "eval_loader flip %d shift %+d: pixels differing", flip, shift);
        }
    free_all();
}

// ----------------------------------------------------------------------------
// Selective test-time augmentation.

// The indexed eval loader gathers the chosen images (out of order and repeated), the top
// softmax probability matches the reference's, the selection of the k lowest and of the k
// highest equals ref_select_lowest's and ref_select_highest's on the same values (ties
// included: rows 3x duplicated), and the scatter puts every row back where it came from.
static void test_selective_tta(int n) {
    printf("selective TTA n=%d\n", n);
    uint8_t *images = host_buffer((size_t)n * CIFAR10_IMAGE_BYTES);
    random_bytes(images, (size_t)n * CIFAR10_IMAGE_BYTES, 256);
    uint8_t *images_d = dev_upload(images, (size_t)n * CIFAR10_IMAGE_BYTES);
    int picks[5] = {n - 1, 0, n / 2, n / 2, 1};
    int *picks_d = dev_upload(picks, sizeof picks);
    void *x_d = dev_alloc((size_t)5 * CIFAR10_IMAGE_BYTES * sizeof(uint16_t));
    LAUNCH(launch_eval_loader_indexed(x_d, images_d, picks_d, 5, 1, -1, 0));
    float *want_x = HOST_FLOATS((size_t)CIFAR10_IMAGE_BYTES), *plain = HOST_FLOATS((size_t)CIFAR10_IMAGE_BYTES);
    float *got_x = download_halves(x_d, (size_t)5 * CIFAR10_IMAGE_BYTES);
    size_t mismatches = 0;
    for (int i = 0; i < 5; i++) {
        ref_normalize_images(plain, images + (size_t)picks[i] * CIFAR10_IMAGE_BYTES, 1);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++) {
                    int sy, sx;
                    aug_source_pixel(y, x, -1, -1, 1, &sy, &sx);
                    want_x[(c * 32 + y) * 32 + x] = round_to_half(plain[(c * 32 + sy) * 32 + sx]);
                }
        for (size_t p = 0; p < CIFAR10_IMAGE_BYTES; p++)
            mismatches += got_x[(size_t)i * CIFAR10_IMAGE_BYTES + p] != want_x[p];
    }
    check_error((double)mismatches, 0, "eval_loader_indexed: pixels differing");

    float *logits = HOST_FLOATS((size_t)n * NET_CLASSES);
    random_floats(logits, (size_t)n * NET_CLASSES, 0.0, 3.0);
    for (int b = 3; b + 2 < n; b += 7)  // exact ties: three identical rows
        for (int r = 1; r <= 2; r++) memcpy(logits + (size_t)(b + r) * NET_CLASSES, logits + (size_t)b * NET_CLASSES,
                                            NET_CLASSES * sizeof(float));
    float *logits_d = dev_upload(logits, (size_t)n * NET_CLASSES * sizeof(float));
    float *probability_d = dev_alloc((size_t)n * sizeof(float));
    LAUNCH(launch_top_probability(probability_d, logits_d, n, 0));
    float *probability = download_floats(probability_d, n), *want_p = HOST_FLOATS(n);
    ref_top_probabilities(want_p, logits, n);
    check_rel("top_probability", probability, want_p, n, 1e-6);

    // the lowest (selective TTA) and the highest (data filtering: half of a batch)
    const int ks[4] = {1, n / 4, n / 2, n};
    for (int q = 0; q < 4; q++)
        for (int highest = 0; highest < 2; highest++) {
            int k = ks[q];
            int *indices_d = dev_alloc((size_t)n * sizeof(int)), *got = host_buffer((size_t)k * sizeof(int));
            int *want = host_buffer((size_t)k * sizeof(int));
            // the reference ranks the GPU's own probabilities
            if (highest) {
                LAUNCH(launch_select_highest(indices_d, probability_d, n, k, 0));
                ref_select_highest(want, probability, n, k);
            } else {
                LAUNCH(launch_select_lowest(indices_d, probability_d, n, k, 0));
                ref_select_lowest(want, probability, n, k);
            }
            download(got, indices_d, (size_t)k * sizeof(int));
            CHECK(!memcmp(got, want, (size_t)k * sizeof(int)), "select_%s n=%d k=%d: indices differ from the "
                  "reference's", highest ? "highest" : "lowest", n, k);
        }
    float *rows = HOST_FLOATS(5 * NET_CLASSES), *dst = HOST_FLOATS((size_t)n * NET_CLASSES);
    random_floats(rows, 5 * NET_CLASSES, 0.0, 1.0);
    int distinct[5] = {n - 1, 0, n / 2, 2, 1};
    float *dst_d = dev_upload(logits, (size_t)n * NET_CLASSES * sizeof(float));
    LAUNCH(launch_scatter_rows(dst_d, dev_upload(rows, 5 * NET_CLASSES * sizeof(float)),
                               dev_upload(distinct, sizeof distinct), 5, NET_CLASSES, 0));
    memcpy(dst, logits, (size_t)n * NET_CLASSES * sizeof(float));
    for (int i = 0; i < 5; i++) memcpy(dst + (size_t)distinct[i] * NET_CLASSES, rows + i * NET_CLASSES,
                                          NET_CLASSES * sizeof(float));
    check_rel("scatter_rows", download_floats(dst_d, (size_t)n * NET_CLASSES), dst, (size_t)n * NET_CLASSES, 0);
    free_all();
}

// ----------------------------------------------------------------------------
// Whitening.

// n images: more than 256 (COV_MAX_BLOCKS) make blocks loop over several images.
static void test_patch_covariance(int n) {
    uint8_t *images = host_buffer((size_t)n * CIFAR10_IMAGE_BYTES);
    random_bytes(images, (size_t)n * CIFAR10_IMAGE_BYTES, 256);
    uint8_t *images_d = dev_upload(images, (size_t)n * CIFAR10_IMAGE_BYTES);
    int blocks = patch_cov_blocks(n);
    printf("patch covariance n=%d (%d blocks)\n", n, blocks);
    CHECK(blocks >= 1, "patch_cov_blocks(%d) = %d", n, blocks);
    float *partials_d = dev_alloc((size_t)blocks * COV_ENTRIES * sizeof(float));
    float *sums_d = dev_alloc(COV_ENTRIES * sizeof(float));
    LAUNCH(launch_patch_covariance(partials_d, images_d, n, 0));
    LAUNCH(launch_reduce_partials(sums_d, partials_d, blocks, COV_ENTRIES, 0));
    float *got = download_floats(sums_d, COV_ENTRIES);
    // The reference's patch loop (ref_whitening_weights), in double, upper triangle.
    float *normalized = HOST_FLOATS((size_t)n * CIFAR10_IMAGE_BYTES);
    ref_normalize_images(normalized, images, n);
    double cov[COV_ENTRIES] = {0};
    for (int b = 0; b < n; b++)
        for (int y = 0; y < 31; y++)
            for (int x = 0; x < 31; x++) {
                double patch[COV_DIM];
                for (int c = 0; c < 3; c++)
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++)
                            patch[(c * 2 + dy) * 2 + dx] =
                                normalized[(((size_t)b * 3 + c) * 32 + y + dy) * 32 + x + dx];
                for (int i = 0, e = 0; i < COV_DIM; i++)
                    for (int j = i; j < COV_DIM; j++, e++) cov[e] += patch[i] * patch[j];
            }
    float want[COV_ENTRIES];
    for (int e = 0; e < COV_ENTRIES; e++) want[e] = (float)cov[e];
    check_error(rel_error(got, want, COV_ENTRIES), 1e-5, "patch_covariance + reduce_partials, n = %d", n);
    free_all();
}

// n images: any n >= 1 gives the bias gradient's reduction 3 or more blocks.
static void test_whiten(int n) {
    printf("whitening conv n=%d\n", n);
    const int positions = 31 * 31;
    size_t in_count = (size_t)n * 3 * 32 * 32, out_count = (size_t)n * positions * WHITEN_WIDTH;
    uint16_t *x_h = HOST_HALVES(in_count);
    float *x = HOST_FLOATS(in_count), weight[WHITEN_WIDTH * COV_DIM], bias[WHITEN_WIDTH];
    random_activation(x_h, x, in_count, 1, NULL, NULL, 0);
    random_floats(weight, WHITEN_WIDTH * COV_DIM, 0.0, 0.5);
    random_floats(bias, WHITEN_WIDTH, 0.0, 0.3);
    void *x_d = dev_upload(x_h, in_count * sizeof(uint16_t));
    float *weight_d = dev_upload(weight, sizeof weight), *bias_d = dev_upload(bias, sizeof bias);
    void *out_d = dev_alloc(out_count * sizeof(uint16_t));
    LAUNCH(launch_whiten_forward(out_d, x_d, weight_d, bias_d, n, 0));
    float *pre = HOST_FLOATS(out_count), *act = HOST_FLOATS(out_count);
    ref_conv_forward(pre, x, weight, bias, n, 3, 32, 32, WHITEN_WIDTH, WHITEN_KERNEL, 0);
    ref_gelu_forward(act, pre, out_count);
    check_error(rel_error(download_nchw(out_d, n, positions, WHITEN_WIDTH), act, out_count), 2e-3,
                "whiten_forward n=%d (out fp16)", n);

    // Bias gradient: d_out (NHWC) with per-channel offsets.
    float offset[WHITEN_WIDTH], spread[WHITEN_WIDTH];
    for (int k = 0; k < WHITEN_WIDTH; k++) {
        offset[k] = (float)signed_uniform(0.2, 0.7);
        spread[k] = 0.5f;
    }
    uint16_t *d_out_h = HOST_HALVES(out_count);
    float *d_out = HOST_FLOATS(out_count), *d_out_nchw = HOST_FLOATS(out_count), *d_pre = HOST_FLOATS(out_count);
    random_activation(d_out_h, d_out, (size_t)n * positions, WHITEN_WIDTH, offset, spread, 0);
    nhwc_to_nchw(d_out_nchw, d_out, n, positions, WHITEN_WIDTH);
    void *d_out_d = dev_upload(d_out_h, out_count * sizeof(uint16_t));
    int blocks = stats_blocks(n * positions, WHITEN_WIDTH);
    float *partials_d = dev_alloc((size_t)blocks * WHITEN_WIDTH * sizeof(float));
    float *d_bias_d = dev_alloc(WHITEN_WIDTH * sizeof(float));
    LAUNCH(launch_whiten_bias_backward(partials_d, x_d, d_out_d, weight_d, bias_d, n, 0));
    LAUNCH(launch_reduce_partials(d_bias_d, partials_d, blocks, WHITEN_WIDTH, 0));
    ref_gelu_backward(d_pre, d_out_nchw, pre, out_count);
    float want[WHITEN_WIDTH];
    for (int k = 0; k < WHITEN_WIDTH; k++) {
        double sum = 0.0;
        for (int b = 0; b < n; b++)
            for (int p = 0; p < positions; p++) sum += d_pre[((size_t)b * WHITEN_WIDTH + k) * positions + p];
        want[k] = (float)sum;
    }
    check_error(rel_error(download_floats(d_bias_d, WHITEN_WIDTH), want, WHITEN_WIDTH), 1e-5,
                "whiten_bias_backward + reduce_partials n=%d (%d blocks)", n, blocks);
    free_all();
}

// ----------------------------------------------------------------------------
// Statistics and the fixed-order reductions.

static void test_stats_blocks_and_reduce(void) {
    printf("stats_blocks, reduce_partials\n");
    const int shapes[][2] = {{1, 8}, {7, 24}, {100, 64}, {9216, 256}, {14400, 64}, {230400, 64},
                             {984064, 24}, {50176, 256}, {2000 * 9, 512}, {64, 2048}};
    int bad = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int b = stats_blocks(shapes[k][0], shapes[k][1]);
        if (b < 1 || b > STATS_DEFAULT_BLOCKS || b > shapes[k][0]) {
            printf("    stats_blocks(%d, %d) = %d\n", shapes[k][0], shapes[k][1], b);
            bad++;
        }
    }
    check_error(bad, 0, "stats_blocks in [1, min(rows, %d)]", STATS_DEFAULT_BLOCKS);
    // the cap (dev/kernel_bench --stats-blocks): the largest layer takes it, bad caps change nothing
    int cap_ok = set_stats_block_cap(1024) == 0 && stats_blocks(984064, 24) == 1024 &&
                 set_stats_block_cap(0) == -1 && set_stats_block_cap(STATS_MAX_BLOCKS + 1) == -1 &&
                 stats_blocks(984064, 24) == 1024;
    set_stats_block_cap(STATS_DEFAULT_BLOCKS);
    cap_ok = cap_ok && stats_blocks(984064, 24) == STATS_DEFAULT_BLOCKS;
    check_error(!cap_ok, 0, "set_stats_block_cap: 1024 not taken by 984064 rows, or a bad cap accepted");
    const int cases[][2] = {{STATS_MAX_BLOCKS, 2 * 2048}, {37, COV_ENTRIES}, {1, 24}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int n_blocks = cases[k][0], width = cases[k][1];
        size_t count = (size_t)n_blocks * width;
        float *partials = HOST_FLOATS(count), *want = HOST_FLOATS(width);
        random_floats(partials, count, 1.0, 1.0);
        for (int col = 0; col < width; col++) {
            double sum = 0.0;
            for (int b = 0; b < n_blocks; b++) sum += partials[(size_t)b * width + col];
            want[col] = (float)sum;
        }
        float *partials_d = dev_upload(partials, count * sizeof(float)), *out_d = dev_alloc(width * sizeof(float));
        LAUNCH(launch_reduce_partials(out_d, partials_d, n_blocks, width, 0));
        check_error(rel_error(download_floats(out_d, width), want, width), 1e-6, "reduce_partials %d blocks x %d",
                    n_blocks, width);
    }
    free_all();
}

// ----------------------------------------------------------------------------
// A BatchNorm + activation layer as the trainer runs it, forward (training and eval mode)
// and backward, against ref_maxpool_*, ref_batchnorm_*, ref_activation_* (GELU or SiLU).

typedef struct {
    int n, small_n; // images, and images with --small (still more than one stats block)
    int h, c;       // kernel input n x h x h x c (the pre-pool conv output when pool)
    int pool;       // j = 0 of a group: 2x2 max pool before the BN
    int residual;   // 96's third conv: the residual joins before the activation
    int coarse;     // inputs on a 1/4 grid: many tied maxima (first one wins)
    Activation activation;  // after the BN: GELU or SiLU
} BnCase;

// GPU argmax bytes (NHWC, window position q) against the reference's flat indices (NCHW,
// index in the h x h plane). Counts mismatches in windows whose max is unique, and in
// windows with a tie (where "first max in row-major order" decides).
static void check_pool_argmax(const uint8_t *got, const int *want, const float *in_nchw, int n, int h, int c,
                              size_t *untied_mismatches, size_t *tied_mismatches, size_t *ties) {
    int side = h / 2;
    *untied_mismatches = *tied_mismatches = *ties = 0;
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++)
            for (int oy = 0; oy < side; oy++)
                for (int ox = 0; ox < side; ox++) {
                    const float *plane = in_nchw + ((size_t)b * c + ch) * h * h;
                    int q = got[(((size_t)b * side + oy) * side + ox) * c + ch];
                    int flat = q < 4 ? (2 * oy + q / 2) * h + 2 * ox + q % 2 : -1;
                    int ref = want[(((size_t)b * c + ch) * side + oy) * side + ox];
                    int n_max = 0;
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) n_max += plane[(2 * oy + dy) * h + 2 * ox + dx] == plane[ref];
                    int tie = n_max > 1;
                    *ties += tie;
                    if (flat != ref) {
                        if (tie) (*tied_mismatches)++;
                        else (*untied_mismatches)++;
                    }
                }
}

// The apply passes with the identity (--fused-bn: a fused dgrad hands them dz, fusion.h):
// fed the reference dz in fp16 and the layer's sums, they give the reference's d_in.
static void check_apply_identity(const BnCase *t, const char *name, const float *dz, const float *d_bn_in,
                                 const int *argmax, void *bn_in_d, uint8_t *argmax_d, float *mean_d, float *rstd_d,
                                 float *bias_d, float *sums_d, int n) {
    int h = t->h, c = t->c, side = t->pool ? h / 2 : h, hw = side * side;
    size_t count = (size_t)n * hw * c, in_count = (size_t)n * h * h * c;
    float *dz_nhwc = HOST_FLOATS(count);
    uint16_t *dz_h = HOST_HALVES(count);
    nchw_to_nhwc(dz_nhwc, dz, n, hw, c);
    for (size_t i = 0; i < count; i++) dz_h[i] = float_to_half(dz_nhwc[i]);
    void *dz_d = dev_upload(dz_h, count * 2), *d_in_d = dev_alloc((t->pool ? in_count : count) * 2);
    if (t->pool) {
        LAUNCH(launch_bn_gelu_backward_apply_pool(d_in_d, dz_d, bn_in_d, argmax_d, mean_d, rstd_d, bias_d, sums_d, n, h,
                                                  h, c, ACTIVATION_IDENTITY, 0));
        float *d_prepool = HOST_FLOATS(in_count);
        ref_maxpool_backward(d_prepool, d_bn_in, argmax, n, c, h, h, 2);
        check_error(rel_error(download_nchw(d_in_d, n, h * h, c), d_prepool, in_count), 2e-3,
                    "%s: backward_apply_pool from dz, identity (fp16)", name);
    } else {
        LAUNCH(launch_bn_gelu_backward_apply(d_in_d, NULL, dz_d, bn_in_d, NULL, mean_d, rstd_d, bias_d, sums_d,
                                             n * hw, c, ACTIVATION_IDENTITY, 0));
        check_error(rel_error(download_nchw(d_in_d, n, hw, c), d_bn_in, count), 2e-3,
                    "%s: backward_apply from dz, identity (fp16)", name);
    }
}

static void test_bn_layer(const BnCase *t, int small) {
    const float eps = (float)RECIPE_94.bn_eps, keep = (float)RECIPE_94.bn_keep;
    int n = small ? t->small_n : t->n, h = t->h, c = t->c, side = t->pool ? h / 2 : h, hw = side * side;
    int rows = n * hw, in_rows = n * h * h, blocks = stats_blocks(rows, c);
    size_t count = (size_t)rows * c, in_count = (size_t)in_rows * c;
    char name[96];
    snprintf(name, sizeof name, "%s n=%d %dx%dx%d%s%s %s", t->pool ? "pool+bn" : "bn", n, h, h, c,
             t->residual ? " +res" : "", t->coarse ? " coarse" : "", RECIPE_ACTIVATIONS[t->activation]);
    printf("%s (%d stats blocks)\n", name, blocks);

    // Inputs: per-channel means and spreads; BN bias and running stats; the residual; d_out
    // with per-channel offsets.
    float *ch_mean = HOST_FLOATS(c), *ch_std = HOST_FLOATS(c), *bias = HOST_FLOATS(c);
    float *run_mean0 = HOST_FLOATS(c), *run_var0 = HOST_FLOATS(c), *d_offset = HOST_FLOATS(c), *d_std = HOST_FLOATS(c);
    for (int ch = 0; ch < c; ch++) {
        ch_mean[ch] = (float)uniform(-1.0, 1.0);
        ch_std[ch] = (float)uniform(0.5, 2.0);
        bias[ch] = (float)uniform(-0.5, 0.5);
        run_mean0[ch] = (float)(0.5 * normal());
        run_var0[ch] = (float)uniform(0.5, 2.0);
        d_offset[ch] = (float)signed_uniform(0.2, 0.7);
        d_std[ch] = 0.5f;
    }
    uint16_t *in_h = HOST_HALVES(in_count), *res_h = HOST_HALVES(count), *d_out_h = HOST_HALVES(count);
    float *in = HOST_FLOATS(in_count), *res = HOST_FLOATS(count), *d_out = HOST_FLOATS(count);
    random_activation(in_h, in, in_rows, c, ch_mean, ch_std, t->coarse);
    random_activation(res_h, res, rows, c, NULL, NULL, 0);
    random_activation(d_out_h, d_out, rows, c, d_offset, d_std, 0);

    // GPU, forward: statistics (with the pool), finalize, BN + activation; eval mode too.
    void *in_d = dev_upload(in_h, in_count * 2), *bn_in_d = in_d, *res_d = t->residual ? dev_upload(res_h, count * 2) : NULL;
    uint8_t *argmax_d = NULL;
    float *partials_d = dev_alloc((size_t)blocks * 2 * c * sizeof(float));
    if (t->pool) {
        bn_in_d = dev_alloc(count * 2);
        argmax_d = dev_alloc(count);
        LAUNCH(launch_maxpool2_stats(bn_in_d, argmax_d, partials_d, in_d, n, h, h, c, 0));
    } else {
        LAUNCH(launch_channel_stats(partials_d, in_d, rows, c, 0));
    }
    float *stat_sums_d = dev_alloc(2 * (size_t)c * sizeof(float));
    LAUNCH(launch_reduce_partials(stat_sums_d, partials_d, blocks, 2 * c, 0));
    float *mean_d = dev_alloc(c * sizeof(float)), *rstd_d = dev_alloc(c * sizeof(float));
    float *run_mean_d = dev_upload(run_mean0, c * sizeof(float)), *run_var_d = dev_upload(run_var0, c * sizeof(float));
    LAUNCH(launch_bn_finalize(mean_d, rstd_d, run_mean_d, run_var_d, partials_d, blocks, c, rows, eps, keep, 0));
    float *bias_d = dev_upload(bias, c * sizeof(float));
    void *out_d = dev_alloc(count * 2);
    LAUNCH(launch_bn_gelu_forward(out_d, bn_in_d, res_d, mean_d, rstd_d, bias_d, rows, c, t->activation, 0));
    float *eval_mean_d = dev_alloc(c * sizeof(float)), *eval_rstd_d = dev_alloc(c * sizeof(float));
    float *run_mean0_d = dev_upload(run_mean0, c * sizeof(float)), *run_var0_d = dev_upload(run_var0, c * sizeof(float));
    void *eval_out_d = dev_alloc(count * 2);
    LAUNCH(launch_bn_eval_params(eval_mean_d, eval_rstd_d, run_mean0_d, run_var0_d, c, eps, 0));
    LAUNCH(launch_bn_gelu_forward(eval_out_d, bn_in_d, res_d, eval_mean_d, eval_rstd_d, bias_d, rows, c,
                                  t->activation, 0));

    // GPU, backward: reduce, finalize, apply (through the pool when pool).
    void *d_out_d = dev_upload(d_out_h, count * 2);
    float *bwd_partials_d = dev_alloc((size_t)blocks * 2 * c * sizeof(float));
    float *d_bias_d = dev_alloc(c * sizeof(float)), *bwd_sums_d = dev_alloc(2 * (size_t)c * sizeof(float));
    LAUNCH(launch_bn_gelu_backward_reduce(bwd_partials_d, d_out_d, bn_in_d, res_d, mean_d, rstd_d, bias_d, rows, c,
                                          t->activation, 0));
    LAUNCH(launch_bn_backward_finalize(d_bias_d, bwd_sums_d, bwd_partials_d, blocks, c, rows, 0));
    void *d_in_d = dev_alloc((t->pool ? in_count : count) * 2), *d_res_d = t->residual ? dev_alloc(count * 2) : NULL;
    if (t->pool)
        LAUNCH(launch_bn_gelu_backward_apply_pool(d_in_d, d_out_d, bn_in_d, argmax_d, mean_d, rstd_d, bias_d,
                                                  bwd_sums_d, n, h, h, c, t->activation, 0));
    else
        LAUNCH(launch_bn_gelu_backward_apply(d_in_d, d_res_d, d_out_d, bn_in_d, res_d, mean_d, rstd_d, bias_d,
                                             bwd_sums_d, rows, c, t->activation, 0));

    // Reference, forward.
    float *in_nchw = HOST_FLOATS(in_count), *bn_in = in_nchw;
    nhwc_to_nchw(in_nchw, in, n, h * h, c);
    int *argmax = NULL;
    if (t->pool) {
        bn_in = HOST_FLOATS(count);
        argmax = host_buffer(count * sizeof(int));
        ref_maxpool_forward(bn_in, argmax, in_nchw, n, c, h, h, 2);
        check_error(rel_error(download_nchw(bn_in_d, n, hw, c), bn_in, count), 0, "%s: maxpool2 out (exact)", name);
        uint8_t *got_argmax = host_buffer(count);
        download(got_argmax, argmax_d, count);
        size_t untied, tied, ties;
        check_pool_argmax(got_argmax, argmax, in_nchw, n, h, c, &untied, &tied, &ties);
        check_error((double)untied, 0, "%s: maxpool2 argmax differing, unique max", name);
        check_error((double)tied, 0, "%s: maxpool2 argmax differing, %zu tied windows", name, ties);
    }
    float *want_sums = HOST_FLOATS(2 * c);
    for (int ch = 0; ch < c; ch++) {
        double sum = 0.0, sum_sq = 0.0;
        for (int b = 0; b < n; b++)
            for (int p = 0; p < hw; p++) {
                double v = bn_in[((size_t)b * c + ch) * hw + p];
                sum += v;
                sum_sq += v * v;
            }
        want_sums[ch] = (float)sum;
        want_sums[c + ch] = (float)sum_sq;
    }
    float *got_sums = download_floats(stat_sums_d, 2 * (size_t)c);
    check_error(rel_error(got_sums, want_sums, c), 1e-5, "%s: stats sums", name);
    check_error(rel_error(got_sums + c, want_sums + c, c), 1e-5, "%s: stats sums of squares", name);

    float *pre = HOST_FLOATS(count), *act = HOST_FLOATS(count), *mean = HOST_FLOATS(c), *var = HOST_FLOATS(c);
    float *rstd = HOST_FLOATS(c), *run_mean = HOST_FLOATS(c), *run_var = HOST_FLOATS(c), *res_nchw = HOST_FLOATS(count);
    ref_batchnorm_forward_train(pre, mean, var, bn_in, bias, n, c, hw, eps);
    for (int ch = 0; ch < c; ch++) rstd[ch] = (float)(1.0 / sqrt((double)var[ch] + eps));
    memcpy(run_mean, run_mean0, c * sizeof(float));
    memcpy(run_var, run_var0, c * sizeof(float));
    ref_batchnorm_update_running(run_mean, run_var, mean, var, rows, c, keep);
    nhwc_to_nchw(res_nchw, res, n, hw, c);
    if (t->residual)
        for (size_t i = 0; i < count; i++) pre[i] += res_nchw[i];
    ref_activation_forward(t->activation, act, pre, count);
    check_error(rel_error(download_floats(mean_d, c), mean, c), 1e-5, "%s: bn_finalize mean", name);
    check_error(rel_error(download_floats(rstd_d, c), rstd, c), 1e-5, "%s: bn_finalize rstd", name);
    check_error(rel_error(download_floats(run_mean_d, c), run_mean, c), 1e-5, "%s: bn_finalize running mean", name);
    check_error(rel_error(download_floats(run_var_d, c), run_var, c), 1e-5, "%s: bn_finalize running var", name);
    check_error(rel_error(download_nchw(out_d, n, hw, c), act, count), 2e-3, "%s: bn_gelu_forward out (fp16)", name);

    // Reference, eval mode.
    float *eval_pre = HOST_FLOATS(count), *eval_act = HOST_FLOATS(count), *eval_rstd = HOST_FLOATS(c);
    ref_batchnorm_forward_eval(eval_pre, bn_in, bias, run_mean0, run_var0, n, c, hw, eps);
    if (t->residual)
        for (size_t i = 0; i < count; i++) eval_pre[i] += res_nchw[i];
    ref_activation_forward(t->activation, eval_act, eval_pre, count);
    for (int ch = 0; ch < c; ch++) eval_rstd[ch] = (float)(1.0 / sqrt((double)run_var0[ch] + eps));
    check_error(rel_error(download_floats(eval_mean_d, c), run_mean0, c), 0, "%s: bn_eval_params mean (exact)", name);
    check_error(rel_error(download_floats(eval_rstd_d, c), eval_rstd, c), 1e-6, "%s: bn_eval_params rstd", name);
    check_error(rel_error(download_nchw(eval_out_d, n, hw, c), eval_act, count), 2e-3,
                "%s: bn_gelu_forward eval out (fp16)", name);

    // Reference, backward.
    float *d_out_nchw = HOST_FLOATS(count), *d_pre = HOST_FLOATS(count), *d_bn_in = HOST_FLOATS(count);
    float *d_bias = HOST_FLOATS(c), *want_bwd_sums = HOST_FLOATS(2 * c);
    nhwc_to_nchw(d_out_nchw, d_out, n, hw, c);
    ref_activation_backward(t->activation, d_pre, d_out_nchw, pre, count);
    ref_batchnorm_backward(d_bn_in, d_bias, d_pre, bn_in, mean, var, n, c, hw, eps);
    for (int ch = 0; ch < c; ch++) {
        double sum_dz = 0.0, sum_dz_xhat = 0.0, r = 1.0 / sqrt((double)var[ch] + eps);
        for (int b = 0; b < n; b++)
            for (int p = 0; p < hw; p++) {
                size_t i = ((size_t)b * c + ch) * hw + p;
                sum_dz += d_pre[i];
                sum_dz_xhat += d_pre[i] * ((bn_in[i] - mean[ch]) * r);
            }
        want_bwd_sums[ch] = (float)(sum_dz / rows);
        want_bwd_sums[c + ch] = (float)(sum_dz_xhat / rows);
    }
    float *got_bwd_sums = download_floats(bwd_sums_d, 2 * (size_t)c);
    check_error(rel_error(download_floats(d_bias_d, c), d_bias, c), 1e-5, "%s: backward d_bias", name);
    check_error(rel_error(got_bwd_sums, want_bwd_sums, c), 1e-5, "%s: backward mean dz", name);
    check_error(rel_error(got_bwd_sums + c, want_bwd_sums + c, c), 1e-5, "%s: backward mean dz*xhat", name);
    if (t->pool) {
        float *d_prepool = HOST_FLOATS(in_count);
        ref_maxpool_backward(d_prepool, d_bn_in, argmax, n, c, h, h, 2);
        check_error(rel_error(download_nchw(d_in_d, n, h * h, c), d_prepool, in_count), 2e-3,
                    "%s: backward_apply_pool d_prepool (fp16)", name);
    } else {
        check_error(rel_error(download_nchw(d_in_d, n, hw, c), d_bn_in, count), 2e-3, "%s: backward_apply d_in (fp16)",
                    name);
        if (t->residual)
            check_error(rel_error(download_nchw(d_res_d, n, hw, c), d_pre, count), 2e-3,
                        "%s: backward_apply d_residual (fp16)", name);
    }
    if (!t->residual) check_apply_identity(t, name, d_pre, d_bn_in, argmax, bn_in_d, argmax_d, mean_d, rstd_d, bias_d,
                                           bwd_sums_d, n);
    free_all();
}

// An activation the kernels have no instance of: every bn_gelu launch refuses it without
// launching (the buffers are never touched: NULL) and leaves no error behind; so do the
// forward and the reduce the identity, which only the apply passes take.
static void test_bn_unknown_activation(void) {
    printf("bn_gelu launches, unknown activation\n");
    const int bad = ACTIVATION_IDENTITY + 1, id = ACTIVATION_IDENTITY, rows = 64, c = 8;
    cudaError_t got[6] = {
        launch_bn_gelu_forward(NULL, NULL, NULL, NULL, NULL, NULL, rows, c, bad, 0),
        launch_bn_gelu_backward_reduce(NULL, NULL, NULL, NULL, NULL, NULL, NULL, rows, c, bad, 0),
        launch_bn_gelu_backward_apply(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, rows, c, bad, 0),
        launch_bn_gelu_backward_apply_pool(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 4, 4, 4, c, bad, 0),
        launch_bn_gelu_forward(NULL, NULL, NULL, NULL, NULL, NULL, rows, c, id, 0),
        launch_bn_gelu_backward_reduce(NULL, NULL, NULL, NULL, NULL, NULL, NULL, rows, c, id, 0),
    };
    for (int k = 0; k < 6; k++)
        CHECK(got[k] == cudaErrorInvalidValue, "launch %d with activation %d: %s", k, k < 4 ? bad : id,
              cudaGetErrorString(got[k]));
    CHECK(cudaDeviceSynchronize() == cudaSuccess && cudaGetLastError() == cudaSuccess,
          "an error left behind by the refused launches");
}

// ----------------------------------------------------------------------------
// Head: global max pool, linear layer, loss, hit count.

static void test_maxpool_global(int n, int side, int c, int coarse) {
    printf("maxpool_global n=%d %dx%dx%d%s\n", n, side, side, c, coarse ? " coarse" : "");
    int hw = side * side;
    size_t count = (size_t)n * hw * c;
    uint16_t *in_h = HOST_HALVES(count);
    float *in = HOST_FLOATS(count), *in_nchw = HOST_FLOATS(count);
    random_activation(in_h, in, (size_t)n * hw, c, NULL, NULL, coarse);
    nhwc_to_nchw(in_nchw, in, n, hw, c);
    void *in_d = dev_upload(in_h, count * 2);
    float *features_d = dev_alloc((size_t)n * c * sizeof(float));
    uint8_t *argmax_d = dev_alloc((size_t)n * c);
    LAUNCH(launch_maxpool_global(features_d, argmax_d, in_d, n, side, c, 0));
    float *features = HOST_FLOATS((size_t)n * c);
    int *argmax = host_buffer((size_t)n * c * sizeof(int));
    ref_maxpool_forward(features, argmax, in_nchw, n, c, side, side, side);  // out n x c x 1 x 1
    check_error(rel_error(download_floats(features_d, (size_t)n * c), features, (size_t)n * c), 0,
                "maxpool_global features (exact)");
    uint8_t *got_argmax = host_buffer((size_t)n * c);
    download(got_argmax, argmax_d, (size_t)n * c);
    size_t untied = 0, tied = 0, ties = 0;
    for (size_t i = 0; i < (size_t)n * c; i++) {
        const float *plane = in_nchw + i * hw;
        int n_max = 0;
        for (int p = 0; p < hw; p++) n_max += plane[p] == plane[argmax[i]];
        ties += n_max > 1;
        if (got_argmax[i] != argmax[i]) {
            if (n_max > 1) tied++;
            else untied++;
        }
    }
    check_error((double)untied, 0, "maxpool_global argmax differing, unique max");
    check_error((double)tied, 0, "maxpool_global argmax differing, %zu tied", ties);

    float *d_features = HOST_FLOATS((size_t)n * c), *d_in = HOST_FLOATS(count);
    random_floats(d_features, (size_t)n * c, 0.0, 1.0);
    float *d_features_d = dev_upload(d_features, (size_t)n * c * sizeof(float));
    void *d_in_d = dev_alloc(count * 2);
    LAUNCH(launch_maxpool_global_backward(d_in_d, d_features_d, argmax_d, n, side, c, 0));
    ref_maxpool_backward(d_in, d_features, argmax, n, c, side, side, side);
    check_error(rel_error(download_nchw(d_in_d, n, hw, c), d_in, count), 2e-3, "maxpool_global_backward d_in (fp16)");
    free_all();
}

static void test_head(int n, int c) {
    printf("head n=%d c=%d\n", n, c);
    const float scale = 1.0f / 9.0f;
    size_t n_features = (size_t)n * c, n_logits = (size_t)n * NET_CLASSES;
    float *features = HOST_FLOATS(n_features), *weight = HOST_FLOATS((size_t)NET_CLASSES * c);
    for (size_t i = 0; i < n_features; i++) features[i] = (float)fabs(normal());
    for (int i = 0; i < NET_CLASSES * c; i++) weight[i] = (float)uniform(-0.0625, 0.0625);
    float *features_d = dev_upload(features, n_features * sizeof(float));
    float *weight_d = dev_upload(weight, (size_t)NET_CLASSES * c * sizeof(float));
    float *want = HOST_FLOATS(n_logits), *start = HOST_FLOATS(n_logits), *want_acc = HOST_FLOATS(n_logits);
    ref_linear_forward(want, features, weight, n, c, NET_CLASSES, scale);

    float *logits_d = dev_alloc(n_logits * sizeof(float));  // NaN: beta = 0 must not read it
    LAUNCH(launch_head_forward(logits_d, features_d, weight_d, n, c, scale, 1.0f, 0.0f, 0));
    check_error(rel_error(download_floats(logits_d, n_logits), want, n_logits), 1e-5, "head_forward alpha 1 beta 0");
    random_floats(start, n_logits, 0.0, 1.0);
    for (size_t i = 0; i < n_logits; i++) want_acc[i] = 0.5f * start[i] + 0.25f * want[i];
    float *acc_d = dev_upload(start, n_logits * sizeof(float));
    LAUNCH(launch_head_forward(acc_d, features_d, weight_d, n, c, scale, 0.25f, 0.5f, 0));
    check_error(rel_error(download_floats(acc_d, n_logits), want_acc, n_logits), 1e-5,
                "head_forward alpha 0.25 beta 0.5");

    float *d_logits = HOST_FLOATS(n_logits), *d_features = HOST_FLOATS(n_features);
    float *d_weight = HOST_FLOATS((size_t)NET_CLASSES * c);
    random_floats(d_logits, n_logits, 0.0, 0.1);
    ref_linear_backward(d_features, d_weight, d_logits, features, weight, n, c, NET_CLASSES, scale);
    float *d_logits_d = dev_upload(d_logits, n_logits * sizeof(float));
    float *d_weight_d = dev_alloc((size_t)NET_CLASSES * c * sizeof(float));
    float *d_features_d = dev_alloc(n_features * sizeof(float));
    LAUNCH(launch_head_backward(d_weight_d, d_features_d, d_logits_d, features_d, weight_d, n, c, scale, 0));
    check_rel("head_backward d_weight", download_floats(d_weight_d, (size_t)NET_CLASSES * c), d_weight,
              (size_t)NET_CLASSES * c, 1e-5);
    check_error(rel_error(download_floats(d_features_d, n_features), d_features, n_features), 1e-5,
                "head_backward d_features");
    free_all();
}

// The loss with its gradient, unweighted and with data filtering's 0/1 weights (every
// third row kept), each row's loss, and the hit count.
static void test_loss(int n) {
    printf("loss n=%d\n", n);
    const float smoothing = (float)RECIPE_94.label_smoothing;
    size_t n_logits = (size_t)n * NET_CLASSES;
    float *logits = HOST_FLOATS(n_logits), *want = HOST_FLOATS(n_logits), *weights = HOST_FLOATS(n);
    uint8_t *labels = host_buffer(n);
    random_floats(logits, n_logits, 0.0, 3.0);
    for (int k = 0; k < NET_CLASSES; k++) logits[k] = 0.5f;  // image 0: all tied (class 0 wins)
    for (int b = 0; b < n; b++) labels[b] = (uint8_t)(next_u64() % NET_CLASSES);
    for (int b = 0; b < n; b++) weights[b] = (float)(b % 3 == 0);
    float *logits_d = dev_upload(logits, n_logits * sizeof(float)), *weights_d = dev_upload(weights, n * sizeof(float));
    uint8_t *labels_d = dev_upload(labels, n);
    for (int weighted = 0; weighted < 2; weighted++) {
        const char *what = weighted ? "masked loss" : "loss";
        int want_correct = 0;
        double want_loss = ref_loss_forward_backward(want, &want_correct, logits, labels, weighted ? weights : NULL, n,
                                                     NET_CLASSES, smoothing);
        float *d_logits_d = dev_alloc(n_logits * sizeof(float));
        const double loss_start = 1.5;
        const int correct_start = 7;
        double *loss_d = dev_upload(&loss_start, sizeof loss_start);
        int *correct_d = dev_upload(&correct_start, sizeof correct_start);
        LAUNCH(launch_loss(d_logits_d, loss_d, correct_d, logits_d, labels_d, weighted ? weights_d : NULL, n,
                           smoothing, 0));
        double got_loss;
        int got_correct;
        download(&got_loss, loss_d, sizeof got_loss);
        download(&got_correct, correct_d, sizeof got_correct);
        check_error(fabs(got_loss - loss_start - want_loss) / fabs(want_loss), 1e-9, "%s: summed loss (added to 1.5)",
                    what);
        check_error(rel_error(download_floats(d_logits_d, n_logits), want, n_logits), 1e-6, "%s: d_logits", what);
        check_error(abs(got_correct - correct_start - want_correct), 0, "%s: hits of every row (added to 7)", what);
    }
    float *losses_d = dev_alloc((size_t)n * sizeof(float)), *want_losses = HOST_FLOATS(n);
    LAUNCH(launch_example_losses(losses_d, logits_d, labels_d, n, smoothing, 0));
    ref_example_losses(want_losses, logits, labels, n, NET_CLASSES, smoothing);
    check_rel("example_losses", download_floats(losses_d, n), want_losses, n, 1e-6);

    int want_correct = 0, got_correct;
    ref_loss_forward_backward(NULL, &want_correct, logits, labels, NULL, n, NET_CLASSES, smoothing);
    const int correct_start = 7;
    int *count_d = dev_upload(&correct_start, sizeof correct_start);
    LAUNCH(launch_count_correct(count_d, logits_d, labels_d, n, 0));
    download(&got_correct, count_d, sizeof got_correct);
    check_error(abs(got_correct - correct_start - want_correct), 0, "count_correct: hits (added to 7)");
    free_all();
}

// ----------------------------------------------------------------------------
// Parameters and optimizer, on the airbench94 layout (2M parameters).

// Counts differing 32-bit patterns of float ranges.
static size_t differing(const float *a, const float *b, size_t count) {
    size_t d = 0;
    for (size_t i = 0; i < count; i++) d += memcmp(a + i, b + i, sizeof(float)) != 0;
    return d;
}

// GPU conv_half against (half) of the reference conv weights, as a relative error.
static void report_conv_half(const void *conv_half_d, const float *params, const ParamBuffers *pb, const char *what) {
    size_t n_conv = pb->end[SEG_CONV] - pb->begin[SEG_CONV];
    uint16_t *h = HOST_HALVES(n_conv);
    float *got = HOST_FLOATS(n_conv), *want = HOST_FLOATS(n_conv);
    download(h, conv_half_d, n_conv * sizeof(uint16_t));
    halves_to_floats(got, h, n_conv);
    for (size_t i = 0; i < n_conv; i++) want[i] = round_to_half(params[pb->begin[SEG_CONV] + i]);
    check_error(rel_error(got, want, n_conv), 1e-3, "%s: conv_half", what);
}

static void test_sgd(void) {
    printf("sgd_step (airbench94 layout)\n");
    const Recipe *r = &RECIPE_94;
    RefNet *net = ref_net_create(r);
    const NetLayout *l = &net->layout;
    size_t n = l->n_params;
    ParamBuffers pb;
    net_segments(l, pb.begin, pb.end);
    size_t conv0 = pb.begin[SEG_CONV], n_conv = pb.end[SEG_CONV] - conv0;
    random_floats(net->params, n, 0.0, 0.01);
    random_floats(net->momentum, n, 0.0, 0.1);
    random_floats(net->grads, n, 0.0, 1.0);
    uint16_t *conv_grads = HOST_HALVES(n_conv);
    for (size_t i = 0; i < n_conv; i++) {  // the conv gradients are fp16: the reference gets the same values
        conv_grads[i] = float_to_half(net->grads[conv0 + i]);
        net->grads[conv0 + i] = half_to_float(conv_grads[i]);
    }
    float *grads_gpu = HOST_FLOATS(n), *before = HOST_FLOATS(n);
    memcpy(grads_gpu, net->grads, n * sizeof(float));
    memset(grads_gpu + conv0, 0xff, n_conv * sizeof(float));  // NaN: the conv range must come from conv_grads
    pb.params = dev_upload(net->params, n * sizeof(float));
    pb.momentum = dev_upload(net->momentum, n * sizeof(float));
    pb.grads = dev_upload(grads_gpu, n * sizeof(float));
    pb.conv_grads = dev_upload(conv_grads, n_conv * sizeof(uint16_t));
    pb.conv_half = dev_alloc(n_conv * sizeof(uint16_t));
    float *got = HOST_FLOATS(n), *got_momentum = HOST_FLOATS(n);
    double lr = recipe_sgd_lr(r), bn_lr = recipe_bn_bias_lr(r), wd = recipe_sgd_wd(r);
    const double multipliers[2] = {0.7, 0.3};
    for (int step = 0; step < 2; step++) {
        int whiten_bias_on = step == 0;  // step 2: the whitening bias is frozen
        double s = multipliers[step];
        SgdGroup groups[N_SEGMENTS] = {
            [SEG_WHITEN_B] = {(float)(lr * s), (float)(wd / lr), whiten_bias_on},
            [SEG_CONV] = {(float)(lr * s), (float)(wd / lr), 1},
            [SEG_HEAD] = {(float)(lr * s), (float)(wd / lr), 1},
            [SEG_BN] = {(float)(bn_lr * s), (float)(wd / bn_lr), 1},
        };
        GroupStep ref_groups[N_GROUPS];
        recipe_sgd_groups(r, s, whiten_bias_on, ref_groups);
        memcpy(before, net->params, n * sizeof(float));
        LAUNCH(launch_sgd_step(&pb, groups, (float)r->momentum, 0));
        ref_sgd_step(net, ref_groups, r->momentum, 0);
        download(got, pb.params, n * sizeof(float));
        download(got_momentum, pb.momentum, n * sizeof(float));
        const char *what = step == 0 ? "sgd_step 1 (whitening bias on)" : "sgd_step 2 (whitening bias off)";
        check_error(rel_error(got, net->params, n), 1e-5, "%s: params", what);
        check_error(rel_error(got_momentum, net->momentum, n), 1e-5, "%s: momentum", what);
        check_error(differing(got, before, pb.begin[SEG_WHITEN_B]), 0, "%s: whitening weight changed", what);
        if (!whiten_bias_on)
            check_error(differing(got + pb.begin[SEG_WHITEN_B], before + pb.begin[SEG_WHITEN_B],
                                  pb.end[SEG_WHITEN_B] - pb.begin[SEG_WHITEN_B]),
                        0, "%s: whitening bias changed", what);
        report_conv_half(pb.conv_half, net->params, &pb, what);
        // The GPU state carries on from the reference's, so the steps do not drift apart.
        CUDA_CHECK(cudaMemcpy(pb.params, net->params, n * sizeof(float), cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(pb.momentum, net->momentum, n * sizeof(float), cudaMemcpyHostToDevice));
    }

    // The Muon variant's call: the conv segment disabled, so untouched (params, momentum and
    // the still-poisoned fp16 copy); the other segments as a plain double-precision loop.
    CUDA_CHECK(cudaMemset(pb.conv_half, 0xff, n_conv * sizeof(uint16_t)));
    SgdGroup groups[N_SEGMENTS] = {
        [SEG_WHITEN_B] = {0.02f, 0.5f, 1}, [SEG_CONV] = {0.0f, 0.0f, 0},
        [SEG_HEAD] = {0.3f, 0.01f, 1},     [SEG_BN] = {0.02f, 0.5f, 1},
    };
    const float m = (float)r->momentum;
    float *want = HOST_FLOATS(n), *want_momentum = HOST_FLOATS(n);
    memcpy(want, net->params, n * sizeof(float));
    memcpy(want_momentum, net->momentum, n * sizeof(float));
    for (int seg = 0; seg < N_SEGMENTS; seg++) {
        if (!groups[seg].enabled) continue;
        for (size_t i = pb.begin[seg]; i < pb.end[seg]; i++) {
            double g = net->grads[i] + (double)groups[seg].decay * want[i];
            want_momentum[i] = (float)((double)m * want_momentum[i] + g);
            g += (double)m * want_momentum[i];
            want[i] = (float)(want[i] - (double)groups[seg].lr * g);
        }
    }
    LAUNCH(launch_sgd_step(&pb, groups, m, 0));
    download(got, pb.params, n * sizeof(float));
    download(got_momentum, pb.momentum, n * sizeof(float));
    uint16_t *conv_half = HOST_HALVES(n_conv);
    download(conv_half, pb.conv_half, n_conv * sizeof(uint16_t));
    size_t half_written = 0;
    for (size_t i = 0; i < n_conv; i++) half_written += conv_half[i] != 0xffff;
    check_error(rel_error(got, want, n), 1e-5, "sgd_step, conv disabled: params");
    check_error(rel_error(got_momentum, want_momentum, n), 1e-5, "sgd_step, conv disabled: momentum");
    check_error(differing(got + conv0, net->params + conv0, n_conv), 0,
                "sgd_step, conv disabled: conv weights changed");
    check_error(differing(got_momentum + conv0, net->momentum + conv0, n_conv), 0,
                "sgd_step, conv disabled: conv momentum changed");
    check_error((double)half_written, 0, "sgd_step, conv disabled: conv_half written");
    ref_net_free(net);
    free_all();
}

static void test_lookahead(void) {
    printf("lookahead, refresh_conv_half (airbench94 layout)\n");
    const Recipe *r = &RECIPE_94;
    RefNet *net = ref_net_create(r);
    const NetLayout *l = &net->layout;
    size_t n = l->n_params, n_running = net->n_running;
    ParamBuffers pb;
    net_segments(l, pb.begin, pb.end);
    size_t conv0 = pb.begin[SEG_CONV], n_conv = pb.end[SEG_CONV] - conv0;
    random_floats(net->params, n, 0.0, 0.1);
    for (size_t i = 0; i < n; i++) net->ema_params[i] = net->params[i] + (float)(0.05 * normal());
    memcpy(net->ema_params, net->params, pb.begin[SEG_WHITEN_B] * sizeof(float));  // frozen: ema == w
    random_floats(net->running, n_running, 0.5, 0.5);
    random_floats(net->ema_running, n_running, 0.5, 0.5);
    pb.params = dev_upload(net->params, n * sizeof(float));
    pb.momentum = dev_alloc(n * sizeof(float));
    pb.grads = dev_alloc(n * sizeof(float));
    pb.conv_grads = dev_alloc(n_conv * sizeof(uint16_t));
    pb.conv_half = dev_alloc(n_conv * sizeof(uint16_t));
    float *ema_d = dev_upload(net->ema_params, n * sizeof(float));
    float *running_d = dev_upload(net->running, n_running * sizeof(float));
    float *ema_running_d = dev_upload(net->ema_running, n_running * sizeof(float));

    LAUNCH(launch_refresh_conv_half(&pb, 0));
    uint16_t *conv_half = HOST_HALVES(n_conv);
    download(conv_half, pb.conv_half, n_conv * sizeof(uint16_t));
    size_t mismatches = 0;
    for (size_t i = 0; i < n_conv; i++) mismatches += conv_half[i] != float_to_half(net->params[conv0 + i]);
    check_error((double)mismatches, 0, "refresh_conv_half: halves differing");

    float *whiten_before = HOST_FLOATS(pb.begin[SEG_WHITEN_B]);
    memcpy(whiten_before, net->params, pb.begin[SEG_WHITEN_B] * sizeof(float));
    const float decay = 0.37f;
    CUDA_CHECK(cudaMemset(pb.conv_half, 0xff, n_conv * sizeof(uint16_t)));
    LAUNCH(launch_lookahead(&pb, ema_d, running_d, ema_running_d, n_running, decay, 0));
    ref_lookahead_update(net, decay);
    float *got = download_floats(pb.params, n), *got_ema = download_floats(ema_d, n);
    check_error(rel_error(got, net->params, n), 1e-6, "lookahead: params");
    check_error(rel_error(got_ema, net->ema_params, n), 1e-6, "lookahead: ema params");
    check_rel("lookahead: running stats", download_floats(running_d, n_running), net->running, n_running, 1e-6);
    check_error(rel_error(download_floats(ema_running_d, n_running), net->ema_running, n_running), 1e-6,
                "lookahead: ema running stats");
    check_error(differing(got, whiten_before, pb.begin[SEG_WHITEN_B]), 0, "lookahead: whitening weight changed");
    report_conv_half(pb.conv_half, net->params, &pb, "lookahead");

    // decay 1 (after the last step): w = ema, bit for bit.
    float *ema_before = download_floats(ema_d, n);
    CUDA_CHECK(cudaMemcpy(pb.params, net->momentum, n * sizeof(float), cudaMemcpyHostToDevice));  // any other values
    LAUNCH(launch_lookahead(&pb, ema_d, running_d, ema_running_d, n_running, 1.0f, 0));
    check_error(differing(download_floats(pb.params, n), ema_before, n), 0, "lookahead decay 1: params != ema");
    check_error(differing(download_floats(ema_d, n), ema_before, n), 0, "lookahead decay 1: ema changed");
    ref_net_free(net);
    free_all();
}

static void test_init(void) {
    printf("init (airbench94 and airbench96 layouts)\n");
    const Recipe *recipes[2] = {&RECIPE_94, &RECIPE_96};
    const uint64_t seed = 987654321;
    for (int k = 0; k < 2; k++) {
        const Recipe *r = recipes[k];
        RefNet *net = ref_net_create(r);
        const NetLayout *l = &net->layout;
        float *images = HOST_FLOATS((size_t)16 * CIFAR10_IMAGE_BYTES);
        random_floats(images, (size_t)16 * CIFAR10_IMAGE_BYTES, 0.0, 1.0);
        ref_net_init(net, r, seed, images, 16);  // OIHW conv weights from net_init_conv
        size_t conv_mismatches = 0;
        for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
            const TensorInfo *t = &l->tensors[id];
            float *got_d = dev_alloc(t->size * sizeof(float));
            LAUNCH(launch_init_conv(got_d, id, t->c_out, t->c_in, seed, 0));
            float *got = download_floats(got_d, t->size);
            const float *want = net->params + t->offset;
            for (int o = 0; o < t->c_out; o++)
                for (int ci = 0; ci < t->c_in; ci++)
                    for (int tap = 0; tap < 9; tap++) {  // tap = ky * 3 + kx
                        size_t oihw = ((size_t)o * t->c_in + ci) * 9 + tap, krsc = ((size_t)o * 9 + tap) * t->c_in + ci;
                        conv_mismatches += memcmp(&got[krsc], &want[oihw], sizeof(float)) != 0;
                    }
        }
        check_error((double)conv_mismatches, 0, "init_conv %s: weights not bit-identical (KRSC vs OIHW)", r->name);
        const TensorInfo *head = &l->tensors[l->head];
        float *head_d = dev_alloc(head->size * sizeof(float));
        LAUNCH(launch_init_uniform(head_d, head->size, l->head, head->c_in, seed, 0));
        check_error(differing(download_floats(head_d, head->size), net->params + head->offset, head->size), 0,
                    "init_uniform %s head: not bit-identical", r->name);
        ref_net_free(net);
    }
    // The Muon recipe's whitening bias: fan_in 12.
    float want[WHITEN_WIDTH];
    for (int i = 0; i < WHITEN_WIDTH; i++) want[i] = net_init_uniform(seed, 1, 12, i);
    float *bias_d = dev_alloc(sizeof want);
    LAUNCH(launch_init_uniform(bias_d, WHITEN_WIDTH, 1, 12, seed, 0));
    check_error(differing(download_floats(bias_d, WHITEN_WIDTH), want, WHITEN_WIDTH), 0,
                "init_uniform whitening bias (fan_in 12): not bit-identical");
    free_all();
}

static double sum_of_squares(const float *x, size_t count) {
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += (double)x[i] * x[i];
    return sum;
}

// The bf16 update's sum of squares per matrix: got (the kernel's) against double sums.
static void check_matrix_sums(const float *got, const float *values, const MuonMatrices *m, const char *what) {
    for (int i = 0; i < m->n; i++) {
        double want = sum_of_squares(values + m->offset[i], m->count[i]);
        check_error(fabs(got[i] - want) / want, 3e-5, "%s: matrix %d (%zu values)", what, i, m->count[i]);
    }
}

// got equals before bit for bit outside every matrix (in the gaps the launches skip).
static void check_gaps_untouched(const float *got, const float *before, size_t count, const MuonMatrices *m,
                                 const char *what) {
    size_t changed = 0;
    for (size_t k = 0, i = 0; k < count; k++) {
        while (i < (size_t)m->n && k >= m->offset[i] + m->count[i]) i++;
        int inside = i < (size_t)m->n && k >= m->offset[i];
        if (!inside && memcmp(&got[k], &before[k], sizeof got[k])) changed++;
    }
    CHECK(changed == 0, "%s: %zu values outside the matrices changed", what, changed);
}

// Muon's elementwise kernels and reductions (the Newton-Schulz GEMMs are cuBLAS's; the
// trainer test checks a whole Muon step), each one launch over three matrices of one
// buffer, with gaps between them that must stay untouched: airbench94's first filter (64 x
// 216), a c_out x 9 x 512 conv weight, and a 3 x 5 matrix smaller than one block. c_out =
// 512 is airbench96's largest conv, and with c_out >= 256 the 1.2M+ values need more than
// the 4096 x 256 threads the launches give a matrix, so the grid-stride loops run twice.
static void test_muon(int c_out) {
    printf("muon kernels (64 x 216, %d x 9 x 512 and 3 x 5 matrices, one launch each)\n", c_out);
    MuonMatrices m = {.n = 3, .c_out = {64, c_out, 3}};
    const size_t sizes[3] = {64 * 216, (size_t)c_out * 9 * 512, 15}, gap = 100;
    size_t count = gap;
    for (int i = 0; i < m.n; i++) {
        m.offset[i] = count;
        m.count[i] = sizes[i];
        count += sizes[i] + gap;
    }
    const float mom = 0.6f, lr = 0.024f, eps = 1e-7f;
    uint16_t *grad_h = HOST_HALVES(count);
    float *grad = HOST_FLOATS(count), *momentum = HOST_FLOATS(count), *w = HOST_FLOATS(count);
    random_activation(grad_h, grad, count, 1, NULL, NULL, 0);
    random_floats(momentum, count, 0.0, 1.0);
    random_floats(w, count, 0.0, 0.05);
    void *grad_d = dev_upload(grad_h, count * sizeof(uint16_t)), *update_d = dev_alloc(count * sizeof(uint16_t));
    float *momentum_d = dev_upload(momentum, count * sizeof(float)), *w_d = dev_upload(w, count * sizeof(float));
    float *sums_d = dev_alloc(2 * MUON_MAX_MATRICES * sizeof(float)), *w_sums_d = sums_d + MUON_MAX_MATRICES;
    void *w_half_d = dev_alloc(count * sizeof(uint16_t));

    LAUNCH(launch_muon_momentum(update_d, momentum_d, grad_d, count, mom, 0));
    float *want_buf = HOST_FLOATS(count), *want_update = HOST_FLOATS(count);
    for (size_t i = 0; i < count; i++) {
        want_buf[i] = mom * momentum[i] + grad[i];
        want_update[i] = grad[i] + mom * want_buf[i];
    }
    check_error(rel_error(download_floats(momentum_d, count), want_buf, count), 1e-6, "muon_momentum: momentum");
    float *update = download_bf16s(update_d, count);  // bf16 rounding: about 1.7e-3 relative (numpy)
    check_error(rel_error(update, want_update, count), 4e-3, "muon_momentum: bf16 update");

    LAUNCH(launch_sum_squares_bf16(sums_d, update_d, &m, 0));
    LAUNCH(launch_sum_squares(w_sums_d, w_d, &m, 0));
    float *update_sums = download_floats(sums_d, m.n), *w_sums = download_floats(w_sums_d, m.n);
    check_matrix_sums(update_sums, update, &m, "sum_squares_bf16");
    check_matrix_sums(w_sums, w, &m, "sum_squares (fp32)");

    LAUNCH(launch_scale_by_inverse_norm(update_d, &m, sums_d, eps, 0));
    float *want_scaled = HOST_FLOATS(count);
    memcpy(want_scaled, update, count * sizeof(float));
    for (int i = 0; i < m.n; i++)
        for (size_t k = m.offset[i]; k < m.offset[i] + m.count[i]; k++)
            want_scaled[k] = (float)(update[k] / (sqrt((double)update_sums[i]) + eps));
    float *scaled = download_bf16s(update_d, count);
    check_error(rel_error(scaled, want_scaled, count), 4e-3, "scale_by_inverse_norm (bf16)");
    check_gaps_untouched(scaled, update, count, &m, "scale_by_inverse_norm");

    LAUNCH(launch_muon_apply(w_d, w_half_d, update_d, &m, w_sums_d, lr, 1.0f, 0));
    float *want_w = HOST_FLOATS(count);
    memcpy(want_w, w, count * sizeof(float));
    for (int i = 0; i < m.n; i++) {
        double scale = sqrt((double)m.c_out[i]) / sqrt((double)w_sums[i]);
        for (size_t k = m.offset[i]; k < m.offset[i] + m.count[i]; k++)
            want_w[k] = (float)(w[k] * scale - lr * (double)scaled[k]);
    }
    float *got_w = download_floats(w_d, count);
    check_error(rel_error(got_w, want_w, count), 1e-6, "muon_apply: weight");
    check_gaps_untouched(got_w, w, count, &m, "muon_apply");
    float *got_half = download_halves(w_half_d, count);  // its gaps were never written
    for (int i = 0; i < m.n; i++)
        check_error(rel_error(got_half + m.offset[i], want_w + m.offset[i], m.count[i]), 1e-3,
                    "muon_apply: fp16 copy, matrix %d", i);

    // a step that does not renormalize (no sums of squares) and decays after the update
    const float decay = 0.9995f;
    LAUNCH(launch_muon_apply(w_d, w_half_d, update_d, &m, NULL, lr, decay, 0));
    float *want_decayed = HOST_FLOATS(count);
    memcpy(want_decayed, got_w, count * sizeof(float));
    for (int i = 0; i < m.n; i++)
        for (size_t k = m.offset[i]; k < m.offset[i] + m.count[i]; k++)
            want_decayed[k] = (float)((got_w[k] - lr * (double)scaled[k]) * decay);
    check_error(rel_error(download_floats(w_d, count), want_decayed, count), 1e-6, "muon_apply: no rescale, decay");

    // lists the launches cannot take: refused without launching, no error left behind
    MuonMatrices none = {.n = 0}, too_many = m, empty = m;
    too_many.n = MUON_MAX_MATRICES + 1;
    empty.count[1] = 0;
    const MuonMatrices *bad[3] = {&none, &too_many, &empty};
    for (int k = 0; k < 3; k++) {
        cudaError_t got[4] = {launch_sum_squares(NULL, NULL, bad[k], 0), launch_sum_squares_bf16(NULL, NULL, bad[k], 0),
                              launch_scale_by_inverse_norm(NULL, bad[k], NULL, eps, 0),
                              launch_muon_apply(NULL, NULL, NULL, bad[k], NULL, lr, decay, 0)};
        for (int j = 0; j < 4; j++)
            CHECK(got[j] == cudaErrorInvalidValue, "muon launch %d, bad matrix list %d: %s", j, k,
                  cudaGetErrorString(got[j]));
    }
    CHECK(cudaDeviceSynchronize() == cudaSuccess && cudaGetLastError() == cudaSuccess,
          "an error left behind by the refused muon launches");
    free_all();
}

// ----------------------------------------------------------------------------

// Every check. small (--small, for compute-sanitizer, whose racecheck and memcheck slow
// every shared and global access down) divides the image counts and batches by 8 and keeps
// what each shape is there for: odd batches and sides, channel counts whose c / 8 does not
// divide the block, ties, more than one block in every stats_blocks reduction, more images
// than blocks in the covariance, more images than threads in the loss. The optimizer and
// init checks keep the full airbench94/96 layouts (no shared memory; their grid-stride
// loops run more than once only at that size).
static void run_checks(int small) {
    const int divisor = small ? 8 : 1;
    test_loaders(divisor);
    test_selective_tta(small ? 1500 : 10000);  // 10000: ~10 values per selecting thread
    test_selective_tta(small ? 128 : 1024);    // a 96-filter batch: fewer values than threads
    test_patch_covariance(small ? 3 : 100);
    test_patch_covariance(small ? 260 : 5000);
    test_whiten(64 / divisor);
    test_stats_blocks_and_reduce();
    const BnCase bn_cases[] = {
        // n, small_n, h, c, pool, residual, coarse, activation
        {64, 8, 31, 64, 1, 0, 0, ACTIVATION_GELU},   // group 0 conv 0: pool 31 -> 15 (drops row/column 30)
        {64, 8, 15, 256, 1, 0, 0, ACTIVATION_GELU},  // group 1 conv 0: pool 15 -> 7
        {64, 8, 7, 256, 1, 0, 1, ACTIVATION_GELU},   // group 2 conv 0: pool 7 -> 3, many tied maxima
        {16, 2, 8, 512, 1, 0, 0, ACTIVATION_GELU},   // even side: nothing dropped
        {64, 8, 15, 64, 0, 0, 0, ACTIVATION_GELU},   // group 0 conv 1
        {64, 8, 7, 256, 0, 1, 0, ACTIVATION_GELU},   // 96's residual conv
        {32, 4, 3, 384, 0, 1, 0, ACTIVATION_GELU},   // c / 8 = 48 does not divide the block; residual
        {16, 2, 31, 24, 0, 0, 0, ACTIVATION_GELU},   // c / 8 = 3
        {16, 2, 3, 2048, 0, 0, 0, ACTIVATION_GELU},  // the widest channel count: one row per pass
        // SiLU (the record recipe): each kernel once, in the pooled, plain and residual layers
        {64, 8, 31, 64, 1, 0, 0, ACTIVATION_SILU},   // group 0 conv 0: pool 31 -> 15
        {64, 8, 15, 256, 0, 0, 0, ACTIVATION_SILU},  // group 1 conv 1
        {32, 4, 3, 384, 0, 1, 0, ACTIVATION_SILU},   // c / 8 does not divide the block; residual
    };
    for (size_t k = 0; k < sizeof bn_cases / sizeof bn_cases[0]; k++) test_bn_layer(&bn_cases[k], small);
    test_bn_unknown_activation();
    test_maxpool_global(64 / divisor, 3, 256, 0);
    test_maxpool_global(64 / divisor, 3, 256, 1);
    test_head(small ? 64 : 1024, 256);
    test_head(small ? 50 : 2000, 264);  // c not a multiple of 32, n not of 8 (warps) or 16 (slices)
    test_loss(small ? 100 : 1024);
    test_loss(small ? 700 : 2000);  // more images than the 512 threads
    test_sgd();
    test_lookahead();
    test_muon(small ? 256 : 512);
    test_init();
}

int main(int argc, char **argv) {
    int small = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--small")) {
            small = 1;
        } else {
            printf("usage: gpu_test_kernels [--small]\n"
                   "  --small  every check at small shapes (for compute-sanitizer)\n");
            return 2;
        }
    }
    if (find_gpu("gpu_test_kernels")) return 2;
    run_checks(small);
    return test_finish("gpu_test_kernels");
}
