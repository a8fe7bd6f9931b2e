// conv.c: cuDNN plans for the network's 3x3 convolutions and their algorithm choice, kept
// in the algorithm cache file (conv_cache.h) (conv.h).
#include "conv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"

const char *const CONV_ALGO_CHOICES[] = {"cached", "find", "heuristic", NULL};
const char *const CONV_GRAPH_CHOICES[] = {"off", "on", "always", NULL};

enum { MAX_BATCHES = 4, N_CANDIDATES = 16 };
#define WORKSPACE_BYTES ((size_t)512 << 20)
_Static_assert((int)CONV_CACHE_CHOICES == (int)N_CONV_DIRECTIONS, "a cache entry holds one choice per conv direction");

typedef struct {
    int batch;
    ConvPlan conv[3][NET_MAX_DEPTH];
} PlanSet;

struct Convs {
    cudnnHandle_t cudnn;
    void *workspace;
    cudnnHandle_t filter_cudnn;  // conv_backward_filter's, on the filter stream (NULL: none)
    void *filter_workspace;
    ConvAlgoChoice choice;
    const NetLayout *layout;
    __half *scratch_x, *scratch_w, *scratch_y;
    cudnnBackendDescriptor_t device_props;  // the GPU's, for graph plans (NULL until needed)
    PlanSet plan_sets[MAX_BATCHES];
    int n_plan_sets, all_deterministic;
    char device[320];  // this device's cache key
    ConvCache cache;
};

// ---------------------------------------------------------------------------------------
// Algorithm choice. cuDNN's three result lists have different types with the same fields;
// they are copied into one form so one function picks from all three.

typedef struct {
    int algo;
    cudnnStatus_t status;
    size_t memory;
    cudnnDeterminism_t determinism;
} Candidate;

#define TO_CANDIDATES(perf, n, out)                                                                  \
    for (int i_ = 0; i_ < (n); i_++)                                                                 \
        (out)[i_] = (Candidate){(int)(perf)[i_].algo, (perf)[i_].status, (perf)[i_].memory,          \
                                (perf)[i_].determinism};

// The best-ranked candidate that ran (or is supported), fits the workspace and is
// deterministic; else the best that runs, noted in c->all_deterministic. Dies if none.
static int pick(Convs *c, const Candidate *cand, int n, const ConvPlan *p, const char *direction) {
    int fallback = -1;
    for (int i = 0; i < n; i++) {
        if (cand[i].status != CUDNN_STATUS_SUCCESS || cand[i].memory > WORKSPACE_BYTES) continue;
        if (cand[i].determinism == CUDNN_DETERMINISTIC) return cand[i].algo;
        if (fallback < 0) fallback = cand[i].algo;
    }
    if (fallback < 0)
        die(1, "cuDNN has no usable %s algorithm for a %dx%d conv at batch %d", direction, p->c_in, p->c_out,
            p->batch);
    c->all_deterministic = 0;
    return fallback;
}

// Times every algorithm on the scratch buffers and keeps the fastest (deterministic) one.
static void find_algos(Convs *c, ConvPlan *p) {
    int found = 0;
    Candidate cand[N_CANDIDATES];
    cudnnConvolutionFwdAlgoPerf_t fwd[N_CANDIDATES];
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(c->cudnn, p->x_desc, c->scratch_x, p->w_desc, c->scratch_w,
                                                       p->conv_desc, p->y_desc, c->scratch_y, N_CANDIDATES, &found,
                                                       fwd, c->workspace, WORKSPACE_BYTES));
    TO_CANDIDATES(fwd, found, cand);
    p->fwd_algo = (cudnnConvolutionFwdAlgo_t)pick(c, cand, found, p, "forward");
    cudnnConvolutionBwdDataAlgoPerf_t bwd_data[N_CANDIDATES];
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(c->cudnn, p->w_desc, c->scratch_w, p->y_desc,
                                                            c->scratch_y, p->conv_desc, p->x_desc, c->scratch_x,
                                                            N_CANDIDATES, &found, bwd_data, c->workspace,
                                                            WORKSPACE_BYTES));
    TO_CANDIDATES(bwd_data, found, cand);
    p->bwd_data_algo = (cudnnConvolutionBwdDataAlgo_t)pick(c, cand, found, p, "backward-data");
    cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[N_CANDIDATES];
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(c->cudnn, p->x_desc, c->scratch_x, p->y_desc,
                                                              c->scratch_y, p->conv_desc, p->w_desc, c->scratch_w,
                                                              N_CANDIDATES, &found, bwd_filter, c->workspace,
                                                              WORKSPACE_BYTES));
    TO_CANDIDATES(bwd_filter, found, cand);
    p->bwd_filter_algo = (cudnnConvolutionBwdFilterAlgo_t)pick(c, cand, found, p, "backward-filter");
}

