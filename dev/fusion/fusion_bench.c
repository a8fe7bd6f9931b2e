// fusion_bench.c: which conv + BatchNorm fusions cuDNN's graph API supports at airbench94's
// conv shapes, and, on a GPU, whether each is right and faster than the trainer's unfused
// launches (the speed issue's "fewer memory passes", chosen by measurement).
//
//   build/fusion_bench [--batch N] [--widths A,B,C] [--activation gelu|silu] [--reps N]
//                      [--only FUSION,...] [--conv G.J,...] [--atomic] [--all-engines]
//                      [--save-device-json FILE]
//   build/fusion_bench --device-json FILE [the same but --reps and --save-device-json]
//
// With --device-json no GPU is needed: cuDNN builds each graph and its execution plan for the
// GPU the file describes (deviceless plans, cuDNN 9.8 or newer), which answers "supported?"
// and compiles the runtime-fusion kernels, but runs nothing. On a GPU, every fusion that gets
// a plan is run on random inputs and compared with the trainer's way of computing the same
// thing (cuDNN's legacy convolution with the trainer's algorithm choice, then the project's
// kernels): the error of every output, whether two runs agree to the bit, and the median
// time of each way. The fusions are listed in airbench/fusion.h. --all-engines does this for
// every engine config the heuristics offer, not only the first that plans: whether the graph
// API has a faster (or deterministic) engine for a conv than the trainer's legacy choice.
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "fusion.h"
#include "gpu.h"
#include "gpu_test.h"
#include "reference.h"

typedef struct {
    int batch, widths[3], activation, reps;
    int atomic;              // reductions with atomics from the start (else only when no deterministic plan)
    int all_engines;         // every engine config that plans, not the first
    int fusions[N_FUSIONS];  // the fusions asked for (all by default)
    int convs[3][2];         // the convs asked for (all by default)
    const char *device_json, *save_device_json;
} Options;

static void usage(FILE *to) {
    fprintf(to,
            "usage: build/fusion_bench [--batch N] [--widths A,B,C] [--activation gelu|silu] [--reps N]\n"
            "                          [--only FUSION,...] [--conv G.J,...] [--atomic] [--all-engines]\n"
            "                          [--save-device-json FILE]\n"
            "       build/fusion_bench --device-json FILE [--batch N] [--widths A,B,C] [--activation A]\n"
            "                          [--only FUSION,...] [--conv G.J,...] [--atomic] [--all-engines]\n"
            "On a GPU: each candidate fusion at each of airbench94's convs (G.J: conv J of layer group G),\n"
            "its plan, its error against the trainer's unfused launches, and both times. With\n"
            "--device-json: plans only, for the GPU the file describes (no GPU needed; a runtime-fusion\n"
            "engine then needs a libcuda.so.1, the CUDA toolkit's stub will do). Reductions are\n"
            "deterministic (the trainer's runs are bit-reproducible) unless cuDNN has no such plan or\n"
            "--atomic asks for atomics. --all-engines: every engine config cuDNN's heuristics offer,\n"
            "one line each (default: the first that plans). FUSION is one of:");
    for (int f = 0; f < N_FUSIONS; f++) fprintf(to, " %s", FUSION_NAMES[f]);
    fprintf(to, "\n");
}

static int positive(const char *flag, const char *value) {
    char *end;
    long v = strtol(value, &end, 10);
    if (*end || v <= 0 || v > 1 << 20) die(2, "%s: want a positive whole number, got '%s'", flag, value);
    return (int)v;
}

// Marks each name of a comma-separated list.
static void parse_fusions(int *chosen, const char *list) {
    memset(chosen, 0, N_FUSIONS * sizeof *chosen);
    char copy[512];
    snprintf(copy, sizeof copy, "%s", list);
    for (char *name = strtok(copy, ","); name; name = strtok(NULL, ",")) {
        int found = 0;
        for (int f = 0; f < N_FUSIONS; f++)
            if (!strcmp(name, FUSION_NAMES[f])) chosen[f] = found = 1;
        if (!found) die(2, "--only: no fusion named '%s' (see --help)", name);
    }
}

