// airbench.c: train the airbench CIFAR-10 network on one GPU, as fast as we can.
//
// One file that reads like the method, top to bottom: initialization (seeded weights,
// whitening from the patch covariance) -> forward pass -> backward pass -> optimizer
// (Nesterov SGD, or Muon from muon.c; lookahead) following the recipe's step schedule ->
// test-time-augmented evaluation -> one training run (with data filtering, 96-filter, first
// the proxy network: the same code at other widths; with --graphs on, each step a CUDA
// graph, graph.c) -> many seeded runs into the run file. The trainer's state and its setup
// are in trainer.h and trainer.c. Convolutions go through cuDNN (conv.c: NHWC fp16, fp32
// accumulation); everything between them is a fused kernel from kernels/ (BN statistics
// with the pool, BN + GELU or SiLU, loss with its gradient, optimizer). The recipe is a
// runtime value (recipe.h: --variant, --set NAME=VALUE); the CPU twin, reference.c, is the
// oracle this file is tested against.
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cifar10.h"
#include "cli.h"
#include "conv.h"
#include "gpu.h"
#include "kernels.h"
#include "net.h"
#include "recipe.h"
#include "reference.h"
#include "trainer.h"

// The optimizer's groups and the kernels' segments of the flat buffer are the same ranges.
_Static_assert((int)SEG_WHITEN_B == (int)GROUP_WHITEN_BIAS && (int)SEG_CONV == (int)GROUP_CONV &&
                   (int)SEG_HEAD == (int)GROUP_HEAD && (int)SEG_BN == (int)GROUP_BN_BIAS &&
                   (int)N_SEGMENTS == (int)N_GROUPS,
               "kernels.h's segments follow recipe.h's parameter groups");

static size_t running_offset(const Trainer *t, int g, int j) {
    size_t offset = 0;
    for (int gg = 0; gg < g; gg++) offset += 2 * (size_t)t->layout.depth * t->layout.widths[gg];
    return offset + 2 * (size_t)j * t->layout.widths[g];
}

// ----------------------------------------------------------------------------
// Initialization: weights from the seed (net.h), then the whitening conv from the patch
// covariance of the first whiten_images training images.