// cuDNN's heuristic ranking (runs no kernels).
static void heuristic_algos(Convs *c, ConvPlan *p) {
    int found = 0;
    Candidate cand[N_CANDIDATES];
    cudnnConvolutionFwdAlgoPerf_t fwd[N_CANDIDATES];
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(c->cudnn, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                       N_CANDIDATES, &found, fwd));
    TO_CANDIDATES(fwd, found, cand);
    p->fwd_algo = (cudnnConvolutionFwdAlgo_t)pick(c, cand, found, p, "forward");
    cudnnConvolutionBwdDataAlgoPerf_t bwd_data[N_CANDIDATES];
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(c->cudnn, p->w_desc, p->y_desc, p->conv_desc, p->x_desc,
                                                            N_CANDIDATES, &found, bwd_data));
    TO_CANDIDATES(bwd_data, found, cand);
    p->bwd_data_algo = (cudnnConvolutionBwdDataAlgo_t)pick(c, cand, found, p, "backward-data");
    cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[N_CANDIDATES];
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(c->cudnn, p->x_desc, p->y_desc, p->conv_desc,
                                                              p->w_desc, N_CANDIDATES, &found, bwd_filter));
    TO_CANDIDATES(bwd_filter, found, cand);
    p->bwd_filter_algo = (cudnnConvolutionBwdFilterAlgo_t)pick(c, cand, found, p, "backward-filter");
}

// ---------------------------------------------------------------------------------------
// The cache file's entries (conv_cache.h)

static const ConvCacheEntry *cache_lookup(const Convs *c, const char *device, const ConvPlan *p) {
    return conv_cache_lookup(&c->cache, device, p->batch, p->c_in, p->c_out, p->side);
}

static void cache_record(Convs *c, const char *device, const ConvPlan *p,
                         char choice[N_CONV_DIRECTIONS][CONV_CACHE_TOKEN]) {
    ConvCacheEntry e = {.batch = p->batch, .c_in = p->c_in, .c_out = p->c_out, .side = p->side};
    snprintf(e.device, sizeof e.device, "%s", device);
    memcpy(e.choice, choice, sizeof e.choice);
    conv_cache_record(&c->cache, &e);
}

// Whether the cached algorithms still work for the plan (e.g. after a cuDNN downgrade
// under the same version string they might not): each must report a workspace size that fits.
static int cached_algos_usable(Convs *c, const ConvPlan *p, const int algo[N_CONV_DIRECTIONS]) {
    size_t bytes[3];
    int ok = cudnnGetConvolutionForwardWorkspaceSize(c->cudnn, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                     (cudnnConvolutionFwdAlgo_t)algo[0],
                                                     &bytes[0]) == CUDNN_STATUS_SUCCESS &&
             cudnnGetConvolutionBackwardDataWorkspaceSize(c->cudnn, p->w_desc, p->y_desc, p->conv_desc, p->x_desc,
                                                          (cudnnConvolutionBwdDataAlgo_t)algo[1],
                                                          &bytes[1]) == CUDNN_STATUS_SUCCESS &&
             cudnnGetConvolutionBackwardFilterWorkspaceSize(c->cudnn, p->x_desc, p->y_desc, p->conv_desc, p->w_desc,
                                                            (cudnnConvolutionBwdFilterAlgo_t)algo[2],
                                                            &bytes[2]) == CUDNN_STATUS_SUCCESS;
    return ok && bytes[0] <= WORKSPACE_BYTES && bytes[1] <= WORKSPACE_BYTES && bytes[2] <= WORKSPACE_BYTES;
}