static void parse_convs(int chosen[3][2], const char *list) {
    memset(chosen, 0, 6 * sizeof **chosen);
    char copy[512];
    snprintf(copy, sizeof copy, "%s", list);
    for (char *name = strtok(copy, ","); name; name = strtok(NULL, ",")) {
        int g, j;
        char extra;
        if (sscanf(name, "%d.%d%c", &g, &j, &extra) != 2 || g < 0 || g > 2 || j < 0 || j > 1)
            die(2, "--conv: want G.J with G in 0..2 and J in 0..1 (like 2.1), got '%s'", name);
        chosen[g][j] = 1;
    }
}

static Options parse(int argc, char **argv) {
    Options o = {.batch = 1024, .widths = {64, 256, 256}, .activation = ACTIVATION_GELU, .reps = 20};
    for (int f = 0; f < N_FUSIONS; f++) o.fusions[f] = 1;
    for (int g = 0; g < 3; g++) o.convs[g][0] = o.convs[g][1] = 1;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(flag, "--atomic")) {
            o.atomic = 1;
            continue;
        }
        if (!strcmp(flag, "--all-engines")) {
            o.all_engines = 1;
            continue;
        }
        if (i + 1 == argc) {
            usage(stderr);
            die(2, "%s: missing value (or unknown flag)", flag);
        }
        const char *value = argv[++i];
        if (!strcmp(flag, "--batch")) {
            o.batch = positive(flag, value);
        } else if (!strcmp(flag, "--reps")) {
            o.reps = positive(flag, value);
        } else if (!strcmp(flag, "--widths")) {
            char extra;
            if (sscanf(value, "%d,%d,%d%c", &o.widths[0], &o.widths[1], &o.widths[2], &extra) != 3 ||
                o.widths[0] <= 0 || o.widths[1] <= 0 || o.widths[2] <= 0 || o.widths[0] % 8 || o.widths[1] % 8 ||
                o.widths[2] % 8)
                die(2, "--widths: want three multiples of 8 like 64,256,256, got '%s'", value);
        } else if (!strcmp(flag, "--activation")) {
            if (!strcmp(value, "gelu"))
                o.activation = ACTIVATION_GELU;
            else if (!strcmp(value, "silu"))
                o.activation = ACTIVATION_SILU;
            else
                die(2, "--activation: want gelu or silu, got '%s'", value);
        } else if (!strcmp(flag, "--only")) {
            parse_fusions(o.fusions, value);
        } else if (!strcmp(flag, "--conv")) {
            parse_convs(o.convs, value);
        } else if (!strcmp(flag, "--device-json")) {
            o.device_json = value;
        } else if (!strcmp(flag, "--save-device-json")) {
            o.save_device_json = value;
        } else {
            usage(stderr);
            die(2, "unknown flag %s", flag);
        }
    }
    if (o.device_json && o.save_device_json) die(2, "--save-device-json needs the GPU, not --device-json");
    return o;
}

// ---------------------------------------------------------------------------------------
// Device properties

// A device-properties descriptor read from the JSON cuDNN writes (save_device) or from a
// hand-written file with the same members; dies with the reason if cuDNN refuses it.
static cudnnBackendDescriptor_t device_from_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die(2, "%s: cannot open the device-properties file", path);
    char json[16384];
    size_t length = fread(json, 1, sizeof json, f);
    int too_long = !feof(f);
    fclose(f);
    if (too_long) die(2, "%s: longer than %zu bytes: not a device-properties file", path, sizeof json);
    cudnnBackendDescriptor_t d = NULL;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, &d);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(d, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, (int64_t)length, json);
    return fusion_device_finish(d, st, path, 2);
}

// Writes the descriptor's JSON to path (so that a machine without this GPU can ask cuDNN
// about it later); dies on failure.
static void save_device(cudnnBackendDescriptor_t device, const char *path) {
    int64_t length = 0;
    CUDNN_CHECK(cudnnBackendGetAttribute(device, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, 0, &length,
                                         NULL));
    char *json = host_alloc((size_t)length + 1);
    CUDNN_CHECK(cudnnBackendGetAttribute(device, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, length,
                                         &length, json));
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(json, 1, (size_t)length, f) != (size_t)length || fclose(f) != 0)
        die(1, "%s: cannot write the device properties", path);
    free(json);
}

