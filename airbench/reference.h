// reference.h: the CPU reference of the airbench network and training step, in fp32.
//
// The oracle the GPU trainer is checked against, itself checked against PyTorch fixtures
// and finite differences. Layout NCHW, weights in PyTorch's layout (net.h). Layer
// functions overwrite their outputs (gradients are not accumulated).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "augment.h"
#include "cifar10.h"
#include "net.h"
#include "recipe.h"

// calloc that exits with a message when memory runs out: every allocation of the reference.
void *ref_calloc(size_t count, size_t size);

// ---- layers (reference_layers.c) ----
// out (m x n) = x (m x k) * y (k x n), row-major.
void ref_matmul(float *out, const float *x, const float *y, int m, int k, int n);
// out (cols x rows) = x (rows x cols) transposed.
void ref_transpose(float *out, const float *x, int rows, int cols);
// Convolution, stride 1, square kernel, zero padding `pad`; bias may be NULL.
void ref_conv_forward(float *out, const float *in, const float *weight, const float *bias,
                      int n, int c_in, int h, int w, int c_out, int kernel, int pad);
// d_in, d_weight and d_bias may each be NULL when not wanted.
void ref_conv_backward(float *d_in, float *d_weight, float *d_bias, const float *d_out,
                       const float *in, const float *weight,
                       int n, int c_in, int h, int w, int c_out, int kernel, int pad);
// Max pooling with a k x k window and stride k, floor mode: output h / k by w / k.
// argmax holds, per output, the flat input index of the chosen element.
void ref_maxpool_forward(float *out, int *argmax, const float *in, int n, int c, int h, int w, int k);
void ref_maxpool_backward(float *d_in, const float *d_out, const int *argmax,
                          int n, int c, int h, int w, int k);
// BatchNorm with weight 1 and a bias: training mode normalizes with the batch mean and
// biased variance (returned per channel in mean, var); eval mode with running stats.
void ref_batchnorm_forward_train(float *out, float *mean, float *var, const float *in,
                                 const float *bias, int n, int c, int hw, float eps);
void ref_batchnorm_forward_eval(float *out, const float *in, const float *bias,
                                const float *running_mean, const float *running_var,
                                int n, int c, int hw, float eps);
// running = keep * running + (1 - keep) * batch, with the unbiased variance.
void ref_batchnorm_update_running(float *running_mean, float *running_var, const float *mean,
                                  const float *var, int count, int c, float keep);
void ref_batchnorm_backward(float *d_in, float *d_bias, const float *d_out, const float *in,
                            const float *mean, const float *var, int n, int c, int hw, float eps);
// Exact GELU, x * Phi(x).
void ref_gelu_forward(float *out, const float *in, size_t count);
void ref_gelu_backward(float *d_in, const float *d_out, const float *in, size_t count);
// SiLU, x * sigmoid(x).
void ref_silu_forward(float *out, const float *in, size_t count);
void ref_silu_backward(float *d_in, const float *d_out, const float *in, size_t count);
// The ConvGroups' activation (net.h): GELU or SiLU (or the identity: a copy, in place allowed).
void ref_activation_forward(Activation activation, float *out, const float *in, size_t count);
void ref_activation_backward(Activation activation, float *d_in, const float *d_out, const float *in, size_t count);
// out[n][c_out] = scale * in[n][c_in] . weight[c_out][c_in]   (no bias)
void ref_linear_forward(float *out, const float *in, const float *weight,
                        int n, int c_in, int c_out, float scale);
void ref_linear_backward(float *d_in, float *d_weight, const float *d_out, const float *in,
                         const float *weight, int n, int c_in, int c_out, float scale);
// Label-smoothed cross-entropy summed over the batch; writes its gradient and counts the
// argmax hits. loss_i = (1 - s) * -log p_y + s * mean_k -log p_k. weights (n floats; NULL:
// all 1) weights each row's loss and so its gradient (data filtering's 0/1 mask); the hits
// count every row.
double ref_loss_forward_backward(float *d_logits, int *n_correct, const float *logits,
                                 const uint8_t *labels, const float *weights, int n, int n_classes,
                                 float smoothing);