// Times the plan's algorithms and records them in the cache.
static void find_and_record(Convs *c, ConvPlan *p) {
    find_algos(c, p);
    char choice[N_CONV_DIRECTIONS][CONV_CACHE_TOKEN];
    snprintf(choice[0], sizeof choice[0], "%d", (int)p->fwd_algo);
    snprintf(choice[1], sizeof choice[1], "%d", (int)p->bwd_data_algo);
    snprintf(choice[2], sizeof choice[2], "%d", (int)p->bwd_filter_algo);
    cache_record(c, c->device, p, choice);
}

static void choose_algos(Convs *c, ConvPlan *p) {
    const ConvCacheEntry *e = c->choice == CONV_ALGO_CACHED ? cache_lookup(c, c->device, p) : NULL;
    int algo[N_CONV_DIRECTIONS];
    if (e && conv_cache_legacy_algos(e, algo) && cached_algos_usable(c, p, algo)) {
        p->fwd_algo = (cudnnConvolutionFwdAlgo_t)algo[0];
        p->bwd_data_algo = (cudnnConvolutionBwdDataAlgo_t)algo[1];
        p->bwd_filter_algo = (cudnnConvolutionBwdFilterAlgo_t)algo[2];
    } else if (c->choice == CONV_ALGO_HEURISTIC) {
        heuristic_algos(c, p);
    } else {
        find_and_record(c, p);
    }
}

// "<GPU name>/sm<major><minor>/cudnn<version>", without the file format's separators.
static void describe_device(char *out, size_t out_size) {
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    snprintf(out, out_size, "%s/sm%d%d/cudnn%zu", prop.name, prop.major, prop.minor, cudnnGetVersion());
    for (char *ch = out; *ch; ch++)
        if (*ch == '|' || *ch == '\n') *ch = '_';
}

// ---------------------------------------------------------------------------------------
// Plans.

static ConvPlan make_plan(Convs *c, int batch, int c_in, int c_out, int side) {
    ConvPlan p = {.batch = batch, .c_in = c_in, .c_out = c_out, .side = side};
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.x_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.y_desc));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p.w_desc));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p.conv_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.x_desc, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, batch, c_in, side, side));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.y_desc, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, batch, c_out, side, side));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(p.w_desc, CUDNN_DATA_HALF, CUDNN_TENSOR_NHWC, c_out, c_in, 3, 3));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p.conv_desc, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                                                CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv_desc, CUDNN_TENSOR_OP_MATH));
    choose_algos(c, &p);
    return p;
}

static void destroy_plan(ConvPlan *p) {
    for (int d = 0; d < N_CONV_DIRECTIONS; d++) conv_graph_free(p->graph[d]);
    cudnnDestroyTensorDescriptor(p->x_desc);
    cudnnDestroyTensorDescriptor(p->y_desc);
    cudnnDestroyFilterDescriptor(p->w_desc);
    cudnnDestroyConvolutionDescriptor(p->conv_desc);
}

// The plans of every conv at one batch size.
static void make_plan_set(Convs *c, PlanSet *set, int batch) {
    const NetLayout *l = c->layout;
    set->batch = batch;
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < l->depth; j++)
            set->conv[g][j] = make_plan(c, batch, net_conv_in(l->widths, g, j), l->widths[g], net_conv_side(g, j));
}