// ---------------------------------------------------------------------------------------
// The cases: each conv of airbench94's layout (depth 2) with the fusions that fit its place.

// Whether fusion f means something at conv (g, j): statistics of the conv output only where
// no max pool follows (j > 0); a BatchNorm + activation before the conv (its prologue, or
// the layer its dgrad feeds) everywhere but the first conv, whose input is the whitening's.
static int fusion_fits(Fusion f, int g, int j) {
    int after_bn = !(g == 0 && j == 0);
    switch (f) {
    case FUSION_FPROP: return 1;
    case FUSION_FPROP_SUM:
    case FUSION_FPROP_GENSTATS:
    case FUSION_FPROP_REDUCE: return j > 0;
    case FUSION_BNACT_FPROP: return after_bn;
    case FUSION_BNACT_FPROP_GENSTATS: return after_bn && j > 0;
    case FUSION_WGRAD: return 1;
    default: return after_bn;  // the dgrad fusions
    }
}

static FusionShape conv_shape(const Options *o, int g, int j) {
    return (FusionShape){o->batch, net_conv_in(o->widths, g, j), o->widths[g], net_conv_side(g, j), o->activation};
}

// The largest relative error of a fused output against the unfused one: fp16 outputs and
// another summation order give ~1e-3 (3e-4 on the CPU stand-in).
#define ERROR_BOUND 1e-2

// What one case found.
typedef struct {
    FusionPlan plan;
    int atomic;  // its reductions are not deterministic (cuDNN had no deterministic plan)
    char failed[200];  // why the plan's first execution failed ("" if it ran)
    int ran;
    double fused_us, unfused_us;
    double error;
    char worst[24];     // the output with the largest error
    int deterministic;  // two runs gave the same bits
} Result;

// ---------------------------------------------------------------------------------------
// Running a case on the GPU

typedef struct {
    cudaStream_t stream;
    cudnnHandle_t cudnn;
    Convs *convs;
    __half *scratch[3];  // the conv plans' scratch buffers (input, filter, output)
    cudaEvent_t start, stop;
} Gpu;

// The inputs of a case (device, and host copies the checks need) and every output of both ways.
typedef struct {
    FusionShape s;
    size_t in_count, out_count, w_count;  // conv input, output and filter elements
    uint16_t *h_x;
    float *f_x, *mean, *rstd, *bias;
    void *x, *w, *dy, *d_mean, *d_rstd, *d_bias;
    // The fused way's outputs, by FusionUid, and their bytes.
    void *fused[N_UIDS];
    size_t fused_bytes[N_UIDS];
    // The unfused way's: the conv output (y, d_out or dw), the activation (bnact), stats partials.
    void *y, *act, *partials;
    int stats_blocks;
} Buffers;

