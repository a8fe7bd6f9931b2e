// reference.c: the CPU reference of the airbench network and its training, in fp32.
//
// The oracle for the GPU trainer (llm.c style): the network built from the layers of
// reference_layers.c, its forward and backward pass, the optimizers (SGD, Muon, lookahead),
// data filtering's proxy, the training batches and the test-time augmentation. Checked
// against PyTorch fixtures in tests/test_reference.c and finite differences in
// tests/test_reference_fd.c; the program build/airbench-ref (airbench_ref.c) trains with it.
#include "reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------
// The network.

struct RefActs {
    int batch;
    float *whiten_pre, *whiten_out;                 // B x 24 x 31 x 31
    float *conv_out[3][NET_MAX_DEPTH];              // conv outputs (before the pool for j = 0)
    float *pooled[3];                               // j = 0: after the pool, the BN input
    int *pool_argmax[3];
    float *bn_mean[3][NET_MAX_DEPTH], *bn_var[3][NET_MAX_DEPTH];
    float *pre_act[3][NET_MAX_DEPTH];               // activation inputs (BN output, + residual)
    float *act[3][NET_MAX_DEPTH];                   // activation outputs
    float *features;                                // B x w3, after the final 3x3 max pool
    int *feature_argmax;
    float *logits, *d_logits;
    // Backward scratch, each the size of the largest activation: the gradients of the
    // current activation, of an activation input, of a BN input, of a conv output, and of the
    // residual branch (96).
    float *d_act, *d_pre, *d_bn_in, *d_conv, *d_residual;
};


static void acts_free(RefActs *a, int depth) {
    if (!a) return;
    free(a->whiten_pre);
    free(a->whiten_out);
    for (int g = 0; g < 3; g++) {
        free(a->pooled[g]);
        free(a->pool_argmax[g]);
        for (int j = 0; j < depth; j++) {
            free(a->conv_out[g][j]);
            free(a->bn_mean[g][j]);
            free(a->bn_var[g][j]);
            free(a->pre_act[g][j]);
            free(a->act[g][j]);
        }
    }
    free(a->features);
    free(a->feature_argmax);
    free(a->logits);
    free(a->d_logits);
    free(a->d_act);
    free(a->d_pre);
    free(a->d_bn_in);
    free(a->d_conv);
    free(a->d_residual);
    free(a);
}

static RefActs *acts_create(const NetLayout *l, int batch) {
    RefActs *a = ref_calloc(1, sizeof(RefActs));
    a->batch = batch;
    size_t b = (size_t)batch, whiten_size = b * WHITEN_WIDTH * WHITEN_SIDE * WHITEN_SIDE, largest = whiten_size;
    a->whiten_pre = ref_calloc(whiten_size, sizeof(float));
    a->whiten_out = ref_calloc(whiten_size, sizeof(float));
    for (int g = 0; g < 3; g++) {
        int c = l->widths[g], in_side = net_group_in_side(g), out_side = net_group_out_side(g);
        size_t pre_pool = b * c * in_side * in_side, post_pool = b * c * out_side * out_side;
        if (pre_pool > largest) largest = pre_pool;
        a->pooled[g] = ref_calloc(post_pool, sizeof(float));
        a->pool_argmax[g] = ref_calloc(post_pool, sizeof(int));
        for (int j = 0; j < l->depth; j++) {
            a->conv_out[g][j] = ref_calloc(j == 0 ? pre_pool : post_pool, sizeof(float));
            a->bn_mean[g][j] = ref_calloc(b * c, sizeof(float));  // per BN group: at most one per image
            a->bn_var[g][j] = ref_calloc(b * c, sizeof(float));
            a->pre_act[g][j] = ref_calloc(post_pool, sizeof(float));
            a->act[g][j] = ref_calloc(post_pool, sizeof(float));
        }
    }
    a->features = ref_calloc(b * l->widths[2], sizeof(float));
    a->feature_argmax = ref_calloc(b * l->widths[2], sizeof(int));
    a->logits = ref_calloc(b * NET_CLASSES, sizeof(float));
    a->d_logits = ref_calloc(b * NET_CLASSES, sizeof(float));
    a->d_act = ref_calloc(largest, sizeof(float));
    a->d_pre = ref_calloc(largest, sizeof(float));
    a->d_bn_in = ref_calloc(largest, sizeof(float));
    a->d_conv = ref_calloc(largest, sizeof(float));
    a->d_residual = ref_calloc(largest, sizeof(float));
    return a;
}

