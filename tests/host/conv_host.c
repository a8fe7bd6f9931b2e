// conv_host.c: conv.h's convolutions on the CPU (host.h): 3x3, pad 1, stride 1, cross-
// correlation as cuDNN's CUDNN_CROSS_CORRELATION, NHWC fp16 activations, KRSC fp16
// filters, fp32 sums rounded to fp16 once. Plans hold only their shapes; the algorithm
// choice and its cache are the real conv.c's business and are not emulated. --conv-graph's
// choice is conv.c's (conv_choose_graphs, timed here on the CPU, no cache), and the graph
// plans it keeps run through cudnn_graph_host.c.
#include <stdlib.h>

#include "conv.h"
#include "gpu.h"
#include "host.h"
#include "test_helpers.h"

const char *const CONV_ALGO_CHOICES[] = {"cached", "find", "heuristic", NULL};
const char *const CONV_GRAPH_CHOICES[] = {"off", "on", "always", NULL};

enum { MAX_BATCHES = 4 };

typedef struct {
    int batch;
    ConvPlan conv[3][NET_MAX_DEPTH];
} PlanSet;

struct Convs {
    const NetLayout *layout;
    ConvAlgoChoice choice;
    PlanSet plan_sets[MAX_BATCHES];
    int n_plan_sets;
    cudaStream_t stream;         // where the convolutions run (host_enqueue)
    cudaStream_t filter_stream;  // conv_backward_filter's, once set (else stream)
    __half *scratch_x, *scratch_w, *scratch_y;
    // The graph plans' handles (on stream, and on the filter stream) and device properties.
    cudnnHandle_t cudnn, filter_cudnn;
    cudnnBackendDescriptor_t device_props;
};

Convs *convs_create(cudaStream_t stream, ConvAlgoChoice choice, const char *cache_path, const NetLayout *layout,
                    const int *batches, int n_batches, __half *scratch_x, __half *scratch_w, __half *scratch_y) {
    (void)cache_path;
    Convs *c = host_alloc(sizeof(Convs));
    *c = (Convs){.layout = layout, .choice = choice, .stream = stream, .scratch_x = scratch_x, .scratch_w = scratch_w,
                 .scratch_y = scratch_y};
    CUDNN_CHECK(cudnnCreate(&c->cudnn));
    CUDNN_CHECK(cudnnCreate(&c->filter_cudnn));
    CUDNN_CHECK(cudnnSetStream(c->cudnn, stream));
    CUDNN_CHECK(cudnnSetStream(c->filter_cudnn, stream));
    for (int i = 0; i < n_batches; i++) {
        int known = 0;
        for (int k = 0; k < c->n_plan_sets; k++) known |= c->plan_sets[k].batch == batches[i];
        if (known) continue;
        if (c->n_plan_sets == MAX_BATCHES) die(1, "internal error: convolutions at more than %d batch sizes", MAX_BATCHES);
        PlanSet *set = &c->plan_sets[c->n_plan_sets++];
        set->batch = batches[i];
        for (int g = 0; g < 3; g++)
            for (int j = 0; j < layout->depth; j++)
                set->conv[g][j] = (ConvPlan){.batch = batches[i], .c_in = net_conv_in(layout->widths, g, j),
                                             .c_out = layout->widths[g], .side = net_conv_side(g, j)};
    }
    return c;
}

void convs_free(Convs *c) {
    for (int i = 0; i < c->n_plan_sets; i++)
        for (int g = 0; g < 3; g++)
            for (int j = 0; j < c->layout->depth; j++)
                for (int d = 0; d < N_CONV_DIRECTIONS; d++) conv_graph_free(c->plan_sets[i].conv[g][j].graph[d]);
    if (c->device_props) cudnnBackendDestroyDescriptor(c->device_props);
    cudnnDestroy(c->cudnn);
    cudnnDestroy(c->filter_cudnn);
    free(c);
}