static void make_buffers(Buffers *b, const FusionShape *s, Fusion f) {
    memset(b, 0, sizeof *b);
    b->s = *s;
    int c_in = s->c_in, c_out = s->c_out;
    size_t plane = (size_t)s->side * s->side;
    b->in_count = (size_t)s->batch * plane * c_in;
    b->out_count = (size_t)s->batch * plane * c_out;
    // The BatchNorm below or before the conv: its input has c_in channels, some mean and
    // spread per channel, and mean/rstd/bias near what training sees.
    b->mean = HOST_FLOATS(c_in);
    b->rstd = HOST_FLOATS(c_in);
    b->bias = HOST_FLOATS(c_in);
    float *spread = HOST_FLOATS(c_in);
    for (int ch = 0; ch < c_in; ch++) {
        b->mean[ch] = (float)(0.5 * uniform(-1.0, 1.0));
        spread[ch] = (float)(1.0 + 0.5 * uniform(-1.0, 1.0));
        b->rstd[ch] = 1.0f / spread[ch];
        b->bias[ch] = (float)(0.2 * uniform(-1.0, 1.0));
    }
    b->h_x = HOST_HALVES(b->in_count);
    b->f_x = HOST_FLOATS(b->in_count);
    random_activation(b->h_x, b->f_x, b->in_count / c_in, c_in, b->mean, spread, 0);
    b->x = dev_upload(b->h_x, b->in_count * 2);
    b->w_count = (size_t)c_out * c_in * 9;
    uint16_t *h_w = HOST_HALVES(b->w_count);
    for (size_t i = 0; i < b->w_count; i++) h_w[i] = float_to_half((float)(uniform(-1.0, 1.0) / sqrt(9.0 * c_in)));
    b->w = dev_upload(h_w, b->w_count * 2);
    uint16_t *h_dy = HOST_HALVES(b->out_count);
    float *f_dy = HOST_FLOATS(b->out_count);
    random_activation(h_dy, f_dy, b->out_count / c_out, c_out, NULL, NULL, 0);
    b->dy = dev_upload(h_dy, b->out_count * 2);
    b->d_mean = dev_upload(b->mean, c_in * sizeof(float));
    b->d_rstd = dev_upload(b->rstd, c_in * sizeof(float));
    b->d_bias = dev_upload(b->bias, c_in * sizeof(float));
    // The fused way's outputs (one map buffer serves whichever the fusion writes).
    int dgrad = fusion_is_dgrad(f);
    size_t map_bytes = (f == FUSION_WGRAD ? b->w_count : dgrad ? b->in_count : b->out_count) * 2;
    int c_stats = dgrad ? c_in : c_out;
    void *map = dev_alloc(map_bytes);
    for (int uid = UID_Y; uid <= UID_DW; uid++) {
        int is_map = uid == UID_Y || uid == UID_DOUT || uid == UID_DZ || uid == UID_DW;
        int is_stats = uid == UID_SUM || uid == UID_SQSUM || uid == UID_SUM_DZ || uid == UID_SUM_DZ_XHAT;
        if (!is_map && !is_stats) continue;
        b->fused_bytes[uid] = is_map ? map_bytes : c_stats * sizeof(float);
        b->fused[uid] = is_map ? map : dev_alloc(b->fused_bytes[uid]);
    }
    b->y = dev_alloc(map_bytes);
    b->act = dev_alloc(b->in_count * 2);
    b->stats_blocks = stats_blocks((int)(map_bytes / 2 / c_stats), c_stats);
    b->partials = dev_alloc((size_t)b->stats_blocks * 2 * c_stats * sizeof(float));
}

// The device pointer the fused way's variant pack gives each uid.
static void *pack_pointer(const Buffers *b, int64_t uid) {
    switch (uid) {
    case UID_X:
    case UID_IN: return b->x;
    case UID_W: return b->w;
    case UID_DY: return b->dy;
    case UID_MEAN: return b->d_mean;
    case UID_RSTD: return b->d_rstd;
    case UID_BIAS: return b->d_bias;
    default: return b->fused[uid];
    }
}

// The variant pack of a graph's tensors on the case's buffers (made once per plan, so that
// the timed calls are the execution alone).
static cudnnBackendDescriptor_t make_pack(const FusionGraph *g, const Buffers *b, void *workspace) {
    void *by_uid[N_UIDS] = {0};
    for (int uid = 1; uid < N_UIDS; uid++) by_uid[uid] = pack_pointer(b, uid);
    return fusion_pack(g, by_uid, workspace);
}

// Every output of the fused way to NaN, so that one a plan leaves unwritten, or adds to
// instead of writing, fails its check (also when an earlier engine wrote it).
static void reset_outputs(const Buffers *b) {
    for (int uid = 0; uid < N_UIDS; uid++)
        if (b->fused[uid]) CUDA_CHECK(cudaMemset(b->fused[uid], 0xff, b->fused_bytes[uid]));
}