static void ensure_acts(RefNet *net, int batch) {
    if (net->acts && net->acts->batch >= batch) return;
    acts_free(net->acts, net->layout.depth);
    net->acts = acts_create(&net->layout, batch);
}

// Offset of BN (g, j)'s running stats: each BN holds mean[c] then var[c].
static size_t running_offset(const RefNet *net, int g, int j) {
    size_t offset = 0;
    for (int gg = 0; gg < 3; gg++)
        for (int jj = 0; jj < net->layout.depth; jj++) {
            if (gg == g && jj == j) return offset;
            offset += 2 * (size_t)net->layout.widths[gg];
        }
    return offset;
}

float *ref_running_mean(const RefNet *net, float *running, int g, int j) {
    return running + running_offset(net, g, j);
}

float *ref_running_var(const RefNet *net, float *running, int g, int j) {
    return running + running_offset(net, g, j) + net->layout.widths[g];
}

RefNet *ref_net_create(const Recipe *recipe) {
    RefNet *net = ref_calloc(1, sizeof(RefNet));
    net_layout_init(&net->layout, recipe->widths, recipe->depth);
    net->bn_eps = (float)recipe->bn_eps;
    net->bn_keep = (float)recipe->bn_keep;
    net->bn_group = recipe->bn_group;
    net->activation = (Activation)recipe->activation;
    net->logit_scale = (float)recipe_logit_scale(recipe);
    size_t n = net->layout.n_params;
    net->params = ref_calloc(n, sizeof(float));
    net->grads = ref_calloc(n, sizeof(float));
    net->momentum = ref_calloc(n, sizeof(float));
    net->ema_params = ref_calloc(n, sizeof(float));
    net->n_running = running_offset(net, 3, 0);
    net->running = ref_calloc(net->n_running, sizeof(float));
    net->ema_running = ref_calloc(net->n_running, sizeof(float));
    return net;
}

void ref_net_free(RefNet *net) {
    if (!net) return;
    acts_free(net->acts, net->layout.depth);
    free(net->params);
    free(net->grads);
    free(net->momentum);
    free(net->ema_params);
    free(net->running);
    free(net->ema_running);
    free(net);
}

void ref_net_init(RefNet *net, const Recipe *recipe, uint64_t seed,
                  const float *whiten_images, int n_whiten) {
    const NetLayout *l = &net->layout;
    memset(net->params, 0, l->n_params * sizeof(float));
    for (int id = 0; id < l->n_tensors; id++) {
        const TensorInfo *t = &l->tensors[id];
        float *p = net->params + t->offset;
        if (t->kind == TENSOR_CONV)
            for (size_t i = 0; i < t->size; i++) p[i] = net_init_conv(seed, id, t->c_out, t->c_in, i);
        else if (t->kind == TENSOR_HEAD)
            for (size_t i = 0; i < t->size; i++) p[i] = net_init_uniform(seed, id, t->c_in, i);
        else if (t->kind == TENSOR_WHITEN_B && recipe->muon)
            for (size_t i = 0; i < t->size; i++) p[i] = net_init_uniform(seed, id, 3 * WHITEN_KERNEL * WHITEN_KERNEL, i);
    }
    if (recipe->muon) net_scale_to_unit_std(ref_tensor(net, net->params, l->head), l->tensors[l->head].size);
    ref_whitening_weights(ref_tensor(net, net->params, 0), whiten_images, n_whiten, recipe->whiten_eps);
    memset(net->momentum, 0, l->n_params * sizeof(float));
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < l->depth; j++) {
            memset(ref_running_mean(net, net->running, g, j), 0, l->widths[g] * sizeof(float));
            float *var = ref_running_var(net, net->running, g, j);
            for (int c = 0; c < l->widths[g]; c++) var[c] = 1.0f;
        }
    memcpy(net->ema_params, net->params, l->n_params * sizeof(float));
    memcpy(net->ema_running, net->running, net->n_running * sizeof(float));
}

