// conv_host.c: conv.h's convolutions on the CPU (host.h): 3x3, pad 1, stride 1, cross-
// correlation as cuDNN's CUDNN_CROSS_CORRELATION, NHWC fp16 activations, KRSC fp16
// filters, fp32 sums rounded to fp16 once. Plans hold only their shapes; the algorithm
// choice and its cache are the real conv.c's business and are not emulated.
#include <stdlib.h>

#include "conv.h"
#include "gpu.h"
#include "host.h"
#include "test_helpers.h"

const char *const CONV_ALGO_CHOICES[] = {"cached", "find", "heuristic", NULL};

enum { MAX_BATCHES = 4 };

typedef struct {
    int batch;
    ConvPlan conv[3][NET_MAX_DEPTH];
} PlanSet;

struct Convs {
    const NetLayout *layout;
    PlanSet plan_sets[MAX_BATCHES];
    int n_plan_sets;
};

Convs *convs_create(cudaStream_t stream, ConvAlgoChoice choice, const char *cache_path, const NetLayout *layout,
                    const int *batches, int n_batches, __half *scratch_x, __half *scratch_w, __half *scratch_y) {
    (void)stream, (void)choice, (void)cache_path, (void)scratch_x, (void)scratch_w, (void)scratch_y;
    Convs *c = host_alloc(sizeof(Convs));
    c->layout = layout;
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

void convs_free(Convs *c) { free(c); }

const ConvPlan *conv_plan(Convs *c, int batch, int g, int j) {
    for (int i = 0; i < c->n_plan_sets; i++)
        if (c->plan_sets[i].batch == batch) return &c->plan_sets[i].conv[g][j];
    die(1, "internal error: no convolution plan for batch %d (convs_create was not given it)", batch);
}

int convs_deterministic(const Convs *c) {
    (void)c;
    return 1;
}

// fp16 values as floats, in a new array; dies (as a failed cuDNN call would) when they are
// not inside one allocation.
static float *floats_of(const char *call, const __half *p, size_t count) {
    if (!host_inside_allocation(p, count * sizeof(__half)))
        die(1, "%s: an operand of %zu fp16 values lies outside every allocation (CPU stand-in)", call, count);
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

void conv_forward(Convs *c, const ConvPlan *p, const __half *x, const __half *w, __half *y) {
    (void)c;
    host_note("conv_forward");
    int s = p->side, ci = p->c_in, co = p->c_out;
    float *xf = floats_of(__func__, x, activation_size(p, ci)), *wf = floats_of(__func__, w, (size_t)co * 9 * ci);
    check_output(__func__, y, activation_size(p, co));
    // The filters as [tap][in][out], so that the innermost loop runs over the outputs.
    float *taps = malloc((size_t)9 * ci * co * sizeof(float));
    if (!taps) die(1, "out of host memory");
    for (int o = 0; o < co; o++)
        for (int k = 0; k < 9; k++)
            for (int i = 0; i < ci; i++) taps[((size_t)k * ci + i) * co + o] = wf[((size_t)o * 9 + k) * ci + i];
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < p->batch; b++)
        for (int oy = 0; oy < s; oy++)
            for (int ox = 0; ox < s; ox++) {
                float sum[co];
                for (int o = 0; o < co; o++) sum[o] = 0.0f;
                for (int k = 0; k < 9; k++) {
                    int iy = oy + k / 3 - 1, ix = ox + k % 3 - 1;
                    if (iy < 0 || iy >= s || ix < 0 || ix >= s) continue;
                    const float *xv = xf + (((size_t)b * s + iy) * s + ix) * ci;
                    for (int i = 0; i < ci; i++) {
                        const float *tap = taps + ((size_t)k * ci + i) * co;
                        for (int o = 0; o < co; o++) sum[o] += xv[i] * tap[o];
                    }
                }
                __half *out = y + (((size_t)b * s + oy) * s + ox) * co;
                for (int o = 0; o < co; o++) out[o].x = float_to_half(sum[o]);
            }
    free(taps);
    free(xf);
    free(wf);
}

void conv_backward_filter(Convs *c, const ConvPlan *p, const __half *x, const __half *dy, __half *dw) {
    (void)c;
    host_note("conv_backward_filter");
    int s = p->side, ci = p->c_in, co = p->c_out;
    float *xf = floats_of(__func__, x, activation_size(p, ci)), *dyf = floats_of(__func__, dy, activation_size(p, co));
    check_output(__func__, dw, (size_t)co * 9 * ci);
#pragma omp parallel for collapse(2) schedule(static)
    for (int o = 0; o < co; o++)
        for (int k = 0; k < 9; k++) {
            int ky = k / 3, kx = k % 3;
            float *sum = calloc(ci, sizeof(float));
            for (int b = 0; b < p->batch; b++)
                for (int oy = 0; oy < s; oy++)
                    for (int ox = 0; ox < s; ox++) {
                        int iy = oy + ky - 1, ix = ox + kx - 1;
                        if (iy < 0 || iy >= s || ix < 0 || ix >= s) continue;
                        float g = dyf[(((size_t)b * s + oy) * s + ox) * co + o];
                        const float *xv = xf + (((size_t)b * s + iy) * s + ix) * ci;
                        for (int i = 0; i < ci; i++) sum[i] += g * xv[i];
                    }
            for (int i = 0; i < ci; i++) dw[((size_t)o * 9 + k) * ci + i].x = float_to_half(sum[i]);
            free(sum);
        }
    free(xf);
    free(dyf);
}

void conv_backward_data(Convs *c, const ConvPlan *p, const __half *w, const __half *dy, __half *dx, int accumulate) {
    (void)c;
    host_note("conv_backward_data");
    int s = p->side, ci = p->c_in, co = p->c_out;
    float *wf = floats_of(__func__, w, (size_t)co * 9 * ci), *dyf = floats_of(__func__, dy, activation_size(p, co));
    float *old = accumulate ? floats_of(__func__, dx, activation_size(p, ci)) : NULL;
    check_output(__func__, dx, activation_size(p, ci));
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < p->batch; b++)
        for (int iy = 0; iy < s; iy++)
            for (int ix = 0; ix < s; ix++) {
                float sum[ci];
                for (int i = 0; i < ci; i++) sum[i] = 0.0f;
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                        int oy = iy - ky + 1, ox = ix - kx + 1;
                        if (oy < 0 || oy >= s || ox < 0 || ox >= s) continue;
                        const float *g = dyf + (((size_t)b * s + oy) * s + ox) * co;
                        for (int o = 0; o < co; o++) {
                            const float *wv = wf + ((size_t)(o * 3 + ky) * 3 + kx) * ci;
                            for (int i = 0; i < ci; i++) sum[i] += g[o] * wv[i];
                        }
                    }
                size_t at = (((size_t)b * s + iy) * s + ix) * ci;
                for (int i = 0; i < ci; i++) dx[at + i].x = float_to_half(sum[i] + (old ? old[at + i] : 0.0f));
            }
    free(wf);
    free(dyf);
    free(old);
}
