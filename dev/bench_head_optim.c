// bench_head_optim.c: kernel_bench's harnesses of the head (global max pool, linear layer,
// loss) and of the optimizers (Nesterov SGD, lookahead, Muon's elementwise kernels and
// reductions) on the flat parameter buffer of the bench's widths (see kernel_bench.h).
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernel_bench.h"
#include "reference.h"

enum { FINAL_SIDE = 3 };  // the last group's pooled side: the global max pool's window

static float *random_floats_d(float **values, size_t count, double mean, double std) {
    *values = HOST_FLOATS(count);
    random_floats(*values, count, mean, std);
    return dev_upload(*values, count * sizeof(float));
}

static double sum_of_squares(const float *x, size_t count) {
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += (double)x[i] * x[i];
    return sum;
}

// ---- head ---------------------------------------------------------------------------------

typedef struct {
    int n, c;                    // images, channels of the last group
    float *in, *d_features;      // host: the last activation (fp16 values, NHWC), the features' gradient
    int *argmax;                 // host: the reference's argmax (0..8) per (image, channel)
    void *in_d, *d_in_d;
    float *features_d, *d_features_d;
    uint8_t *argmax_d;
} GlobalPool;

static GlobalPool *make_global_pool(Case *c, const Shape *s) {
    GlobalPool *g = host_buffer(sizeof *g);
    g->n = s->batch;
    g->c = s->widths[2];
    snprintf(c->shape, sizeof c->shape, "%dx%dx%dx%d", g->n, FINAL_SIDE, FINAL_SIDE, g->c);
    c->bytes = (double)g->n * g->c * (FINAL_SIDE * FINAL_SIDE * 2 + 4 + 1);  // fp16 in, fp32 features, argmax
    c->state = g;
    return g;
}

static void prepare_maxpool_global(Case *c, const Shape *s, int group) {
    (void)group;
    GlobalPool *g = make_global_pool(c, s);
    uint16_t *halves = HOST_HALVES((size_t)g->n * FINAL_SIDE * FINAL_SIDE * g->c);
    g->in = HOST_FLOATS((size_t)g->n * FINAL_SIDE * FINAL_SIDE * g->c);
    random_activation(halves, g->in, (size_t)g->n * FINAL_SIDE * FINAL_SIDE, g->c, NULL, NULL, 0);
    g->in_d = dev_upload(halves, (size_t)g->n * FINAL_SIDE * FINAL_SIDE * g->c * sizeof(uint16_t));
    g->features_d = dev_alloc((size_t)g->n * g->c * sizeof(float));
    g->argmax_d = dev_alloc((size_t)g->n * g->c);
}

static cudaError_t run_maxpool_global(const Case *c, KernelFn launch, cudaStream_t stream) {
    const GlobalPool *g = c->state;
    return CALL_AS(launch_maxpool_global, launch)(g->features_d, g->argmax_d, g->in_d, g->n, FINAL_SIDE, g->c,
                                                  stream);
}

static void check_maxpool_global(const Case *c, Check *result) {
    const GlobalPool *g = c->state;
    size_t count = (size_t)g->n * g->c;
    float *in = HOST_FLOATS(count * FINAL_SIDE * FINAL_SIDE), *want = HOST_FLOATS(count);
    int *argmax = host_buffer(count * sizeof(int));
    nhwc_to_nchw(in, g->in, g->n, FINAL_SIDE * FINAL_SIDE, g->c);
    ref_maxpool_forward(want, argmax, in, g->n, g->c, FINAL_SIDE, FINAL_SIDE, FINAL_SIDE);  // n x c x 1 x 1
    uint8_t *got_argmax = host_buffer(count);
    download(got_argmax, g->argmax_d, count);
    size_t mismatches = 0;
    for (size_t i = 0; i < count; i++) mismatches += got_argmax[i] != argmax[i];
    compare(result, "features", rel_error(download_floats(g->features_d, count), want, count), 0);
    compare(result, "argmax differing", (double)mismatches, 0);
}

const Harness MAXPOOL_GLOBAL = {0, prepare_maxpool_global, run_maxpool_global, check_maxpool_global, free_all};