// The trainer's way: its conv (legacy API, its algorithm choice) and kernels.
static void run_unfused(const Gpu *gpu, Fusion f, const ConvPlan *conv, const Buffers *b) {
    const FusionShape *s = &b->s;
    int rows = s->batch * s->side * s->side;
    const float *mean = b->d_mean, *rstd = b->d_rstd, *bias = b->d_bias;
    if (f == FUSION_WGRAD) {
        conv_backward_filter(gpu->convs, conv, b->x, b->dy, b->y);
        return;
    }
    if (fusion_is_dgrad(f)) {
        conv_backward_data(gpu->convs, conv, b->w, b->dy, b->y, 0);
        if (f != FUSION_DGRAD)
            CUDA_CHECK(launch_bn_gelu_backward_reduce(b->partials, b->y, b->x, NULL, mean, rstd, bias, rows, s->c_in,
                                                      s->activation, gpu->stream));
        return;
    }
    const void *conv_in = b->x;
    if (f == FUSION_BNACT_FPROP || f == FUSION_BNACT_FPROP_GENSTATS) {
        CUDA_CHECK(launch_bn_gelu_forward(b->act, b->x, NULL, mean, rstd, bias, rows, s->c_in, s->activation,
                                          gpu->stream));
        conv_in = b->act;
    }
    conv_forward(gpu->convs, conv, conv_in, b->w, b->y);
    if (f != FUSION_FPROP && f != FUSION_BNACT_FPROP)
        CUDA_CHECK(launch_channel_stats(b->partials, b->y, rows, s->c_out, gpu->stream));
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// One way of computing a case: the fused plan on its variant pack, or the unfused launches.
typedef struct {
    const Gpu *gpu;
    Fusion f;
    const FusionPlan *plan;
    cudnnBackendDescriptor_t pack;
    const ConvPlan *conv;
    const Buffers *b;
    int fused;
} Way;

static void run_way(const Way *w) {
    if (w->fused)
        CUDNN_CHECK(cudnnBackendExecute(w->gpu->cudnn, w->plan->plan, w->pack));
    else
        run_unfused(w->gpu, w->f, w->conv, w->b);
}

// Median microseconds of reps timed calls of one way, after two untimed ones.
static double median_us(const Way *w, int reps) {
    double *us = (double *)host_buffer((size_t)reps * sizeof(double));
    for (int i = 0; i < 2; i++) run_way(w);
    for (int i = 0; i < reps; i++) {
        CUDA_CHECK(cudaEventRecord(w->gpu->start, w->gpu->stream));
        run_way(w);
        CUDA_CHECK(cudaEventRecord(w->gpu->stop, w->gpu->stream));
        CUDA_CHECK(cudaEventSynchronize(w->gpu->stop));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, w->gpu->start, w->gpu->stop));
        us[i] = 1e3 * ms;
    }
    qsort(us, reps, sizeof *us, compare_doubles);
    return us[reps / 2];
}

// Keeps the worse of a result's comparisons.
static void keep_worst(Result *r, const char *what, double error) {
    if (!(error <= r->error) || !r->worst[0]) {
        r->error = error;
        snprintf(r->worst, sizeof r->worst, "%s", what);
    }
}

// The fused way's outputs against the unfused way's (after both ran once).
static void check_outputs(Result *r, Fusion f, const Buffers *b) {
    const FusionShape *s = &b->s;
    int dgrad = fusion_is_dgrad(f), c = dgrad ? s->c_in : s->c_out;
    size_t count = f == FUSION_WGRAD ? b->w_count : dgrad ? b->in_count : b->out_count;
    const float *fused_map = download_halves(b->fused[UID_Y], count), *unfused_map = download_halves(b->y, count);
    if (f == FUSION_FPROP || f == FUSION_BNACT_FPROP || f == FUSION_DGRAD || f == FUSION_WGRAD) {
        keep_worst(r, f == FUSION_WGRAD ? "dw" : dgrad ? "d_out" : "y", rel_error(fused_map, unfused_map, count));
        return;
    }
    const float *sums = sum_partials(b->partials, b->stats_blocks, 2 * c);  // [0, c) and [c, 2c)
    if (!dgrad) {
        keep_worst(r, "y", rel_error(fused_map, unfused_map, count));
        keep_worst(r, "sum", rel_error(download_floats(b->fused[UID_SUM], c), sums, c));
        if (f != FUSION_FPROP_SUM) keep_worst(r, "sum of squares", rel_error(download_floats(b->fused[UID_SQSUM], c), sums + c, c));
        return;
    }
    // dz = d_out * act'(z) on the host, from the unfused d_out and the BatchNorm input.
    float *z = HOST_FLOATS(count), *dz = HOST_FLOATS(count);
    for (size_t i = 0; i < count; i++) {
        int ch = (int)(i % c);
        z[i] = (b->f_x[i] - b->mean[ch]) * b->rstd[ch] + b->bias[ch];
    }
    ref_activation_backward((Activation)s->activation, dz, unfused_map, z, count);
    keep_worst(r, "dz", rel_error(fused_map, dz, count));
    if (f == FUSION_DGRAD_ACT) return;
    keep_worst(r, "sum dz*xhat", rel_error(download_floats(b->fused[UID_SUM_DZ_XHAT], c), sums + c, c));
    if (f == FUSION_DGRAD_BN_REDUCE) keep_worst(r, "sum dz", rel_error(download_floats(b->fused[UID_SUM_DZ], c), sums, c));
}

