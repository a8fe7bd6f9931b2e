// test_reference_fd.c: the CPU reference's layer functions (airbench/reference_layers.c) and whole
// network (airbench/reference.c) against finite differences, and its small numerical pieces.
//
// 1. Finite differences (central, on the fp32 functions, with the effective step taken from
//    the rounded perturbed values) for every layer function and for the whole network, at
//    depth 2 and 3 and with GELU and SiLU (one-sided where a max-pool's kink lies within
//    the step: network_derivative).
// 2. ref_symmetric_eigen on random symmetric 12 x 12 matrices and on a diagonal one;
//    net_segments' optimizer segments.
//
// The PyTorch fixtures are checked by test_reference.c. ABFX_VERBOSE=1 prints the worst
// network entry, 2 every entry.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"
#include "test.h"
#include "test_helpers.h"

static int verbose;

// Uniform in [-bound, bound), from test_helpers.h's stream.
static void fill_random(float *x, size_t n, float bound) {
    for (size_t i = 0; i < n; i++) x[i] = (float)uniform(-bound, bound);
}

// ---------------------------------------------------------------------------------------
// 1. finite differences

// Accumulates analytic vs numerical derivatives and reports their relative error.
typedef struct {
    const char *what;
    double diff, norm, tol;
    int n;
} FdCheck;

static void fd_add(FdCheck *c, double analytic, double numerical) {
    c->diff += (analytic - numerical) * (analytic - numerical);
    c->norm += numerical * numerical;
    c->n++;
}

static void fd_end(const FdCheck *c) {
    double e = c->norm > 0 ? sqrt(c->diff / c->norm) : sqrt(c->diff);
    printf("  FD %-31s %4d entries, rel err %.2e, tol %.0e\n", c->what, c->n, e, c->tol);
    CHECK(e <= c->tol && c->n > 0, "FD %s: relative error %.3e > %.1e", c->what, e, c->tol);
}

static double weighted_sum(const float *x, const float *r, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * r[i];
    return s;
}

// Numerical derivative of f at x[i] (central), from the values actually stored.
#define FD_DERIV(result, x, i, h, eval)                                                 \
    do {                                                                                \
        float saved_ = (x)[i];                                                          \
        (x)[i] = saved_ + (h);                                                          \
        float up_ = (x)[i];                                                             \
        double f_up_ = (eval);                                                          \
        (x)[i] = saved_ - (h);                                                          \
        float down_ = (x)[i];                                                           \
        double f_down_ = (eval);                                                        \
        (x)[i] = saved_;                                                                \
        (result) = (f_up_ - f_down_) / ((double)up_ - (double)down_);                   \
    } while (0)

typedef struct {
    int n, c_in, h, w, c_out, kernel, pad, bias;
    float *in, *weight, *b, *out, *r;
    size_t n_in, n_w, n_out;
} ConvCase;

static double conv_objective(ConvCase *k) {
    ref_conv_forward(k->out, k->in, k->weight, k->bias ? k->b : NULL, k->n, k->c_in, k->h, k->w, k->c_out,
                     k->kernel, k->pad);
    return weighted_sum(k->out, k->r, k->n_out);
}