static void prepare_maxpool_global_backward(Case *c, const Shape *s, int group) {
    (void)group;
    GlobalPool *g = make_global_pool(c, s);
    size_t count = (size_t)g->n * g->c;
    uint8_t *argmax = host_buffer(count);
    g->argmax = host_buffer(count * sizeof(int));
    random_bytes(argmax, count, FINAL_SIDE * FINAL_SIDE);
    for (size_t i = 0; i < count; i++) g->argmax[i] = argmax[i];
    g->argmax_d = dev_upload(argmax, count);
    g->d_features_d = random_floats_d(&g->d_features, count, 0.0, 1.0);
    g->d_in_d = dev_alloc(count * FINAL_SIDE * FINAL_SIDE * sizeof(uint16_t));
}

static cudaError_t run_maxpool_global_backward(const Case *c, KernelFn launch, cudaStream_t stream) {
    const GlobalPool *g = c->state;
    return CALL_AS(launch_maxpool_global_backward, launch)(g->d_in_d, g->d_features_d, g->argmax_d, g->n,
                                                           FINAL_SIDE, g->c, stream);
}

static void check_maxpool_global_backward(const Case *c, Check *result) {
    const GlobalPool *g = c->state;
    size_t count = (size_t)g->n * g->c * FINAL_SIDE * FINAL_SIDE;
    float *want = HOST_FLOATS(count);
    ref_maxpool_backward(want, g->d_features, g->argmax, g->n, g->c, FINAL_SIDE, FINAL_SIDE, FINAL_SIDE);
    float *got = download_nchw(g->d_in_d, g->n, FINAL_SIDE * FINAL_SIDE, g->c);
    compare(result, "d_in", rel_error(got, want, count), 2e-3);  // fp16 rounding of d_features
}

const Harness MAXPOOL_GLOBAL_BACKWARD = {0, prepare_maxpool_global_backward, run_maxpool_global_backward,
                                         check_maxpool_global_backward, free_all};

typedef struct {
    int n, c;
    float scale;
    float *features, *weight, *d_logits;  // host
    float *features_d, *weight_d, *logits_d, *d_logits_d, *d_weight_d, *d_features_d;
} Head;

static Head *make_head(Case *c, const Shape *s) {
    Head *h = host_buffer(sizeof *h);
    h->n = s->batch;
    h->c = s->widths[2];
    h->scale = (float)RECIPE_94.logit_scale;
    size_t n_features = (size_t)h->n * h->c;
    h->features = HOST_FLOATS(n_features);
    for (size_t i = 0; i < n_features; i++) h->features[i] = (float)fabs(normal());  // max pools of GELUs: >= 0
    h->features_d = dev_upload(h->features, n_features * sizeof(float));
    h->weight_d = random_floats_d(&h->weight, (size_t)NET_CLASSES * h->c, 0.0, 0.05);
    snprintf(c->shape, sizeof c->shape, "%dx%d -> %d", h->n, h->c, NET_CLASSES);
    c->state = h;
    return h;
}

static void prepare_head_forward(Case *c, const Shape *s, int group) {
    (void)group;
    Head *h = make_head(c, s);
    h->logits_d = dev_alloc((size_t)h->n * NET_CLASSES * sizeof(float));  // NaN: beta = 0 must not read it
    c->bytes = ((double)h->n * h->c + (double)NET_CLASSES * h->c + (double)h->n * NET_CLASSES) * 4;
}

static cudaError_t run_head_forward(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Head *h = c->state;
    return CALL_AS(launch_head_forward, launch)(h->logits_d, h->features_d, h->weight_d, h->n, h->c, h->scale, 1.0f,
                                                0.0f, stream);
}

static void check_head_forward(const Case *c, Check *result) {
    const Head *h = c->state;
    size_t count = (size_t)h->n * NET_CLASSES;
    float *want = HOST_FLOATS(count);
    ref_linear_forward(want, h->features, h->weight, h->n, h->c, NET_CLASSES, h->scale);
    compare(result, "logits", rel_error(download_floats(h->logits_d, count), want, count), 1e-5);
}

const Harness HEAD_FORWARD = {0, prepare_head_forward, run_head_forward, check_head_forward, free_all};

