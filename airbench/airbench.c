// airbench.c: train the airbench CIFAR-10 network on one GPU, as fast as we can.
//
// One file that reads like the method: recipe -> data on the GPU -> network -> training
// loop (augmenting loader, forward, label-smoothed loss, backward, Nesterov SGD or Muon,
// lookahead) -> test-time-augmented evaluation -> JSON result. Convolutions go through
// cuDNN (NHWC fp16, fp32 accumulation); everything between them is a fused kernel from
// kernels/ (BN statistics with the pool, BN + GELU, loss with its gradient, optimizer).
// The recipe is fixed at compile time: -DAIRBENCH_VARIANT=94, 95, 96 or 940 (94 + Muon).
// Its CPU twin, airbench/reference.c, is the oracle it is tested against.
#include <cjson/cJSON.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cifar10.h"
#include "kernels.h"
#include "net.h"
#include "recipe.h"
#include "reference.h"
#include "version.h"

#ifndef AIRBENCH_VARIANT
#define AIRBENCH_VARIANT 94
#endif
#if AIRBENCH_VARIANT == 94
#define VARIANT_RECIPE RECIPE_94
#define VARIANT_TARGET 0.94
#elif AIRBENCH_VARIANT == 95
#define VARIANT_RECIPE RECIPE_95
#define VARIANT_TARGET 0.95
#elif AIRBENCH_VARIANT == 96
#define VARIANT_RECIPE RECIPE_96
#define VARIANT_TARGET 0.96
#elif AIRBENCH_VARIANT == 940
#define VARIANT_RECIPE RECIPE_94_MUON
#define VARIANT_TARGET 0.94
#else
#error "AIRBENCH_VARIANT must be 94, 95, 96 or 940 (94 with Muon)"
#endif

#define EVAL_BATCH 2000     // test images per evaluation forward pass
#define WHITEN_IMAGES 5000  // training images whose patches initialize the whitening conv

// ----------------------------------------------------------------------------
// Error checking: every CUDA, cuDNN and cuBLAS call, with file and line.

static const char *program_name = "airbench";

static void die(int code, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "%s: ", program_name);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    exit(code);
}

static void cuda_check(cudaError_t err, const char *what, const char *file, int line) {
    if (err == cudaSuccess) return;
    if (err == cudaErrorMemoryAllocation) {
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        die(1, "out of GPU memory at %s:%d (%s): %.0f MiB free of %.0f MiB; try a smaller --batch",
            file, line, what, free_bytes / 1048576.0, total_bytes / 1048576.0);
    }
    die(1, "CUDA error at %s:%d (%s): %s", file, line, what, cudaGetErrorString(err));
}

static void cudnn_check(cudnnStatus_t status, const char *what, const char *file, int line) {
    if (status == CUDNN_STATUS_SUCCESS) return;
    die(1, "cuDNN error at %s:%d (%s): %s", file, line, what, cudnnGetErrorString(status));
}

static void cublas_check(cublasStatus_t status, const char *what, const char *file, int line) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    die(1, "cuBLAS error at %s:%d (%s): status %d", file, line, what, (int)status);
}

#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
#define CUDNN_CHECK(call) cudnn_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)

static void *gpu_alloc(size_t bytes) {
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}

static void *host_alloc(size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) die(1, "out of host memory allocating %zu bytes", bytes);
    return p;
}

// ----------------------------------------------------------------------------
// Options.

#define MAX_ENV 32

// How convolution algorithms are chosen: by timing every candidate (cudnnFind*, the
// default), or by cuDNN's heuristics (cudnnGet*_v7, --conv-algo heuristic), which run no
// kernels: a faster start, e.g. under compute-sanitizer, but maybe slower convolutions.
typedef enum { CONV_ALGO_FIND = 0, CONV_ALGO_HEURISTIC = 1 } ConvAlgoChoice;

typedef struct {
    const char *data_dir, *json_path;
    Recipe recipe;
    int runs, tta_level, quiet;
    uint64_t seed;
    TranslateMode translate_mode;
    ConvAlgoChoice conv_algo;
    int n_env;
    const char *env[MAX_ENV];  // KEY=VALUE strings recorded in the run file
    char command[4096];
} Options;

// ----------------------------------------------------------------------------
// cuDNN convolution plans: descriptors and algorithms for one conv at one batch size,
// chosen once per process (ConvAlgoChoice), then reused.

typedef struct {
    int batch, c_in, c_out, side;   // 3x3 conv, pad 1: side x side in and out
    cudnnTensorDescriptor_t x_desc, y_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv_desc;
    cudnnConvolutionFwdAlgo_t fwd_algo;
    cudnnConvolutionBwdDataAlgo_t bwd_data_algo;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo;
} ConvPlan;

typedef struct {
    int batch;
    ConvPlan conv[3][NET_MAX_DEPTH];
} PlanSet;

#define MAX_PLAN_SETS 4

// ----------------------------------------------------------------------------
// The trainer's GPU state.

typedef struct {
    __half *x;                                   // input images, n x 3 x 32 x 32 (NCHW)
    __half *whiten_out;                          // n*31*31 x 24
    __half *conv_out[3][NET_MAX_DEPTH];          // conv outputs (before the pool for j = 0)
    __half *pooled[3];                           // j = 0: pooled conv output, the BN input
    uint8_t *pool_argmax[3];
    __half *act[3][NET_MAX_DEPTH];               // GELU outputs
    float *bn_mean[3][NET_MAX_DEPTH], *bn_rstd[3][NET_MAX_DEPTH];
    float *features, *logits;                    // n x w3, n x 10
    uint8_t *feature_argmax, *labels;
} Activations;

typedef struct {
    Recipe recipe;
    NetLayout layout;
    int max_batch;
    // Parameters: fp32 master values in net.h's order (conv weights KRSC), an fp16 copy of
    // the convs for cuDNN, gradients (fp16 from cuDNN for the convs, fp32 for the rest),
    // momentum, and the lookahead state; BN running stats as in the reference.
    float *params, *momentum, *grads, *ema_params;
    __half *conv_half, *conv_grads;
    float *running, *ema_running;
    size_t n_running;
    ParamBuffers pb;
    Activations acts;
    // Backward scratch: gradients of the current activation, of a conv output, and of the
    // residual branch (96); per-channel partial sums and BN backward means.
    __half *d_act, *d_conv, *d_residual;
    float *d_logits, *d_features, *partials, *bn_sums;
    double *loss_sum;
    int *correct;
    // Muon scratch (94-muon only): the update matrix and its Newton-Schulz iterate (bf16),
    // the Gram matrix and polynomial (bf16), and two sums of squares.
    __nv_bfloat16 *ns_x, *ns_next, *ns_gram, *ns_poly;
    float *sum_sq;
    // Data, uploaded once: uint8 CHW images and labels.
    uint8_t *train_images, *train_labels, *test_images, *test_labels;
    int n_train, n_test;
    // Libraries.
    cudaStream_t stream;
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    void *workspace;
    size_t workspace_size;
    ConvAlgoChoice conv_algo;
    PlanSet plan_sets[MAX_PLAN_SETS];
    int n_plan_sets;
} Trainer;

// Spatial side at the input of group g (31, 15, 7) and after its pool (15, 7, 3).
static int group_in_side(int g) { return 31 >> g; }
static int group_out_side(int g) { return (31 >> g) / 2; }
static int conv_side(int g, int j) { return j == 0 ? group_in_side(g) : group_out_side(g); }

static float *param_ptr(const Trainer *t, float *base, int tensor_id) {
    return base + t->layout.tensors[tensor_id].offset;
}
static __half *conv_half_ptr(const Trainer *t, __half *base, int g, int j) {
    return base + (t->layout.tensors[net_conv_id(&t->layout, g, j)].offset - t->pb.begin[SEG_CONV]);
}
static size_t running_offset(const Trainer *t, int g, int j) {
    size_t offset = 0;
    for (int gg = 0; gg < g; gg++) offset += 2 * (size_t)t->layout.depth * t->layout.widths[gg];
    return offset + 2 * (size_t)j * t->layout.widths[g];
}