static void fd_conv(int kernel, int pad, int bias) {
    ConvCase k = {.n = 2, .c_in = 3, .h = 6, .w = 5, .c_out = 4, .kernel = kernel, .pad = pad, .bias = bias};
    int oh = k.h + 2 * pad - kernel + 1, ow = k.w + 2 * pad - kernel + 1;
    k.n_in = (size_t)k.n * k.c_in * k.h * k.w;
    k.n_w = (size_t)k.c_out * k.c_in * kernel * kernel;
    k.n_out = (size_t)k.n * k.c_out * oh * ow;
    k.in = calloc_floats(k.n_in), k.weight = calloc_floats(k.n_w), k.b = calloc_floats(k.c_out), k.out = calloc_floats(k.n_out);
    k.r = calloc_floats(k.n_out);
    fill_random(k.in, k.n_in, 1), fill_random(k.weight, k.n_w, 1), fill_random(k.b, k.c_out, 1);
    fill_random(k.r, k.n_out, 1);
    float *d_in = calloc_floats(k.n_in), *d_w = calloc_floats(k.n_w), *d_b = calloc_floats(k.c_out);
    ref_conv_backward(d_in, d_w, bias ? d_b : NULL, k.r, k.in, k.weight, k.n, k.c_in, k.h, k.w, k.c_out, kernel, pad);
    // linear in each argument: a large step is exact up to rounding
    const float h = 0.5f;
    char names[3][64];
    snprintf(names[0], 64, "conv %dx%d pad %d d_in", kernel, kernel, pad);
    snprintf(names[1], 64, "conv %dx%d pad %d d_weight", kernel, kernel, pad);
    snprintf(names[2], 64, "conv %dx%d pad %d d_bias", kernel, kernel, pad);
    FdCheck chk_in = {names[0], 0, 0, 1e-5, 0}, chk_w = {names[1], 0, 0, 1e-5, 0}, chk_b = {names[2], 0, 0, 1e-5, 0};
    double num;
    for (size_t i = 0; i < k.n_in; i++) {
        FD_DERIV(num, k.in, i, h, conv_objective(&k));
        fd_add(&chk_in, d_in[i], num);
    }
    for (size_t i = 0; i < k.n_w; i++) {
        FD_DERIV(num, k.weight, i, h, conv_objective(&k));
        fd_add(&chk_w, d_w[i], num);
    }
    fd_end(&chk_in);
    fd_end(&chk_w);
    if (bias) {
        for (int i = 0; i < k.c_out; i++) {
            FD_DERIV(num, k.b, i, h, conv_objective(&k));
            fd_add(&chk_b, d_b[i], num);
        }
        fd_end(&chk_b);
    }
    free(k.in), free(k.weight), free(k.b), free(k.out), free(k.r), free(d_in), free(d_w), free(d_b);
}

static double maxpool_objective(float *out, int *argmax, const float *in, const float *r, int n, int c, int h,
                                int w, int k) {
    ref_maxpool_forward(out, argmax, in, n, c, h, w, k);
    return weighted_sum(out, r, (size_t)n * c * (h / k) * (w / k));
}

static void fd_maxpool(int h, int w, int k) {
    int n = 2, c = 3, oh = h / k, ow = w / k;
    size_t n_in = (size_t)n * c * h * w, n_out = (size_t)n * c * oh * ow;
    float *in = calloc_floats(n_in), *out = calloc_floats(n_out), *r = calloc_floats(n_out), *d_in = calloc_floats(n_in);
    int *argmax = calloc(n_out, sizeof(int));
    // distinct values at least 0.01 apart (a scrambled ramp), so a 1e-3 step never reorders
    for (size_t i = 0; i < n_in; i++) in[i] = 0.01f * (float)((i * 37 + 11) % n_in) - 1.0f;
    fill_random(r, n_out, 1);
    ref_maxpool_forward(out, argmax, in, n, c, h, w, k);
    ref_maxpool_backward(d_in, r, argmax, n, c, h, w, k);
    char name[64];
    snprintf(name, sizeof name, "maxpool %dx%d k %d d_in", h, w, k);
    FdCheck check = {name, 0, 0, 1e-5, 0};
    double num;
    for (size_t i = 0; i < n_in; i++) {
        FD_DERIV(num, in, i, 1e-3f, maxpool_objective(out, argmax, in, r, n, c, h, w, k));
        fd_add(&check, d_in[i], num);
    }
    fd_end(&check);
    free(in), free(out), free(r), free(d_in), free(argmax);
}

static double bn_objective(float *out, float *mean, float *var, const float *in, const float *bias,
                           const float *r, int n, int c, int hw) {
    ref_batchnorm_forward_train(out, mean, var, in, bias, n, c, hw, 1e-12f);
    return weighted_sum(out, r, (size_t)n * c * hw);
}