// losses[b] = loss_b as above (computed in double), rounded to float.
void ref_example_losses(float *losses, const float *logits, const uint8_t *labels, int n, int n_classes,
                        float smoothing);

// ---- whitening (reference_layers.c) ----
// Eigen-decomposition of a symmetric n x n matrix (row-major, destroyed) by cyclic Jacobi
// rotations: eigenvalues in descending order, eigenvector k in row k of eigvecs.
void ref_symmetric_eigen(double *matrix, int n, double *eigvals, double *eigvecs);
// Whitening filters from the uncentred 12x12 covariance (destroyed) of the 2x2 patches
// (order channel, row, col): eigenvectors by descending eigenvalue, each scaled by
// 1/sqrt(lambda + eps), then their negations. Writes WHITEN_WIDTH x 3 x 2 x 2 values.
void ref_whitening_from_covariance(float *whiten_w, double *cov, double eps);
// Whitening filters from the 2x2 patches of n normalized images (n x 3 x 32 x 32): the
// eigenvectors of the uncentred patch covariance scaled by 1/sqrt(lambda + eps), then
// their negations. Writes WHITEN_WIDTH x 3 x 2 x 2 values.
void ref_whitening_weights(float *whiten_w, const float *images, int n, double eps);

// ---- the network (reference.c) ----
typedef struct RefActs RefActs;

typedef struct {
    NetLayout layout;
    float bn_eps, bn_keep, logit_scale;
    int bn_group;                       // training BN statistics per group of images; 0: batch
    Activation activation;              // after each BN of the ConvGroups
    float *params, *grads, *momentum;   // flat, layout.n_params each
    float *running;                     // per BN (g, j): running mean[c] then var[c]
    size_t n_running;
    float *ema_params, *ema_running;    // lookahead state
    RefActs *acts;                      // sized for the largest batch seen so far
    int muon_bf16;                      // 1: Muon rounds to bf16 where the GPU does (tests)
} RefNet;

// A network of recipe's widths, depth and activation, BN and logit constants (no weights yet).
RefNet *ref_net_create(const Recipe *recipe);
void ref_net_free(RefNet *net);
static inline float *ref_tensor(const RefNet *net, float *base, int id) {
    return base + net->layout.tensors[id].offset;
}
float *ref_running_mean(const RefNet *net, float *running, int g, int j);
float *ref_running_var(const RefNet *net, float *running, int g, int j);

// Fresh initial state from the seed (net.h), zero momentum, running mean 0 / var 1, and
// the whitening weights from the n_whiten images (normalized; the recipe's whiten_eps);
// lookahead state = it.
void ref_net_init(RefNet *net, const Recipe *recipe, uint64_t seed,
                  const float *whiten_images, int n_whiten);
// Forward pass; train = 1 uses batch statistics (per group of bn_group images, which must
// divide n) and updates the running stats (from the first group's, as data-parallel
// training keeps rank 0's).
void ref_forward(RefNet *net, const float *images, int n, int train, float *logits);
// Summed loss (each row weighted by weights; NULL: 1) and backward into net->grads, from the
// last ref_forward, which must have been a training-mode one on these images. The whitening
// bias gradient is computed only when whiten_bias_grad. Returns the loss.
double ref_backward(RefNet *net, const float *images, const uint8_t *labels, const float *weights, int n,
                    float smoothing, int whiten_bias_grad, int *n_correct);
// Training forward (updating running stats), summed loss and backward into net->grads.
// The whitening bias gradient is computed only when whiten_bias_grad. Returns the loss.
double ref_forward_backward(RefNet *net, const float *images, const uint8_t *labels, int n,
                            float smoothing, int whiten_bias_grad, float *logits, int *n_correct);