// Whether a second fused run writes the same bits into every output of the graph.
static int same_bits_again(const Way *fused, const FusionGraph *g, const Buffers *b) {
    size_t bytes[FUSION_MAX_UIDS];
    unsigned char *first[FUSION_MAX_UIDS];
    for (int i = 0; i < g->n_uids; i++) {
        int64_t uid = g->uids[i];
        bytes[i] = b->fused_bytes[uid];  // 0 for the inputs
        first[i] = bytes[i] ? host_buffer(bytes[i]) : NULL;
        if (bytes[i]) download(first[i], pack_pointer(b, uid), bytes[i]);
    }
    run_way(fused);
    CUDA_CHECK(cudaStreamSynchronize(fused->gpu->stream));
    for (int i = 0; i < g->n_uids; i++) {
        if (!bytes[i]) continue;
        unsigned char *again = host_buffer(bytes[i]);
        download(again, pack_pointer(b, g->uids[i]), bytes[i]);
        if (memcmp(again, first[i], bytes[i])) return 0;
    }
    return 1;
}

// Runs r's plan on the case's buffers (made by make_buffers) against the unfused way.
// Everything it allocates is tracked (the caller frees it).
static void run_case(Result *r, const Gpu *gpu, Fusion f, const FusionGraph *g, const ConvPlan *conv, const Buffers *b,
                     const Options *o) {
    reset_outputs(b);
    void *workspace = dev_alloc(r->plan.workspace ? (size_t)r->plan.workspace : 1);
    Way fused = {gpu, f, &r->plan, make_pack(g, b, workspace), conv, b, 1}, unfused = fused;
    unfused.fused = 0;
    // A plan that does not run is a finding like an unsupported graph, not the end of the run.
    cudnnStatus_t status = cudnnBackendExecute(gpu->cudnn, r->plan.plan, fused.pack);
    if (status != CUDNN_STATUS_SUCCESS || cudaStreamSynchronize(gpu->stream) != cudaSuccess) {
        char last[160];
        cudnnGetLastErrorString(last, sizeof last);
        snprintf(r->failed, sizeof r->failed, "%s %s", cudnnGetErrorString(status), last);
        CUDA_CHECK(cudaGetLastError());  // dies if the error is sticky (then nothing else could run)
        CUDNN_CHECK(cudnnBackendDestroyDescriptor(fused.pack));
        return;
    }
    run_way(&unfused);
    CUDA_CHECK(cudaStreamSynchronize(gpu->stream));
    check_outputs(r, f, b);
    r->deterministic = same_bits_again(&fused, g, b);
    r->fused_us = median_us(&fused, o->reps);
    r->unfused_us = median_us(&unfused, o->reps);
    r->ran = 1;
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(fused.pack));
}

// ---------------------------------------------------------------------------------------

static void print_result(int g, int j, const FusionShape *s, Fusion f, const Result *r) {
    char conv[40], plan[64];
    snprintf(conv, sizeof conv, "%d.%d %dx%dx%d>%d", g, j, s->side, s->side, s->c_in, s->c_out);
    char fusion[32];
    snprintf(fusion, sizeof fusion, "%s%s", FUSION_NAMES[f], r->atomic ? " atomic" : "");
    const FusionPlan *p = &r->plan;
    if (p->compiled_only) {
        printf("%-20s %-28s engine %lld (config %d)%s compiled its kernel; loading it needs the GPU\n", conv, fusion,
               (long long)p->engine, p->config, p->runtime_compiled ? " (runtime fusion)" : "");
        return;
    }
    if (!p->plan) {
        printf("%-20s %-28s unsupported: %.150s\n", conv, fusion, p->why);
        return;
    }
    snprintf(plan, sizeof plan, "engine %lld/%d%s%s, %.0f ms, ws %lld", (long long)p->engine, p->config,
             p->runtime_compiled ? " rtc" : "", p->nondeterministic ? " nondet" : "", p->build_ms,
             (long long)p->workspace);
    printf("%-20s %-28s %-32s", conv, fusion, plan);
    if (r->failed[0]) printf(" did not run: %.120s", r->failed);
    if (r->ran)
        printf(" %8.1f %8.1f %8.1f  %.1e %-14s %s%s", r->fused_us, r->unfused_us, r->unfused_us - r->fused_us, r->error,
               r->worst, r->deterministic ? "yes" : "no", r->error <= ERROR_BOUND ? "" : "  <-- WRONG");
    printf("\n");
}