static void prepare_head_backward(Case *c, const Shape *s, int group) {
    (void)group;
    Head *h = make_head(c, s);
    h->d_logits_d = random_floats_d(&h->d_logits, (size_t)h->n * NET_CLASSES, 0.0, 0.1);
    h->d_weight_d = dev_alloc((size_t)NET_CLASSES * h->c * sizeof(float));
    h->d_features_d = dev_alloc((size_t)h->n * h->c * sizeof(float));
    // features in, d_features out; d_logits and the weight read, d_weight written
    c->bytes = (2.0 * h->n * h->c + 2.0 * h->n * NET_CLASSES + 2.0 * NET_CLASSES * h->c) * 4;
}

static cudaError_t run_head_backward(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Head *h = c->state;
    return CALL_AS(launch_head_backward, launch)(h->d_weight_d, h->d_features_d, h->d_logits_d, h->features_d,
                                                 h->weight_d, h->n, h->c, h->scale, stream);
}

static void check_head_backward(const Case *c, Check *result) {
    const Head *h = c->state;
    size_t n_features = (size_t)h->n * h->c, n_weight = (size_t)NET_CLASSES * h->c;
    float *d_features = HOST_FLOATS(n_features), *d_weight = HOST_FLOATS(n_weight);
    ref_linear_backward(d_features, d_weight, h->d_logits, h->features, h->weight, h->n, h->c, NET_CLASSES, h->scale);
    compare(result, "d_weight", rel_error(download_floats(h->d_weight_d, n_weight), d_weight, n_weight), 1e-5);
    compare(result, "d_features", rel_error(download_floats(h->d_features_d, n_features), d_features, n_features),
            1e-5);
}

const Harness HEAD_BACKWARD = {0, prepare_head_backward, run_head_backward, check_head_backward, free_all};

typedef struct {
    int n;
    float *logits;   // host
    uint8_t *labels, *labels_d;
    float *logits_d, *d_logits_d;
    float *weights, *weights_d;  // LOSS_MASKED: data filtering's 0/1 mask, every other row kept; else NULL
    double *loss_d;  // the kernel adds the batch's loss and hits: zeroed by prepare
    int *correct_d;
    float *losses_d;  // EXAMPLE_LOSSES: each row's loss
} Loss;

static Loss *make_loss(Case *c, const Shape *s, int masked) {
    Loss *l = host_buffer(sizeof *l);
    l->n = s->batch;
    l->logits_d = random_floats_d(&l->logits, (size_t)l->n * NET_CLASSES, 0.0, 3.0);
    l->labels = host_buffer(l->n);
    random_bytes(l->labels, l->n, NET_CLASSES);
    l->labels_d = dev_upload(l->labels, l->n);
    l->d_logits_d = dev_alloc((size_t)l->n * NET_CLASSES * sizeof(float));
    l->loss_d = dev_alloc(sizeof(double));
    l->correct_d = dev_alloc(sizeof(int));
    l->losses_d = dev_alloc((size_t)l->n * sizeof(float));
    CUDA_CHECK(cudaMemset(l->loss_d, 0, sizeof(double)));
    CUDA_CHECK(cudaMemset(l->correct_d, 0, sizeof(int)));
    if (masked) {
        l->weights = HOST_FLOATS(l->n);
        for (int b = 0; b < l->n; b++) l->weights[b] = (float)(b % 2 == 0);
        l->weights_d = dev_upload(l->weights, (size_t)l->n * sizeof(float));
    }
    snprintf(c->shape, sizeof c->shape, "%dx%d", l->n, NET_CLASSES);
    c->bytes = (double)l->n * (NET_CLASSES * 4 * 2 + 1 + (masked ? 4 : 0));
    c->state = l;
    return l;
}

static void prepare_loss(Case *c, const Shape *s, int group) {
    (void)group;
    make_loss(c, s, 0);
}

static void prepare_loss_masked(Case *c, const Shape *s, int group) {
    (void)group;
    make_loss(c, s, 1);
}

static cudaError_t run_loss(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Loss *l = c->state;
    return CALL_AS(launch_loss, launch)(l->d_logits_d, l->loss_d, l->correct_d, l->logits_d, l->labels_d,
                                        l->weights_d, l->n, (float)RECIPE_94.label_smoothing, stream);
}

