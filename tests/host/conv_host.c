// conv_host.c: conv.h's convolutions on the CPU (host.h): 3x3, pad 1, stride 1, cross-
// correlation as cuDNN's CUDNN_CROSS_CORRELATION, NHWC fp16 activations, KRSC fp16
// filters, fp32 sums rounded to fp16 once. Plans hold only their shapes; the algorithm
// choice and its cache are the real conv.c's business and are not emulated. --conv-graph's
// choice is conv.c's (conv_choose_graphs, timed here on the CPU, no cache), and the graph
// plans it keeps run through cudnn_graph_host.c.
#include <stdlib.h>
#include <string.h>

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

// The three directions share one blocked loop: a tile of up to TILE_ROWS by TILE_COLS
// sums (output pixels by output channels; for the filter gradient, output channels by
// input channels) is kept in registers, so that each value loaded serves several sums.
// The plain loops (one sum vector per pixel) took about twice as long, and these
// convolutions were the stand-in's largest cost (tests/test_host.sh: 688 s before, 592 s
// after, 2 cores). Every sum still runs in the plain loops' order, tap by tap and then
// channel by channel, adding no zero terms for taps outside the image: when written, the
// results equalled the plain loops' to the bit on 11 shapes (edges, remainders and the
// trainer's shapes, -O3 and -O1 with sanitizers). The legacy calls here and
// cudnn_graph_host.c's graphs agree exactly because both call these functions.
enum { TILE_ROWS = 4, TILE_COLS = 8 };

// acc[p][j] += a[p * a_p + r * a_r] * f[r * f_r + j] for r = 0..n_red-1 in order, for a
// full tile, its sums in vector registers (GCC's vector extension: lane by lane the same
// multiply and add as the scalar loop).
typedef float Floats4 __attribute__((vector_size(16)));
static void tile_full(float acc[TILE_ROWS][TILE_COLS], const float *a, size_t a_p, size_t a_r, const float *f,
                      size_t f_r, int n_red) {
    Floats4 sum[TILE_ROWS][TILE_COLS / 4];
    memcpy(sum, acc, sizeof sum);
    for (int r = 0; r < n_red; r++) {
        Floats4 column[TILE_COLS / 4];
        memcpy(column, f + r * f_r, sizeof column);
        for (int p = 0; p < TILE_ROWS; p++) {
            float v = a[p * a_p + r * a_r];
            for (int j = 0; j < TILE_COLS / 4; j++) sum[p][j] += v * column[j];
        }
    }
    memcpy(acc, sum, sizeof sum);
}

// The same for rows 0..n_rows-1 and columns 0..n_cols-1 (a tile at an edge).
static void tile_part(float acc[][TILE_COLS], const float *a, size_t a_p, size_t a_r, const float *f, size_t f_r,
                      int n_red, int n_rows, int n_cols) {
    for (int r = 0; r < n_red; r++)
        for (int p = 0; p < n_rows; p++) {
            float v = a[p * a_p + r * a_r];
            for (int j = 0; j < n_cols; j++) acc[p][j] += v * f[r * f_r + j];
        }
}

static void tile(float acc[][TILE_COLS], const float *a, size_t a_p, size_t a_r, const float *f, size_t f_r,
                 int n_red, int n_rows, int n_cols) {
    if (n_rows == TILE_ROWS && n_cols == TILE_COLS)
        tile_full(acc, a, a_p, a_r, f, f_r, n_red);
    else
        tile_part(acc, a, a_p, a_r, f, f_r, n_red, n_rows, n_cols);
}

static int min_int(int a, int b) { return a < b ? a : b; }

// out[b, y, x, o] = the sum, over the taps k = 0..8 whose pixel (y + sign * (k / 3 - 1),
// x + sign * (k % 3 - 1)) lies inside the s x s image and then over r = 0..n_red-1, of
// in[b, that pixel, r] * filt[k * k_stride + r * r_stride + o]. NHWC, n_out channels out.
static void conv3x3_taps(float *out, const float *in, const float *filt, int n, int s, int n_red, int n_out,
                         size_t k_stride, size_t r_stride, int sign) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < n; b++)
        for (int y = 0; y < s; y++)
            for (int x0 = 0; x0 < s; x0 += TILE_ROWS) {
                int n_px = min_int(TILE_ROWS, s - x0);
                for (int o0 = 0; o0 < n_out; o0 += TILE_COLS) {
                    int n_ch = min_int(TILE_COLS, n_out - o0);
                    float acc[TILE_ROWS][TILE_COLS] = {{0}};
                    for (int k = 0; k < 9; k++) {
                        int iy = y + sign * (k / 3 - 1), dx = sign * (k % 3 - 1);
                        if (iy < 0 || iy >= s) continue;
                        // the tile's pixels p_lo..p_hi-1 have their tap's pixel x0 + p + dx inside
                        int p_lo = x0 + dx < 0 ? -(x0 + dx) : 0, p_hi = min_int(n_px, s - dx - x0);
                        const float *a = in + (((size_t)b * s + iy) * s + x0 + p_lo + dx) * n_red;
                        tile(acc + p_lo, a, n_red, 1, filt + k * k_stride + o0, r_stride, n_red, p_hi - p_lo, n_ch);
                    }
                    for (int p = 0; p < n_px; p++)
                        memcpy(out + (((size_t)b * s + y) * s + x0 + p) * n_out + o0, acc[p], n_ch * sizeof(float));
                }
            }
}