static void init_params(Trainer *t, uint64_t seed) {
    const NetLayout *l = &t->layout;
    const Recipe *r = &t->recipe;
    cudaStream_t s = t->stream;
    CUDA_CHECK(cudaMemsetAsync(t->params, 0, l->n_params * sizeof(float), s));
    CUDA_CHECK(cudaMemsetAsync(t->momentum, 0, l->n_params * sizeof(float), s));
    for (int id = 0; id < l->n_tensors; id++) {
        const TensorInfo *ti = &l->tensors[id];
        float *p = param_ptr(t, t->params, id);
        if (ti->kind == TENSOR_CONV) CUDA_CHECK(launch_init_conv(p, id, ti->c_out, ti->c_in, seed, s));
        if (ti->kind == TENSOR_HEAD) CUDA_CHECK(launch_init_uniform(p, ti->size, id, ti->c_in, seed, s));
        if (ti->kind == TENSOR_WHITEN_B && r->muon)
            CUDA_CHECK(launch_init_uniform(p, ti->size, id, 3 * WHITEN_KERNEL * WHITEN_KERNEL, seed, s));
    }
    if (r->muon) {  // the head rescaled to unit (unbiased) standard deviation: 10 x w3 values
        const TensorInfo *head = &l->tensors[l->head];
        float *host = host_alloc(head->size * sizeof(float));
        CUDA_CHECK(cudaMemcpyAsync(host, param_ptr(t, t->params, l->head), head->size * sizeof(float),
                                   cudaMemcpyDeviceToHost, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        net_scale_to_unit_std(host, head->size);
        CUDA_CHECK(cudaMemcpy(param_ptr(t, t->params, l->head), host, head->size * sizeof(float),
                              cudaMemcpyHostToDevice));
        free(host);
    }
    float *running = host_alloc(t->n_running * sizeof(float));
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < l->depth; j++)
            for (int c = 0; c < l->widths[g]; c++) running[running_offset(t, g, j) + l->widths[g] + c] = 1.0f;
    CUDA_CHECK(cudaMemcpyAsync(t->running, running, t->n_running * sizeof(float), cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    free(running);
}

// Patch covariance on the GPU; the 12x12 eigendecomposition and the filters
// k = v_k / sqrt(lambda_k + whiten_eps) and their negations on the host (reference_layers.c).
// Then the lookahead state starts from the initialized network.
static void init_whitening(Trainer *t) {
    int n = t->n_train < t->recipe.whiten_images ? t->n_train : t->recipe.whiten_images;
    int blocks = patch_cov_blocks(n);
    CUDA_CHECK(launch_patch_covariance(t->partials, t->train_images, n, t->stream));
    float *partials = host_alloc((size_t)blocks * COV_ENTRIES * sizeof(float));
    CUDA_CHECK(cudaMemcpyAsync(partials, t->partials, (size_t)blocks * COV_ENTRIES * sizeof(float),
                               cudaMemcpyDeviceToHost, t->stream));
    CUDA_CHECK(cudaStreamSynchronize(t->stream));
    double cov[COV_DIM * COV_DIM], n_patches = (double)n * WHITEN_SIDE * WHITEN_SIDE;
    for (int i = 0, e = 0; i < COV_DIM; i++)
        for (int j = i; j < COV_DIM; j++, e++) {
            double sum = 0.0;
            for (int b = 0; b < blocks; b++) sum += partials[(size_t)b * COV_ENTRIES + e];
            cov[i * COV_DIM + j] = cov[j * COV_DIM + i] = sum / n_patches;
        }
    free(partials);
    float weights[WHITEN_WIDTH * COV_DIM];
    ref_whitening_from_covariance(weights, cov, t->recipe.whiten_eps);
    cudaStream_t s = t->stream;
    CUDA_CHECK(cudaMemcpyAsync(param_ptr(t, t->params, 0), weights, sizeof weights, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(t->ema_params, t->params, t->layout.n_params * sizeof(float),
                               cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(t->ema_running, t->running, t->n_running * sizeof(float), cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(launch_refresh_conv_half(&t->pb, s));
}

// ----------------------------------------------------------------------------
// Forward pass. Training mode normalizes with batch statistics (and updates the running
// stats); eval mode uses the running stats, whose mean/rstd prepare_eval_bn computed.

static void prepare_eval_bn(Trainer *t) {
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < t->layout.depth; j++) {
            int c = t->layout.widths[g];
            float *running = t->running + running_offset(t, g, j);
            CUDA_CHECK(launch_bn_eval_params(t->acts.bn_mean[g][j], t->acts.bn_rstd[g][j], running, running + c, c,
                                             (float)t->recipe.bn_eps, t->stream));
        }
}

// The rows of an activation of group g, and of conv (g, 0)'s output before the pool, that
// one BN group of `images` images spans.
static size_t group_rows(int g, int images) { return (size_t)images * net_group_out_side(g) * net_group_out_side(g); }
static size_t pre_pool_rows(int g, int images) { return (size_t)images * net_group_in_side(g) * net_group_in_side(g); }

// Conv (g, j)'s output to its activation's output: the pool for j = 0, BN with batch
// statistics (training: per BN group; the running stats updated from the first group's, as
// data-parallel training keeps rank 0's) or running statistics (eval), the residual, the
// recipe's activation (GELU or SiLU).
static void bn_gelu_forward(Trainer *t, int g, int j, int n, int train) {
    const NetLayout *l = &t->layout;
    Activations *a = &t->acts;
    cudaStream_t s = t->stream;
    int c = l->widths[g], in_side = net_group_in_side(g), groups = bn_groups(t, n, train), images = n / groups;
    size_t rows = group_rows(g, images), values = rows * c, pre_pool_values = pre_pool_rows(g, images) * c;
    float *running = t->running + running_offset(t, g, j);
    for (int k = 0; k < groups; k++) {
        const __half *bn_in = a->conv_out[g][j] + k * values;
        if (j == 0) {  // pool, with the statistics of the pooled values
            bn_in = a->pooled[g] + k * values;
            CUDA_CHECK(launch_maxpool2_stats(a->pooled[g] + k * values, a->pool_argmax[g] + k * values, t->partials,
                                             a->conv_out[g][0] + k * pre_pool_values, images, in_side, in_side, c, s));
        } else if (train) {
            CUDA_CHECK(launch_channel_stats(t->partials, bn_in, (int)rows, c, s));
        }
        float *mean = a->bn_mean[g][j] + k * c, *rstd = a->bn_rstd[g][j] + k * c;
        if (train)
            CUDA_CHECK(launch_bn_finalize(mean, rstd, k == 0 ? running : NULL, k == 0 ? running + c : NULL,
                                          t->partials, stats_blocks((int)rows, c), c, (int)rows,
                                          (float)t->recipe.bn_eps, (float)t->recipe.bn_keep, s));
        const __half *residual = net_residual_joins(l->depth, j) ? a->act[g][0] + k * values : NULL;
        CUDA_CHECK(launch_bn_gelu_forward(a->act[g][j] + k * values, bn_in, residual, mean, rstd,
                                          param_ptr(t, t->params, net_bn_id(l, g, j)), (int)rows, c,
                                          t->recipe.activation, s));
    }
}

// From acts.x (n images) to acts.features (n x w3).
static void forward_features(Trainer *t, int n, int train) {
    const NetLayout *l = &t->layout;
    Activations *a = &t->acts;
    cudaStream_t s = t->stream;
    CUDA_CHECK(launch_whiten_forward(a->whiten_out, a->x, param_ptr(t, t->params, 0), param_ptr(t, t->params, 1), n, s));
    const __half *x = a->whiten_out;
    for (int g = 0; g < 3; g++) {
        for (int j = 0; j < l->depth; j++) {
            conv_forward(t->convs, conv_plan(t->convs, n, g, j), j == 0 ? x : a->act[g][j - 1],
                         conv_half_ptr(t, t->conv_half, g, j), a->conv_out[g][j]);
            bn_gelu_forward(t, g, j, n, train);
        }
        x = a->act[g][l->depth - 1];
    }
    CUDA_CHECK(launch_maxpool_global(a->features, a->feature_argmax, x, n, net_group_out_side(2), l->widths[2], s));
}

// ----------------------------------------------------------------------------
// Backward pass: from the loss gradient to every parameter gradient.

// Through the activation, BN (per BN group, each through its own statistics) and, for
// j = 0, the pool: from d_act to d_conv, and the BN bias gradient (summed over the groups).
// Where the residual joins, the activation-input gradient also goes to d_residual. When the
// dgrad above was fused (--fused-bn on, one group), d_act already holds the activation
// input's gradient dz and fused_sums the reduction's sums: only the apply is left.
static void bn_gelu_backward(Trainer *t, int g, int j, int n, const __half *d_act, __half *d_conv, int fused) {
    const NetLayout *l = &t->layout;
    Activations *a = &t->acts;
    cudaStream_t s = t->stream;
    int c = l->widths[g], in_side = net_group_in_side(g), groups = bn_groups(t, n, 1), images = n / groups;
    size_t rows = group_rows(g, images), values = rows * c, pre_pool_values = pre_pool_rows(g, images) * c;
    int joins = net_residual_joins(l->depth, j), activation = fused ? ACTIVATION_IDENTITY : t->recipe.activation;
    const float *bias = param_ptr(t, t->params, net_bn_id(l, g, j));
    float *d_bias = param_ptr(t, t->grads, net_bn_id(l, g, j));
    const float *partials = fused ? t->fused_sums : t->partials;
    int n_partials = fused ? 1 : stats_blocks((int)rows, c);
    for (int k = 0; k < groups; k++) {
        const __half *bn_in = (j == 0 ? a->pooled[g] : a->conv_out[g][j]) + k * values;
        const __half *residual = joins ? a->act[g][0] + k * values : NULL, *d_out = d_act + k * values;
        const float *mean = a->bn_mean[g][j] + k * c, *rstd = a->bn_rstd[g][j] + k * c;
        if (!fused)
            CUDA_CHECK(launch_bn_gelu_backward_reduce(t->partials, d_out, bn_in, residual, mean, rstd, bias,
                                                      (int)rows, c, activation, s));
        CUDA_CHECK(launch_bn_backward_finalize(groups == 1 ? d_bias : t->bn_group_bias + k * c, t->bn_sums, partials,
                                               n_partials, c, (int)rows, s));
        if (j == 0)
            CUDA_CHECK(launch_bn_gelu_backward_apply_pool(d_conv + k * pre_pool_values, d_out, bn_in,
                                                          a->pool_argmax[g] + k * values, mean, rstd, bias,
                                                          t->bn_sums, images, in_side, in_side, c, activation, s));
        else
            CUDA_CHECK(launch_bn_gelu_backward_apply(d_conv + k * values, joins ? t->d_residual + k * values : NULL,
                                                     d_out, bn_in, residual, mean, rstd, bias, t->bn_sums, (int)rows,
                                                     c, activation, s));
    }
    if (groups > 1) CUDA_CHECK(launch_reduce_partials(d_bias, t->bn_group_bias, groups, c, s));
}

// The filter gradient dw of a conv from its input and its output's gradient d_conv: on the
// main stream, or (--wgrad-stream on) on the filter stream once d_conv is written, noting
// in filter_done[buffer] when it has read d_conv.
static void filter_gradient(Trainer *t, const ConvPlan *plan, const __half *input, const __half *d_conv, __half *dw,
                            int buffer) {
    if (!t->filter_stream) {
        conv_backward_filter(t->convs, plan, input, d_conv, dw);
        return;
    }
    CUDA_CHECK(cudaEventRecord(t->d_conv_ready, t->stream));
    CUDA_CHECK(cudaStreamWaitEvent(t->filter_stream, t->d_conv_ready, 0));
    conv_backward_filter(t->convs, plan, input, d_conv, dw);
    CUDA_CHECK(cudaEventRecord(t->filter_done[buffer], t->filter_stream));
}

// --fused-bn on: conv (g, j)'s input gradient from its output gradient d_conv, through the
// activation of the BatchNorm layer below (BN (g, j - 1), or the last of group g - 1): dz
// into d_act and that layer's sums into fused_sums, for bn_gelu_backward's apply.
static void fused_dgrad(Trainer *t, int g, int j, const __half *d_conv, __half *d_act) {
    const NetLayout *l = &t->layout;
    Activations *a = &t->acts;
    int gb = j > 0 ? g : g - 1, jb = j > 0 ? j - 1 : l->depth - 1;
    FusedDgradBuffers b = {.dy = d_conv,
                           .w = conv_half_ptr(t, t->conv_half, g, j),
                           .in = jb == 0 ? a->pooled[gb] : a->conv_out[gb][jb],
                           .mean = a->bn_mean[gb][jb],
                           .rstd = a->bn_rstd[gb][jb],
                           .bias = param_ptr(t, t->params, net_bn_id(l, gb, jb)),
                           .dz = d_act,
                           .sum_dz = t->fused_sums,
                           .sum_dz_xhat = t->fused_sums + l->widths[gb]};
    fused_dgrad_run(t->fused[g][j], t->fusion_cudnn, &b);
}

static void backward(Trainer *t, int n, int whiten_bias_grad) {
    const NetLayout *l = &t->layout;
    Activations *a = &t->acts;
    cudaStream_t s = t->stream;
    int w3 = l->widths[2];
    CUDA_CHECK(launch_loss(t->d_logits, t->loss_sum, t->correct, a->logits, a->labels, t->loss_weights, n,
                           (float)t->recipe.label_smoothing, s));
    CUDA_CHECK(launch_head_backward(param_ptr(t, t->grads, l->head), t->d_features, t->d_logits, a->features,
                                    param_ptr(t, t->params, l->head), n, w3, (float)recipe_logit_scale(&t->recipe), s));
    CUDA_CHECK(launch_maxpool_global_backward(t->d_act, t->d_features, a->feature_argmax, n, net_group_out_side(2),
                                              w3, s));
    // d_act holds the gradient of the activation being processed. A conv's input gradient
    // may overwrite it (already consumed), except where the residual splits: there it is
    // added to the branch gradient that bn_gelu_backward left in d_residual.
    // With the filter stream, layers alternate between two d_conv buffers: a layer's
    // gradient is written while the filter gradient of the layer before still reads the
    // other, and only after the one two layers before has read this one.
    __half *d_act = t->d_act;
    int layer = 0, fused = 0;  // fused: the dgrad just run was (--fused-bn on)
    for (int g = 2; g >= 0; g--)
        for (int j = l->depth - 1; j >= 0; j--, layer++) {
            int buffer = t->filter_stream ? layer % 2 : 0;
            __half *d_conv = buffer ? t->d_conv_spare : t->d_conv;
            if (t->filter_stream && layer >= 2) CUDA_CHECK(cudaStreamWaitEvent(s, t->filter_done[buffer], 0));
            bn_gelu_backward(t, g, j, n, d_act, d_conv, fused);
            const ConvPlan *plan = conv_plan(t->convs, n, g, j);
            const __half *input = j > 0 ? a->act[g][j - 1] : g > 0 ? a->act[g - 1][l->depth - 1] : a->whiten_out;
            filter_gradient(t, plan, input, d_conv, conv_half_ptr(t, t->conv_grads, g, j), buffer);
            int splits = net_residual_splits(l->depth, j);
            d_act = splits ? t->d_residual : t->d_act;
            fused = t->fused[g][j] != NULL;
            if (fused)
                fused_dgrad(t, g, j, d_conv, d_act);
            else if (g > 0 || j > 0 || whiten_bias_grad)
                conv_backward_data(t->convs, plan, conv_half_ptr(t, t->conv_half, g, j), d_conv, d_act, splits);
        }
    if (whiten_bias_grad) {
        CUDA_CHECK(launch_whiten_bias_backward(t->partials, a->x, d_act, param_ptr(t, t->params, 0),
                                               param_ptr(t, t->params, 1), n, s));
        CUDA_CHECK(launch_reduce_partials(param_ptr(t, t->grads, 1), t->partials,
                                          stats_blocks(n * WHITEN_SIDE * WHITEN_SIDE, WHITEN_WIDTH), WHITEN_WIDTH, s));
    }
    // The optimizer reads every filter gradient: the main stream waits for the filter
    // stream's latest record, which follows all its work.
    if (t->filter_stream) CUDA_CHECK(cudaStreamWaitEvent(s, t->filter_done[(layer - 1) % 2], 0));
}

// ----------------------------------------------------------------------------
// Optimizer: one fused Nesterov SGD launch over the flat buffer (kernels.h) with the step's
// groups from the schedule (recipe_step_plan); Muon for the convs; lookahead.

static void sgd_step(Trainer *t, const GroupStep groups[N_GROUPS], int skip_convs) {
    SgdGroup kernel_groups[N_SEGMENTS];
    for (int i = 0; i < N_GROUPS; i++)
        kernel_groups[i] = (SgdGroup){(float)groups[i].lr, (float)groups[i].decay, groups[i].enabled};
    if (skip_convs) kernel_groups[SEG_CONV].enabled = 0;
    CUDA_CHECK(launch_sgd_step(&t->pb, kernel_groups, (float)t->recipe.momentum, t->stream));
}

static void optimizer_step(Trainer *t, const StepPlan *plan) {
    sgd_step(t, plan->group, t->recipe.muon);
    if (t->recipe.muon) muon_step(t, plan);
    if (plan->lookahead_decay >= 0)
        CUDA_CHECK(launch_lookahead(&t->pb, t->ema_params, t->running, t->ema_running, t->n_running,
                                    (float)plan->lookahead_decay, t->stream));
}

// ----------------------------------------------------------------------------
// Evaluation: test-time augmentation (docs/recipe.md), batched over the test set, for
// every test image or (tta_select_frac < 1) for the ones the plain view is least sure of.

typedef struct {
    int flip, shift;
    float weight;
} TtaView;

// The views of a TTA level and their weights: level 0 the image; level 1 the image and its
// mirror; level 2 also both shifted one pixel up-left and down-right. airbench weights a
// mirror pair 1/2 each, and at level 2 the unshifted pair 1/2, each shifted pair 1/4;
// uniform weights every view alike.
static int tta_views(int level, TtaWeights weights, TtaView views[6]) {
    if (level == 0) {
        views[0] = (TtaView){0, 0, 1.0f};
        return 1;
    }
    int n = 0, n_shifts = level == 2 ? 3 : 1;
    const int shifts[3] = {0, -1, 1};
    const float shift_weights[3] = {0.5f, 0.25f, 0.25f};
    for (int i = 0; i < n_shifts; i++)
        for (int flip = 0; flip < 2; flip++)
            views[n++] = (TtaView){flip, shifts[i],
                                   weights == TTA_WEIGHTS_UNIFORM ? 1.0f / (2 * n_shifts)
                                                                  : (level == 2 ? shift_weights[i] : 1.0f) * 0.5f};
    return n;
}

// logits (n x 10) at a TTA level of the n test images from `start`, or of the images at
// indices[0..n) when indices is not NULL.
static void tta_logits(Trainer *t, int level, const int *indices, int start, int n, float *logits) {
    TtaView views[6];
    int n_views = tta_views(level, (TtaWeights)t->recipe.tta_weights, views);
    const NetLayout *l = &t->layout;
    for (int v = 0; v < n_views; v++) {
        if (indices)
            CUDA_CHECK(launch_eval_loader_indexed(t->acts.x, t->test_images, indices, n, views[v].flip, views[v].shift,
                                                  t->stream));
        else
            CUDA_CHECK(launch_eval_loader(t->acts.x, t->test_images + (size_t)start * CIFAR10_IMAGE_BYTES, n,
                                          views[v].flip, views[v].shift, t->stream));
        forward_features(t, n, 0);
        CUDA_CHECK(launch_head_forward(logits, t->acts.features, param_ptr(t, t->params, l->head), n, l->widths[2],
                                       (float)recipe_logit_scale(&t->recipe), views[v].weight, v == 0 ? 0.0f : 1.0f,
                                       t->stream));
    }
}

// Test accuracy at a TTA level (into t->correct); the caller times it or not.
static void evaluate_async(Trainer *t, int level) {
    int n_test = t->n_test, k = level > 0 ? recipe_tta_images(&t->recipe, n_test) : n_test;
    prepare_eval_bn(t);
    CUDA_CHECK(cudaMemsetAsync(t->correct, 0, sizeof(int), t->stream));
    if (k == n_test) {  // every image at the level, chunk by chunk
        for (int start = 0; start < n_test; start += EVAL_BATCH) {
            int n = n_test - start < EVAL_BATCH ? n_test - start : EVAL_BATCH;
            tta_logits(t, level, NULL, start, n, t->acts.logits);
            CUDA_CHECK(launch_count_correct(t->correct, t->acts.logits, t->test_labels + start, n, t->stream));
        }
        return;
    }
    // The plain view of every image, then TTA replaces the logits of the k least sure.
    for (int start = 0; start < n_test; start += EVAL_BATCH) {
        int n = n_test - start < EVAL_BATCH ? n_test - start : EVAL_BATCH;
        tta_logits(t, 0, NULL, start, n, t->test_logits + (size_t)start * NET_CLASSES);
    }
    CUDA_CHECK(launch_top_probability(t->top_probability, t->test_logits, n_test, t->stream));
    CUDA_CHECK(launch_select_lowest(t->tta_indices, t->top_probability, n_test, k, t->stream));
    for (int start = 0; start < k; start += EVAL_BATCH) {
        int n = k - start < EVAL_BATCH ? k - start : EVAL_BATCH;
        tta_logits(t, level, t->tta_indices + start, 0, n, t->acts.logits);
        CUDA_CHECK(launch_scatter_rows(t->test_logits, t->acts.logits, t->tta_indices + start, n, NET_CLASSES,
                                       t->stream));
    }
    CUDA_CHECK(launch_count_correct(t->correct, t->test_logits, t->test_labels, n_test, t->stream));
}

static double read_accuracy(Trainer *t) {
    int correct = 0;
    CUDA_CHECK(cudaMemcpyAsync(&correct, t->correct, sizeof(int), cudaMemcpyDeviceToHost, t->stream));
    CUDA_CHECK(cudaStreamSynchronize(t->stream));
    return (double)correct / t->n_test;
}

// ----------------------------------------------------------------------------
// One training run.

static double wall_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// GPU seconds between two recorded events (waits for the second).
static double event_seconds(cudaEvent_t start, cudaEvent_t stop) {
    float ms = 0.0f;
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return 1e-3 * ms;
}

// The n examples at `rows` (NULL: all batch_size) of step's batch into acts.x and acts.labels.
static void load_batch(Trainer *t, int step, uint64_t seed, const int *rows, int n) {
    const Recipe *r = &t->recipe;
    CUDA_CHECK(launch_train_loader(t->acts.x, t->acts.labels, t->train_images, t->train_labels, t->n_train, n, rows,
                                   recipe_batch_first(r, step, t->n_train), seed, r->translate, r->translate_mode,
                                   r->cutout, (float)r->jitter_brightness, (float)r->jitter_contrast, t->stream));
}

// The training-mode forward of the n loaded images, to acts.logits.
static void train_forward(Trainer *t, int n) {
    forward_features(t, n, 1);
    CUDA_CHECK(launch_head_forward(t->acts.logits, t->acts.features, param_ptr(t, t->params, t->layout.head), n,
                                   t->layout.widths[2], (float)recipe_logit_scale(&t->recipe), 1.0f, 0.0f, t->stream));
}

// What a step's plan changes in the calls it makes, not only in their arguments (graph.h's
// shape): whether the whitening bias gets a gradient, whether lookahead runs, whether Muon
// renormalizes the weights. Shapes 0..7.
static int step_shape(const StepPlan *plan) {
    return plan->group[GROUP_WHITEN_BIAS].enabled | (plan->lookahead_decay >= 0) << 1 | plan->muon_normalize << 2;
}

// One step: the whole batch, or with data filtering the step's kept examples only (in
// their order in the batch, so that BN normalizes over them alone). With --graphs on, as
// one CUDA graph.
static void train_step(Trainer *t, int step, int total_steps, const Options *o) {
    const Recipe *r = &t->recipe;
    int spe = recipe_steps_per_epoch(r, t->n_train), n = recipe_train_batch(r);
    StepPlan plan = recipe_step_plan(r, step, total_steps, spe);
    step_graph_begin(t->graphs, t->stream);
    load_batch(t, step, o->seed, r->filter_keep ? t->kept_rows + (size_t)step * r->filter_keep : NULL, n);
    train_forward(t, n);
    backward(t, n, plan.group[GROUP_WHITEN_BIAS].enabled);
    optimizer_step(t, &plan);
    step_graph_end(t->graphs, step_shape(&plan), t->stream);
}

// ----------------------------------------------------------------------------
// Data filtering (filter_keep > 0): before the main network trains, the proxy network
// scores every batch of the run, keeping the filter_keep examples of highest loss, and
// steps on every proxy_step_every-th batch on the loss of the examples it keeps. Nothing
// goes to the host: the kept rows stay on the GPU for the main network's loader.

// The proxy's scoring of step's batch: a training-mode forward over the whole batch (BN
// statistics over all of it), each example's loss, and the step's kept rows: the indices
// of the filter_keep highest losses in increasing order (ties: the lower index first).
static void proxy_score(Trainer *t, int step, uint64_t seed) {
    Trainer *p = t->proxy;
    int n = p->recipe.batch_size, keep = t->recipe.filter_keep;
    load_batch(p, step, seed, NULL, n);
    train_forward(p, n);
    CUDA_CHECK(launch_example_losses(p->example_losses, p->acts.logits, p->acts.labels, n,
                                     (float)p->recipe.label_smoothing, p->stream));
    CUDA_CHECK(launch_select_highest(t->kept_rows + (size_t)step * keep, p->example_losses, n, keep, p->stream));
}

// The proxy's step on the batch it scored last: the loss summed over the kept examples
// (weights 1 there, 0 elsewhere: the others still enter through the BN statistics),
// backward, and the optimizer as the schedule's plan for batch `step` says.
static void proxy_step(Trainer *t, int step, const StepPlan *plan) {
    Trainer *p = t->proxy;
    int n = p->recipe.batch_size, keep = t->recipe.filter_keep;
    CUDA_CHECK(cudaMemsetAsync(p->loss_weights, 0, (size_t)n * sizeof(float), p->stream));
    CUDA_CHECK(launch_scatter_rows(p->loss_weights, p->ones, t->kept_rows + (size_t)step * keep, keep, 1, p->stream));
    backward(p, n, plan->group[GROUP_WHITEN_BIAS].enabled);
    optimizer_step(p, plan);
}

// The proxy's training, from its initialized state: the first `steps` batches of a run of
// total_steps. With --graphs on, each batch's scoring (and step) is one CUDA graph: shape 0
// scores only, shapes 8..15 also step.
static void train_proxy(Trainer *t, int steps, int total_steps, uint64_t seed) {
    Trainer *p = t->proxy;
    const Recipe *r = &p->recipe;
    int spe = recipe_steps_per_epoch(r, p->n_train);
    CUDA_CHECK(cudaMemsetAsync(p->loss_sum, 0, sizeof(double), p->stream));  // its sums are never read
    CUDA_CHECK(cudaMemsetAsync(p->correct, 0, sizeof(int), p->stream));
    for (int step = 0; step < steps; step++) {
        int stepping = step % t->recipe.proxy_step_every == 0;
        StepPlan plan = recipe_step_plan(r, step, total_steps, spe);
        step_graph_begin(p->graphs, p->stream);
        proxy_score(t, step, seed);
        if (stepping) proxy_step(t, step, &plan);
        step_graph_end(p->graphs, stepping ? 8 | step_shape(&plan) : 0, p->stream);
    }
}

// The epoch's training loss and accuracy (a sync), and its unaugmented test accuracy.
static EpochLog log_epoch(Trainer *t, int epoch, int n_seen, double time_s) {
    double loss_sum = 0.0;
    int correct = 0;
    CUDA_CHECK(cudaMemcpy(&loss_sum, t->loss_sum, sizeof(double), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(&correct, t->correct, sizeof(int), cudaMemcpyDeviceToHost));
    EpochLog e = {.epoch = epoch + 1, .train_loss = loss_sum / n_seen, .train_acc = (double)correct / n_seen,
                  .time_s = time_s};
    if (isfinite(loss_sum)) {
        evaluate_async(t, 0);
        e.test_acc = read_accuracy(t);
    }
    return e;
}

// Trains from scratch with seed o->seed; max_steps < 0 runs the whole recipe (the warm-up
// run uses a few steps). GPU time covers the whitening init, the proxy's training (data
// filtering), the training steps and the final TTA evaluation, not the per-epoch logging
// evaluations. The divergence guard (runfile.h) judges the per-epoch losses; a non-finite
// loss ends the run early, and a signal ends it as interrupted.
static RunResult run_training(Trainer *t, const Options *o, int max_steps, int log) {
    const Recipe *r = &t->recipe;
    int spe = recipe_steps_per_epoch(r, t->n_train), total = recipe_total_steps(r, t->n_train);
    int steps = max_steps >= 0 && max_steps < total ? max_steps : total;
    RunResult result = {.seed = o->seed, .epochs = host_alloc(((size_t)steps / spe + 2) * sizeof(EpochLog))};
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    double wall_start = wall_clock();

    init_params(t, o->seed);
    if (t->proxy) init_params(t->proxy, recipe_proxy_seed(o->seed));
    CUDA_CHECK(cudaEventRecord(start, t->stream));
    init_whitening(t);
    if (t->proxy) {
        init_whitening(t->proxy);
        train_proxy(t, steps, total, o->seed);
    }
    CUDA_CHECK(cudaEventRecord(stop, t->stream));
    result.time_s += event_seconds(start, stop);

    int hopeless = 0;  // a non-finite loss: nothing more to learn from this run
    for (int step = 0; step < steps && !hopeless;) {
        int epoch = step / spe, epoch_end = (epoch + 1) * spe < steps ? (epoch + 1) * spe : steps, first = step;
        CUDA_CHECK(cudaMemsetAsync(t->loss_sum, 0, sizeof(double), t->stream));
        CUDA_CHECK(cudaMemsetAsync(t->correct, 0, sizeof(int), t->stream));
        CUDA_CHECK(cudaEventRecord(start, t->stream));
        for (; step < epoch_end; step++) train_step(t, step, total, o);
        CUDA_CHECK(cudaEventRecord(stop, t->stream));
        result.time_s += event_seconds(start, stop);
        EpochLog *e = &result.epochs[result.n_epochs++];
        *e = log_epoch(t, epoch, (step - first) * recipe_train_batch(r), result.time_s);
        hopeless = !isfinite(e->train_loss);
        if (log)
            printf("| %5d | %10.4f | %9.4f | %8.4f | %8.3f |\n", e->epoch, e->train_loss, e->train_acc, e->test_acc,
                   e->time_s);
        if (runfile_pending_signal()) result.interrupted = 1;
        if (result.interrupted) break;
    }
    double losses[result.n_epochs + 1];
    for (int e = 0; e < result.n_epochs; e++) losses[e] = result.epochs[e].train_loss;
    runfile_loss_diverged(losses, result.n_epochs, result.divergence, sizeof result.divergence);
    if (!result.interrupted) {  // a diverged run is evaluated too: what it reached is recorded
        CUDA_CHECK(cudaEventRecord(start, t->stream));
        evaluate_async(t, r->tta_level);
        CUDA_CHECK(cudaEventRecord(stop, t->stream));
        result.time_s += event_seconds(start, stop);
        result.accuracy = read_accuracy(t);
    }
    result.wall_s = wall_clock() - wall_start;
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    return result;
}

// ----------------------------------------------------------------------------
// Many seeded runs into the run file (runfile.h; schema in docs/run-file.md).

static RunFileWriter *run_file;  // open while runs are written; die() ends it (fatal_hook)

static void end_run_file(const char *incomplete_reason) {
    char err[1024];
    RunFileWriter *w = run_file;
    run_file = NULL;
    if (w && runfile_end(w, incomplete_reason, err, sizeof err)) fprintf(stderr, "%s\n", err);
}

static void add_run(const RunResult *run) {
    char err[1024];
    if (run_file && runfile_add_run(run_file, run_json(run), err, sizeof err)) die(1, "%s", err);
}

// Runs o->runs seeds after one short warm-up run; returns the number that diverged.
// After a signal: the run file ends as incomplete with what was finished, and the process
// dies of the signal (runfile.h).
static void stop_for_signal(const Options *o, int finished) {
    int signal_number = runfile_pending_signal();
    char reason[160];
    snprintf(reason, sizeof reason, "interrupted by signal %d (%s) after %d of %d runs", signal_number,
             strsignal(signal_number), finished, o->runs);
    fprintf(stderr, "%s: %s\n", o->recipe.name, reason);
    end_run_file(reason);
    runfile_exit_for_signal(signal_number);
}

// Records and prints one finished run; 1 if it diverged.
static int report_run(const RunResult *run, int i) {
    add_run(run);
    if (run->divergence[0])
        printf("run %4d  seed %6llu  DIVERGED: %s\n", i, (unsigned long long)run->seed, run->divergence);
    else
        printf("run %4d  seed %6llu  tta_accuracy %.4f  time %.3f s  (wall %.3f s)\n", i,
               (unsigned long long)run->seed, run->accuracy, run->time_s, run->wall_s);
    fflush(stdout);
    return run->divergence[0] != 0;
}

// Runs o->runs seeds after one short warm-up run; returns the number that diverged. A
// signal stops it at the next epoch's end: the runs finished by then stay in the run file.
static int run_all(Trainer *t, const Options *o) {
    if (o->warmup) {  // touches every kernel and library path before timing
        Options warmup = *o;
        warmup.seed = o->seed + 1000003;
        RunResult warm = run_training(t, &warmup, 2 * recipe_steps_per_epoch(&t->recipe, t->n_train), 0);
        free(warm.epochs);
    }
    int n_diverged = 0, n_ok = 0;
    double acc_sum = 0.0, time_sum = 0.0;
    for (int i = 0; i < o->runs; i++) {
        if (runfile_pending_signal()) stop_for_signal(o, i);
        Options run_options = *o;
        run_options.seed = o->seed + (uint64_t)i;
        if (!o->quiet) printf("| epoch | train_loss | train_acc | test_acc |   time_s |   run %d, seed %llu\n", i,
                              (unsigned long long)run_options.seed);
        RunResult run = run_training(t, &run_options, -1, !o->quiet);
        if (run.interrupted) stop_for_signal(o, i);
        if (report_run(&run, i)) {
            n_diverged++;
        } else {
            n_ok++;
            acc_sum += run.accuracy;
            time_sum += run.time_s;
        }
        free(run.epochs);
    }
    if (n_ok)
        printf("%s: n=%d  accuracy mean %.4f  time mean %.3f s%s\n", t->recipe.name, n_ok, acc_sum / n_ok,
               time_sum / n_ok, n_diverged ? "  (and runs that DIVERGED: see above)" : "");
    else
        printf("%s: every run DIVERGED (see above)\n", t->recipe.name);
    return n_diverged;
}

// How often the step graphs were made and only updated: made once per shape is the plan.
static void report_graphs(const Trainer *t) {
    printf("CUDA graphs: %ld made, %ld updated in place", t->graphs->instantiations, t->graphs->updates);
    if (t->proxy) printf("; the proxy's: %ld made, %ld updated", t->proxy->graphs->instantiations,
                         t->proxy->graphs->updates);
    printf("\n");
}

#ifndef AIRBENCH_NO_MAIN
int main(int argc, char **argv) {
    Options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc > 0 ? 0 : 2;
    char err[1024];
    if (o.json_path && runfile_check_writable(o.json_path, err, sizeof err)) die(2, "%s", err);
    char gpu_name[256];
    int major, minor;
    describe_gpu(gpu_name, sizeof gpu_name, &major, &minor);
    Cifar10 data;
    if (cifar10_load(&data, o.data_dir, err, sizeof err)) die(1, "%s", err);
    int n_test = o.test_images ? o.test_images : data.test.n;
    const Recipe *r = &o.recipe;
    if (recipe_validate(r, data.train.n, err, sizeof err)) die(2, "%s", err);
    if (set_stats_block_cap(o.stats_blocks)) die(2, "bad --stats-blocks %d", o.stats_blocks);
    if (!o.quiet) print_setup(&o, gpu_name, major, minor, data.train.n, n_test);
    runfile_watch_signals();
    Trainer *t = trainer_create(r, &data, data.train.n, n_test, o.conv_algo, o.conv_cache);
    cifar10_free(&data);
    trainer_use_conv_graph(t, (ConvGraphChoice)o.conv_graph, o.quiet ? NULL : stdout);
    if (o.graphs) {
        t->graphs = step_graphs_create();
        if (t->proxy) t->proxy->graphs = step_graphs_create();
    }
    if (o.wgrad_stream) trainer_use_filter_stream(t);
    if (o.muon_streams) muon_use_streams(t);
    if (o.fused_bn) trainer_use_fused_bn(t);
    if (o.json_path) {
        if (!(run_file = runfile_begin(o.json_path, run_file_header(&o, trainer_deterministic(t)), err,
                                       sizeof err)))
            die(2, "%s", err);
        gpu_set_fatal_hook(end_run_file);
    }
    int n_diverged = run_all(t, &o);
    end_run_file(NULL);
    if (t->graphs && !o.quiet) report_graphs(t);
    trainer_free(t);
    return n_diverged ? 1 : 0;
}
#endif