static void check_loss(const Case *c, Check *result) {
    const Loss *l = c->state;
    size_t count = (size_t)l->n * NET_CLASSES;
    float *want = HOST_FLOATS(count);
    int want_correct = 0, got_correct;
    double want_loss = ref_loss_forward_backward(want, &want_correct, l->logits, l->labels, l->weights, l->n,
                                                 NET_CLASSES, (float)RECIPE_94.label_smoothing), got_loss;
    download(&got_loss, l->loss_d, sizeof got_loss);
    download(&got_correct, l->correct_d, sizeof got_correct);
    compare(result, "d_logits", rel_error(download_floats(l->d_logits_d, count), want, count), 1e-6);
    compare(result, "loss", fabs(got_loss - want_loss) / fabs(want_loss), 1e-9);
    compare(result, "hits differing", abs(got_correct - want_correct), 0);
}

const Harness LOSS = {0, prepare_loss, run_loss, check_loss, free_all};
const Harness LOSS_MASKED = {0, prepare_loss_masked, run_loss, check_loss, free_all};

static void prepare_example_losses(Case *c, const Shape *s, int group) {
    (void)group;
    Loss *l = make_loss(c, s, 0);
    c->bytes = (double)l->n * (NET_CLASSES * 4 + 1 + 4);
}

static cudaError_t run_example_losses(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Loss *l = c->state;
    return CALL_AS(launch_example_losses, launch)(l->losses_d, l->logits_d, l->labels_d, l->n,
                                                  (float)RECIPE_94.label_smoothing, stream);
}

static void check_example_losses(const Case *c, Check *result) {
    const Loss *l = c->state;
    float *want = HOST_FLOATS(l->n);
    ref_example_losses(want, l->logits, l->labels, l->n, NET_CLASSES, (float)RECIPE_94.label_smoothing);
    compare(result, "losses", rel_error(download_floats(l->losses_d, l->n), want, l->n), 1e-6);
}

const Harness EXAMPLE_LOSSES = {0, prepare_example_losses, run_example_losses, check_example_losses, free_all};

// Data filtering's selection: the half of a batch of losses that is highest.
typedef struct {
    int n, k;
    float *values, *values_d;
    int *indices_d;
} Selection;

static void prepare_select_highest(Case *c, const Shape *s, int group) {
    (void)group;
    Selection *sel = host_buffer(sizeof *sel);
    sel->n = s->batch;
    sel->k = s->batch / 2;
    sel->values_d = random_floats_d(&sel->values, sel->n, 2.0, 1.0);
    sel->indices_d = dev_alloc((size_t)sel->k * sizeof(int));
    snprintf(c->shape, sizeof c->shape, "%d of %d", sel->k, sel->n);
    c->bytes = (double)sel->n * 4 + (double)sel->k * 4;
    c->state = sel;
}

static cudaError_t run_select_highest(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Selection *sel = c->state;
    return CALL_AS(launch_select_highest, launch)(sel->indices_d, sel->values_d, sel->n, sel->k, stream);
}

static void check_select_highest(const Case *c, Check *result) {
    const Selection *sel = c->state;
    int *want = host_buffer((size_t)sel->k * sizeof(int)), *got = host_buffer((size_t)sel->k * sizeof(int));
    ref_select_highest(want, sel->values, sel->n, sel->k);
    download(got, sel->indices_d, (size_t)sel->k * sizeof(int));
    int differing = 0;
    for (int i = 0; i < sel->k; i++) differing += got[i] != want[i];
    compare(result, "indices differing", differing, 0);
}

const Harness SELECT_HIGHEST = {0, prepare_select_highest, run_select_highest, check_select_highest, free_all};

// ---- SGD and lookahead over the flat parameter buffer ---------------------------------------

// The recipe the bench's net follows: airbench96's at depth 3, else airbench94's, at the
// bench's widths.
static Recipe bench_recipe(const Shape *s) {
    Recipe r = s->depth == 3 ? RECIPE_96 : RECIPE_94;
    memcpy(r.widths, s->widths, sizeof r.widths);
    return r;
}

typedef struct {
    Recipe recipe;
    NetLayout layout;
    ParamBuffers pb;                    // device
    size_t n, n_running;
    float *params, *momentum, *grads;   // host, before the launch (conv grads: fp16 values)
    float *ema, *running, *ema_running; // host, lookahead
    float *ema_d, *running_d, *ema_running_d;
} Params;