static void fd_batchnorm(void) {
    int n = 3, c = 2, hw = 5;
    size_t count = (size_t)n * c * hw;
    float *in = calloc_floats(count), *out = calloc_floats(count), *r = calloc_floats(count), *d_in = calloc_floats(count);
    float bias[2], d_bias[2], mean[2], var[2];
    fill_random(in, count, 2), fill_random(r, count, 1), fill_random(bias, 2, 1);
    bn_objective(out, mean, var, in, bias, r, n, c, hw);
    ref_batchnorm_backward(d_in, d_bias, r, in, mean, var, n, c, hw, 1e-12f);
    FdCheck c_in = {"BN train d_in", 0, 0, 1e-3, 0}, c_b = {"BN train d_bias", 0, 0, 1e-5, 0};
    float m2[2], v2[2];
    double num;
    for (size_t i = 0; i < count; i++) {
        FD_DERIV(num, in, i, 3e-3f, bn_objective(out, m2, v2, in, bias, r, n, c, hw));
        fd_add(&c_in, d_in[i], num);
    }
    for (int i = 0; i < c; i++) {
        FD_DERIV(num, bias, i, 0.5f, bn_objective(out, m2, v2, in, bias, r, n, c, hw));
        fd_add(&c_b, d_bias[i], num);
    }
    fd_end(&c_in);
    fd_end(&c_b);
    // the running-stat update: keep * running + (1 - keep) * batch, unbiased variance
    float run_mean[2] = {0.5f, -0.25f}, run_var[2] = {2.0f, 0.5f};
    ref_batchnorm_update_running(run_mean, run_var, mean, var, n * hw, c, 0.6f);
    int ok = 1;
    for (int ch = 0; ch < c; ch++) {
        double sum = 0, sq = 0;
        for (int b = 0; b < n; b++)
            for (int i = 0; i < hw; i++) sum += in[((size_t)b * c + ch) * hw + i];
        double mu = sum / (n * hw);
        for (int b = 0; b < n; b++)
            for (int i = 0; i < hw; i++) sq += pow(in[((size_t)b * c + ch) * hw + i] - mu, 2);
        double want_mean = 0.6 * (ch ? -0.25 : 0.5) + 0.4 * mu;
        double want_var = 0.6 * (ch ? 0.5 : 2.0) + 0.4 * sq / (n * hw - 1);
        ok &= fabs(run_mean[ch] - want_mean) < 1e-6 && fabs(run_var[ch] - want_var) < 1e-6 * want_var;
    }
    CHECK(ok, "ref_batchnorm_update_running: not keep * running + (1 - keep) * batch (unbiased var)");
    free(in), free(out), free(r), free(d_in);
}

// The derivative of an activation (through ref_activation_*) at 81 points of [-4, 4].
static void fd_activation(Activation activation, const char *what) {
    enum { N = 81 };
    float in[N], up[N], down[N], d_in[N], ones[N], out_up[N], out_down[N];
    for (int i = 0; i < N; i++) in[i] = -4.0f + 0.1f * i + 0.013f, ones[i] = 1.0f;
    ref_activation_backward(activation, d_in, ones, in, N);
    const float h = 1e-2f;
    for (int i = 0; i < N; i++) up[i] = in[i] + h, down[i] = in[i] - h;
    ref_activation_forward(activation, out_up, up, N);
    ref_activation_forward(activation, out_down, down, N);
    FdCheck check = {what, 0, 0, 1e-4, 0};
    for (int i = 0; i < N; i++) fd_add(&check, d_in[i], ((double)out_up[i] - out_down[i]) / ((double)up[i] - down[i]));
    fd_end(&check);
}

static void fd_gelu(void) {
    fd_activation(ACTIVATION_GELU, "GELU d_in");
    // exact GELU, not the tanh approximation: GELU(1) = Phi(1) = 0.841344746...
    float one = 1.0f, g1;
    ref_gelu_forward(&g1, &one, 1);
    CHECK_NEAR(g1, 0.8413447460685429, 1e-7, "GELU(1) (exact erf form)");
}