const ConvPlan *conv_plan(Convs *c, int batch, int g, int j) {
    for (int i = 0; i < c->n_plan_sets; i++)
        if (c->plan_sets[i].batch == batch) return &c->plan_sets[i].conv[g][j];
    die(1, "internal error: no convolution plan for batch %d (convs_create was not given it)", batch);
}

int convs_deterministic(const Convs *c) {
    (void)c;
    return 1;
}

void convs_use_graph_engines(Convs *c, ConvGraphChoice choice, FILE *log) {
    if (choice == CONV_GRAPH_OFF) return;
    if (c->choice == CONV_ALGO_HEURISTIC)
        die(2, "--conv-graph %s times cuDNN's engines: it cannot go with --conv-algo heuristic, which times nothing",
            CONV_GRAPH_CHOICES[choice]);
    if (!c->device_props) c->device_props = fusion_device_from_handle(c->cudnn);
    PlanSet *set = &c->plan_sets[0];
    ConvGraphSite site = {.handle = {c->cudnn, c->cudnn, c->filter_cudnn}, .x = c->scratch_x, .w = c->scratch_w,
                          .y = c->scratch_y, .device = c->device_props,
                          .pattern = conv_graph_pattern(conv_largest_operand(c->layout, set->batch) + 1)};
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < c->layout->depth; j++) {
            char made[N_CONV_DIRECTIONS][CONV_CACHE_TOKEN];
            ConvPlan *p = &set->conv[g][j];
            if (!p->graph[0] && !p->graph[1] && !p->graph[2])
                conv_choose_graphs(c, p, &site, choice == CONV_GRAPH_ALWAYS, log, made);
        }
    free((void *)site.pattern);
}

// Dies (as a failed cuDNN call would) when count fp16 values at p are not inside one
// allocation; checked when a convolution is called, before it is queued.
static void check_operand(const char *call, const __half *p, size_t count) {
    if (!host_inside_allocation(p, count * sizeof(__half)))
        die(1, "%s: an operand of %zu fp16 values lies outside every allocation (CPU stand-in)", call, count);
}

// fp16 values as floats, in a new array.
static float *floats_of(const char *call, const __half *p, size_t count) {
    check_operand(call, p, count);
    float *f = malloc(count * sizeof(float));
    if (!f) die(1, "out of host memory");
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) f[i] = half_to_float(p[i].x);
    return f;
}

static void check_output(const char *call, const __half *p, size_t count) {
    if (!host_inside_allocation(p, count * sizeof(__half)))
        die(1, "%s: its output of %zu fp16 values lies outside every allocation (CPU stand-in)", call, count);
}

static size_t activation_size(const ConvPlan *p, int channels) {
    return (size_t)p->batch * p->side * p->side * channels;
}

// A convolution as queued on its stream: the plan (by value), its operands, its kind.
typedef struct {
    ConvDirection kind;
    ConvPlan plan;
    const __half *a, *b;  // forward: x, w; filter: x, dy; data: w, dy
    __half *out;
    int accumulate;
} QueuedConv;

void host_conv3x3_forward(float *y, const float *x, const float *w, int n, int s, int ci, int co) {
    // The filters as [tap][in][out], so that the innermost loop runs over the outputs.
    float *taps = malloc((size_t)9 * ci * co * sizeof(float));
    if (!taps) die(1, "out of host memory");
    for (int o = 0; o < co; o++)
        for (int k = 0; k < 9; k++)
            for (int i = 0; i < ci; i++) taps[((size_t)k * ci + i) * co + o] = w[((size_t)o * 9 + k) * ci + i];
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < s; oy++)
            for (int ox = 0; ox < s; ox++) {
                float *sum = y + (((size_t)b * s + oy) * s + ox) * co;
                for (int o = 0; o < co; o++) sum[o] = 0.0f;
                for (int k = 0; k < 9; k++) {
                    int iy = oy + k / 3 - 1, ix = ox + k % 3 - 1;
                    if (iy < 0 || iy >= s || ix < 0 || ix >= s) continue;
                    const float *xv = x + (((size_t)b * s + iy) * s + ix) * ci;
                    for (int i = 0; i < ci; i++) {
                        const float *tap = taps + ((size_t)k * ci + i) * co;
                        for (int o = 0; o < co; o++) sum[o] += xv[i] * tap[o];
                    }
                }
            }
    free(taps);
}