// Random parameters, momentum and gradients (fp16 in the conv segment, NaN in the fp32
// buffer's conv range: it must come from conv_grads) of the bench's net, on both sides.
static Params *make_params(Case *c, const Shape *s) {
    Params *p = host_buffer(sizeof *p);
    p->recipe = bench_recipe(s);
    RefNet *net = ref_net_create(&p->recipe);
    p->layout = net->layout;
    p->n = net->layout.n_params;
    p->n_running = net->n_running;
    ref_net_free(net);
    net_segments(&p->layout, p->pb.begin, p->pb.end);
    size_t conv0 = p->pb.begin[SEG_CONV], n_conv = p->pb.end[SEG_CONV] - conv0;
    p->pb.params = random_floats_d(&p->params, p->n, 0.0, 0.01);
    p->pb.momentum = random_floats_d(&p->momentum, p->n, 0.0, 0.1);
    p->grads = HOST_FLOATS(p->n);
    random_floats(p->grads, p->n, 0.0, 1.0);
    uint16_t *conv_grads = HOST_HALVES(n_conv);
    float *grads_gpu = HOST_FLOATS(p->n);
    for (size_t i = 0; i < n_conv; i++) {
        conv_grads[i] = float_to_half(p->grads[conv0 + i]);
        p->grads[conv0 + i] = half_to_float(conv_grads[i]);
    }
    memcpy(grads_gpu, p->grads, p->n * sizeof(float));
    memset(grads_gpu + conv0, 0xff, n_conv * sizeof(float));
    p->pb.grads = dev_upload(grads_gpu, p->n * sizeof(float));
    p->pb.conv_grads = dev_upload(conv_grads, n_conv * sizeof(uint16_t));
    p->pb.conv_half = dev_alloc(n_conv * sizeof(uint16_t));
    snprintf(c->shape, sizeof c->shape, "%zu params", p->n);
    c->state = p;
    return p;
}

// A RefNet holding the state before the launch, for the reference's step.
static RefNet *params_reference(const Params *p) {
    RefNet *net = ref_net_create(&p->recipe);
    memcpy(net->params, p->params, p->n * sizeof(float));
    memcpy(net->momentum, p->momentum, p->n * sizeof(float));
    memcpy(net->grads, p->grads, p->n * sizeof(float));
    if (p->ema) {
        memcpy(net->ema_params, p->ema, p->n * sizeof(float));
        memcpy(net->running, p->running, p->n_running * sizeof(float));
        memcpy(net->ema_running, p->ema_running, p->n_running * sizeof(float));
    }
    return net;
}

// The GPU's parameters and fp16 conv copy against the reference's parameters.
static void compare_params(Check *result, const Params *p, const RefNet *net) {
    size_t conv0 = p->pb.begin[SEG_CONV], n_conv = p->pb.end[SEG_CONV] - conv0;
    float *want_half = HOST_FLOATS(n_conv);
    for (size_t i = 0; i < n_conv; i++) want_half[i] = round_to_half(net->params[conv0 + i]);
    compare(result, "params", rel_error(download_floats(p->pb.params, p->n), net->params, p->n), 1e-5);
    compare(result, "conv_half", rel_error(download_halves(p->pb.conv_half, n_conv), want_half, n_conv), 1e-3);
}

static const double SGD_LR_MULTIPLIER = 0.7;

static void prepare_sgd_step(Case *c, const Shape *s, int group) {
    (void)group;
    Params *p = make_params(c, s);
    // params and momentum read and written, grads read (conv: fp16 grads read, fp16 copy written)
    c->bytes = (double)p->n * 20;
}

static cudaError_t run_sgd_step(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Params *p = c->state;
    const Recipe *r = &p->recipe;
    double lr = recipe_sgd_lr(r), bn_lr = recipe_bn_bias_lr(r), wd = recipe_sgd_wd(r), s = SGD_LR_MULTIPLIER;
    SgdGroup groups[N_SEGMENTS] = {
        [SEG_WHITEN_B] = {(float)(lr * s), (float)(wd / lr), 1},
        [SEG_CONV] = {(float)(lr * s), (float)(wd / lr), 1},
        [SEG_HEAD] = {(float)(lr * s), (float)(wd / lr), 1},
        [SEG_BN] = {(float)(bn_lr * s), (float)(wd / bn_lr), 1},
    };
    return CALL_AS(launch_sgd_step, launch)(&p->pb, groups, (float)r->momentum, stream);
}