static void fd_silu(void) {
    fd_activation(ACTIVATION_SILU, "SiLU d_in");
    // SiLU(1) = sigmoid(1) = 1 / (1 + e^-1); SiLU'(0) = 1/2
    float x[2] = {1.0f, 0.0f}, y[2], ones[2] = {1.0f, 1.0f}, dy[2];
    ref_silu_forward(y, x, 2);
    ref_silu_backward(dy, ones, x, 2);
    CHECK_NEAR(y[0], 0.7310585786300049, 1e-7, "SiLU(1)");
    CHECK_NEAR(dy[1], 0.5, 1e-7, "SiLU'(0)");
}

static double linear_objective(float *out, const float *in, const float *weight, const float *r, int n,
                               int c_in, int c_out, float scale) {
    ref_linear_forward(out, in, weight, n, c_in, c_out, scale);
    return weighted_sum(out, r, (size_t)n * c_out);
}

static void fd_linear(void) {
    int n = 3, c_in = 5, c_out = 4;
    float scale = 1.0f / 9.0f;
    float in[15], weight[20], out[12], r[12], d_in[15], d_w[20];
    fill_random(in, 15, 1), fill_random(weight, 20, 1), fill_random(r, 12, 1);
    ref_linear_backward(d_in, d_w, r, in, weight, n, c_in, c_out, scale);
    FdCheck chk_in = {"linear d_in", 0, 0, 1e-5, 0}, chk_w = {"linear d_weight", 0, 0, 1e-5, 0};
    double num;
    for (int i = 0; i < 15; i++) {
        FD_DERIV(num, in, i, 0.5f, linear_objective(out, in, weight, r, n, c_in, c_out, scale));
        fd_add(&chk_in, d_in[i], num);
    }
    for (int i = 0; i < 20; i++) {
        FD_DERIV(num, weight, i, 0.5f, linear_objective(out, in, weight, r, n, c_in, c_out, scale));
        fd_add(&chk_w, d_w[i], num);
    }
    fd_end(&chk_in);
    fd_end(&chk_w);
}

static void fd_loss(void) {
    enum { N = 4, K = 10 };
    float logits[N * K], d_logits[N * K];
    uint8_t labels[N] = {3, 0, 9, 3};
    fill_random(logits, N * K, 3);
    int correct = -1;
    double loss = ref_loss_forward_backward(d_logits, &correct, logits, labels, NULL, N, K, 0.2f);
    FdCheck check = {"loss d_logits", 0, 0, 1e-5, 0};
    double num;
    for (int i = 0; i < N * K; i++) {
        FD_DERIV(num, logits, i, 1e-2f, ref_loss_forward_backward(NULL, NULL, logits, labels, NULL, N, K, 0.2f));
        fd_add(&check, d_logits[i], num);
    }
    fd_end(&check);
    // Data filtering's pieces: each row's loss, and a 0/1 mask that keeps rows 0 and 2: the
    // masked loss is theirs, the masked rows get no gradient, the kept ones their own.
    float losses[N], weights[N] = {1, 0, 1, 0}, masked_d_logits[N * K];
    ref_example_losses(losses, logits, labels, N, K, 0.2f);
    CHECK_NEAR(losses[0] + losses[1] + losses[2] + losses[3], loss, 1e-6 * loss, "per-example losses sum to the loss");
    double masked = ref_loss_forward_backward(masked_d_logits, NULL, logits, labels, weights, N, K, 0.2f);
    CHECK_NEAR(masked, losses[0] + losses[2], 1e-6 * masked, "the masked loss is the kept rows'");
    FdCheck masked_check = {"masked loss d_logits", 0, 0, 1e-5, 0};
    for (int i = 0; i < N * K; i++) {
        FD_DERIV(num, logits, i, 1e-2f, ref_loss_forward_backward(NULL, NULL, logits, labels, weights, N, K, 0.2f));
        fd_add(&masked_check, masked_d_logits[i], num);
        CHECK(masked_d_logits[i] == (weights[i / K] ? d_logits[i] : 0.0f), "masked d_logits[%d]", i);
    }
    fd_end(&masked_check);
    // the value itself: (1 - s) * -log p_y + s * mean_k -log p_k, summed; and the hits
    double want = 0.0;
    int want_correct = 0;
    for (int b = 0; b < N; b++) {
        double mx = -1e30, se = 0, nll_sum = 0;
        int best = 0;
        for (int k = 0; k < K; k++)
            if (logits[b * K + k] > mx) mx = logits[b * K + k], best = k;
        for (int k = 0; k < K; k++) se += exp(logits[b * K + k] - mx);
        for (int k = 0; k < K; k++) nll_sum += -(logits[b * K + k] - mx - log(se));
        const double s = 0.2f;  // the smoothing as the reference receives it (a float)
        want += (1.0 - s) * -(logits[b * K + labels[b]] - mx - log(se)) + s * nll_sum / K;
        want_correct += best == labels[b];
    }
    CHECK_NEAR(loss, want, 1e-9 * fabs(want), "label-smoothed summed loss");
    CHECK(correct == want_correct, "loss n_correct %d, want %d", correct, want_correct);
}