// Images per BN group of a training batch of n.
static int bn_group_size(const RefNet *net, int n) {
    if (!net->bn_group) return n;
    if (n % net->bn_group) {
        fprintf(stderr, "airbench-ref: internal error: BN groups of %d do not divide a batch of %d\n", net->bn_group, n);
        exit(1);
    }
    return net->bn_group;
}

// BN (+ residual) + the activation (GELU or SiLU) of conv (g, j) whose BN input is bn_in.
static void forward_bn_gelu(RefNet *net, int g, int j, const float *bn_in, int n, int train) {
    RefActs *a = net->acts;
    int c = net->layout.widths[g], hw = net_group_out_side(g) * net_group_out_side(g);
    const float *bias = ref_tensor(net, net->params, net_bn_id(&net->layout, g, j));
    float *run_mean = ref_running_mean(net, net->running, g, j);
    float *run_var = ref_running_var(net, net->running, g, j);
    if (train) {  // each group of images normalized with its own statistics (NCHW: groups are contiguous)
        int group = bn_group_size(net, n);
        size_t group_values = (size_t)group * c * hw;
        for (int k = 0; k < n / group; k++)
            ref_batchnorm_forward_train(a->pre_act[g][j] + k * group_values, a->bn_mean[g][j] + k * c,
                                        a->bn_var[g][j] + k * c, bn_in + k * group_values, bias, group, c, hw,
                                        net->bn_eps);
        ref_batchnorm_update_running(run_mean, run_var, a->bn_mean[g][j], a->bn_var[g][j], group * hw, c, net->bn_keep);
    } else {
        ref_batchnorm_forward_eval(a->pre_act[g][j], bn_in, bias, run_mean, run_var, n, c, hw, net->bn_eps);
    }
    size_t count = (size_t)n * c * hw;
    if (net_residual_joins(net->layout.depth, j))
        for (size_t i = 0; i < count; i++) a->pre_act[g][j][i] += a->act[g][0][i];
    ref_activation_forward(net->activation, a->act[g][j], a->pre_act[g][j], count);
}

void ref_forward(RefNet *net, const float *images, int n, int train, float *logits) {
    ensure_acts(net, n);
    const NetLayout *l = &net->layout;
    RefActs *a = net->acts;
    ref_conv_forward(a->whiten_pre, images, ref_tensor(net, net->params, 0), ref_tensor(net, net->params, 1),
                     n, 3, 32, 32, WHITEN_WIDTH, WHITEN_KERNEL, 0);
    ref_gelu_forward(a->whiten_out, a->whiten_pre, (size_t)n * WHITEN_WIDTH * WHITEN_SIDE * WHITEN_SIDE);
    const float *x = a->whiten_out;
    int c_in = WHITEN_WIDTH;
    for (int g = 0; g < 3; g++) {
        int c = l->widths[g], in_side = net_group_in_side(g), side = net_group_out_side(g);
        ref_conv_forward(a->conv_out[g][0], x, ref_tensor(net, net->params, net_conv_id(l, g, 0)), NULL,
                         n, c_in, in_side, in_side, c, 3, 1);
        ref_maxpool_forward(a->pooled[g], a->pool_argmax[g], a->conv_out[g][0], n, c, in_side, in_side, 2);
        forward_bn_gelu(net, g, 0, a->pooled[g], n, train);
        for (int j = 1; j < l->depth; j++) {
            ref_conv_forward(a->conv_out[g][j], a->act[g][j - 1], ref_tensor(net, net->params, net_conv_id(l, g, j)),
                             NULL, n, c, side, side, c, 3, 1);
            forward_bn_gelu(net, g, j, a->conv_out[g][j], n, train);
        }
        x = a->act[g][l->depth - 1];
        c_in = c;
    }
    int w3 = l->widths[2], side = net_group_out_side(2);
    ref_maxpool_forward(a->features, a->feature_argmax, x, n, w3, side, side, side);
    ref_linear_forward(a->logits, a->features, ref_tensor(net, net->params, l->head), n, w3, NET_CLASSES,
                       net->logit_scale);
    if (logits != a->logits) memcpy(logits, a->logits, (size_t)n * NET_CLASSES * sizeof(float));
}