static void check_sgd_step(const Case *c, Check *result) {
    const Params *p = c->state;
    RefNet *net = params_reference(p);
    GroupStep groups[N_GROUPS];
    recipe_sgd_groups(&p->recipe, SGD_LR_MULTIPLIER, 1, groups);
    ref_sgd_step(net, groups, p->recipe.momentum, 0);
    compare_params(result, p, net);
    compare(result, "momentum", rel_error(download_floats(p->pb.momentum, p->n), net->momentum, p->n), 1e-5);
    ref_net_free(net);
}

const Harness SGD_STEP = {0, prepare_sgd_step, run_sgd_step, check_sgd_step, free_all};

static const float LOOKAHEAD_DECAY = 0.37f;

static void prepare_lookahead(Case *c, const Shape *s, int group) {
    (void)group;
    Params *p = make_params(c, s);
    p->ema = HOST_FLOATS(p->n);
    for (size_t i = 0; i < p->n; i++) p->ema[i] = p->params[i] + (float)(0.05 * normal());
    memcpy(p->ema, p->params, p->pb.begin[SEG_WHITEN_B] * sizeof(float));  // frozen: ema == w
    p->ema_d = dev_upload(p->ema, p->n * sizeof(float));
    p->running_d = random_floats_d(&p->running, p->n_running, 0.5, 0.5);
    p->ema_running_d = random_floats_d(&p->ema_running, p->n_running, 0.5, 0.5);
    size_t n_conv = p->pb.end[SEG_CONV] - p->pb.begin[SEG_CONV];
    c->bytes = (double)(p->n + p->n_running) * 4 * 4 + (double)n_conv * 2;  // w and ema r/w; conv_half
}

static cudaError_t run_lookahead(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Params *p = c->state;
    return CALL_AS(launch_lookahead, launch)(&p->pb, p->ema_d, p->running_d, p->ema_running_d, p->n_running,
                                             LOOKAHEAD_DECAY, stream);
}

static void check_lookahead(const Case *c, Check *result) {
    const Params *p = c->state;
    RefNet *net = params_reference(p);
    ref_lookahead_update(net, LOOKAHEAD_DECAY);
    compare_params(result, p, net);
    compare(result, "ema", rel_error(download_floats(p->ema_d, p->n), net->ema_params, p->n), 1e-6);
    compare(result, "running", rel_error(download_floats(p->running_d, p->n_running), net->running, p->n_running),
            1e-6);
    compare(result, "ema running",
            rel_error(download_floats(p->ema_running_d, p->n_running), net->ema_running, p->n_running), 1e-6);
    ref_net_free(net);
}

const Harness LOOKAHEAD = {0, prepare_lookahead, run_lookahead, check_lookahead, free_all};

// ---- Muon ---------------------------------------------------------------------------------
// On the conv weights of the bench's net, one launch for all of them as the trainer makes
// it (airbench94: six filters, 1.97M values). The host copies hold the values before the
// launch; each check works out what one launch makes.

static const float MUON_M = 0.6f, MUON_LR = 0.024f, MUON_EPS = 1e-7f, MUON_DECAY = 0.9995f;

typedef struct {
    size_t count;                          // all the filters' values
    MuonMatrices filters;
    float *grad, *momentum, *w, *x;        // host: fp16 grad, fp32 momentum and weight, bf16 x (as floats)
    float *sums;                           // host: each filter's sum of squares (of w or x)
    float *x32_d, *momentum_d, *w_d, *sums_d;
    void *grad_d, *x_d, *w_half_d;         // x: bf16 (the update)
} Muon;

// count random bf16 values on the device, *values as floats (the top halves of random floats).
static void *random_bf16s_d(float **values, size_t count) {
    float *f = HOST_FLOATS(count);
    uint16_t *b = HOST_HALVES(count);
    random_floats(f, count, 0.0, 1.0);
    for (size_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &f[i], 4);
        b[i] = (uint16_t)(bits >> 16);
        f[i] = bf16_to_float(b[i]);
    }
    *values = f;
    return dev_upload(b, count * sizeof(uint16_t));
}