// What the whole run found: any plan wrong or not running, a missing plan for an unfused
// conv graph (the tool or the device description broken), and per fusion the time saved
// per training step by the best engine of each conv where it fits.
typedef struct {
    int wrong, broken;
    double saved[N_FUSIONS];
} Tally;

// One fusion at one conv: its first plan (deterministic reductions, else atomics), then
// with --all-engines every later engine config that plans, each run on the GPU if there is one.
static void bench_case(Tally *tally, const Gpu *gpu, const Options *o, Fusion f, int g, int j,
                       cudnnBackendDescriptor_t device) {
    FusionShape s = conv_shape(o, g, j);
    FusionGraph graph;
    Result r = {0};
    r.atomic = o->atomic && fusion_reduces(f);
    fusion_graph_build(&graph, f, &s, !r.atomic);
    fusion_plan_build(&r.plan, &graph, device);
    if (!r.plan.plan && !r.plan.compiled_only && fusion_reduces(f) && !r.atomic) {
        // No deterministic plan: would atomics do? (Not for the trainer as it is, whose runs
        // are bit-reproducible, but worth knowing.)
        fusion_plan_free(&r.plan);
        fusion_graph_free(&graph);
        fusion_graph_build(&graph, f, &s, 0);
        fusion_plan_build(&r.plan, &graph, device);
        r.atomic = 1;
    }
    // The unfused graphs are what any conv needs: without their plans the tool (or the
    // device description) is broken, not the fusion unsupported.
    if (!r.plan.plan && !r.plan.compiled_only && (f == FUSION_FPROP || f == FUSION_DGRAD || f == FUSION_WGRAD))
        tally->broken = 1;
    double best_saving = 0.0;
    int any_ran = 0, have_buffers = 0;
    Buffers b;  // the case's inputs and outputs, made once for all its engines
    TrackedMark before_case = tracked_mark();
    for (;;) {
        if (r.plan.plan && gpu->convs) {
            if (!have_buffers) make_buffers(&b, &s, f);
            have_buffers = 1;
            TrackedMark before_engine = tracked_mark();
            run_case(&r, gpu, f, &graph, conv_plan(gpu->convs, o->batch, g, j), &b, o);
            free_since(before_engine);
        }
        print_result(g, j, &s, f, &r);
        fflush(stdout);
        if ((r.ran && !(r.error <= ERROR_BOUND)) || r.failed[0]) tally->wrong = 1;
        if (r.ran && (!any_ran || r.unfused_us - r.fused_us > best_saving)) best_saving = r.unfused_us - r.fused_us;
        any_ran |= r.ran;
        int next = r.plan.config + 1, atomic = r.atomic;
        fusion_plan_free(&r.plan);
        if (!o->all_engines || next == 0) break;
        r = (Result){.atomic = atomic};
        fusion_plan_build_from(&r.plan, &graph, device, next);
        if (!r.plan.plan && !r.plan.compiled_only) break;  // no config after the last one planned
    }
    if (any_ran) tally->saved[f] += best_saving;
    free_since(before_case);
    fusion_graph_free(&graph);
}