// The whole network's forward_backward on a tiny net, a few entries of every tensor.
typedef struct {
    RefNet *net;
    const float *x;
    const uint8_t *labels;
    int n;
    float *logits;
} NetCase;

static double net_loss(const NetCase *c) {
    ref_forward(c->net, c->x, c->n, 1, c->logits);
    return ref_loss_forward_backward(NULL, NULL, c->logits, c->labels, NULL, c->n, NET_CLASSES, 0.2f);
}

// The numerical derivative of the network's loss in p[i]: the central difference, unless it
// misses `analytic` by more than tol * max(|central|, 0.1); then the nearer of the one-sided
// differences. The loss has kinks where a max-pool's choice flips: where one
// lies within the step, the central difference mixes the slopes of both sides, while the
// analytic gradient is the slope of the side the point is on, which the one-sided difference
// away from the kink measures. A wrong gradient misses all three. Counts the one-sided picks
// in *one_sided. Measured at 30 entries a tensor (x86-64, gcc 12): depth 3 took 40 of 600
// one-sided, depth 2 at most 1 of 420; in most of them one side matched the analytic
// gradient to about 1e-3 while the central difference missed it by 2% to over 100%. With
// ten other starting points of the random stream every network check passed, the worst at
// 1.1e-2.
static double network_derivative(const NetCase *c, float *p, size_t i, float h, double analytic, double tol,
                                 int *one_sided) {
    float saved = p[i];
    double f0 = net_loss(c);
    p[i] = saved + h;
    float up = p[i];
    double f_up = net_loss(c);
    p[i] = saved - h;
    float down = p[i];
    double f_down = net_loss(c);
    p[i] = saved;
    double central = (f_up - f_down) / ((double)up - down);
    if (fabs(analytic - central) <= tol * fmax(fabs(central), 0.1)) return central;
    double right = (f_up - f0) / ((double)up - saved), left = (f0 - f_down) / ((double)saved - down);
    (*one_sided)++;
    return fabs(right - analytic) < fabs(left - analytic) ? right : left;
}

#define FD_NETWORK_SAMPLES 3  // entries per tensor