void host_conv3x3_backward_data(float *dx, const float *dy, const float *w, int n, int s, int ci, int co) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < n; b++)
        for (int iy = 0; iy < s; iy++)
            for (int ix = 0; ix < s; ix++) {
                float *sum = dx + (((size_t)b * s + iy) * s + ix) * ci;
                for (int i = 0; i < ci; i++) sum[i] = 0.0f;
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                        int oy = iy - ky + 1, ox = ix - kx + 1;
                        if (oy < 0 || oy >= s || ox < 0 || ox >= s) continue;
                        const float *g = dy + (((size_t)b * s + oy) * s + ox) * co;
                        for (int o = 0; o < co; o++) {
                            const float *wv = w + ((size_t)(o * 3 + ky) * 3 + kx) * ci;
                            for (int i = 0; i < ci; i++) sum[i] += g[o] * wv[i];
                        }
                    }
            }
}

static void forward(const ConvPlan *p, const __half *x, const __half *w, __half *y) {
    size_t count = activation_size(p, p->c_out);
    float *xf = floats_of("conv_forward", x, activation_size(p, p->c_in));
    float *wf = floats_of("conv_forward", w, (size_t)p->c_out * 9 * p->c_in);
    float *yf = malloc(count * sizeof(float));
    if (!yf) die(1, "out of host memory");
    host_conv3x3_forward(yf, xf, wf, p->batch, p->side, p->c_in, p->c_out);
    for (size_t i = 0; i < count; i++) y[i].x = float_to_half(yf[i]);
    free(yf);
    free(xf);
    free(wf);
}

void host_conv3x3_backward_filter(float *dw, const float *x, const float *dy, int n, int s, int ci, int co) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int o = 0; o < co; o++)
        for (int k = 0; k < 9; k++) {
            int ky = k / 3, kx = k % 3;
            float *sum = dw + ((size_t)o * 9 + k) * ci;
            for (int i = 0; i < ci; i++) sum[i] = 0.0f;
            for (int b = 0; b < n; b++)
                for (int oy = 0; oy < s; oy++)
                    for (int ox = 0; ox < s; ox++) {
                        int iy = oy + ky - 1, ix = ox + kx - 1;
                        if (iy < 0 || iy >= s || ix < 0 || ix >= s) continue;
                        float g = dy[(((size_t)b * s + oy) * s + ox) * co + o];
                        const float *xv = x + (((size_t)b * s + iy) * s + ix) * ci;
                        for (int i = 0; i < ci; i++) sum[i] += g * xv[i];
                    }
        }
}

static void backward_filter(const ConvPlan *p, const __half *x, const __half *dy, __half *dw) {
    size_t count = (size_t)p->c_out * 9 * p->c_in;
    float *xf = floats_of("conv_backward_filter", x, activation_size(p, p->c_in));
    float *dyf = floats_of("conv_backward_filter", dy, activation_size(p, p->c_out));
    float *dwf = malloc(count * sizeof(float));
    if (!dwf) die(1, "out of host memory");
    host_conv3x3_backward_filter(dwf, xf, dyf, p->batch, p->side, p->c_in, p->c_out);
    for (size_t i = 0; i < count; i++) dw[i].x = float_to_half(dwf[i]);
    free(dwf);
    free(xf);
    free(dyf);
}