// ----------------------------------------------------------------------------
// Setup: the GPU, cuDNN plans, buffers, data.

static void describe_gpu(char *name, size_t name_size, int *major, int *minor) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0)
        die(2, "no CUDA GPU found (%s). airbench.c trains on an NVIDIA GPU of compute "
               "capability 8.0 or newer; `make test` runs the CPU checks without one",
            err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    snprintf(name, name_size, "%s", prop.name);
    *major = prop.major;
    *minor = prop.minor;
    if (prop.major < 8)
        die(2, "GPU 0 (%s) has compute capability %d.%d; airbench.c needs 8.0 or newer "
               "(fp16 tensor cores as on A100/H100)", prop.name, prop.major, prop.minor);
}

// The algorithm of the first entry of a cuDNN list (sorted best first) that ran, or is
// supported, and fits the workspace; dies if there is none. A macro because the three
// directions' lists have different types with the same fields.
#define FIRST_USABLE_ALGO(perf, found, t, p, direction)                                                         \
    ({                                                                                                        \
        int i_ = 0;                                                                                           \
        while (i_ < (found) &&                                                                                \
               ((perf)[i_].status != CUDNN_STATUS_SUCCESS || (perf)[i_].memory > (t)->workspace_size))        \
            i_++;                                                                                             \
        if (i_ == (found))                                                                                    \
            die(1, "cuDNN has no usable %s algorithm for a %dx%d conv at batch %d", direction, (p)->c_in,       \
                (p)->c_out, (p)->batch);                                                                      \
        (perf)[i_].algo;                                                                                      \
    })

enum { N_CONV_ALGOS = 16 };

// Times every algorithm on these shapes (on the scratch buffers x, w, y) and keeps the fastest.
static void find_conv_algos(Trainer *t, ConvPlan *p, __half *x, __half *w, __half *y) {
    int found = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[N_CONV_ALGOS];
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(t->cudnn, p->x_desc, x, p->w_desc, w, p->conv_desc, p->y_desc,
                                                       y, N_CONV_ALGOS, &found, fwd, t->workspace, t->workspace_size));
    p->fwd_algo = FIRST_USABLE_ALGO(fwd, found, t, p, "forward");
    cudnnConvolutionBwdDataAlgoPerf_t bwd_data[N_CONV_ALGOS];
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(t->cudnn, p->w_desc, w, p->y_desc, y, p->conv_desc,
                                                            p->x_desc, x, N_CONV_ALGOS, &found, bwd_data,
                                                            t->workspace, t->workspace_size));
    p->bwd_data_algo = FIRST_USABLE_ALGO(bwd_data, found, t, p, "backward-data");
    cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[N_CONV_ALGOS];
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(t->cudnn, p->x_desc, x, p->y_desc, y, p->conv_desc,
                                                              p->w_desc, w, N_CONV_ALGOS, &found, bwd_filter,
                                                              t->workspace, t->workspace_size));
    p->bwd_filter_algo = FIRST_USABLE_ALGO(bwd_filter, found, t, p, "backward-filter");
}

// cuDNN's heuristic choice for these shapes: its best-ranked algorithm that fits the workspace.
static void pick_conv_algos(Trainer *t, ConvPlan *p) {
    int found = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[N_CONV_ALGOS];
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(t->cudnn, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                       N_CONV_ALGOS, &found, fwd));
    p->fwd_algo = FIRST_USABLE_ALGO(fwd, found, t, p, "forward");
    cudnnConvolutionBwdDataAlgoPerf_t bwd_data[N_CONV_ALGOS];
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(t->cudnn, p->w_desc, p->y_desc, p->conv_desc, p->x_desc,
                                                            N_CONV_ALGOS, &found, bwd_data));
    p->bwd_data_algo = FIRST_USABLE_ALGO(bwd_data, found, t, p, "backward-data");
    cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[N_CONV_ALGOS];
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(t->cudnn, p->x_desc, p->y_desc, p->conv_desc,
                                                              p->w_desc, N_CONV_ALGOS, &found, bwd_filter));
    p->bwd_filter_algo = FIRST_USABLE_ALGO(bwd_filter, found, t, p, "backward-filter");
}

static ConvPlan make_conv_plan(Trainer *t, int batch, int c_in, int c_out, int side,
                               __half *x, __half *w, __half *y) {
    ConvPlan p = {.batch = batch, .c_in = c_in, .c_out = c_out, .side = side};
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.x_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.y_desc));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p.w_desc));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p.conv_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.x_desc, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, batch, c_in, side, side));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.y_desc, CUDNN_TENSOR_NHWC, CUDNN_DATA_HALF, batch, c_out, side, side));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(p.w_desc, CUDNN_DATA_HALF, CUDNN_TENSOR_NHWC, c_out, c_in, 3, 3));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p.conv_desc, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv_desc, CUDNN_TENSOR_OP_MATH));

    if (t->conv_algo == CONV_ALGO_FIND) find_conv_algos(t, &p, x, w, y);
    else pick_conv_algos(t, &p);
    return p;
}

// The plans for a batch size, made on first use.
static PlanSet *plans_for(Trainer *t, int batch) {
    for (int i = 0; i < t->n_plan_sets; i++)
        if (t->plan_sets[i].batch == batch) return &t->plan_sets[i];
    if (t->n_plan_sets == MAX_PLAN_SETS) die(1, "internal error: too many batch sizes");
    PlanSet *set = &t->plan_sets[t->n_plan_sets++];
    set->batch = batch;
    const NetLayout *l = &t->layout;
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < l->depth; j++) {
            // Scratch buffers of the right sizes: the backward scratch is the largest.
            set->conv[g][j] = make_conv_plan(t, batch, net_conv_in(l->widths, g, j), l->widths[g], conv_side(g, j),
                                             t->d_act, conv_half_ptr(t, t->conv_half, g, j), t->d_conv);
        }
    return set;
}

static void destroy_plans(Trainer *t) {
    for (int i = 0; i < t->n_plan_sets; i++)
        for (int g = 0; g < 3; g++)
            for (int j = 0; j < t->layout.depth; j++) {
                ConvPlan *p = &t->plan_sets[i].conv[g][j];
                cudnnDestroyTensorDescriptor(p->x_desc);
                cudnnDestroyTensorDescriptor(p->y_desc);
                cudnnDestroyFilterDescriptor(p->w_desc);
                cudnnDestroyConvolutionDescriptor(p->conv_desc);
            }
    t->n_plan_sets = 0;
}

static void alloc_activations(Activations *a, const NetLayout *l, int n) {
    size_t b = (size_t)n;
    a->x = gpu_alloc(b * 3 * 32 * 32 * sizeof(__half));
    a->whiten_out = gpu_alloc(b * 31 * 31 * WHITEN_WIDTH * sizeof(__half));
    for (int g = 0; g < 3; g++) {
        size_t c = l->widths[g], in_side = group_in_side(g), side = group_out_side(g);
        a->pooled[g] = gpu_alloc(b * side * side * c * sizeof(__half));
        a->pool_argmax[g] = gpu_alloc(b * side * side * c);
        for (int j = 0; j < l->depth; j++) {
            size_t conv_rows = j == 0 ? b * in_side * in_side : b * side * side;
            a->conv_out[g][j] = gpu_alloc(conv_rows * c * sizeof(__half));
            a->act[g][j] = gpu_alloc(b * side * side * c * sizeof(__half));
            a->bn_mean[g][j] = gpu_alloc(c * sizeof(float));
            a->bn_rstd[g][j] = gpu_alloc(c * sizeof(float));
        }
    }
    a->features = gpu_alloc(b * l->widths[2] * sizeof(float));
    a->feature_argmax = gpu_alloc(b * l->widths[2]);
    a->logits = gpu_alloc(b * NET_CLASSES * sizeof(float));
    a->labels = gpu_alloc(b);
}

static void free_activations(Activations *a, int depth) {
    cudaFree(a->x);
    cudaFree(a->whiten_out);
    for (int g = 0; g < 3; g++) {
        cudaFree(a->pooled[g]);
        cudaFree(a->pool_argmax[g]);
        for (int j = 0; j < depth; j++) {
            cudaFree(a->conv_out[g][j]);
            cudaFree(a->act[g][j]);
            cudaFree(a->bn_mean[g][j]);
            cudaFree(a->bn_rstd[g][j]);
        }
    }
    cudaFree(a->features);
    cudaFree(a->feature_argmax);
    cudaFree(a->logits);
    cudaFree(a->labels);
}

