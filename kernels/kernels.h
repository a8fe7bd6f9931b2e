// kernels.h: the hand-written CUDA kernels of airbench.c, with C linkage.
//
// Conventions. Activations are fp16, NHWC: an activation "of rows x c" is rows = n*h*w
// rows of c contiguous channels. The network input x is fp16 NCHW (n x 3 x 32 x 32).
// BatchNorm math, statistics, parameters and optimizer state are fp32. Every launch_*
// function enqueues work on `stream` and returns the launch's cudaError_t (from
// cudaGetLastError), which the caller checks. Channel counts c must be multiples of 8
// (16-byte vector access), at most 2048. Per-channel reductions are deterministic: each
// block writes its partial sums and a finalize kernel adds them in a fixed order.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#else
// C callers only store and pass fp16/bf16 values, never compute with them: give them the
// 2-byte storage types under the CUDA C++ names.
typedef __half_raw __half;
typedef __nv_bfloat16_raw __nv_bfloat16;
#endif

// ---- data ----------------------------------------------------------------------
// n training examples (augment.h decides everything): row i is example p = first + rows[i]
// (rows NULL: first + i) of the stream of shuffled epochs, i.e. the image
// aug_stream_image(seed, p, n_train, &epoch) of data epoch p / n_train, flipped, translated
// by reflect padding (max shift `translate`, mode 0 random / 1 derandomized), normalized,
// jittered ((x + b) * c per image, b in [-jitter_brightness, jitter_brightness), c in
// [1 - jitter_contrast, 1 + jitter_contrast); 0 = none), then cutout (size `cutout`, 0 =
// none) set to 0, all as drawn for that epoch. A batch is first = recipe_batch_first and
// rows NULL; rows (device, n ints) picks some of its examples (data filtering's kept
// ones). images: n_train x 3 x 32 x 32 uint8 (CHW).
cudaError_t launch_train_loader(__half *x, uint8_t *batch_labels, const uint8_t *images,
                                const uint8_t *labels, int n_train, int n, const int *rows,
                                int64_t first, uint64_t seed, int translate, int translate_mode,
                                int cutout, float jitter_brightness, float jitter_contrast,
                                cudaStream_t stream);
// Test view of images [0, n): mirrored if flip, shifted by (shift, shift) with reflect
// padding (TTA: shift -1, 0 or +1), normalized.
cudaError_t launch_eval_loader(__half *x, const uint8_t *images, int n, int flip, int shift,
                               cudaStream_t stream);

// The same for the images images[indices[i]], i < n: selective TTA's chosen test images.
cudaError_t launch_eval_loader_indexed(__half *x, const uint8_t *images, const int *indices, int n, int flip,
                                       int shift, cudaStream_t stream);

// ---- whitening -------------------------------------------------------------------
// Uncentred covariance of the 12-dim 2x2 patches (order channel, row, col) of n
// normalized images: writes partial sums, COV_ENTRIES floats per block, of the 78
// upper-triangle products (i <= j, row-major); patch_cov_blocks(n) blocks.
#define COV_DIM 12
#define COV_ENTRIES 78
int patch_cov_blocks(int n);
cudaError_t launch_patch_covariance(float *partials, const uint8_t *images, int n, cudaStream_t stream);
// out (n*31*31 x 24, NHWC) = GELU(conv2x2(x, weight) + bias); weight 24 x 3 x 2 x 2 fp32.
cudaError_t launch_whiten_forward(__half *out, const __half *x, const float *weight,
                                  const float *bias, int n, cudaStream_t stream);
// Whitening-bias gradient: d_bias[k] = sum over positions of d_out * GELU'(z), z
// recomputed from x. Writes stats_blocks(n*31*31, 24) partials of 24 floats; reduce them
// with launch_reduce_partials.
cudaError_t launch_whiten_bias_backward(float *partials, const __half *x, const __half *d_out,
                                        const float *weight, const float *bias, int n,
                                        cudaStream_t stream);