Convs *convs_create(cudaStream_t stream, ConvAlgoChoice choice, const char *cache_path, const NetLayout *layout,
                    const int *batches, int n_batches, __half *scratch_x, __half *scratch_w, __half *scratch_y) {
    Convs *c = host_alloc(sizeof(Convs));
    *c = (Convs){.choice = choice, .layout = layout, .scratch_x = scratch_x, .scratch_w = scratch_w,
                 .scratch_y = scratch_y, .all_deterministic = 1};
    CUDNN_CHECK(cudnnCreate(&c->cudnn));
    CUDNN_CHECK(cudnnSetStream(c->cudnn, stream));
    c->workspace = gpu_alloc(WORKSPACE_BYTES);
    describe_device(c->device, sizeof c->device);
    conv_cache_load(&c->cache, choice == CONV_ALGO_HEURISTIC ? NULL : cache_path);
    for (int i = 0; i < n_batches; i++) {
        int known = 0;
        for (int k = 0; k < c->n_plan_sets; k++) known |= c->plan_sets[k].batch == batches[i];
        if (known) continue;
        if (c->n_plan_sets == MAX_BATCHES) die(1, "internal error: convolutions at more than %d batch sizes", MAX_BATCHES);
        make_plan_set(c, &c->plan_sets[c->n_plan_sets++], batches[i]);
    }
    return c;
}

void convs_free(Convs *c) {
    for (int i = 0; i < c->n_plan_sets; i++)
        for (int g = 0; g < 3; g++)
            for (int j = 0; j < c->layout->depth; j++) destroy_plan(&c->plan_sets[i].conv[g][j]);
    if (c->device_props) cudnnBackendDestroyDescriptor(c->device_props);
    cudaFree(c->workspace);
    cudnnDestroy(c->cudnn);
    if (c->filter_cudnn) {
        cudaFree(c->filter_workspace);
        cudnnDestroy(c->filter_cudnn);
    }
    free(c);
}

const ConvPlan *conv_plan(Convs *c, int batch, int g, int j) {
    for (int i = 0; i < c->n_plan_sets; i++)
        if (c->plan_sets[i].batch == batch) return &c->plan_sets[i].conv[g][j];
    die(1, "internal error: no convolution plan for batch %d (convs_create was not given it)", batch);
}

int convs_deterministic(const Convs *c) { return c->all_deterministic; }

// ---------------------------------------------------------------------------------------
// Graph-API engines (--conv-graph)

// The handle conv_backward_filter runs on (the filter stream's, once there is one) and its workspace.
static cudnnHandle_t filter_handle(const Convs *c, void **workspace) {
    *workspace = c->filter_cudnn ? c->filter_workspace : c->workspace;
    return c->filter_cudnn ? c->filter_cudnn : c->cudnn;
}

// The plan's graph choices from a cache entry; 0 (and none set) unless each one plans
// with the engine recorded.
static int cached_graphs(Convs *c, ConvPlan *p, const ConvCacheEntry *e) {
    FusionShape s = {.batch = p->batch, .c_in = p->c_in, .c_out = p->c_out, .side = p->side};
    int ok = 1;
    for (int d = 0; d < N_CONV_DIRECTIONS && ok; d++) {
        int config;
        long long engine;
        int kind = conv_cache_graph_token(e->choice[d], &config, &engine);
        ok = kind >= 0;
        if (kind == 1) {
            p->graph[d] = conv_graph_create(c->device_props, (ConvDirection)d, &s, config, WORKSPACE_BYTES);
            ok = p->graph[d] && conv_graph_engine(p->graph[d]) == engine;
        }
    }
    for (int d = 0; !ok && d < N_CONV_DIRECTIONS; d++) {
        conv_graph_free(p->graph[d]);
        p->graph[d] = NULL;
    }
    return ok;
}