// Segments of the flat buffer (kernels.h): whitening bias, convs, head, BN biases.
static void set_segments(Trainer *t) {
    const NetLayout *l = &t->layout;
    const TensorInfo *wb = &l->tensors[1], *first_conv = &l->tensors[l->first_conv];
    const TensorInfo *last_conv = &l->tensors[l->first_conv + l->n_convs - 1], *head = &l->tensors[l->head];
    ParamBuffers *pb = &t->pb;
    pb->begin[SEG_WHITEN_B] = wb->offset;
    pb->end[SEG_WHITEN_B] = wb->offset + wb->size;
    pb->begin[SEG_CONV] = first_conv->offset;
    pb->end[SEG_CONV] = last_conv->offset + last_conv->size;
    pb->begin[SEG_HEAD] = head->offset;
    pb->end[SEG_HEAD] = head->offset + head->size;
    pb->begin[SEG_BN] = l->tensors[l->first_bn].offset;
    pb->end[SEG_BN] = l->n_params;
    pb->params = t->params;
    pb->momentum = t->momentum;
    pb->grads = t->grads;
    pb->conv_grads = t->conv_grads;
    pb->conv_half = t->conv_half;
}

static Trainer *trainer_create(const Recipe *recipe, const Cifar10 *data, int n_train, int n_test,
                               ConvAlgoChoice conv_algo) {
    Trainer *t = host_alloc(sizeof(Trainer));
    t->recipe = *recipe;
    t->conv_algo = conv_algo;
    net_layout_init(&t->layout, recipe->widths, recipe->depth);
    const NetLayout *l = &t->layout;
    t->max_batch = recipe->batch_size > EVAL_BATCH ? recipe->batch_size : EVAL_BATCH;
    size_t n = l->n_params, b = (size_t)t->max_batch;
    t->params = gpu_alloc(n * sizeof(float));
    t->momentum = gpu_alloc(n * sizeof(float));
    t->grads = gpu_alloc(n * sizeof(float));
    t->ema_params = gpu_alloc(n * sizeof(float));
    size_t n_conv = l->tensors[l->head].offset - l->tensors[l->first_conv].offset;
    t->conv_half = gpu_alloc(n_conv * sizeof(__half));
    t->conv_grads = gpu_alloc(n_conv * sizeof(__half));
    t->n_running = 0;
    for (int g = 0; g < 3; g++) t->n_running += 2 * (size_t)l->depth * l->widths[g];
    t->running = gpu_alloc(t->n_running * sizeof(float));
    t->ema_running = gpu_alloc(t->n_running * sizeof(float));
    set_segments(t);
    alloc_activations(&t->acts, l, t->max_batch);

    size_t largest = b * 31 * 31 * (l->widths[0] > WHITEN_WIDTH ? l->widths[0] : WHITEN_WIDTH);
    t->d_act = gpu_alloc(largest * sizeof(__half));
    t->d_conv = gpu_alloc(largest * sizeof(__half));
    size_t largest_group_act = 0;
    for (int g = 0; g < 3; g++) {
        size_t act = (size_t)group_out_side(g) * group_out_side(g) * l->widths[g];
        if (act > largest_group_act) largest_group_act = act;
    }
    t->d_residual = gpu_alloc(b * largest_group_act * sizeof(__half));
    t->d_logits = gpu_alloc(b * NET_CLASSES * sizeof(float));
    t->d_features = gpu_alloc(b * l->widths[2] * sizeof(float));
    int widest = l->widths[0] > l->widths[1] ? l->widths[0] : l->widths[1];
    if (l->widths[2] > widest) widest = l->widths[2];
    size_t partial_floats = (size_t)STATS_MAX_BLOCKS * 2 * (widest > COV_ENTRIES ? widest : COV_ENTRIES);
    size_t cov_floats = (size_t)patch_cov_blocks(WHITEN_IMAGES) * COV_ENTRIES;
    t->partials = gpu_alloc((partial_floats > cov_floats ? partial_floats : cov_floats) * sizeof(float));
    t->bn_sums = gpu_alloc(2 * (size_t)widest * sizeof(float));
    t->loss_sum = gpu_alloc(sizeof(double));
    t->correct = gpu_alloc(sizeof(int));
    if (recipe->muon) {
        size_t largest_conv = 0, largest_gram = 0;
        for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
            const TensorInfo *ti = &l->tensors[id];
            size_t cols = ti->size / ti->c_out, side = cols < (size_t)ti->c_out ? cols : (size_t)ti->c_out;
            if (ti->size > largest_conv) largest_conv = ti->size;
            if (side * side > largest_gram) largest_gram = side * side;
        }
        t->ns_x = gpu_alloc(largest_conv * sizeof(__nv_bfloat16));
        t->ns_next = gpu_alloc(largest_conv * sizeof(__nv_bfloat16));
        t->ns_gram = gpu_alloc(largest_gram * sizeof(__nv_bfloat16));
        t->ns_poly = gpu_alloc(largest_gram * sizeof(__nv_bfloat16));
        t->sum_sq = gpu_alloc(2 * sizeof(float));
    }

    t->n_train = n_train;
    t->n_test = n_test;
    t->train_images = gpu_alloc((size_t)n_train * CIFAR10_IMAGE_BYTES);
    t->train_labels = gpu_alloc(n_train);
    t->test_images = gpu_alloc((size_t)n_test * CIFAR10_IMAGE_BYTES);
    t->test_labels = gpu_alloc(n_test);
    CUDA_CHECK(cudaMemcpy(t->train_images, data->train.images, (size_t)n_train * CIFAR10_IMAGE_BYTES, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(t->train_labels, data->train.labels, n_train, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(t->test_images, data->test.images, (size_t)n_test * CIFAR10_IMAGE_BYTES, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(t->test_labels, data->test.labels, n_test, cudaMemcpyHostToDevice));

    CUDA_CHECK(cudaStreamCreate(&t->stream));
    CUDNN_CHECK(cudnnCreate(&t->cudnn));
    CUDNN_CHECK(cudnnSetStream(t->cudnn, t->stream));
    CUBLAS_CHECK(cublasCreate(&t->cublas));
    CUBLAS_CHECK(cublasSetStream(t->cublas, t->stream));
    t->workspace_size = (size_t)512 << 20;
    t->workspace = gpu_alloc(t->workspace_size);
    // Scratch contents for the algorithm search: any finite values.
    CUDA_CHECK(cudaMemset(t->d_act, 0, largest * sizeof(__half)));
    CUDA_CHECK(cudaMemset(t->conv_half, 0, n_conv * sizeof(__half)));
    plans_for(t, recipe->batch_size);
    plans_for(t, EVAL_BATCH < n_test ? EVAL_BATCH : n_test);
    return t;
}

static void trainer_free(Trainer *t) {
    destroy_plans(t);
    free_activations(&t->acts, t->layout.depth);
    void *buffers[] = {t->params, t->momentum, t->grads, t->ema_params, t->conv_half, t->conv_grads,
                       t->running, t->ema_running, t->d_act, t->d_conv, t->d_residual, t->d_logits,
                       t->d_features, t->partials, t->bn_sums, t->loss_sum, t->correct, t->ns_x, t->ns_next,
                       t->ns_gram, t->ns_poly, t->sum_sq, t->train_images, t->train_labels, t->test_images,
                       t->test_labels, t->workspace};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) cudaFree(buffers[i]);
    cudnnDestroy(t->cudnn);
    cublasDestroy(t->cublas);
    cudaStreamDestroy(t->stream);
    free(t);
}

// ----------------------------------------------------------------------------
// Initialization: weights from the seed (net.h), then the whitening conv from the patch
// covariance of the first 5,000 training images.

static void init_params(Trainer *t, uint64_t seed) {
    const NetLayout *l = &t->layout;
    const Recipe *r = &t->recipe;
    cudaStream_t s = t->stream;
    CUDA_CHECK(cudaMemsetAsync(t->params, 0, l->n_params * sizeof(float), s));
    CUDA_CHECK(cudaMemsetAsync(t->momentum, 0, l->n_params * sizeof(float), s));
    for (int id = 0; id < l->n_tensors; id++) {
        const TensorInfo *ti = &l->tensors[id];
        float *p = param_ptr(t, t->params, id);
        if (ti->kind == TENSOR_CONV) CUDA_CHECK(launch_init_conv(p, id, ti->c_out, ti->c_in, seed, s));
        if (ti->kind == TENSOR_HEAD) CUDA_CHECK(launch_init_uniform(p, ti->size, id, ti->c_in, seed, s));
        if (ti->kind == TENSOR_WHITEN_B && r->muon)
            CUDA_CHECK(launch_init_uniform(p, ti->size, id, 3 * WHITEN_KERNEL * WHITEN_KERNEL, seed, s));
    }
    if (r->muon) {  // the head rescaled to unit (unbiased) standard deviation: 10 x w3 values
        const TensorInfo *head = &l->tensors[l->head];
        float *host = host_alloc(head->size * sizeof(float));
        CUDA_CHECK(cudaMemcpyAsync(host, param_ptr(t, t->params, l->head), head->size * sizeof(float), cudaMemcpyDeviceToHost, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        net_scale_to_unit_std(host, head->size);
        CUDA_CHECK(cudaMemcpy(param_ptr(t, t->params, l->head), host, head->size * sizeof(float), cudaMemcpyHostToDevice));
        free(host);
    }
    float *running = host_alloc(t->n_running * sizeof(float));
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < l->depth; j++)
            for (int c = 0; c < l->widths[g]; c++) running[running_offset(t, g, j) + l->widths[g] + c] = 1.0f;
    CUDA_CHECK(cudaMemcpyAsync(t->running, running, t->n_running * sizeof(float), cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    free(running);
}

// Patch covariance on the GPU; the 12x12 eigendecomposition and the filters
// k = v_k / sqrt(lambda_k + 5e-4) and their negations on the host (reference.c).
// Then the lookahead state starts from the initialized network.
static void init_whitening(Trainer *t) {
    int n = t->n_train < WHITEN_IMAGES ? t->n_train : WHITEN_IMAGES, blocks = patch_cov_blocks(n);
    CUDA_CHECK(launch_patch_covariance(t->partials, t->train_images, n, t->stream));
    float *partials = host_alloc((size_t)blocks * COV_ENTRIES * sizeof(float));
    CUDA_CHECK(cudaMemcpyAsync(partials, t->partials, (size_t)blocks * COV_ENTRIES * sizeof(float), cudaMemcpyDeviceToHost, t->stream));
    CUDA_CHECK(cudaStreamSynchronize(t->stream));
    double cov[COV_DIM * COV_DIM], n_patches = (double)n * 31 * 31;
    for (int i = 0, e = 0; i < COV_DIM; i++)
        for (int j = i; j < COV_DIM; j++, e++) {
            double sum = 0.0;
            for (int b = 0; b < blocks; b++) sum += partials[(size_t)b * COV_ENTRIES + e];
            cov[i * COV_DIM + j] = cov[j * COV_DIM + i] = sum / n_patches;
        }
    free(partials);
    float weights[WHITEN_WIDTH * COV_DIM];
    ref_whitening_from_covariance(weights, cov, 5e-4);
    CUDA_CHECK(cudaMemcpyAsync(param_ptr(t, t->params, 0), weights, sizeof weights, cudaMemcpyHostToDevice, t->stream));
    CUDA_CHECK(cudaMemcpyAsync(t->ema_params, t->params, t->layout.n_params * sizeof(float), cudaMemcpyDeviceToDevice, t->stream));
    CUDA_CHECK(cudaMemcpyAsync(t->ema_running, t->running, t->n_running * sizeof(float), cudaMemcpyDeviceToDevice, t->stream));
    CUDA_CHECK(launch_refresh_conv_half(&t->pb, t->stream));
}

// ----------------------------------------------------------------------------
// Forward pass. Training mode normalizes with batch statistics (and updates the running
// stats); eval mode uses the running stats, whose mean/rstd prepare_eval_bn computed.

static void conv_forward(Trainer *t, const ConvPlan *p, const __half *x, const __half *w, __half *y) {
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionForward(t->cudnn, &one, p->x_desc, x, p->w_desc, w, p->conv_desc, p->fwd_algo,
                                        t->workspace, t->workspace_size, &zero, p->y_desc, y));
}

// BN statistics of conv (g, j) from the partial sums just computed, in training mode.
static void bn_train_stats(Trainer *t, int g, int j, int rows) {
    int c = t->layout.widths[g];
    float *running = t->running + running_offset(t, g, j);
    CUDA_CHECK(launch_bn_finalize(t->acts.bn_mean[g][j], t->acts.bn_rstd[g][j], running, running + c, t->partials,
                                  stats_blocks(rows, c), c, rows, (float)t->recipe.bn_eps, (float)t->recipe.bn_keep,
                                  t->stream));
}

static void prepare_eval_bn(Trainer *t) {
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < t->layout.depth; j++) {
            int c = t->layout.widths[g];
            float *running = t->running + running_offset(t, g, j);
            CUDA_CHECK(launch_bn_eval_params(t->acts.bn_mean[g][j], t->acts.bn_rstd[g][j], running, running + c, c,
                                             (float)t->recipe.bn_eps, t->stream));
        }
}

// From acts.x (n images) to acts.features (n x w3).
static void forward_features(Trainer *t, int n, int train) {
    const NetLayout *l = &t->layout;
    Activations *a = &t->acts;
    PlanSet *plans = plans_for(t, n);
    cudaStream_t s = t->stream;
    CUDA_CHECK(launch_whiten_forward(a->whiten_out, a->x, param_ptr(t, t->params, 0), param_ptr(t, t->params, 1), n, s));
    const __half *x = a->whiten_out;
    for (int g = 0; g < 3; g++) {
        int c = l->widths[g], side = group_out_side(g), rows = n * side * side;
        for (int j = 0; j < l->depth; j++) {
            conv_forward(t, &plans->conv[g][j], j == 0 ? x : a->act[g][j - 1], conv_half_ptr(t, t->conv_half, g, j),
                         a->conv_out[g][j]);
            const __half *bn_in = a->conv_out[g][j];
            if (j == 0) {  // pool, with the statistics of the pooled values
                CUDA_CHECK(launch_maxpool2_stats(a->pooled[g], a->pool_argmax[g], t->partials, a->conv_out[g][0], n,
                                                 group_in_side(g), group_in_side(g), c, s));
                bn_in = a->pooled[g];
            } else if (train) {
                CUDA_CHECK(launch_channel_stats(t->partials, bn_in, rows, c, s));
            }
            if (train) bn_train_stats(t, g, j, rows);
            const __half *residual = j == 2 ? a->act[g][0] : NULL;
            CUDA_CHECK(launch_bn_gelu_forward(a->act[g][j], bn_in, residual, a->bn_mean[g][j], a->bn_rstd[g][j],
                                              param_ptr(t, t->params, net_bn_id(l, g, j)), rows, c, s));
        }
        x = a->act[g][l->depth - 1];
    }
    CUDA_CHECK(launch_maxpool_global(a->features, a->feature_argmax, x, n, group_out_side(2), l->widths[2], s));
}

// ----------------------------------------------------------------------------
// Backward pass: from the loss gradient to every parameter gradient.

static void bn_gelu_backward(Trainer *t, int g, int j, int n, const __half *d_act) {
    const NetLayout *l = &t->layout;
    Activations *a = &t->acts;
    cudaStream_t s = t->stream;
    int c = l->widths[g], side = group_out_side(g), rows = n * side * side;
    const __half *bn_in = j == 0 ? a->pooled[g] : a->conv_out[g][j];
    const __half *residual = j == 2 ? a->act[g][0] : NULL;
    const float *bias = param_ptr(t, t->params, net_bn_id(l, g, j));
    CUDA_CHECK(launch_bn_gelu_backward_reduce(t->partials, d_act, bn_in, residual, a->bn_mean[g][j], a->bn_rstd[g][j],
                                              bias, rows, c, s));
    CUDA_CHECK(launch_bn_backward_finalize(param_ptr(t, t->grads, net_bn_id(l, g, j)), t->bn_sums, t->partials,
                                           stats_blocks(rows, c), c, rows, s));
    if (j == 0)
        CUDA_CHECK(launch_bn_gelu_backward_apply_pool(t->d_conv, d_act, bn_in, a->pool_argmax[g], a->bn_mean[g][j],
                                                      a->bn_rstd[g][j], bias, t->bn_sums, n, group_in_side(g),
                                                      group_in_side(g), c, s));
    else
        CUDA_CHECK(launch_bn_gelu_backward_apply(t->d_conv, j == 2 ? t->d_residual : NULL, d_act, bn_in, residual,
                                                 a->bn_mean[g][j], a->bn_rstd[g][j], bias, t->bn_sums, rows, c, s));
}

// Gradients of conv (g, j) from d_conv: its weight, and (when wanted) its input, into
// d_input, added to what is there when accumulate (the residual join).
static void conv_backward(Trainer *t, const ConvPlan *p, int g, int j, const __half *input, __half *d_input,
                          int accumulate) {
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(t->cudnn, &one, p->x_desc, input, p->y_desc, t->d_conv, p->conv_desc,
                                               p->bwd_filter_algo, t->workspace, t->workspace_size, &zero, p->w_desc,
                                               conv_half_ptr(t, t->conv_grads, g, j)));
    if (d_input)
        CUDNN_CHECK(cudnnConvolutionBackwardData(t->cudnn, &one, p->w_desc, conv_half_ptr(t, t->conv_half, g, j),
                                                 p->y_desc, t->d_conv, p->conv_desc, p->bwd_data_algo, t->workspace,
                                                 t->workspace_size, accumulate ? &one : &zero, p->x_desc, d_input));
}

static void backward(Trainer *t, int n, int whiten_bias_grad) {
    const NetLayout *l = &t->layout;
    Activations *a = &t->acts;
    PlanSet *plans = plans_for(t, n);
    cudaStream_t s = t->stream;
    int w3 = l->widths[2];
    CUDA_CHECK(launch_loss(t->d_logits, t->loss_sum, t->correct, a->logits, a->labels, n,
                           (float)t->recipe.label_smoothing, s));
    CUDA_CHECK(launch_head_backward(param_ptr(t, t->grads, l->head), t->d_features, t->d_logits, a->features,
                                    param_ptr(t, t->params, l->head), n, w3, (float)recipe_logit_scale(&t->recipe), s));
    CUDA_CHECK(launch_maxpool_global_backward(t->d_act, t->d_features, a->feature_argmax, n, group_out_side(2), w3, s));
    // d_act holds the gradient of the activation being processed. A conv's input gradient
    // may overwrite it (already consumed), except at 96's residual join, where it is added
    // to the branch gradient that bn_gelu_backward left in d_residual.
    __half *d_act = t->d_act;
    for (int g = 2; g >= 0; g--)
        for (int j = l->depth - 1; j >= 0; j--) {
            bn_gelu_backward(t, g, j, n, d_act);
            const __half *input = j > 0 ? a->act[g][j - 1] : g > 0 ? a->act[g - 1][l->depth - 1] : a->whiten_out;
            int residual_join = l->depth == 3 && j == 1;
            __half *d_input = residual_join ? t->d_residual : t->d_act;
            int wants_d_input = g > 0 || j > 0 || whiten_bias_grad;
            conv_backward(t, &plans->conv[g][j], g, j, input, wants_d_input ? d_input : NULL, residual_join);
            d_act = d_input;
        }
    if (whiten_bias_grad) {
        CUDA_CHECK(launch_whiten_bias_backward(t->partials, a->x, d_act, param_ptr(t, t->params, 0),
                                               param_ptr(t, t->params, 1), n, s));
        CUDA_CHECK(launch_reduce_partials(param_ptr(t, t->grads, 1), t->partials,
                                          stats_blocks(n * 31 * 31, WHITEN_WIDTH), WHITEN_WIDTH, s));
    }
}

// ----------------------------------------------------------------------------
// Optimizer: one fused Nesterov SGD launch over the flat buffer (kernels.h), lookahead.

static void sgd_step(Trainer *t, int step, int total_steps, int whiten_bias_trainable) {
    const Recipe *r = &t->recipe;
    double s = recipe_lr_multiplier(r, step, total_steps);
    double lr = recipe_sgd_lr(r), bn_lr = recipe_bn_bias_lr(r), wd = recipe_sgd_wd(r);
    SgdGroup groups[N_SEGMENTS] = {
        [SEG_WHITEN_B] = {(float)(lr * s), (float)(wd / lr), whiten_bias_trainable},
        [SEG_CONV] = {(float)(lr * s), (float)(wd / lr), 1},
        [SEG_HEAD] = {(float)(lr * s), (float)(wd / lr), 1},
        [SEG_BN] = {(float)(bn_lr * s), (float)(wd / bn_lr), 1},
    };
    CUDA_CHECK(launch_sgd_step(&t->pb, groups, (float)r->momentum, t->stream));
}

// bf16 GEMM through cuBLAS with fp32 accumulation (column-major, as cuBLAS sees it).
static void gemm_bf16(Trainer *t, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k, float alpha,
                      const __nv_bfloat16 *a, int lda, const __nv_bfloat16 *b, int ldb, float beta,
                      __nv_bfloat16 *c, int ldc) {
    CUBLAS_CHECK(cublasGemmEx(t->cublas, op_a, op_b, m, n, k, &alpha, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb, &beta,
                              c, CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Newton-Schulz on the row-major rows x cols matrix at t->ns_x (already divided by its
// norm), on its wide orientation: A = X X^T; B = b A + c A A; X = a X + B X. cuBLAS sees
// the row-major X as the column-major M = X^T (cols x rows). Wide X: A = M^T M and
// M <- M B + a M. Tall X (work on X^T = M): A = M M^T and M <- B M + a M.
static void newton_schulz(Trainer *t, int rows, int cols, int steps) {
    const float a = 3.4445f, b = -4.7750f, c = 2.0315f;
    int wide = rows <= cols, p = wide ? rows : cols;
    size_t bytes = (size_t)rows * cols * sizeof(__nv_bfloat16), gram_bytes = (size_t)p * p * sizeof(__nv_bfloat16);
    for (int step = 0; step < steps; step++) {
        __nv_bfloat16 *m = t->ns_x, *next = t->ns_next;
        if (wide) gemm_bf16(t, CUBLAS_OP_T, CUBLAS_OP_N, p, p, cols, 1.0f, m, cols, m, cols, 0.0f, t->ns_gram, p);
        else gemm_bf16(t, CUBLAS_OP_N, CUBLAS_OP_T, p, p, rows, 1.0f, m, cols, m, cols, 0.0f, t->ns_gram, p);
        CUDA_CHECK(cudaMemcpyAsync(t->ns_poly, t->ns_gram, gram_bytes, cudaMemcpyDeviceToDevice, t->stream));
        gemm_bf16(t, CUBLAS_OP_N, CUBLAS_OP_N, p, p, p, c, t->ns_gram, p, t->ns_gram, p, b, t->ns_poly, p);
        CUDA_CHECK(cudaMemcpyAsync(next, m, bytes, cudaMemcpyDeviceToDevice, t->stream));
        if (wide) gemm_bf16(t, CUBLAS_OP_N, CUBLAS_OP_N, cols, rows, rows, 1.0f, m, cols, t->ns_poly, p, a, next, cols);
        else gemm_bf16(t, CUBLAS_OP_N, CUBLAS_OP_N, cols, rows, cols, 1.0f, t->ns_poly, p, m, cols, a, next, cols);
        t->ns_x = next;
        t->ns_next = m;
    }
}

// The Muon variant's step: Nesterov SGD for the whitening bias (its lr decaying to 0 over
// its training steps), BN biases and head; Muon for each conv filter.
static void muon_step(Trainer *t, int step, int total_steps, int whiten_bias_steps) {
    const Recipe *r = &t->recipe;
    const NetLayout *l = &t->layout;
    double decay = 1.0 - (double)step / total_steps;
    float c_bias = (float)(r->sgd_wd / r->sgd_bias_lr), c_head = (float)(r->sgd_wd / r->sgd_head_lr);
    SgdGroup groups[N_SEGMENTS] = {
        [SEG_WHITEN_B] = {(float)(r->sgd_bias_lr * (1.0 - (double)step / whiten_bias_steps)), c_bias,
                          step < whiten_bias_steps},
        [SEG_CONV] = {0.0f, 0.0f, 0},
        [SEG_HEAD] = {(float)(r->sgd_head_lr * decay), c_head, 1},
        [SEG_BN] = {(float)(r->sgd_bias_lr * decay), c_bias, 1},
    };
    CUDA_CHECK(launch_sgd_step(&t->pb, groups, (float)r->momentum, t->stream));
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        size_t conv_index = ti->offset - t->pb.begin[SEG_CONV];
        int cols = (int)(ti->size / ti->c_out);
        CUDA_CHECK(launch_muon_momentum(t->ns_x, t->momentum + ti->offset, t->conv_grads + conv_index, ti->size,
                                        (float)r->muon_momentum, t->stream));
        CUDA_CHECK(launch_sum_squares_bf16(t->sum_sq, t->ns_x, ti->size, t->stream));
        CUDA_CHECK(launch_scale_by_inverse_norm(t->ns_x, ti->size, t->sum_sq, 1e-7f, t->stream));
        newton_schulz(t, ti->c_out, cols, r->muon_ns_steps);
        CUDA_CHECK(launch_sum_squares(t->sum_sq + 1, t->params + ti->offset, ti->size, t->stream));
        CUDA_CHECK(launch_muon_apply(t->params + ti->offset, t->conv_half + conv_index, t->ns_x, ti->size, ti->c_out,
                                     t->sum_sq + 1, (float)(r->muon_lr * decay), t->stream));
    }
}

static void lookahead(Trainer *t, double decay) {
    CUDA_CHECK(launch_lookahead(&t->pb, t->ema_params, t->running, t->ema_running, t->n_running, (float)decay,
                                t->stream));
}

// ----------------------------------------------------------------------------
// Evaluation: test-time augmentation (recipe.md), batched over the test set.

typedef struct {
    int flip, shift;
    float weight;
} TtaView;

// The views of a TTA level and their weights: level 0 the image; level 1 the mean over
// the mirror; level 2 half of level 1 plus a quarter each of level 1 on the images shifted
// one pixel up-left and down-right.
static int tta_views(int level, TtaView views[6]) {
    if (level == 0) {
        views[0] = (TtaView){0, 0, 1.0f};
        return 1;
    }
    int n = 0;
    const int shifts[3] = {0, -1, 1};
    const float shift_weights[3] = {0.5f, 0.25f, 0.25f};
    for (int i = 0; i < (level == 2 ? 3 : 1); i++)
        for (int flip = 0; flip < 2; flip++)
            views[n++] = (TtaView){flip, shifts[i], (level == 2 ? shift_weights[i] : 1.0f) * 0.5f};
    return n;
}

// Test accuracy at a TTA level; the caller times it or not.
static void evaluate_async(Trainer *t, int level) {
    TtaView views[6];
    int n_views = tta_views(level, views);
    const NetLayout *l = &t->layout;
    float scale = (float)recipe_logit_scale(&t->recipe);
    prepare_eval_bn(t);
    CUDA_CHECK(cudaMemsetAsync(t->correct, 0, sizeof(int), t->stream));
    for (int start = 0; start < t->n_test; start += EVAL_BATCH) {
        int n = t->n_test - start < EVAL_BATCH ? t->n_test - start : EVAL_BATCH;
        for (int v = 0; v < n_views; v++) {
            CUDA_CHECK(launch_eval_loader(t->acts.x, t->test_images + (size_t)start * CIFAR10_IMAGE_BYTES, n,
                                          views[v].flip, views[v].shift, t->stream));
            forward_features(t, n, 0);
            CUDA_CHECK(launch_head_forward(t->acts.logits, t->acts.features, param_ptr(t, t->params, l->head), n,
                                           l->widths[2], scale, views[v].weight, v == 0 ? 0.0f : 1.0f, t->stream));
        }
        CUDA_CHECK(launch_count_correct(t->correct, t->acts.logits, t->test_labels + start, n, t->stream));
    }
}

static double read_accuracy(Trainer *t) {
    int correct = 0;
    CUDA_CHECK(cudaMemcpyAsync(&correct, t->correct, sizeof(int), cudaMemcpyDeviceToHost, t->stream));
    CUDA_CHECK(cudaStreamSynchronize(t->stream));
    return (double)correct / t->n_test;
}

// ----------------------------------------------------------------------------
// One training run.

typedef struct {
    int epoch;
    double train_loss, train_acc, test_acc, time_s;
} EpochLog;

typedef struct {
    uint64_t seed;
    double accuracy, time_s, wall_s;
    int n_epochs;
    EpochLog *epochs;
} RunResult;

static double wall_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// GPU seconds between two recorded events (waits for the second).
static double event_seconds(cudaEvent_t start, cudaEvent_t stop) {
    float ms = 0.0f;
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return 1e-3 * ms;
}

static void train_step(Trainer *t, int step, int total_steps, const Options *o) {
    const Recipe *r = &t->recipe;
    int spe = recipe_steps_per_epoch(r, t->n_train), epoch = step / spe, n = r->batch_size;
    int whiten_bias_steps = r->whiten_bias_epochs * spe;
    int whiten_bias_on = r->muon ? step < whiten_bias_steps : epoch < r->whiten_bias_epochs;
    CUDA_CHECK(launch_train_loader(t->acts.x, t->acts.labels, t->train_images, t->train_labels, t->n_train, n,
                                   step % spe, epoch, o->seed, r->translate, (int)o->translate_mode, r->cutout,
                                   t->stream));
    forward_features(t, n, 1);
    CUDA_CHECK(launch_head_forward(t->acts.logits, t->acts.features, param_ptr(t, t->params, t->layout.head), n,
                                   r->widths[2], (float)recipe_logit_scale(r), 1.0f, 0.0f, t->stream));
    backward(t, n, whiten_bias_on);
    if (r->muon)
        muon_step(t, step, total_steps, whiten_bias_steps);
    else
        sgd_step(t, step, total_steps, whiten_bias_on);
    if (r->lookahead_every && (step + 1) % r->lookahead_every == 0)
        lookahead(t, recipe_lookahead_decay(r, step + 1, total_steps));
    if (r->lookahead_every && step + 1 == total_steps) lookahead(t, 1.0);  // w = ema
}

// Trains from scratch with seed o->seed; max_steps < 0 runs the whole recipe (the warm-up
// run uses a few steps). GPU time covers the whitening init, the training steps and the
// final TTA evaluation, not the per-epoch logging evaluations.
static RunResult run_training(Trainer *t, const Options *o, int max_steps, int log) {
    const Recipe *r = &t->recipe;
    int spe = recipe_steps_per_epoch(r, t->n_train), total = recipe_total_steps(r, t->n_train);
    int steps = max_steps >= 0 && max_steps < total ? max_steps : total;
    RunResult result = {.seed = o->seed, .epochs = host_alloc(((size_t)steps / spe + 2) * sizeof(EpochLog))};
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    double wall_start = wall_clock();

    init_params(t, o->seed);
    CUDA_CHECK(cudaEventRecord(start, t->stream));
    init_whitening(t);
    CUDA_CHECK(cudaEventRecord(stop, t->stream));
    result.time_s += event_seconds(start, stop);

    for (int step = 0; step < steps;) {
        int epoch = step / spe, epoch_end = (epoch + 1) * spe < steps ? (epoch + 1) * spe : steps;
        CUDA_CHECK(cudaMemsetAsync(t->loss_sum, 0, sizeof(double), t->stream));
        CUDA_CHECK(cudaMemsetAsync(t->correct, 0, sizeof(int), t->stream));
        CUDA_CHECK(cudaEventRecord(start, t->stream));
        int first = step;
        for (; step < epoch_end; step++) train_step(t, step, total, o);
        CUDA_CHECK(cudaEventRecord(stop, t->stream));
        result.time_s += event_seconds(start, stop);

        double loss_sum = 0.0;
        int correct = 0, n_seen = (step - first) * r->batch_size;
        CUDA_CHECK(cudaMemcpy(&loss_sum, t->loss_sum, sizeof(double), cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(&correct, t->correct, sizeof(int), cudaMemcpyDeviceToHost));
        if (!isfinite(loss_sum))
            die(1, "training diverged: the loss is %f in epoch %d (seed %llu); check the recipe's learning rate "
                   "and batch size", loss_sum, epoch + 1, (unsigned long long)o->seed);
        EpochLog *e = &result.epochs[result.n_epochs++];
        e->epoch = epoch + 1;
        e->train_loss = loss_sum / n_seen;
        e->train_acc = (double)correct / n_seen;
        e->time_s = result.time_s;
        evaluate_async(t, 0);
        e->test_acc = read_accuracy(t);
        if (log)
            printf("| %5d | %10.4f | %9.4f | %8.4f | %8.3f |\n", e->epoch, e->train_loss, e->train_acc, e->test_acc,
                   e->time_s);
    }
    CUDA_CHECK(cudaEventRecord(start, t->stream));
    evaluate_async(t, o->tta_level);
    CUDA_CHECK(cudaEventRecord(stop, t->stream));
    result.time_s += event_seconds(start, stop);
    result.accuracy = read_accuracy(t);
    result.wall_s = wall_clock() - wall_start;
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    return result;
}

// ----------------------------------------------------------------------------
// Results: a line per run, mean and std, and the JSON run file (cJSON).

typedef struct {
    double acc_mean, acc_std, time_mean, time_min, time_max;
} Summary;

static Summary summarize(const RunResult *runs, int n) {
    Summary s = {.time_min = INFINITY, .time_max = -INFINITY};
    for (int i = 0; i < n; i++) {
        s.acc_mean += runs[i].accuracy / n;
        s.time_mean += runs[i].time_s / n;
        if (runs[i].time_s < s.time_min) s.time_min = runs[i].time_s;
        if (runs[i].time_s > s.time_max) s.time_max = runs[i].time_s;
    }
    for (int i = 0; i < n && n > 1; i++) s.acc_std += pow(runs[i].accuracy - s.acc_mean, 2) / (n - 1);
    s.acc_std = sqrt(s.acc_std);
    return s;
}

static cJSON *gpu_json(void) {
    struct cudaDeviceProp prop;
    int driver = 0, runtime = 0;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    CUDA_CHECK(cudaDriverGetVersion(&driver));
    CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
    size_t cudnn = cudnnGetVersion();
    char text[64];
    cJSON *gpu = cJSON_CreateObject();
    cJSON_AddStringToObject(gpu, "name", prop.name);
    snprintf(text, sizeof text, "%d.%d", prop.major, prop.minor);
    cJSON_AddStringToObject(gpu, "compute_capability", text);
    snprintf(text, sizeof text, "%d.%d", driver / 1000, driver % 1000 / 10);
    cJSON_AddStringToObject(gpu, "cuda_driver", text);
    snprintf(text, sizeof text, "%d.%d", runtime / 1000, runtime % 1000 / 10);
    cJSON_AddStringToObject(gpu, "cuda_runtime", text);
    snprintf(text, sizeof text, "%zu.%zu.%zu", cudnn / 10000, cudnn % 10000 / 100, cudnn % 100);
    cJSON_AddStringToObject(gpu, "cudnn", text);
    return gpu;
}

static cJSON *run_json(const RunResult *run) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "seed", (double)run->seed);
    cJSON_AddNumberToObject(j, "accuracy", run->accuracy);
    cJSON_AddNumberToObject(j, "time_s", run->time_s);
    cJSON_AddNumberToObject(j, "wall_s", run->wall_s);
    cJSON *epochs = cJSON_AddArrayToObject(j, "epochs");
    for (int e = 0; e < run->n_epochs; e++) {
        const EpochLog *log = &run->epochs[e];
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "epoch", log->epoch);
        cJSON_AddNumberToObject(row, "train_loss", log->train_loss);
        cJSON_AddNumberToObject(row, "train_acc", log->train_acc);
        cJSON_AddNumberToObject(row, "test_acc", log->test_acc);
        cJSON_AddNumberToObject(row, "time_s", log->time_s);
        cJSON_AddItemToArray(epochs, row);
    }
    return j;
}

// Before any GPU work: the run file's temporary name can be created, so that a long
// benchmark does not end in a run file that cannot be written.
static void check_json_writable(const char *json_path) {
    char tmp_path[4096];
    snprintf(tmp_path, sizeof tmp_path, "%s.tmp", json_path);
    FILE *f = fopen(tmp_path, "w");
    if (!f) die(2, "cannot write the run file %s: %s (does its directory exist?)", json_path, strerror(errno));
    fclose(f);
    remove(tmp_path);
}

// Writes the run file atomically: a temporary name, then rename.
static void write_json(const Options *o, const RunResult *runs, int n) {
    const Recipe *r = &o->recipe;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "schema", "airbench.c/run-v1");
    cJSON_AddStringToObject(root, "variant", r->name);
    cJSON_AddNumberToObject(root, "target_accuracy", VARIANT_TARGET);
    cJSON_AddStringToObject(root, "git_commit", GIT_COMMIT);
    cJSON_AddBoolToObject(root, "git_dirty", GIT_DIRTY);
    cJSON_AddItemToObject(root, "gpu", gpu_json());
    cJSON_AddStringToObject(root, "command", o->command);
    cJSON *env = cJSON_AddObjectToObject(root, "environment");
    for (int i = 0; i < o->n_env; i++) {
        const char *eq = strchr(o->env[i], '=');
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->env[i]), o->env[i]);
        cJSON_AddStringToObject(env, key, eq + 1);
    }
    cJSON *config = cJSON_AddObjectToObject(root, "config");
    cJSON_AddItemToObject(config, "widths", cJSON_CreateIntArray(r->widths, 3));
    cJSON_AddNumberToObject(config, "depth", r->depth);
    cJSON_AddNumberToObject(config, "batch_size", r->batch_size);
    cJSON_AddNumberToObject(config, "epochs", r->epochs);
    cJSON_AddNumberToObject(config, "tta_level", o->tta_level);
    cJSON_AddStringToObject(config, "translate_mode", o->translate_mode == TRANSLATE_DERANDOMIZED ? "derandomized" : "random");
    cJSON_AddStringToObject(config, "conv_algo", o->conv_algo == CONV_ALGO_HEURISTIC ? "heuristic" : "find");
    cJSON_AddNumberToObject(config, "seed", (double)o->seed);
    cJSON *run_list = cJSON_AddArrayToObject(root, "runs");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(run_list, run_json(&runs[i]));
    Summary s = summarize(runs, n);
    cJSON *summary = cJSON_AddObjectToObject(root, "summary");
    cJSON_AddNumberToObject(summary, "n", n);
    cJSON_AddNumberToObject(summary, "acc_mean", s.acc_mean);
    cJSON_AddNumberToObject(summary, "acc_std", s.acc_std);
    cJSON_AddNumberToObject(summary, "time_mean", s.time_mean);
    cJSON_AddNumberToObject(summary, "time_min", s.time_min);
    cJSON_AddNumberToObject(summary, "time_max", s.time_max);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    char tmp_path[4096];
    snprintf(tmp_path, sizeof tmp_path, "%s.tmp", o->json_path);
    FILE *f = fopen(tmp_path, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = 0;
    free(text);
    if (!ok || rename(tmp_path, o->json_path) != 0) {
        remove(tmp_path);
        die(1, "cannot write the run file %s: %s", o->json_path, strerror(errno));
    }
}