// Backward through the activation, BN (and the pool for j = 0) of conv (g, j): from a->d_act
// to a->d_conv. Where the residual joins, the activation-input gradient is also the residual
// branch's gradient.
static void backward_bn_gelu(RefNet *net, int g, int j, int n) {
    const NetLayout *l = &net->layout;
    RefActs *a = net->acts;
    int c = l->widths[g], side = net_group_out_side(g), hw = side * side, in_side = net_group_in_side(g);
    size_t count = (size_t)n * c * hw;
    ref_activation_backward(net->activation, a->d_pre, a->d_act, a->pre_act[g][j], count);
    if (net_residual_joins(l->depth, j)) memcpy(a->d_residual, a->d_pre, count * sizeof(float));
    const float *bn_in = j == 0 ? a->pooled[g] : a->conv_out[g][j];
    float *d_bias = ref_tensor(net, net->grads, net_bn_id(l, g, j));
    float *d_bn_in = j == 0 ? a->d_bn_in : a->d_conv;
    int group = bn_group_size(net, n);
    size_t group_values = (size_t)group * c * hw;
    float group_d_bias[c];
    memset(d_bias, 0, c * sizeof(float));
    for (int k = 0; k < n / group; k++) {  // each group through its own statistics; d_bias sums them
        ref_batchnorm_backward(d_bn_in + k * group_values, group_d_bias, a->d_pre + k * group_values,
                               bn_in + k * group_values, a->bn_mean[g][j] + k * c, a->bn_var[g][j] + k * c, group, c,
                               hw, net->bn_eps);
        for (int ch = 0; ch < c; ch++) d_bias[ch] += group_d_bias[ch];
    }
    if (j == 0) ref_maxpool_backward(a->d_conv, d_bn_in, a->pool_argmax[g], n, c, in_side, in_side, 2);
}

double ref_backward(RefNet *net, const float *images, const uint8_t *labels, const float *weights, int n,
                    float smoothing, int whiten_bias_grad, int *n_correct) {
    const NetLayout *l = &net->layout;
    RefActs *a = net->acts;
    double loss = ref_loss_forward_backward(a->d_logits, n_correct, a->logits, labels, weights, n, NET_CLASSES,
                                            smoothing);
    memset(net->grads, 0, l->n_params * sizeof(float));

    int w3 = l->widths[2], side = net_group_out_side(2);
    float *d_features = a->d_pre;
    ref_linear_backward(d_features, ref_tensor(net, net->grads, l->head), a->d_logits, a->features,
                        ref_tensor(net, net->params, l->head), n, w3, NET_CLASSES, net->logit_scale);
    ref_maxpool_backward(a->d_act, d_features, a->feature_argmax, n, w3, side, side, side);
    for (int g = 2; g >= 0; g--) {
        int c = l->widths[g], out_side = net_group_out_side(g);
        for (int j = l->depth - 1; j >= 0; j--) {
            backward_bn_gelu(net, g, j, n);
            int conv_side = j == 0 ? net_group_in_side(g) : out_side;
            int conv_c_in = net_conv_in(l->widths, g, j);
            const float *conv_in = j > 0 ? a->act[g][j - 1] : g > 0 ? a->act[g - 1][l->depth - 1] : a->whiten_out;
            int need_d_in = g > 0 || j > 0 || whiten_bias_grad;
            int id = net_conv_id(l, g, j);
            ref_conv_backward(need_d_in ? a->d_act : NULL, ref_tensor(net, net->grads, id), NULL, a->d_conv,
                              conv_in, ref_tensor(net, net->params, id), n, conv_c_in, conv_side, conv_side, c, 3, 1);
            if (net_residual_splits(l->depth, j)) {  // x0's gradient: this conv's path + the residual's
                size_t count = (size_t)n * c * out_side * out_side;
                for (size_t i = 0; i < count; i++) a->d_act[i] += a->d_residual[i];
            }
        }
    }
    if (whiten_bias_grad) {
        ref_gelu_backward(a->d_pre, a->d_act, a->whiten_pre, (size_t)n * WHITEN_WIDTH * WHITEN_SIDE * WHITEN_SIDE);
        ref_conv_backward(NULL, NULL, ref_tensor(net, net->grads, 1), a->d_pre, images,
                          ref_tensor(net, net->params, 0), n, 3, 32, 32, WHITEN_WIDTH, WHITEN_KERNEL, 0);
    }
    return loss;
}