// ---- per-channel statistics --------------------------------------------------------
// Number of partial blocks a per-channel reduction over `rows` uses: one per 8192 values, at
// most the cap (STATS_DEFAULT_BLOCKS; dev/kernel_bench --stats-blocks sets another, up to
// STATS_MAX_BLOCKS, the bound every partials buffer is sized by).
#define STATS_DEFAULT_BLOCKS 256
#define STATS_MAX_BLOCKS 2048
int stats_blocks(int rows, int c);
// Sets stats_blocks's cap: 0, or -1 (unchanged) outside 1..STATS_MAX_BLOCKS. Only between
// whole reductions: a finalize must see the block count its partials were made with.
int set_stats_block_cap(int cap);
// out[k] = sum over blocks of partials[block][k], k < width (fixed order).
cudaError_t launch_reduce_partials(float *out, const float *partials, int n_blocks, int width,
                                   cudaStream_t stream);
// Per-channel sum and sum of squares of in (rows x c): partials[block][2c] (sums, then
// squares), stats_blocks(rows, c) blocks.
cudaError_t launch_channel_stats(float *partials, const __half *in, int rows, int c, cudaStream_t stream);
// 2x2 max pool, stride 2, floor (in: n x h x w x c, out: n x h/2 x w/2 x c), with the
// window position of the max (0..3, first max in row-major order) and the channel stats
// of the output as launch_channel_stats.
cudaError_t launch_maxpool2_stats(__half *out, uint8_t *argmax, float *partials, const __half *in,
                                  int n, int h, int w, int c, cudaStream_t stream);
// From stats partials of `count` = rows values per channel: mean, rstd = 1/sqrt(var+eps)
// (biased var), and running = keep*running + (1-keep)*batch (unbiased var); no running
// update when running_mean is NULL.
cudaError_t launch_bn_finalize(float *mean, float *rstd, float *running_mean, float *running_var,
                               const float *partials, int n_blocks, int c, int count, float eps,
                               float keep, cudaStream_t stream);
// Eval mode: mean = running_mean, rstd = 1/sqrt(running_var + eps).
cudaError_t launch_bn_eval_params(float *mean, float *rstd, const float *running_mean,
                                  const float *running_var, int c, float eps, cudaStream_t stream);

// ---- BatchNorm + activation --------------------------------------------------------
// The bn_gelu kernels apply `activation`, net.h's Activation: ACTIVATION_GELU (exact GELU)
// or ACTIVATION_SILU (x sigmoid(x)), written act below; the backward passes must get the
// forward's, except that the two apply passes also take ACTIVATION_IDENTITY (act' = 1: d_out
// is already dz, e.g. from a fused dgrad). Any other value launches nothing and returns
// cudaErrorInvalidValue.
// out = act((in - mean) * rstd + bias [+ residual]); residual may be NULL.
cudaError_t launch_bn_gelu_forward(__half *out, const __half *in, const __half *residual,
                                   const float *mean, const float *rstd, const float *bias,
                                   int rows, int c, int activation, cudaStream_t stream);
// Backward pass 1: with z recomputed as in the forward and dz = d_out * act'(z),
// xhat = (in - mean) * rstd: partials[block][2c] = (sum dz, sum dz * xhat).
cudaError_t launch_bn_gelu_backward_reduce(float *partials, const __half *d_out, const __half *in,
                                           const __half *residual, const float *mean,
                                           const float *rstd, const float *bias, int rows, int c,
                                           int activation, cudaStream_t stream);
// Backward finalize: d_bias = sum dz; sums (2c floats) = mean dz in [0, c), mean dz*xhat
// in [c, 2c), over count values.
cudaError_t launch_bn_backward_finalize(float *d_bias, float *sums, const float *partials,
                                        int n_blocks, int c, int count, cudaStream_t stream);
// Backward pass 2: d_in = rstd * (dz - mean dz - xhat * mean dz*xhat). If d_residual is
// not NULL, it receives dz (the residual branch's gradient).
cudaError_t launch_bn_gelu_backward_apply(__half *d_in, __half *d_residual, const __half *d_out,
                                          const __half *in, const __half *residual,
                                          const float *mean, const float *rstd, const float *bias,
                                          const float *sums, int rows, int c, int activation,
                                          cudaStream_t stream);