static Muon *make_muon(Case *c, const Shape *s) {
    Muon *m = host_buffer(sizeof *m);
    NetLayout layout;
    net_layout_init(&layout, s->widths, s->depth);
    const size_t begin = layout.tensors[layout.first_conv].offset;
    for (int id = layout.first_conv; id < layout.first_conv + layout.n_convs; id++) {
        const TensorInfo *ti = &layout.tensors[id];
        int i = m->filters.n++;
        m->filters.offset[i] = ti->offset - begin;
        m->filters.count[i] = ti->size;
        m->filters.c_out[i] = ti->c_out;
        m->count = m->filters.offset[i] + ti->size;
    }
    snprintf(c->shape, sizeof c->shape, "%d filters, %zu", m->filters.n, m->count);
    c->state = m;
    return m;
}

// Each filter's sum of squares of x, as floats (what the sum launch leaves).
static float *filter_sums(const float *x, const MuonMatrices *filters) {
    float *sums = HOST_FLOATS(filters->n);
    for (int i = 0; i < filters->n; i++) sums[i] = (float)sum_of_squares(x + filters->offset[i], filters->count[i]);
    return sums;
}

static void prepare_muon_momentum(Case *c, const Shape *s, int group) {
    (void)group;
    Muon *m = make_muon(c, s);
    uint16_t *halves = HOST_HALVES(m->count);
    m->grad = HOST_FLOATS(m->count);
    random_activation(halves, m->grad, m->count, 1, NULL, NULL, 0);
    m->grad_d = dev_upload(halves, m->count * sizeof(uint16_t));
    m->momentum_d = random_floats_d(&m->momentum, m->count, 0.0, 1.0);
    m->x_d = dev_alloc(m->count * sizeof(uint16_t));
    c->bytes = (double)m->count * (2 + 4 + 4 + 2);
}

static cudaError_t run_muon_momentum(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Muon *m = c->state;
    return CALL_AS(launch_muon_momentum, launch)(m->x_d, m->momentum_d, m->grad_d, m->count, MUON_M, stream);
}

// buf = m * buf + g; update = g + m * buf.
static void check_muon_momentum(const Case *c, Check *result) {
    const Muon *m = c->state;
    float *buf = HOST_FLOATS(m->count), *update = HOST_FLOATS(m->count);
    for (size_t i = 0; i < m->count; i++) {
        buf[i] = MUON_M * m->momentum[i] + m->grad[i];
        update[i] = m->grad[i] + MUON_M * buf[i];
    }
    compare(result, "momentum", rel_error(download_floats(m->momentum_d, m->count), buf, m->count), 1e-6);
    // bf16 rounding: about 1.7e-3 relative
    compare(result, "update", rel_error(download_bf16s(m->x_d, m->count), update, m->count), 4e-3);
}

const Harness MUON_MOMENTUM = {0, prepare_muon_momentum, run_muon_momentum, check_muon_momentum, free_all};

static void prepare_sum_squares(Case *c, const Shape *s, int group) {
    (void)group;
    Muon *m = make_muon(c, s);
    m->x32_d = random_floats_d(&m->w, m->count, 0.0, 0.05);
    m->sums_d = dev_alloc(MUON_MAX_MATRICES * sizeof(float));
    c->bytes = (double)m->count * 4;
}

static void prepare_sum_squares_bf16(Case *c, const Shape *s, int group) {
    (void)group;
    Muon *m = make_muon(c, s);
    m->x_d = random_bf16s_d(&m->x, m->count);
    m->sums_d = dev_alloc(MUON_MAX_MATRICES * sizeof(float));
    c->bytes = (double)m->count * 2;
}

static cudaError_t run_sum_squares(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Muon *m = c->state;
    return CALL_AS(launch_sum_squares, launch)(m->sums_d, m->x32_d, &m->filters, stream);
}

static cudaError_t run_sum_squares_bf16(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Muon *m = c->state;
    return CALL_AS(launch_sum_squares_bf16, launch)(m->sums_d, m->x_d, &m->filters, stream);
}