double ref_forward_backward(RefNet *net, const float *images, const uint8_t *labels, int n,
                            float smoothing, int whiten_bias_grad, float *logits, int *n_correct) {
    ensure_acts(net, n);
    ref_forward(net, images, n, 1, net->acts->logits);
    if (logits) memcpy(logits, net->acts->logits, (size_t)n * NET_CLASSES * sizeof(float));
    return ref_backward(net, images, labels, NULL, n, smoothing, whiten_bias_grad, n_correct);
}

// ----------------------------------------------------------------------------
// Optimizers.

// One Nesterov SGD update (PyTorch semantics) of count values with learning rate lr and
// decay coefficient c: g = grad + c*w; buf = m*buf + g; g += m*buf; w -= lr*g.
static void sgd_update(float *w, float *buf, const float *grad, size_t count, double lr, double c, double m) {
    for (size_t i = 0; i < count; i++) {
        double g = grad[i] + c * w[i];
        buf[i] = (float)(m * buf[i] + g);
        g += m * buf[i];
        w[i] = (float)(w[i] - lr * g);
    }
}

static void sgd_update_tensor(RefNet *net, int id, double lr, double c, double m) {
    const TensorInfo *t = &net->layout.tensors[id];
    sgd_update(net->params + t->offset, net->momentum + t->offset, net->grads + t->offset, t->size, lr, c, m);
}

// The optimizer group of a tensor; -1 for the frozen whitening weight.
static int group_of(TensorKind kind) {
    switch (kind) {
    case TENSOR_WHITEN_B: return GROUP_WHITEN_BIAS;
    case TENSOR_CONV: return GROUP_CONV;
    case TENSOR_HEAD: return GROUP_HEAD;
    case TENSOR_BN_BIAS: return GROUP_BN_BIAS;
    case TENSOR_WHITEN_W: break;
    }
    return -1;
}

void ref_sgd_step(RefNet *net, const GroupStep groups[N_GROUPS], double momentum, int skip_convs) {
    for (int id = 0; id < net->layout.n_tensors; id++) {
        int group = group_of(net->layout.tensors[id].kind);
        if (group < 0 || !groups[group].enabled || (skip_convs && group == GROUP_CONV)) continue;
        sgd_update_tensor(net, id, groups[group].lr, groups[group].decay, momentum);
    }
}

float ref_round_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u) return x;  // inf and NaN stay
    bits += 0x7fffu + ((bits >> 16) & 1u);
    bits &= 0xffff0000u;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static void round_all_bf16(float *x, size_t count) {
    for (size_t i = 0; i < count; i++) x[i] = ref_round_bf16(x[i]);
}

// Quintic Newton-Schulz iteration towards the orthogonal factor of g:
// X = G / (||G|| + eps), on the wide orientation; A = X X^T; B = b A + c A A; X = a X + B X.
void ref_newton_schulz(float *out, const float *g, int rows, int cols, const Recipe *recipe, int bf16) {
    const float a = (float)recipe->ns_a, b = (float)recipe->ns_b, c = (float)recipe->ns_c;
    int tall = rows > cols, m = tall ? cols : rows, k = tall ? rows : cols;
    size_t size = (size_t)rows * cols;
    float *x = ref_calloc(size, sizeof(float)), *bx = ref_calloc(size, sizeof(float));
    float *A = ref_calloc((size_t)m * m, sizeof(float)), *AA = ref_calloc((size_t)m * m, sizeof(float));
    float *xt = ref_calloc(size, sizeof(float));
    double norm = 0.0;
    for (size_t i = 0; i < size; i++) norm += (double)g[i] * g[i];
    float inv = (float)(1.0 / (sqrt(norm) + recipe->ns_eps));
    if (tall) ref_transpose(x, g, rows, cols);
    else memcpy(x, g, size * sizeof(float));
    for (size_t i = 0; i < size; i++) x[i] *= inv;
    if (bf16) round_all_bf16(x, size);
    for (int step = 0; step < recipe->muon_ns_steps; step++) {
        ref_transpose(xt, x, m, k);
        ref_matmul(A, x, xt, m, k, m);
        if (bf16) round_all_bf16(A, (size_t)m * m);
        ref_matmul(AA, A, A, m, m, m);
        for (int i = 0; i < m * m; i++) A[i] = b * A[i] + c * AA[i];  // A now holds B
        if (bf16) round_all_bf16(A, (size_t)m * m);
        ref_matmul(bx, A, x, m, m, k);
        for (size_t i = 0; i < size; i++) x[i] = a * x[i] + bx[i];
        if (bf16) round_all_bf16(x, size);
    }
    if (tall) ref_transpose(out, x, m, k);
    else memcpy(out, x, size * sizeof(float));
    free(x);
    free(bx);
    free(A);
    free(AA);
    free(xt);
}