void host_conv3x3_forward(float *y, const float *x, const float *w, int n, int s, int ci, int co) {
    // The filters as [tap][in][out], so that a tile's output channels lie side by side.
    float *taps = malloc((size_t)9 * ci * co * sizeof(float));
    if (!taps) die(1, "out of host memory");
    for (int o = 0; o < co; o++)
        for (int k = 0; k < 9; k++)
            for (int i = 0; i < ci; i++) taps[((size_t)k * ci + i) * co + o] = w[((size_t)o * 9 + k) * ci + i];
    conv3x3_taps(y, x, taps, n, s, ci, co, (size_t)ci * co, co, 1);
    free(taps);
}

// dx[b, iy, ix, i] sums, tap by tap and then over the outputs o, dy[b, iy - ky + 1,
// ix - kx + 1, o] * w[o, ky, kx, i]: the forward loop with the taps mirrored.
void host_conv3x3_backward_data(float *dx, const float *dy, const float *w, int n, int s, int ci, int co) {
    conv3x3_taps(dx, dy, w, n, s, co, ci, ci, (size_t)9 * ci, -1);
}

static void forward(const ConvPlan *p, const __half *x, const __half *w, __half *y) {
    size_t count = activation_size(p, p->c_out);
    float *xf = floats_of("conv_forward", x, activation_size(p, p->c_in));
    float *wf = floats_of("conv_forward", w, (size_t)p->c_out * 9 * p->c_in);
    float *yf = malloc(count * sizeof(float));
    if (!yf) die(1, "out of host memory");
    host_conv3x3_forward(yf, xf, wf, p->batch, p->side, p->c_in, p->c_out);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) y[i].x = float_to_half(yf[i]);
    free(yf);
    free(xf);
    free(wf);
}

// dw[o, ky, kx, i] sums dy[b, oy, ox, o] * x[b, oy + ky - 1, ox + kx - 1, i] over b, oy and
// ox in order, skipping the pixels whose input lies outside; a tile is TILE_ROWS outputs o
// by TILE_COLS inputs i, and one row of pixels ox is one call's reduction.
void host_conv3x3_backward_filter(float *dw, const float *x, const float *dy, int n, int s, int ci, int co) {
    int o_tiles = (co + TILE_ROWS - 1) / TILE_ROWS;
#pragma omp parallel for collapse(2) schedule(static)
    for (int ot = 0; ot < o_tiles; ot++)
        for (int k = 0; k < 9; k++) {
            int o0 = ot * TILE_ROWS, n_o = min_int(TILE_ROWS, co - o0), ky = k / 3, kx = k % 3;
            int y_lo = ky == 0, y_hi = ky == 2 ? s - 1 : s, x_lo = kx == 0, x_hi = kx == 2 ? s - 1 : s;
            for (int i0 = 0; i0 < ci; i0 += TILE_COLS) {
                int n_i = min_int(TILE_COLS, ci - i0);
                float acc[TILE_ROWS][TILE_COLS] = {{0}};
                for (int b = 0; b < n; b++)
                    for (int oy = y_lo; oy < y_hi; oy++) {
                        const float *g = dy + (((size_t)b * s + oy) * s + x_lo) * co + o0;
                        const float *xv = x + (((size_t)b * s + oy + ky - 1) * s + x_lo + kx - 1) * ci + i0;
                        tile(acc, g, 1, co, xv, ci, x_hi - x_lo, n_o, n_i);
                    }
                for (int q = 0; q < n_o; q++)
                    memcpy(dw + ((size_t)(o0 + q) * 9 + k) * ci + i0, acc[q], n_i * sizeof(float));
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
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
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