// Backward pass 2 through the 2x2 max pool too: in is the pooled BN input
// (n x h/2 x w/2 x c); writes d_prepool (n x h x w x c): the BN-input gradient at each
// window's argmax, zero elsewhere (including the row/column the floor pool dropped).
cudaError_t launch_bn_gelu_backward_apply_pool(__half *d_prepool, const __half *d_out,
                                               const __half *in, const uint8_t *argmax,
                                               const float *mean, const float *rstd,
                                               const float *bias, const float *sums, int n, int h,
                                               int w, int c, int activation, cudaStream_t stream);

// ---- head ----------------------------------------------------------------------------
// Global max over side x side (the final 3x3 pool): features n x c fp32, argmax 0..side^2-1.
cudaError_t launch_maxpool_global(float *features, uint8_t *argmax, const __half *in, int n,
                                  int side, int c, cudaStream_t stream);
cudaError_t launch_maxpool_global_backward(__half *d_in, const float *d_features,
                                           const uint8_t *argmax, int n, int side, int c,
                                           cudaStream_t stream);
// logits (n x 10) = beta * logits + alpha * scale * features . weight^T (weight 10 x c);
// with beta = 0 the old logits are not read (they may be uninitialized).
cudaError_t launch_head_forward(float *logits, const float *features, const float *weight, int n,
                                int c, float scale, float alpha, float beta, cudaStream_t stream);
// d_weight (10 x c) = scale * d_logits^T features; d_features = scale * d_logits weight.
cudaError_t launch_head_backward(float *d_weight, float *d_features, const float *d_logits,
                                 const float *features, const float *weight, int n, int c,
                                 float scale, cudaStream_t stream);
// Label-smoothed cross-entropy: d_logits = softmax - (1-s) onehot - s/10; adds the batch's
// summed loss to *loss_sum and its argmax hits to *correct (fp64/int accumulators, one
// block, deterministic). weights (n floats; NULL: all 1) weights each row's loss, and so its
// d_logits (data filtering's 0/1 mask); the hits count every row.
cudaError_t launch_loss(float *d_logits, double *loss_sum, int *correct, const float *logits,
                        const uint8_t *labels, const float *weights, int n, float smoothing,
                        cudaStream_t stream);
// losses[b] = row b's loss as launch_loss computes it (in double), rounded to float.
cudaError_t launch_example_losses(float *losses, const float *logits, const uint8_t *labels, int n,
                                  float smoothing, cudaStream_t stream);
// Adds the argmax hits of logits against labels to *correct.
cudaError_t launch_count_correct(int *correct, const float *logits, const uint8_t *labels, int n,
                                 cudaStream_t stream);

// ---- selective test-time augmentation, and data filtering's selection ----------------
// probability[b] = the top softmax probability of logits row b (n x 10), in fp32.
cudaError_t launch_top_probability(float *probability, const float *logits, int n, cudaStream_t stream);
// indices[0..k) = the indices of the k smallest of values[0..n), 1 <= k <= n, in increasing
// index order; among equal values the lower indices are taken. One block, deterministic.
cudaError_t launch_select_lowest(int *indices, const float *values, int n, int k, cudaStream_t stream);
// The same for the k largest (data filtering's highest losses); among equal values the lower
// indices are taken here too.
cudaError_t launch_select_highest(int *indices, const float *values, int n, int k, cudaStream_t stream);
// dst row indices[i] = src row i, i < n, rows of `width` floats.
cudaError_t launch_scatter_rows(float *dst, const float *src, const int *indices, int n, int width,
                                cudaStream_t stream);