static void backward_data(const ConvPlan *p, const __half *w, const __half *dy, __half *dx, int accumulate) {
    size_t count = activation_size(p, p->c_in);
    float *wf = floats_of("conv_backward_data", w, (size_t)p->c_out * 9 * p->c_in);
    float *dyf = floats_of("conv_backward_data", dy, activation_size(p, p->c_out));
    float *old = accumulate ? floats_of("conv_backward_data", dx, count) : NULL;
    float *dxf = malloc(count * sizeof(float));
    if (!dxf) die(1, "out of host memory");
    host_conv3x3_backward_data(dxf, dyf, wf, p->batch, p->side, p->c_in, p->c_out);
    for (size_t i = 0; i < count; i++) dx[i].x = float_to_half(dxf[i] + (old ? old[i] : 0.0f));
    free(dxf);
    free(wf);
    free(dyf);
    free(old);
}

static void run_conv(void *arg) {
    QueuedConv *q = arg;
    if (q->kind == CONV_FORWARD) forward(&q->plan, q->a, q->b, q->out);
    if (q->kind == CONV_BACKWARD_FILTER) backward_filter(&q->plan, q->a, q->b, q->out);
    if (q->kind == CONV_BACKWARD_DATA) backward_data(&q->plan, q->a, q->b, q->out, q->accumulate);
    free(q);
}

// The operands are checked when the convolution is called; it runs on the stream.
static void submit(cudaStream_t stream, QueuedConv q) {
    QueuedConv *copy = malloc(sizeof *copy);
    if (!copy) die(1, "out of host memory");
    *copy = q;
    host_enqueue(stream, run_conv, copy);
}

void conv_forward(Convs *c, const ConvPlan *p, const __half *x, const __half *w, __half *y) {
    host_note("conv_forward");
    check_operand(__func__, x, activation_size(p, p->c_in));
    check_operand(__func__, w, (size_t)p->c_out * 9 * p->c_in);
    check_output(__func__, y, activation_size(p, p->c_out));
    if (p->graph[CONV_FORWARD])
        conv_graph_run(p->graph[CONV_FORWARD], c->cudnn, x, w, y, NULL);
    else
        submit(c->stream, (QueuedConv){CONV_FORWARD, *p, x, w, y, 0});
}

void conv_backward_filter(Convs *c, const ConvPlan *p, const __half *x, const __half *dy, __half *dw) {
    host_note("conv_backward_filter");
    check_operand(__func__, x, activation_size(p, p->c_in));
    check_operand(__func__, dy, activation_size(p, p->c_out));
    check_output(__func__, dw, (size_t)p->c_out * 9 * p->c_in);
    if (p->graph[CONV_BACKWARD_FILTER])
        conv_graph_run(p->graph[CONV_BACKWARD_FILTER], c->filter_cudnn, x, dy, dw, NULL);
    else
        submit(c->filter_stream ? c->filter_stream : c->stream, (QueuedConv){CONV_BACKWARD_FILTER, *p, x, dy, dw, 0});
}

void convs_use_filter_stream(Convs *c, cudaStream_t stream) {
    c->filter_stream = stream;
    CUDNN_CHECK(cudnnSetStream(c->filter_cudnn, stream));
}

void conv_backward_data(Convs *c, const ConvPlan *p, const __half *w, const __half *dy, __half *dx, int accumulate) {
    host_note("conv_backward_data");
    check_operand(__func__, w, (size_t)p->c_out * 9 * p->c_in);
    check_operand(__func__, dy, activation_size(p, p->c_out));
    check_output(__func__, dx, activation_size(p, p->c_in));
    if (p->graph[CONV_BACKWARD_DATA] && !accumulate)
        conv_graph_run(p->graph[CONV_BACKWARD_DATA], c->cudnn, w, dy, dx, NULL);
    else
        submit(c->stream, (QueuedConv){CONV_BACKWARD_DATA, *p, w, dy, dx, accumulate});
}