// Muon on one conv weight: Nesterov momentum, the weight rescaled to Frobenius norm
// sqrt(c_out) when the plan says, a step along the orthogonalized update, the decay.
static void muon_update_tensor(RefNet *net, int id, const Recipe *recipe, const StepPlan *plan) {
    const TensorInfo *t = &net->layout.tensors[id];
    float *w = net->params + t->offset, *buf = net->momentum + t->offset;
    const float *grad = net->grads + t->offset;
    double m = recipe->muon_momentum, norm = 0.0;
    float *update = ref_calloc(t->size, sizeof(float)), *orth = ref_calloc(t->size, sizeof(float));
    for (size_t i = 0; i < t->size; i++) {
        buf[i] = (float)(m * buf[i] + grad[i]);
        update[i] = (float)(grad[i] + m * buf[i]);
        if (net->muon_bf16) update[i] = ref_round_bf16(update[i]);
        norm += (double)w[i] * w[i];
    }
    ref_newton_schulz(orth, update, t->c_out, (int)(t->size / t->c_out), recipe, net->muon_bf16);
    float scale = plan->muon_normalize ? (float)(sqrt((double)t->c_out) / sqrt(norm)) : 1.0f;
    double lr = plan->group[GROUP_CONV].lr;
    for (size_t i = 0; i < t->size; i++) w[i] = (float)((w[i] * scale - lr * orth[i]) * plan->muon_decay);
    free(update);
    free(orth);
}

void ref_muon_step(RefNet *net, const Recipe *recipe, const StepPlan *plan) {
    ref_sgd_step(net, plan->group, recipe->momentum, 1);
    for (int id = net->layout.first_conv; id < net->layout.first_conv + net->layout.n_convs; id++)
        muon_update_tensor(net, id, recipe, plan);
}

static void lerp_and_copy(float *ema, float *w, size_t count, double decay) {
    for (size_t i = 0; i < count; i++) {
        ema[i] = (float)(decay * ema[i] + (1.0 - decay) * w[i]);
        w[i] = ema[i];
    }
}

void ref_lookahead_update(RefNet *net, double decay) {
    lerp_and_copy(net->ema_params, net->params, net->layout.n_params, decay);
    lerp_and_copy(net->ema_running, net->running, net->n_running, decay);
}

void ref_optimizer_step(RefNet *net, const Recipe *recipe, const StepPlan *plan) {
    if (recipe->muon) ref_muon_step(net, recipe, plan);
    else ref_sgd_step(net, plan->group, recipe->momentum, 0);
    if (plan->lookahead_decay >= 0) ref_lookahead_update(net, plan->lookahead_decay);
}

double ref_train_step(RefNet *net, const Recipe *recipe, const StepPlan *plan, const float *images,
                      const uint8_t *labels, int n, int *n_correct) {
    double loss = ref_forward_backward(net, images, labels, n, (float)recipe->label_smoothing,
                                       plan->group[GROUP_WHITEN_BIAS].enabled, NULL, n_correct);
    ref_optimizer_step(net, recipe, plan);
    return loss;
}

// ----------------------------------------------------------------------------
// Data filtering: the proxy network scores every batch, keeps its highest-loss examples,
// and steps on the kept examples' loss.

void ref_proxy_score(RefNet *proxy, const float *images, const uint8_t *labels, int n, float smoothing,
                     float *losses) {
    ensure_acts(proxy, n);
    ref_forward(proxy, images, n, 1, proxy->acts->logits);
    ref_example_losses(losses, proxy->acts->logits, labels, n, NET_CLASSES, smoothing);
}