// ----------------------------------------------------------------------------
// Command line.

static void usage(FILE *f) {
    fprintf(f,
            "usage: %s [--data DIR] [--runs N] [--seed S] [--tta 0|1|2]\n"
            "          [--translate-mode random|derandomized] [--batch B] [--epochs E]\n"
            "          [--widths A,B,C] [--conv-algo find|heuristic] [--json FILE]\n"
            "          [--env KEY=VALUE]... [--quiet]\n"
            "Trains the %s recipe on the GPU N times (seeds S..S+N-1) after one warm-up run, and\n"
            "prints each run's TTA accuracy and time (GPU time of whitening init + training +\n"
            "final TTA) with their mean and std. --batch scales the step by the linear scaling rule\n"
            "(hyperparameters are per 1024 examples). --conv-algo heuristic takes cuDNN's heuristic\n"
            "convolution algorithms instead of timing every candidate (a faster start, e.g. under\n"
            "compute-sanitizer). --json writes every run and the environment.\n",
            program_name, VARIANT_RECIPE.name);
}

static int bad_value(const char *flag, const char *value, const char *expected) {
    fprintf(stderr, "%s: bad value '%s' for %s: expected %s\n", program_name, value ? value : "(missing)", flag, expected);
    return -1;
}

static int parse_int(const char *value, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || errno || end == value || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

// Parses one flag and its value; returns 0, 1 for --help, -1 for an error (printed).
static int parse_flag(Options *o, const char *flag, const char *value) {
    long v;
    char extra;
    if (!strcmp(flag, "--data")) {
        if (!value) return bad_value(flag, value, "a directory");
        o->data_dir = value;
    } else if (!strcmp(flag, "--json")) {
        if (!value) return bad_value(flag, value, "a file name");
        o->json_path = value;
    } else if (!strcmp(flag, "--runs")) {
        if (parse_int(value, 1, 100000, &v)) return bad_value(flag, value, "an integer in 1..100000");
        o->runs = (int)v;
    } else if (!strcmp(flag, "--seed")) {
        if (parse_int(value, 0, 2000000000, &v)) return bad_value(flag, value, "an integer in 0..2000000000");
        o->seed = (uint64_t)v;
    } else if (!strcmp(flag, "--tta")) {
        if (parse_int(value, 0, 2, &v)) return bad_value(flag, value, "0, 1 or 2");
        o->tta_level = (int)v;
    } else if (!strcmp(flag, "--batch")) {
        if (parse_int(value, 8, 25000, &v) || v % 8) return bad_value(flag, value, "a multiple of 8 in 8..25000");
        o->recipe.batch_size = (int)v;
    } else if (!strcmp(flag, "--epochs")) {
        char *end;
        double e = value ? strtod(value, &end) : 0;
        if (!value || *end || !(e > 0 && e <= 1000)) return bad_value(flag, value, "a number in (0, 1000]");
        o->recipe.epochs = e;
    } else if (!strcmp(flag, "--widths")) {
        int w[3];
        if (!value || sscanf(value, "%d,%d,%d%c", &w[0], &w[1], &w[2], &extra) != 3)
            return bad_value(flag, value, "three comma-separated multiples of 8");
        for (int i = 0; i < 3; i++) {
            if (w[i] < 8 || w[i] > 2048 || w[i] % 8) return bad_value(flag, value, "widths that are multiples of 8 in 8..2048");
            o->recipe.widths[i] = w[i];
        }
    } else if (!strcmp(flag, "--translate-mode")) {
        if (value && !strcmp(value, "random")) o->translate_mode = TRANSLATE_RANDOM;
        else if (value && !strcmp(value, "derandomized")) o->translate_mode = TRANSLATE_DERANDOMIZED;
        else return bad_value(flag, value, "random or derandomized");
    } else if (!strcmp(flag, "--conv-algo")) {
        if (value && !strcmp(value, "find")) o->conv_algo = CONV_ALGO_FIND;
        else if (value && !strcmp(value, "heuristic")) o->conv_algo = CONV_ALGO_HEURISTIC;
        else return bad_value(flag, value, "find or heuristic");
    } else if (!strcmp(flag, "--env")) {
        if (!value || !strchr(value, '=') || value[0] == '=' || strchr(value, '=') - value >= 127)
            return bad_value(flag, value, "KEY=VALUE");
        if (o->n_env == MAX_ENV) return bad_value(flag, value, "at most 32 --env entries");
        o->env[o->n_env++] = value;
    } else {
        fprintf(stderr, "%s: unknown flag '%s' (see --help)\n", program_name, flag);
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, Options *o) {
    *o = (Options){.data_dir = "data/cifar10", .recipe = VARIANT_RECIPE, .runs = 1, .tta_level = -1,
                   .translate_mode = TRANSLATE_RANDOM};
    size_t used = 0;
    for (int i = 0; i < argc && used < sizeof o->command; i++)
        used += snprintf(o->command + used, sizeof o->command - used, i ? " %s" : "%s", argv[i]);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
        if (!strcmp(argv[i], "--quiet")) {
            o->quiet = 1;
            continue;
        }
        if (parse_flag(o, argv[i], i + 1 < argc ? argv[i + 1] : NULL)) return -1;
        i++;
    }
    if (o->tta_level < 0) o->tta_level = o->recipe.tta_level;
    return 0;
}

#ifndef AIRBENCH_NO_MAIN
int main(int argc, char **argv) {
    const char *slash = strrchr(argv[0], '/');
    program_name = slash ? slash + 1 : argv[0];
    Options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        usage(rc > 0 ? stdout : stderr);
        return rc > 0 ? 0 : 2;
    }
    if (o.json_path) check_json_writable(o.json_path);
    char gpu_name[256];
    int major, minor;
    describe_gpu(gpu_name, sizeof gpu_name, &major, &minor);
    const Recipe *r = &o.recipe;
    Cifar10 data;
    char err[512];
    if (cifar10_load(&data, o.data_dir, err, sizeof err)) die(1, "%s", err);
    if (r->batch_size > data.train.n) die(2, "--batch %d exceeds the %d training images", r->batch_size, data.train.n);

    if (!o.quiet)
        printf("%s on %s (sm_%d%d): widths %d/%d/%d, batch %d, %.2f epochs (%d steps), TTA level %d, "
               "%s translation, %s conv algorithms\n", r->name, gpu_name, major, minor, r->widths[0],
               r->widths[1], r->widths[2], r->batch_size, r->epochs, recipe_total_steps(r, data.train.n), o.tta_level,
               o.translate_mode == TRANSLATE_DERANDOMIZED ? "derandomized" : "random",
               o.conv_algo == CONV_ALGO_HEURISTIC ? "heuristic" : "timed");
    Trainer *t = trainer_create(r, &data, data.train.n, data.test.n, o.conv_algo);
    cifar10_free(&data);

    // Warm-up: a short run touches every kernel and library path before timing.
    Options warmup = o;
    warmup.seed = o.seed + 1000003;
    RunResult warm = run_training(t, &warmup, 2 * recipe_steps_per_epoch(r, t->n_train), 0);
    free(warm.epochs);

    RunResult *runs = host_alloc((size_t)o.runs * sizeof(RunResult));
    for (int i = 0; i < o.runs; i++) {
        Options run_options = o;
        run_options.seed = o.seed + (uint64_t)i;
        if (!o.quiet) printf("| epoch | train_loss | train_acc | test_acc |   time_s |   run %d, seed %llu\n", i,
                             (unsigned long long)run_options.seed);
        runs[i] = run_training(t, &run_options, -1, !o.quiet);
        printf("run %4d  seed %6llu  tta_accuracy %.4f  time %.3f s  (wall %.3f s)\n", i,
               (unsigned long long)runs[i].seed, runs[i].accuracy, runs[i].time_s, runs[i].wall_s);
        fflush(stdout);
    }
    Summary s = summarize(runs, o.runs);
    printf("%s: n=%d  accuracy mean %.4f std %.4f  time mean %.3f s (min %.3f, max %.3f)\n", r->name, o.runs,
           s.acc_mean, s.acc_std, s.time_mean, s.time_min, s.time_max);
    if (o.json_path) write_json(&o, runs, o.runs);
    for (int i = 0; i < o.runs; i++) free(runs[i].epochs);
    free(runs);
    trainer_free(t);
    return 0;
}
#endif