// Each filter's sum of squares of whichever input the harness made (fp32 w or bf16 x).
static void check_sum_squares(const Case *c, Check *result) {
    const Muon *m = c->state;
    const float *x = m->x32_d ? m->w : m->x;
    float *got = download_floats(m->sums_d, m->filters.n);
    double worst = 0.0;
    for (int i = 0; i < m->filters.n; i++) {
        double want = sum_of_squares(x + m->filters.offset[i], m->filters.count[i]);
        worst = fmax(worst, fabs(got[i] - want) / want);
    }
    compare(result, "sums", worst, 3e-5);
}

const Harness SUM_SQUARES = {0, prepare_sum_squares, run_sum_squares, check_sum_squares, free_all};
const Harness SUM_SQUARES_BF16 = {0, prepare_sum_squares_bf16, run_sum_squares_bf16, check_sum_squares, free_all};

// sums_d holds each filter's true sum of squares: its scale is 1 / its norm.
static void prepare_scale_by_inverse_norm(Case *c, const Shape *s, int group) {
    (void)group;
    Muon *m = make_muon(c, s);
    m->x_d = random_bf16s_d(&m->x, m->count);
    m->sums = filter_sums(m->x, &m->filters);
    m->sums_d = dev_upload(m->sums, m->filters.n * sizeof(float));
    c->bytes = (double)m->count * 2 * 2;
}

static cudaError_t run_scale_by_inverse_norm(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Muon *m = c->state;
    return CALL_AS(launch_scale_by_inverse_norm, launch)(m->x_d, &m->filters, m->sums_d, MUON_EPS, stream);
}

static void check_scale_by_inverse_norm(const Case *c, Check *result) {
    const Muon *m = c->state;
    float *want = HOST_FLOATS(m->count);
    for (int i = 0; i < m->filters.n; i++) {
        double scale = 1.0 / (sqrt((double)m->sums[i]) + MUON_EPS);
        for (size_t k = m->filters.offset[i]; k < m->filters.offset[i] + m->filters.count[i]; k++)
            want[k] = (float)(m->x[k] * scale);
    }
    compare(result, "x", rel_error(download_bf16s(m->x_d, m->count), want, m->count), 4e-3);
}

const Harness SCALE_BY_INVERSE_NORM = {0, prepare_scale_by_inverse_norm, run_scale_by_inverse_norm,
                                       check_scale_by_inverse_norm, free_all};

// w (std 0.05) with each filter's true sum of squares, a bf16 update.
static void prepare_muon_apply(Case *c, const Shape *s, int group) {
    (void)group;
    Muon *m = make_muon(c, s);
    m->w_d = random_floats_d(&m->w, m->count, 0.0, 0.05);
    m->x_d = random_bf16s_d(&m->x, m->count);
    m->sums = filter_sums(m->w, &m->filters);
    m->sums_d = dev_upload(m->sums, m->filters.n * sizeof(float));
    m->w_half_d = dev_alloc(m->count * sizeof(uint16_t));
    c->bytes = (double)m->count * (4 + 4 + 2 + 2);
}

static cudaError_t run_muon_apply(const Case *c, KernelFn launch, cudaStream_t stream) {
    const Muon *m = c->state;
    return CALL_AS(launch_muon_apply, launch)(m->w_d, m->w_half_d, m->x_d, &m->filters, m->sums_d, MUON_LR,
                                              MUON_DECAY, stream);
}

// w = (w * sqrt(c_out) / ||w|| - lr * update) * decay per filter, and its fp16 copy.
static void check_muon_apply(const Case *c, Check *result) {
    const Muon *m = c->state;
    float *want = HOST_FLOATS(m->count);
    for (int i = 0; i < m->filters.n; i++) {
        double scale = sqrt((double)m->filters.c_out[i]) / sqrt((double)m->sums[i]);
        for (size_t k = m->filters.offset[i]; k < m->filters.offset[i] + m->filters.count[i]; k++)
            want[k] = (float)((m->w[k] * scale - MUON_LR * (double)m->x[k]) * MUON_DECAY);
    }
    compare(result, "w", rel_error(download_floats(m->w_d, m->count), want, m->count), 1e-6);
    compare(result, "w_half", rel_error(download_halves(m->w_half_d, m->count), want, m->count), 1e-3);
}

const Harness MUON_APPLY = {0, prepare_muon_apply, run_muon_apply, check_muon_apply, free_all};