static void fd_network(int depth, Activation activation) {
    int widths[3] = {4, 6, 8}, n = 4;
    Recipe recipe = depth == 3 ? RECIPE_96 : RECIPE_94;
    memcpy(recipe.widths, widths, sizeof widths);
    recipe.activation = activation;
    RefNet *net = ref_net_create(&recipe);
    const NetLayout *l = &net->layout;
    for (int id = 0; id < l->n_tensors; id++) {
        const TensorInfo *t = &l->tensors[id];
        float bound = t->kind == TENSOR_CONV ? 1.0f / sqrtf((float)t->c_in * 9) : t->kind == TENSOR_HEAD ? 0.5f
                      : t->kind == TENSOR_WHITEN_W ? 0.5f : 0.2f;
        fill_random(ref_tensor(net, net->params, id), t->size, bound);
    }
    float *x = calloc_floats((size_t)n * 3 * 32 * 32), *logits = calloc_floats((size_t)n * NET_CLASSES);
    fill_random(x, (size_t)n * 3 * 32 * 32, 1.5f);
    uint8_t labels[4] = {1, 7, 7, 2};
    ref_forward_backward(net, x, labels, n, 0.2f, 1, logits, NULL);
    float *grads = calloc_floats(l->n_params);
    memcpy(grads, net->grads, l->n_params * sizeof(float));
    NetCase c = {net, x, labels, n, logits};
    FdCheck check = {"", 0, 0, 2e-2, 0};
    double worst = 0.0;
    int worst_id = -1, one_sided = 0;
    for (int id = 1; id < l->n_tensors; id++) {
        const TensorInfo *t = &l->tensors[id];
        float *p = ref_tensor(net, net->params, id);
        for (int s = 0; s < FD_NETWORK_SAMPLES; s++) {
            size_t i = (size_t)(rng_u32(5, 98, id, s) % t->size);
            double ana = grads[t->offset + i];
            double num = network_derivative(&c, p, i, 1e-4f, ana, check.tol, &one_sided);
            fd_add(&check, ana, num);
            double e = fabs(ana - num) / fmax(fabs(num), 1e-2);
            if (verbose > 1) printf("      id %d i %zu ana %.6e num %.6e\n", id, i, ana, num);
            if (e > worst) worst = e, worst_id = id;
        }
    }
    if (verbose) printf("    worst entry in tensor %d, rel err %.2e\n", worst_id, worst);
    char name[64];
    snprintf(name, sizeof name, "network d%d %s (%d one-sided)", depth, RECIPE_ACTIVATIONS[activation], one_sided);
    check.what = name;
    fd_end(&check);
    // Kinks are rare (7% of entries at depth 3, above): most entries needing a one-sided
    // difference means the gradient is wrong near every point, not that kinks are near.
    CHECK(one_sided * 4 <= check.n, "FD %s: %d of %d entries needed a one-sided difference", name, one_sided,
          check.n);
    free(x), free(logits), free(grads);
    ref_net_free(net);
}

// ---------------------------------------------------------------------------------------
// 2. the symmetric eigensolver and the optimizer segments

static void check_eigen(const char *what, const double *a, int n) {
    double *work = malloc(sizeof(double) * n * n), *vals = malloc(sizeof(double) * n);
    double *vecs = malloc(sizeof(double) * n * n);
    if (!work || !vals || !vecs) abort();
    memcpy(work, a, sizeof(double) * n * n);
    ref_symmetric_eigen(work, n, vals, vecs);
    double norm = 0.0, worst_res = 0.0, worst_orth = 0.0, trace = 0.0, sum_vals = 0.0;
    int descending = 1;
    for (int i = 0; i < n * n; i++) norm += a[i] * a[i];
    norm = sqrt(norm);
    for (int k = 0; k < n; k++) {
        if (k > 0 && vals[k] > vals[k - 1]) descending = 0;
        trace += a[k * n + k], sum_vals += vals[k];
        double res = 0.0;
        for (int i = 0; i < n; i++) {
            double av = 0.0;
            for (int j = 0; j < n; j++) av += a[i * n + j] * vecs[k * n + j];
            res += pow(av - vals[k] * vecs[k * n + i], 2);
        }
        worst_res = fmax(worst_res, sqrt(res) / norm);
        for (int m = 0; m < n; m++) {
            double dot = 0.0;
            for (int i = 0; i < n; i++) dot += vecs[k * n + i] * vecs[m * n + i];
            worst_orth = fmax(worst_orth, fabs(dot - (k == m)));
        }
    }
    printf("  eigen %-28s |Av - lv|/|A| %.1e, |V V^T - I| %.1e, trace err %.1e\n", what, worst_res, worst_orth,
           fabs(trace - sum_vals));
    CHECK(descending, "eigen %s: eigenvalues not descending", what);
    CHECK(worst_res <= 1e-12, "eigen %s: residual %.3e", what, worst_res);
    CHECK(worst_orth <= 1e-12, "eigen %s: orthonormality %.3e", what, worst_orth);
    CHECK(fabs(trace - sum_vals) <= 1e-12 * norm, "eigen %s: trace", what);
    free(work), free(vals), free(vecs);
}