double ref_proxy_step(RefNet *proxy, const Recipe *proxy_recipe, const StepPlan *plan, const float *images,
                      const uint8_t *labels, int n, const int *kept, int keep) {
    float *weights = ref_calloc(n, sizeof(float));
    for (int i = 0; i < keep; i++) weights[kept[i]] = 1.0f;
    double loss = ref_backward(proxy, images, labels, weights, n, (float)proxy_recipe->label_smoothing,
                               plan->group[GROUP_WHITEN_BIAS].enabled, NULL);
    ref_optimizer_step(proxy, proxy_recipe, plan);
    free(weights);
    return loss;
}

// ----------------------------------------------------------------------------
// Data: training batches and test-time augmentation views.

void ref_normalize_images(float *out, const uint8_t *images, int n) {
    for (size_t i = 0; i < (size_t)n * CIFAR10_IMAGE_BYTES; i++)
        out[i] = aug_normalize(images[i], (int)(i / 1024 % 3));
}

void ref_train_batch(float *out, uint8_t *labels_out, const Cifar10Split *train, int n_train,
                     const Recipe *recipe, uint64_t seed, int64_t first, const int *rows, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t epoch, image = aug_stream_image(seed, first + (rows ? rows[i] : i), n_train, &epoch);
        const uint8_t *src = train->images + (size_t)image * CIFAR10_IMAGE_BYTES;
        int flip = aug_flip(seed, epoch, image), dy = 0, dx = 0, cut_y = 0, cut_x = 0;
        if (recipe->translate)
            aug_translate(seed, (TranslateMode)recipe->translate_mode, recipe->translate, epoch, image, &dy, &dx);
        if (recipe->cutout) aug_cutout(seed, recipe->cutout, epoch, image, &cut_y, &cut_x);
        float brightness, contrast;
        aug_jitter(seed, (float)recipe->jitter_brightness, (float)recipe->jitter_contrast, epoch, image, &brightness,
                   &contrast);
        float *dst = out + (size_t)i * CIFAR10_IMAGE_BYTES;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++) {
                    int sy, sx;
                    aug_source_pixel(y, x, dy, dx, flip, &sy, &sx);
                    int in_cutout = recipe->cutout && y >= cut_y && y < cut_y + recipe->cutout &&
                                    x >= cut_x && x < cut_x + recipe->cutout;
                    float value = aug_normalize(src[(c * 32 + sy) * 32 + sx], c);
                    dst[(c * 32 + y) * 32 + x] = in_cutout ? 0.0f : aug_jitter_apply(value, brightness, contrast);
                }
        labels_out[i] = train->labels[image];
    }
}

// A test view: mirrored and/or shifted by (shift, shift) with reflect padding.
static void tta_view(float *out, const float *images, int n, int flip, int shift) {
    for (int b = 0; b < n; b++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++) {
                    int sy, sx;
                    aug_source_pixel(y, x, shift, shift, flip, &sy, &sx);
                    out[(((size_t)b * 3 + c) * 32 + y) * 32 + x] = images[(((size_t)b * 3 + c) * 32 + sy) * 32 + sx];
                }
}

// logits = sum over views of weight * f(view), the views being the images and (level >= 1)
// their mirrors, at shift 0 and (level 2) shifted by -1 and +1. airbench's weights: level
// 1 the mean over the mirror; level 2 0.5 of level 1 plus 0.25 each of level 1 on the
// shifted images. Uniform: the mean over the views.
void ref_tta_logits(RefNet *net, const float *images, int n, int level, TtaWeights weights, float *logits) {
    static const int shifts[3] = {0, -1, 1};
    static const double shift_weight[3][3] = {{1, 0, 0}, {1, 0, 0}, {0.5, 0.25, 0.25}};
    int n_flips = level == 0 ? 1 : 2, n_shifts = level == 2 ? 3 : 1;
    float *view = ref_calloc((size_t)n * CIFAR10_IMAGE_BYTES, sizeof(float));
    float *view_logits = ref_calloc((size_t)n * NET_CLASSES, sizeof(float));
    double *sum = ref_calloc((size_t)n * NET_CLASSES, sizeof(double));
    for (int s = 0; s < n_shifts; s++)
        for (int flip = 0; flip < n_flips; flip++) {
            tta_view(view, images, n, flip, shifts[s]);
            ref_forward(net, view, n, 0, view_logits);
            double weight = weights == TTA_WEIGHTS_UNIFORM ? 1.0 / (n_shifts * n_flips) : shift_weight[level][s] / n_flips;
            for (size_t i = 0; i < (size_t)n * NET_CLASSES; i++) sum[i] += weight * view_logits[i];
        }
    for (size_t i = 0; i < (size_t)n * NET_CLASSES; i++) logits[i] = (float)sum[i];
    free(view);
    free(view_logits);
    free(sum);
}