static void make_gpu(Gpu *gpu, const Options *o) {
    CUDA_CHECK(cudaStreamCreate(&gpu->stream));
    CUDNN_CHECK(cudnnCreate(&gpu->cudnn));
    CUDNN_CHECK(cudnnSetStream(gpu->cudnn, gpu->stream));
    CUDA_CHECK(cudaEventCreate(&gpu->start));
    CUDA_CHECK(cudaEventCreate(&gpu->stop));
    // The trainer's conv plans (its timed algorithm choice) on scratch buffers as large as
    // the largest conv input, filter and output.
    static NetLayout layout;
    net_layout_init(&layout, o->widths, 2);
    size_t most_in = 0, most_w = 0, most_out = 0;
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < 2; j++) {
            FusionShape s = conv_shape(o, g, j);
            size_t plane = (size_t)o->batch * s.side * s.side;
            if (plane * s.c_in > most_in) most_in = plane * s.c_in;
            if (plane * s.c_out > most_out) most_out = plane * s.c_out;
            if ((size_t)s.c_out * s.c_in * 9 > most_w) most_w = (size_t)s.c_out * s.c_in * 9;
        }
    gpu->scratch[0] = gpu_alloc(most_in * 2);
    gpu->scratch[1] = gpu_alloc(most_w * 2);
    gpu->scratch[2] = gpu_alloc(most_out * 2);
    gpu->convs = convs_create(gpu->stream, CONV_ALGO_FIND, NULL, &layout, &o->batch, 1, gpu->scratch[0],
                              gpu->scratch[1], gpu->scratch[2]);
}

static void free_gpu(Gpu *gpu) {
    convs_free(gpu->convs);
    for (int i = 0; i < 3; i++) CUDA_CHECK(cudaFree(gpu->scratch[i]));
    CUDA_CHECK(cudaEventDestroy(gpu->start));
    CUDA_CHECK(cudaEventDestroy(gpu->stop));
    CUDNN_CHECK(cudnnDestroy(gpu->cudnn));
    CUDA_CHECK(cudaStreamDestroy(gpu->stream));
}

int main(int argc, char **argv) {
    gpu_set_program_name("fusion_bench");
    Options o = parse(argc, argv);
    Gpu gpu = {0};
    cudnnBackendDescriptor_t device;
    if (o.device_json) {
        device = device_from_json(o.device_json);
        printf("fusion_bench: plans only, for the GPU described by %s (cuDNN %zu)\n", o.device_json, cudnnGetVersion());
    } else {
        if (find_gpu("fusion_bench")) {
            fprintf(stderr, "fusion_bench: without a GPU, ask for plans with --device-json FILE (e.g. dev/fusion/h100-sxm-handwritten.json)\n");
            return 2;
        }
        make_gpu(&gpu, &o);
        device = fusion_device_from_handle(gpu.cudnn);
        if (o.save_device_json) {
            save_device(device, o.save_device_json);
            printf("fusion_bench: this GPU's properties written to %s\n", o.save_device_json);
        }
    }
    printf("batch %d, widths %d,%d,%d, %s; errors against the unfused way, bound %.0e\n", o.batch, o.widths[0],
           o.widths[1], o.widths[2], o.activation == ACTIVATION_SILU ? "SiLU" : "GELU", ERROR_BOUND);
    printf("%-20s %-28s %-32s %8s %8s %8s  %-22s %s\n", "conv g.j side,c>k", "fusion", "plan", "fused", "unfused",
           "saved", "error (worst output)", "same bits");
    Tally tally = {0};
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < 2; j++)
            for (int f = 0; f < N_FUSIONS; f++)
                if (o.fusions[f] && o.convs[g][j] && fusion_fits((Fusion)f, g, j))
                    bench_case(&tally, &gpu, &o, (Fusion)f, g, j, device);
    if (gpu.convs) {
        printf("\nsaved per training step (us), if every conv where the fusion fits took it%s:\n",
               o.all_engines ? " (its best engine)" : "");
        for (int f = 0; f < N_FUSIONS; f++)
            if (tally.saved[f] != 0) printf("  %-21s %8.1f\n", FUSION_NAMES[f], tally.saved[f]);
    }
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(device));
    if (gpu.convs) free_gpu(&gpu);
    if (tally.broken) fprintf(stderr, "fusion_bench: cuDNN made no plan for an unfused conv graph: see the lines above\n");
    if (tally.wrong) fprintf(stderr, "fusion_bench: a fused plan did not run, or its result differs from the unfused one\n");
    return tally.broken || tally.wrong ? 1 : 0;
}