void convs_use_graph_engines(Convs *c, ConvGraphChoice choice, FILE *log) {
    if (choice == CONV_GRAPH_OFF) return;
    if (c->choice == CONV_ALGO_HEURISTIC)
        die(2, "--conv-graph %s times cuDNN's engines: it cannot go with --conv-algo heuristic, which times nothing",
            CONV_GRAPH_CHOICES[choice]);
    if (!c->device_props) c->device_props = fusion_device_from_handle(c->cudnn);
    char key[sizeof c->device + 8];
    snprintf(key, sizeof key, "%s/graph", c->device);
    PlanSet *set = &c->plan_sets[0];
    ConvGraphSite site = {.workspace_bytes = WORKSPACE_BYTES, .x = c->scratch_x, .w = c->scratch_w,
                          .y = c->scratch_y, .device = c->device_props};
    for (int d = 0; d < N_CONV_DIRECTIONS; d++) site.handle[d] = c->cudnn, site.workspace[d] = c->workspace;
    site.handle[CONV_BACKWARD_FILTER] = filter_handle(c, &site.workspace[CONV_BACKWARD_FILTER]);
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < c->layout->depth; j++) {
            ConvPlan *p = &set->conv[g][j];
            int cached = choice == CONV_GRAPH_ON && c->choice == CONV_ALGO_CACHED;
            const ConvCacheEntry *e = cached ? cache_lookup(c, key, p) : NULL;
            if (p->graph[0] || p->graph[1] || p->graph[2] || (e && cached_graphs(c, p, e))) continue;
            if (!site.pattern) site.pattern = conv_graph_pattern(conv_largest_operand(c->layout, set->batch) + 1);
            char made[N_CONV_DIRECTIONS][CONV_CACHE_TOKEN];
            conv_choose_graphs(c, p, &site, choice == CONV_GRAPH_ALWAYS, log, made);
            if (choice == CONV_GRAPH_ON) cache_record(c, key, p, made);
        }
    free((void *)site.pattern);
}

void conv_forward(Convs *c, const ConvPlan *p, const __half *x, const __half *w, __half *y) {
    if (p->graph[CONV_FORWARD]) {
        conv_graph_run(p->graph[CONV_FORWARD], c->cudnn, x, w, y, c->workspace);
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionForward(c->cudnn, &one, p->x_desc, x, p->w_desc, w, p->conv_desc, p->fwd_algo,
                                        c->workspace, WORKSPACE_BYTES, &zero, p->y_desc, y));
}

void conv_backward_filter(Convs *c, const ConvPlan *p, const __half *x, const __half *dy, __half *dw) {
    void *workspace;
    cudnnHandle_t handle = filter_handle(c, &workspace);
    if (p->graph[CONV_BACKWARD_FILTER]) {
        conv_graph_run(p->graph[CONV_BACKWARD_FILTER], handle, x, dy, dw, workspace);
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(handle, &one, p->x_desc, x, p->y_desc, dy, p->conv_desc,
                                               p->bwd_filter_algo, workspace, WORKSPACE_BYTES, &zero, p->w_desc, dw));
}

void convs_use_filter_stream(Convs *c, cudaStream_t stream) {
    if (!c->filter_cudnn) {
        CUDNN_CHECK(cudnnCreate(&c->filter_cudnn));
        c->filter_workspace = gpu_alloc(WORKSPACE_BYTES);
    }
    CUDNN_CHECK(cudnnSetStream(c->filter_cudnn, stream));
}

void conv_backward_data(Convs *c, const ConvPlan *p, const __half *w, const __half *dy, __half *dx, int accumulate) {
    if (p->graph[CONV_BACKWARD_DATA] && !accumulate) {
        conv_graph_run(p->graph[CONV_BACKWARD_DATA], c->cudnn, w, dy, dx, c->workspace);
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionBackwardData(c->cudnn, &one, p->w_desc, w, p->y_desc, dy, p->conv_desc,
                                             p->bwd_data_algo, c->workspace, WORKSPACE_BYTES,
                                             accumulate ? &one : &zero, p->x_desc, dx));
}