// The top softmax probability of a row of logits: 1 / sum_k exp(z_k - max z).
void ref_top_probabilities(float *p, const float *logits, int n) {
    for (int b = 0; b < n; b++) {
        const float *z = logits + (size_t)b * NET_CLASSES;
        double max_z = z[0], sum = 0.0;
        for (int k = 1; k < NET_CLASSES; k++) max_z = z[k] > max_z ? z[k] : max_z;
        for (int k = 0; k < NET_CLASSES; k++) sum += exp(z[k] - max_z);
        p[b] = (float)(1.0 / sum);
    }
}

typedef struct {
    float value;
    int index;
} Ranked;

static int by_value_then_index(const void *a, const void *b) {
    const Ranked *x = a, *y = b;
    if (x->value != y->value) return x->value < y->value ? -1 : 1;
    return x->index - y->index;
}

static int ascending(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

// The k first of values ranked by sign * value, then by index, in increasing index order.
static void select_ranked(int *indices, const float *values, int n, int k, float sign) {
    Ranked *r = ref_calloc(n, sizeof(Ranked));
    for (int i = 0; i < n; i++) r[i] = (Ranked){sign * values[i], i};
    qsort(r, n, sizeof(Ranked), by_value_then_index);
    for (int i = 0; i < k; i++) indices[i] = r[i].index;
    qsort(indices, k, sizeof(int), ascending);
    free(r);
}

void ref_select_lowest(int *indices, const float *values, int n, int k) { select_ranked(indices, values, n, k, 1.0f); }

// Negation is exact and reverses the order of every pair of values, ties kept.
void ref_select_highest(int *indices, const float *values, int n, int k) {
    select_ranked(indices, values, n, k, -1.0f);
}

// TTA logits of n images at a time, CHUNK at most.
static void chunked_tta(RefNet *net, const float *images, int n, int level, TtaWeights weights, float *logits) {
    enum { CHUNK = 500 };
    for (int start = 0; start < n; start += CHUNK) {
        int count = n - start < CHUNK ? n - start : CHUNK;
        ref_tta_logits(net, images + (size_t)start * CIFAR10_IMAGE_BYTES, count, level, weights,
                       logits + (size_t)start * NET_CLASSES);
    }
}

void ref_evaluate_logits(RefNet *net, const float *images, int n, const Recipe *recipe, float *logits) {
    int k = recipe_tta_images(recipe, n);
    TtaWeights weights = (TtaWeights)recipe->tta_weights;
    if (k == n) {
        chunked_tta(net, images, n, recipe->tta_level, weights, logits);
        return;
    }
    chunked_tta(net, images, n, 0, weights, logits);  // the plain view of every image
    int *chosen = ref_calloc(k ? k : 1, sizeof(int));
    float *sure = ref_calloc(n, sizeof(float));
    ref_top_probabilities(sure, logits, n);
    ref_select_lowest(chosen, sure, n, k);
    free(sure);
    float *selected = ref_calloc((size_t)(k ? k : 1) * CIFAR10_IMAGE_BYTES, sizeof(float));
    float *selected_logits = ref_calloc((size_t)(k ? k : 1) * NET_CLASSES, sizeof(float));
    for (int i = 0; i < k; i++)
        memcpy(selected + (size_t)i * CIFAR10_IMAGE_BYTES, images + (size_t)chosen[i] * CIFAR10_IMAGE_BYTES,
               CIFAR10_IMAGE_BYTES * sizeof(float));
    chunked_tta(net, selected, k, recipe->tta_level, weights, selected_logits);
    for (int i = 0; i < k; i++)
        memcpy(logits + (size_t)chosen[i] * NET_CLASSES, selected_logits + (size_t)i * NET_CLASSES,
               NET_CLASSES * sizeof(float));
    free(chosen);
    free(selected);
    free(selected_logits);
}