static void test_eigen(void) {
    enum { N = 12 };
    double a[N * N];
    for (int i = 0; i < N; i++)
        for (int j = 0; j <= i; j++) a[i * N + j] = a[j * N + i] = uniform(-1.0, 1.0);
    check_eigen("random symmetric 12x12", a, N);
    // a positive definite covariance-like matrix, as in the whitening
    double b[N * N];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < N; k++) s += a[i * N + k] * a[j * N + k];
            b[i * N + j] = s + (i == j ? 1e-3 : 0.0);
        }
    check_eigen("A A^T + 1e-3 I", b, N);
    // already diagonal (no rotation needed): sorted, unit eigenvectors
    double d[N * N] = {0}, vals[N], vecs[N * N];
    for (int i = 0; i < N; i++) d[i * N + i] = (double)((i * 5) % N) - 3.0;
    double work[N * N];
    memcpy(work, d, sizeof d);
    ref_symmetric_eigen(work, N, vals, vecs);
    int ok = 1;
    for (int k = 0; k < N; k++) {
        ok &= vals[k] == (double)(N - 1 - k) - 3.0;
        for (int i = 0; i < N; i++) ok &= fabs(vecs[k * N + i]) == (d[i * N + i] == vals[k] ? 1.0 : 0.0);
    }
    CHECK(ok, "eigen of a diagonal matrix: not its sorted diagonal with unit vectors");
}

// net_segments: the four optimizer segments cover the buffer after the whitening filters,
// one after the other, and each tensor lies in the segment of its kind.
static void test_segments(void) {
    const int widths[2][3] = {{64, 256, 256}, {128, 384, 512}};
    for (int depth = 2; depth <= 3; depth++) {
        NetLayout l;
        net_layout_init(&l, widths[depth - 2], depth);
        size_t begin[4], end[4];
        net_segments(&l, begin, end);
        CHECK(begin[0] == l.tensors[0].size, "segments (depth %d): begin at %zu, not after the whitening filters",
              depth, begin[0]);
        for (int i = 0; i < 3; i++)
            CHECK(end[i] == begin[i + 1], "segments (depth %d): %d ends at %zu, %d begins at %zu", depth, i, end[i],
                  i + 1, begin[i + 1]);
        CHECK(end[3] == l.n_params, "segments (depth %d): end at %zu of %zu parameters", depth, end[3], l.n_params);
        for (int id = 1; id < l.n_tensors; id++) {
            const TensorInfo *t = &l.tensors[id];
            int want = t->kind - TENSOR_WHITEN_B;  // TensorKind order: whitening bias, conv, head, BN bias
            CHECK(begin[want] <= t->offset && t->offset + t->size <= end[want],
                  "segments (depth %d): tensor %d is not in segment %d", depth, id, want);
        }
    }
}

int main(void) {
    const char *v = getenv("ABFX_VERBOSE");
    verbose = v && *v ? atoi(v) : 0;

    printf("finite differences (central, fp32):\n");
    fd_conv(3, 1, 0);
    fd_conv(2, 0, 1);
    fd_maxpool(7, 7, 2);
    fd_maxpool(3, 3, 3);
    fd_batchnorm();
    fd_gelu();
    fd_silu();
    fd_linear();
    fd_loss();
    fd_network(2, ACTIVATION_GELU);
    fd_network(3, ACTIVATION_GELU);
    fd_network(2, ACTIVATION_SILU);

    printf("eigensolver and segments:\n");
    test_eigen();
    test_segments();
    return test_finish("test_reference_fd");
}