// ---- optimizers ----
// Nesterov SGD, PyTorch semantics, per parameter group (recipe.h's StepPlan groups; the
// frozen whitening weight never changes): g += decay*w; buf = m*buf + g; g += m*buf;
// w -= lr*g. A disabled group is left alone. With muon, the conv group is skipped.
void ref_sgd_step(RefNet *net, const GroupStep groups[N_GROUPS], double momentum, int skip_convs);
// Newton-Schulz orthogonalization (docs/recipe.md) with the recipe's coefficients, eps and
// step count: out = NS(g), both rows x cols. In fp32, or with bf16 = 1 rounded to bf16
// where the GPU stores bf16 (the normalized input, A = X X^T, B = b A + c A A, and each
// new X), with fp32 products in between, as the GPU's cuBLAS calls compute them.
void ref_newton_schulz(float *out, const float *g, int rows, int cols, const Recipe *recipe, int bf16);
// x rounded to the nearest bf16 (ties to even), as a float.
float ref_round_bf16(float x);
// One step of the Muon recipes: Muon for the conv weights at the plan's GROUP_CONV lr
// (renormalizing first when plan->muon_normalize, decaying after by plan->muon_decay),
// Nesterov SGD (recipe->momentum) for the other groups.
void ref_muon_step(RefNet *net, const Recipe *recipe, const StepPlan *plan);
// Lookahead: ema = decay * ema + (1 - decay) * w; w = ema, over the parameters and the BN
// running stats.
void ref_lookahead_update(RefNet *net, double decay);
// The optimizer part of a step as the schedule's plan says: SGD (and Muon for the convs
// with recipe->muon), then the lookahead when the plan has one.
void ref_optimizer_step(RefNet *net, const Recipe *recipe, const StepPlan *plan);
// One training step as the schedule's plan says: forward and backward on the batch (the
// whitening bias gradient only when its group is enabled), the optimizer, the lookahead.
// Returns the summed loss; counts the batch's argmax hits into *n_correct (may be NULL).
double ref_train_step(RefNet *net, const Recipe *recipe, const StepPlan *plan, const float *images,
                      const uint8_t *labels, int n, int *n_correct);

// ---- data filtering (filter_keep > 0) ----
// The proxy network's scoring of a batch of n: a training-mode forward over all n images
// (BN statistics over all of them; running stats updated), each example's loss into losses.
void ref_proxy_score(RefNet *proxy, const float *images, const uint8_t *labels, int n, float smoothing,
                     float *losses);
// The proxy's step on the batch it scored last: the loss summed over the keep examples
// kept[] only, whose gradient reaches the others through the BN statistics, backward, then
// the optimizer as plan says (proxy_recipe: recipe_proxy's). Returns that loss.
double ref_proxy_step(RefNet *proxy, const Recipe *proxy_recipe, const StepPlan *plan, const float *images,
                      const uint8_t *labels, int n, const int *kept, int keep);

// ---- data ----
// Unaugmented normalized images (n x 3 x 32 x 32) from uint8 CHW.
void ref_normalize_images(float *out, const uint8_t *images, int n);
// n training examples: row i is example first + rows[i] (rows NULL: first + i) of the
// stream of shuffled epochs (augment.h's aug_stream_image), augmented as drawn for its
// epoch: alternating flip, translation (the recipe's translate and translate_mode),
// normalized, brightness and contrast jitter (jitter_brightness, jitter_contrast), then
// cutout. A step's batch is first = recipe_batch_first, rows NULL and n = batch_size.
// Writes n images and labels.
void ref_train_batch(float *out, uint8_t *labels_out, const Cifar10Split *train, int n_train,
                     const Recipe *recipe, uint64_t seed, int64_t first, const int *rows, int n);
// Test-time augmentation logits (level 0, 1 or 2, docs/recipe.md) in eval mode, with the
// views weighted as airbench does or uniformly.
void ref_tta_logits(RefNet *net, const float *images, int n, int level, TtaWeights weights, float *logits);
// p[b] = the top softmax probability of logits row b (n x 10): how sure the view is.
void ref_top_probabilities(float *p, const float *logits, int n);
// The indices of the k smallest of values[0..n), in increasing index order; among equal
// values the lower indices are taken.
void ref_select_lowest(int *indices, const float *values, int n, int k);
// The same for the k largest (ties: the lower indices too).
void ref_select_highest(int *indices, const float *values, int n, int k);
// The evaluation's logits for n test images as the recipe asks: TTA for all of them, or,
// with tta_select_frac < 1, the plain view for all and TTA (replacing it) for the
// recipe_tta_images least sure ones. In chunks, to bound the activation memory.
void ref_evaluate_logits(RefNet *net, const float *images, int n, const Recipe *recipe, float *logits);