// ---- parameters and optimizer ------------------------------------------------------
// The flat fp32 parameter buffer, in net.h's order, split in segments; conv weights are
// stored KRSC (out, ky, kx, in), as cuDNN's NHWC filters, with an fp16 copy for cuDNN.
enum { SEG_WHITEN_B, SEG_CONV, SEG_HEAD, SEG_BN, N_SEGMENTS };
typedef struct {
    float *params, *momentum;
    const float *grads;           // fp32 gradients, flat (conv range unused)
    const __half *conv_grads;     // fp16 conv gradients, KRSC, indexed from the conv start
    __half *conv_half;            // fp16 copy of the conv weights, same indexing
    size_t begin[N_SEGMENTS], end[N_SEGMENTS];  // [begin, end) of each segment in params
} ParamBuffers;
typedef struct {
    float lr, decay;  // step = lr * (g + decay * w + Nesterov); decay = wd / group base lr
    int enabled;      // 0: the segment is not touched (frozen, or updated by Muon)
} SgdGroup;
// Nesterov SGD (PyTorch semantics) over all enabled segments in one launch; refreshes the
// fp16 conv copy.
cudaError_t launch_sgd_step(const ParamBuffers *pb, const SgdGroup groups[N_SEGMENTS],
                            float momentum, cudaStream_t stream);
// Lookahead over params and running stats: ema = decay*ema + (1-decay)*w; w = ema;
// refreshes the fp16 conv copy.
cudaError_t launch_lookahead(const ParamBuffers *pb, float *ema_params, float *running,
                             float *ema_running, size_t n_running, float decay, cudaStream_t stream);
// conv_half = (half) params over the conv segment.
cudaError_t launch_refresh_conv_half(const ParamBuffers *pb, cudaStream_t stream);
// Initial conv3x3 weight of tensor `tensor_id`, written KRSC, from net_init_conv (which
// indexes PyTorch's OIHW layout).
cudaError_t launch_init_conv(float *weight, int tensor_id, int c_out, int c_in, uint64_t seed,
                             cudaStream_t stream);
// count values from net_init_uniform(seed, tensor_id, fan_in, index).
cudaError_t launch_init_uniform(float *values, size_t count, int tensor_id, int fan_in,
                                uint64_t seed, cudaStream_t stream);

// ---- Muon (airbench94-muon) -------------------------------------------------------
// Conv filters KRSC are row-major (c_out, 9 c_in) matrices: Newton-Schulz runs on them
// directly (it commutes with permuting columns). The GEMMs are cuBLAS calls in the trainer.
// buf = m*buf + g; update = bf16(g + m*buf), g the fp16 conv gradient.
cudaError_t launch_muon_momentum(__nv_bfloat16 *update, float *momentum, const __half *grad, size_t count,
                                 float m, cudaStream_t stream);
// The conv filters as the Muon kernels below see them: matrix i is the c_out[i] x
// (count[i] / c_out[i]) row-major matrix of count[i] values from element offset[i] of each
// buffer a launch is given. One launch covers every matrix (a step's 6 to 9 filters), so
// that the per-filter work costs a launch or two, not a few launches per filter.
#define MUON_MAX_MATRICES 16
typedef struct {
    int n;
    size_t offset[MUON_MAX_MATRICES], count[MUON_MAX_MATRICES];
    int c_out[MUON_MAX_MATRICES];
} MuonMatrices;
// sums[i] = sum of matrix i's x^2, for fp32 or bf16 x. Deterministic: each matrix's values
// are summed by a fixed number of blocks (it depends on count[i] only), whose partials are
// then added in order. Calls on one stream only (the partials are shared).
cudaError_t launch_sum_squares(float *sums, const float *x, const MuonMatrices *m, cudaStream_t stream);
cudaError_t launch_sum_squares_bf16(float *sums, const __nv_bfloat16 *x, const MuonMatrices *m,
                                    cudaStream_t stream);
// Matrix i of x *= 1 / (sqrt(sums[i]) + eps), in bf16.
cudaError_t launch_scale_by_inverse_norm(__nv_bfloat16 *x, const MuonMatrices *m, const float *sums, float eps,
                                         cudaStream_t stream);
// Matrix i: w = (w * scale - lr * update) * decay with scale = sqrt(c_out[i]) /
// sqrt(w_sums[i]), or 1 when w_sums is NULL (a step that does not renormalize); refreshes
// w_half.
cudaError_t launch_muon_apply(float *w, __half *w_half, const __nv_bfloat16 *update, const MuonMatrices *m,
                              const float *w_sums, float lr, float decay, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
