// cudnn_graph_host.c: cuDNN's graph (backend) API on the CPU (host.h), as much of it as
// dev/fusion/ uses: tensors, 3x3 convolutions (forward and backward data), pointwise ADD,
// SUB, MUL and the GELU and SiLU (swish) activations forward and backward, ADD reductions,
// GEN_STATS; operation graphs, one engine config per graph, plans, variant packs, execution
// on the handle's stream; device properties. It checks the calling code: every tensor a
// graph reads is written earlier or comes from the variant pack, every pointer of the pack
// lies inside an allocation large enough for its tensor's strides and is as aligned as its
// tensor's descriptor says. Which graphs cuDNN
// supports on a GPU, and its numbers, only a GPU (or a deviceless plan) can tell: this
// accepts every graph made of the operations above. HOST_CUDNN_REDUCE=accumulate makes the
// reductions add to their outputs' memory instead of writing it (how a caller that forgets
// to zero them would see an accumulating engine), for the tests of dev/fusion's checks.
// HOST_CUDNN_EXECUTE=refuse-fallback makes the plans of the heuristics' fallback configs
// fail at execution (as an engine that finalizes but then refuses the pointers it gets
// might), for the tests of --conv-graph's choice.
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cudnn.h>

#include "gpu.h"
#include "host.h"
#include "reference.h"
#include "test_helpers.h"

struct cudnnContext {
    cudaStream_t stream;
};

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
    *handle = calloc(1, sizeof **handle);
    return *handle ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
    free(handle);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
    handle->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetStream(cudnnHandle_t handle, cudaStream_t *stream) {
    *stream = handle->stream;
    return CUDNN_STATUS_SUCCESS;
}

static char last_error[400];

void cudnnGetLastErrorString(char *message, size_t max_size) {
    snprintf(message, max_size, "%s", last_error);
    last_error[0] = 0;
}

// A failure with its reason, as cuDNN reports one.
static cudnnStatus_t fail(cudnnStatus_t status, const char *why) {
    snprintf(last_error, sizeof last_error, "%s (CPU stand-in)", why);
    return status;
}

// ---- descriptors: a type and the attributes set on it ----------------------------------

typedef struct {
    cudnnBackendAttributeName_t name;
    cudnnBackendAttributeType_t type;
    int64_t count;
    void *values;
} Attr;

enum { MAX_ATTRS = 16 };

typedef struct HostDesc HostDesc;
struct HostDesc {
    cudnnBackendDescriptorType_t type;
    int finalized;
    Attr attrs[MAX_ATTRS];
    int n_attrs;
    HostDesc *graph;  // an engine config's, engine's or plan's operation graph
    int fallback;     // an engine config's or plan's: from the heuristics' fallback list
};

static size_t attr_size(cudnnBackendAttributeType_t type) {
    switch (type) {
    case CUDNN_TYPE_HANDLE:
    case CUDNN_TYPE_VOID_PTR:
    case CUDNN_TYPE_BACKEND_DESCRIPTOR: return sizeof(void *);
    case CUDNN_TYPE_BOOLEAN: return sizeof(bool);
    case CUDNN_TYPE_CHAR: return 1;
    case CUDNN_TYPE_INT64:
    case CUDNN_TYPE_DOUBLE: return 8;
    default: return 4;  // float, int32 and the enums
    }
}

static Attr *find(const HostDesc *d, cudnnBackendAttributeName_t name) {
    for (int i = 0; i < d->n_attrs; i++)
        if (d->attrs[i].name == name) return (Attr *)&d->attrs[i];
    return NULL;
}

static int64_t get_i64(const HostDesc *d, cudnnBackendAttributeName_t name, int64_t otherwise) {
    const Attr *a = find(d, name);
    return a && a->count ? *(const int64_t *)a->values : otherwise;
}

static int get_enum(const HostDesc *d, cudnnBackendAttributeName_t name, int otherwise) {
    const Attr *a = find(d, name);
    return a && a->count ? *(const int *)a->values : otherwise;
}

static HostDesc *get_desc(const HostDesc *d, cudnnBackendAttributeName_t name) {
    const Attr *a = find(d, name);
    return a && a->count ? *(HostDesc *const *)a->values : NULL;
}

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *descriptor) {
    HostDesc *d = calloc(1, sizeof *d);
    if (!d) return fail(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED, "out of memory");
    d->type = type;
    *descriptor = d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t descriptor) {
    HostDesc *d = descriptor;
    if (!d) return CUDNN_STATUS_SUCCESS;
    for (int i = 0; i < d->n_attrs; i++) free(d->attrs[i].values);
    free(d);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendInitialize(cudnnBackendDescriptor_t descriptor) {
    (void)descriptor;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t descriptor, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count, const void *values) {
    HostDesc *d = descriptor;
    if (!d || count < 0 || (count && !values)) return fail(CUDNN_STATUS_BAD_PARAM, "null descriptor or values");
    if (d->finalized) return fail(CUDNN_STATUS_BAD_PARAM, "attribute set on a finalized descriptor");
    Attr *a = find(d, name);
    if (!a) {
        if (d->n_attrs == MAX_ATTRS) return fail(CUDNN_STATUS_NOT_SUPPORTED, "too many attributes");
        a = &d->attrs[d->n_attrs++];
    }
    free(a->values);
    size_t bytes = attr_size(type) * (size_t)count;
    a->values = malloc(bytes ? bytes : 1);
    if (!a->values) return fail(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED, "out of memory");
    memcpy(a->values, values, bytes);
    *a = (Attr){name, type, count, a->values};
    return CUDNN_STATUS_SUCCESS;
}

// ---- tensors --------------------------------------------------------------------------

typedef struct {
    int64_t uid, dims[4], strides[4];
    int64_t alignment;  // the bytes its pointer is promised to be a multiple of
    cudnnDataType_t type;
    int is_virtual;
} Tensor;

static Tensor tensor_of(const HostDesc *d) {
    Tensor t = {.uid = get_i64(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, -1),
                .alignment = get_i64(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, 1),
                .type = (cudnnDataType_t)get_enum(d, CUDNN_ATTR_TENSOR_DATA_TYPE, -1)};
    const Attr *dims = find(d, CUDNN_ATTR_TENSOR_DIMENSIONS), *strides = find(d, CUDNN_ATTR_TENSOR_STRIDES);
    for (int i = 0; i < 4; i++) {
        t.dims[i] = ((const int64_t *)dims->values)[i];
        t.strides[i] = ((const int64_t *)strides->values)[i];
    }
    const Attr *v = find(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL);
    t.is_virtual = v && *(const bool *)v->values;
    return t;
}

static size_t elements(const int64_t dims[4]) { return (size_t)(dims[0] * dims[1] * dims[2] * dims[3]); }

// The byte offset just past the tensor's last element.
static size_t tensor_bytes(const Tensor *t) {
    size_t last = 0;
    for (int i = 0; i < 4; i++) last += (size_t)((t->dims[i] - 1) * t->strides[i]);
    return (last + 1) * (t->type == CUDNN_DATA_HALF ? 2 : 4);
}

static cudnnStatus_t finalize_tensor(const HostDesc *d) {
    const Attr *dims = find(d, CUDNN_ATTR_TENSOR_DIMENSIONS), *strides = find(d, CUDNN_ATTR_TENSOR_STRIDES);
    if (!dims || !strides || get_i64(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, -1) < 0)
        return fail(CUDNN_STATUS_BAD_PARAM, "a tensor needs dimensions, strides and a unique id");
    if (dims->count != 4 || strides->count != 4) return fail(CUDNN_STATUS_NOT_SUPPORTED, "only 4-d tensors");
    int type = get_enum(d, CUDNN_ATTR_TENSOR_DATA_TYPE, -1);
    if (type != CUDNN_DATA_HALF && type != CUDNN_DATA_FLOAT) return fail(CUDNN_STATUS_NOT_SUPPORTED, "fp16 or fp32 only");
    if (get_i64(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, 0) < 1)
        return fail(CUDNN_STATUS_BAD_PARAM, "a tensor needs its byte alignment");
    for (int i = 0; i < 4; i++)
        if (((const int64_t *)dims->values)[i] < 1 || ((const int64_t *)strides->values)[i] < 1)
            return fail(CUDNN_STATUS_BAD_PARAM, "dimensions and strides must be positive");
    return CUDNN_STATUS_SUCCESS;
}

// ---- finalizing -----------------------------------------------------------------------

// The operation's tensors and what it does, read from its attributes.
typedef struct {
    HostDesc *in[2], *out[2];  // inputs (the second may be NULL) and outputs
    enum { OP_CONV_FPROP, OP_CONV_DGRAD, OP_CONV_WGRAD, OP_POINTWISE, OP_REDUCTION, OP_GENSTATS } kind;
    cudnnPointwiseMode_t mode;
    double swish_beta;
} Op;

static int describe_op(const HostDesc *d, Op *op) {
    memset(op, 0, sizeof *op);
    switch (d->type) {
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR:
        *op = (Op){.in = {get_desc(d, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X),
                          get_desc(d, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W)},
                   .out = {get_desc(d, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y)},
                   .kind = OP_CONV_FPROP};
        return 1;
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR:
        *op = (Op){.in = {get_desc(d, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY),
                          get_desc(d, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W)},
                   .out = {get_desc(d, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX)},
                   .kind = OP_CONV_DGRAD};
        return 1;
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR:
        *op = (Op){.in = {get_desc(d, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X),
                          get_desc(d, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY)},
                   .out = {get_desc(d, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW)},
                   .kind = OP_CONV_WGRAD};
        return 1;
    case CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR: {
        const HostDesc *pw = get_desc(d, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR);
        op->kind = OP_POINTWISE;
        op->mode = pw ? (cudnnPointwiseMode_t)get_enum(pw, CUDNN_ATTR_POINTWISE_MODE, -1) : (cudnnPointwiseMode_t)-1;
        const Attr *beta = pw ? find(pw, CUDNN_ATTR_POINTWISE_SWISH_BETA) : NULL;
        op->swish_beta = beta ? *(const double *)beta->values : 1.0;
        if (op->mode == CUDNN_POINTWISE_GELU_BWD || op->mode == CUDNN_POINTWISE_SWISH_BWD) {
            op->in[0] = get_desc(d, CUDNN_ATTR_OPERATION_POINTWISE_DYDESC);
            op->in[1] = get_desc(d, CUDNN_ATTR_OPERATION_POINTWISE_XDESC);
            op->out[0] = get_desc(d, CUDNN_ATTR_OPERATION_POINTWISE_DXDESC);
        } else {
            op->in[0] = get_desc(d, CUDNN_ATTR_OPERATION_POINTWISE_XDESC);
            op->in[1] = get_desc(d, CUDNN_ATTR_OPERATION_POINTWISE_BDESC);
            op->out[0] = get_desc(d, CUDNN_ATTR_OPERATION_POINTWISE_YDESC);
        }
        return 1;
    }
    case CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR:
        *op = (Op){.in = {get_desc(d, CUDNN_ATTR_OPERATION_REDUCTION_XDESC)},
                   .out = {get_desc(d, CUDNN_ATTR_OPERATION_REDUCTION_YDESC)},
                   .kind = OP_REDUCTION};
        return 1;
    case CUDNN_BACKEND_OPERATION_GEN_STATS_DESCRIPTOR:
        *op = (Op){.in = {get_desc(d, CUDNN_ATTR_OPERATION_GENSTATS_XDESC)},
                   .out = {get_desc(d, CUDNN_ATTR_OPERATION_GENSTATS_SUMDESC),
                           get_desc(d, CUDNN_ATTR_OPERATION_GENSTATS_SQSUMDESC)},
                   .kind = OP_GENSTATS};
        return 1;
    default: return 0;
    }
}

// A convolution's filter tensor: an input, or backward filter's output.
static const HostDesc *filter_of(const Op *op) { return op->kind == OP_CONV_WGRAD ? op->out[0] : op->in[1]; }

static int binary(cudnnPointwiseMode_t mode) {
    return mode == CUDNN_POINTWISE_ADD || mode == CUDNN_POINTWISE_SUB || mode == CUDNN_POINTWISE_MUL ||
           mode == CUDNN_POINTWISE_GELU_BWD || mode == CUDNN_POINTWISE_SWISH_BWD;
}

static cudnnStatus_t finalize_op(const HostDesc *d) {
    Op op;
    describe_op(d, &op);
    if (op.kind == OP_POINTWISE && !(binary(op.mode) || op.mode == CUDNN_POINTWISE_GELU_FWD ||
                                     op.mode == CUDNN_POINTWISE_SWISH_FWD))
        return fail(CUDNN_STATUS_NOT_SUPPORTED, "pointwise mode not emulated");
    int conv = op.kind == OP_CONV_FPROP || op.kind == OP_CONV_DGRAD || op.kind == OP_CONV_WGRAD;
    int n_in = conv || (op.kind == OP_POINTWISE && binary(op.mode)) ? 2 : 1;
    int n_out = op.kind == OP_GENSTATS ? 2 : 1;
    for (int i = 0; i < n_in; i++)
        if (!op.in[i] || !op.in[i]->finalized) return fail(CUDNN_STATUS_BAD_PARAM, "an input tensor is missing");
    for (int i = 0; i < n_out; i++)
        if (!op.out[i] || !op.out[i]->finalized) return fail(CUDNN_STATUS_BAD_PARAM, "an output tensor is missing");
    if (conv) {
        // indexed by the conv kinds, in their order
        static const cudnnBackendAttributeName_t ALPHA[] = {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                                            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
                                                            CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA};
        static const cudnnBackendAttributeName_t BETA[] = {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
                                                           CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA,
                                                           CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA};
        const Attr *alpha = find(d, ALPHA[op.kind]), *beta = find(d, BETA[op.kind]);
        if (!alpha || !beta || *(const float *)alpha->values != 1.0f || *(const float *)beta->values != 0.0f)
            return fail(CUDNN_STATUS_NOT_SUPPORTED, "only alpha 1 and beta 0 are emulated");
        Tensor w = tensor_of(filter_of(&op));
        if (w.dims[2] != 3 || w.dims[3] != 3) return fail(CUDNN_STATUS_NOT_SUPPORTED, "only 3x3 convolutions");
    }
    return CUDNN_STATUS_SUCCESS;
}

// Every tensor an operation reads is either in memory (not virtual) or written by an earlier one.
static cudnnStatus_t finalize_graph(const HostDesc *graph) {
    const Attr *ops = find(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS);
    if (!ops || ops->count == 0) return fail(CUDNN_STATUS_BAD_PARAM, "an operation graph needs operations");
    int64_t written[64];
    int n_written = 0;
    for (int64_t k = 0; k < ops->count; k++) {
        Op op;
        const HostDesc *d = ((HostDesc *const *)ops->values)[k];
        if (!d || !d->finalized || !describe_op(d, &op)) return fail(CUDNN_STATUS_BAD_PARAM, "not a finalized operation");
        for (int i = 0; i < 2; i++) {
            if (!op.in[i]) continue;
            Tensor t = tensor_of(op.in[i]);
            int known = !t.is_virtual;
            for (int w = 0; w < n_written; w++) known |= written[w] == t.uid;
            if (!known) return fail(CUDNN_STATUS_BAD_PARAM, "a virtual tensor is read before an operation writes it");
        }
        for (int i = 0; i < 2 && n_written < 64; i++)
            if (op.out[i]) written[n_written++] = tensor_of(op.out[i]).uid;
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t descriptor) {
    HostDesc *d = descriptor;
    if (!d || d->finalized) return fail(CUDNN_STATUS_BAD_PARAM, "no descriptor, or finalized twice");
    cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
    Op op;
    if (d->type == CUDNN_BACKEND_TENSOR_DESCRIPTOR) {
        status = finalize_tensor(d);
    } else if (describe_op(d, &op)) {
        status = finalize_op(d);
    } else if (d->type == CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR) {
        status = finalize_graph(d);
    } else if (d->type == CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR) {
        d->graph = get_desc(d, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH);
        if (!d->graph || !d->graph->finalized) status = fail(CUDNN_STATUS_BAD_PARAM, "heuristics need a graph");
    } else if (d->type == CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR) {
        const HostDesc *cfg = get_desc(d, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG);
        d->graph = cfg ? cfg->graph : NULL;
        d->fallback = cfg && cfg->fallback;
        if (!d->graph) status = fail(CUDNN_STATUS_BAD_PARAM, "a plan needs an engine config from the heuristics");
    } else if (d->type == CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR) {
        if (!find(d, CUDNN_ATTR_DEVICEPROP_HANDLE) && !find(d, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION))
            status = fail(CUDNN_STATUS_BAD_PARAM, "device properties need a handle or JSON");
    }
    // Everything else (convolution, pointwise and reduction descriptors, variant packs) is
    // read when an operation or an execution uses it.
    if (status == CUDNN_STATUS_SUCCESS) d->finalized = 1;
    return status;
}

// ---- getting attributes ---------------------------------------------------------------

static const char DEVICE_JSON[] = "{\"deviceName\": \"CPU stand-in\"}";

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const descriptor, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t requested, int64_t *count,
                                       void *values) {
    const HostDesc *d = descriptor;
    if (!d || !d->finalized) return fail(CUDNN_STATUS_BAD_PARAM, "attribute read from a descriptor not finalized");
    int64_t zero = 0;
    switch (name) {
    case CUDNN_ATTR_ENGINEHEUR_RESULTS:  // one engine config, filled into the caller's descriptor
        *count = 1;
        if (requested >= 1 && values) {
            HostDesc *cfg = *(HostDesc **)values;
            cfg->graph = d->graph;
            cfg->fallback = get_enum(d, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_HEUR_MODE_A) == CUDNN_HEUR_MODE_FALLBACK;
            cfg->finalized = 1;
        }
        return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_ENGINECFG_ENGINE: {
        HostDesc *engine = *(HostDesc **)values;
        engine->graph = d->graph;
        engine->finalized = 1;
        *count = 1;
        return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_ATTR_ENGINE_GLOBAL_INDEX:
    case CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE:
        *count = 1;
        if (requested >= 1) memcpy(values, &zero, sizeof zero);
        return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE:
    case CUDNN_ATTR_ENGINE_NUMERICAL_NOTE:
        *count = 0;
        return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION:
        *count = (int64_t)strlen(DEVICE_JSON);
        if (values) memcpy(values, DEVICE_JSON, (size_t)(requested < *count ? requested : *count));
        return CUDNN_STATUS_SUCCESS;
    default: (void)type; return fail(CUDNN_STATUS_NOT_SUPPORTED, "attribute not emulated");
    }
}

// ---- execution ------------------------------------------------------------------------

// A tensor's values as floats in logical order: dims n, h, w, c from the outermost (NHWC,
// KRSC for filters), the order conv_host.c's convolutions take.
typedef struct {
    int64_t uid;
    float *values;
} Value;

typedef struct {
    const HostDesc *graph;
    int n_pack;
    int64_t uids[16];
    void *pointers[16];
    Value values[32];  // the graph's tensors computed so far
    int n_values;
} Job;

static void *pack_pointer(const Job *job, int64_t uid) {
    for (int i = 0; i < job->n_pack; i++)
        if (job->uids[i] == uid) return job->pointers[i];
    die(1, "cuDNN graph (CPU stand-in): tensor %lld is not in the variant pack", (long long)uid);
}

// The dims (cuDNN's n, c, h, w order) from the innermost of the logical order to the outermost.
static const int INNER_TO_OUTER[4] = {1, 3, 2, 0};

static size_t memory_index(const Tensor *t, size_t logical) {
    size_t index = 0;
    for (int k = 0; k < 4; k++) {
        int d = INNER_TO_OUTER[k];
        index += (logical % (size_t)t->dims[d]) * (size_t)t->strides[d];
        logical /= (size_t)t->dims[d];
    }
    return index;
}

// The pack's pointer of tensor t, which must lie inside an allocation large enough for it
// and be as aligned as the tensor says (a GPU engine may read it in 16-byte loads).
static void *checked_pointer(const Job *job, const Tensor *t, const char *what) {
    void *p = pack_pointer(job, t->uid);
    if (!host_inside_allocation(p, tensor_bytes(t)))
        die(1, "cuDNN graph (CPU stand-in): %s %lld's pointer is not inside an allocation of its size", what,
            (long long)t->uid);
    if ((uintptr_t)p % (uintptr_t)t->alignment)
        die(1, "cuDNN graph (CPU stand-in): %s %lld's pointer %p is not aligned to the %lld bytes its descriptor says",
            what, (long long)t->uid, p, (long long)t->alignment);
    return p;
}

static const float *read_tensor(Job *job, const HostDesc *d) {
    Tensor t = tensor_of(d);
    for (int i = 0; i < job->n_values; i++)
        if (job->values[i].uid == t.uid) return job->values[i].values;
    if (job->n_values == 32) die(1, "cuDNN graph (CPU stand-in): more than 32 tensors in one graph");
    size_t n = elements(t.dims);
    float *f = host_alloc(n * sizeof(float));
    const void *p = checked_pointer(job, &t, "tensor");
    for (size_t i = 0; i < n; i++)
        f[i] = t.type == CUDNN_DATA_HALF ? half_to_float(((const uint16_t *)p)[memory_index(&t, i)])
                                         : ((const float *)p)[memory_index(&t, i)];
    job->values[job->n_values++] = (Value){t.uid, f};
    return f;
}

// Keeps the values (a virtual tensor's only home) and writes a real tensor to memory.
static void write_tensor(Job *job, const HostDesc *d, float *f) {
    Tensor t = tensor_of(d);
    if (job->n_values == 32) die(1, "cuDNN graph (CPU stand-in): more than 32 tensors in one graph");
    job->values[job->n_values++] = (Value){t.uid, f};
    if (t.is_virtual) return;
    void *p = checked_pointer(job, &t, "output");
    for (size_t i = 0; i < elements(t.dims); i++) {
        if (t.type == CUDNN_DATA_HALF) {
            ((uint16_t *)p)[memory_index(&t, i)] = float_to_half(f[i]);
            f[i] = half_to_float(float_to_half(f[i]));  // later operations read what memory holds
        } else {
            ((float *)p)[memory_index(&t, i)] = f[i];
        }
    }
}

// A 3x3 convolution by conv_host.c: forward (x, w -> y), backward data (dy, w -> dx) or
// backward filter (x, dy -> dw). t_x is the activation-side input with the batch and side,
// t_w the filter (an input, or the output of backward filter).
static float *convolve(int kind, const float *a, const float *b, const Tensor *t_x, const Tensor *t_w) {
    int n = (int)t_x->dims[0], side = (int)t_x->dims[2], co = (int)t_w->dims[0], ci = (int)t_w->dims[1];
    size_t map = (size_t)n * side * side;
    float *out = host_alloc((kind == OP_CONV_WGRAD ? (size_t)co * 9 * ci : map * (kind == OP_CONV_DGRAD ? ci : co)) *
                            sizeof(float));
    if (kind == OP_CONV_FPROP) host_conv3x3_forward(out, a, b, n, side, ci, co);
    if (kind == OP_CONV_DGRAD) host_conv3x3_backward_data(out, a, b, n, side, ci, co);
    if (kind == OP_CONV_WGRAD) host_conv3x3_backward_filter(out, a, b, n, side, ci, co);
    return out;
}

// The logical index into a broadcast operand (its size-1 dims repeat).
static size_t broadcast_index(const Tensor *full, const Tensor *b, size_t logical) {
    size_t index = 0, scale = 1;
    for (int k = 0; k < 4; k++) {
        int d = INNER_TO_OUTER[k];
        size_t coordinate = logical % (size_t)full->dims[d];
        logical /= (size_t)full->dims[d];
        if (b->dims[d] != 1) index += coordinate * scale;
        scale *= (size_t)b->dims[d];
    }
    return index;
}

static float *pointwise(Job *job, const Op *op) {
    Tensor t_out = tensor_of(op->out[0]), t_x = tensor_of(op->in[0]);
    size_t n = elements(t_out.dims);
    const float *x = read_tensor(job, op->in[0]);
    float *y = host_alloc(n * sizeof(float));
    if (op->mode == CUDNN_POINTWISE_GELU_FWD || op->mode == CUDNN_POINTWISE_SWISH_FWD) {
        ref_activation_forward(op->mode == CUDNN_POINTWISE_GELU_FWD ? ACTIVATION_GELU : ACTIVATION_SILU, y, x, n);
        return y;
    }
    Tensor t_b = tensor_of(op->in[1]);
    const float *b = read_tensor(job, op->in[1]);
    float *b_full = host_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) b_full[i] = b[broadcast_index(&t_out, &t_b, i)];
    if (op->mode == CUDNN_POINTWISE_GELU_BWD || op->mode == CUDNN_POINTWISE_SWISH_BWD) {  // in[0] = dy, in[1] = x
        ref_activation_backward(op->mode == CUDNN_POINTWISE_GELU_BWD ? ACTIVATION_GELU : ACTIVATION_SILU, y, x,
                                b_full, n);
    } else {
        for (size_t i = 0; i < n; i++) {
            float a = x[broadcast_index(&t_out, &t_x, i)];
            y[i] = op->mode == CUDNN_POINTWISE_ADD ? a + b_full[i] : op->mode == CUDNN_POINTWISE_SUB ? a - b_full[i] : a * b_full[i];
        }
    }
    free(b_full);
    return y;
}

// The sums over the dims where d's tensor has size 1 (of squares if `square`), for d's tensor.
static float *reduce(Job *job, const float *in, const Tensor *t_in, const HostDesc *d, int square) {
    Tensor t_out = tensor_of(d);
    size_t n_out = elements(t_out.dims);
    double *sums = calloc(n_out, sizeof(double));
    for (size_t i = 0; i < elements(t_in->dims); i++)
        sums[broadcast_index(t_in, &t_out, i)] += square ? (double)in[i] * in[i] : in[i];
    float *out = host_alloc(n_out * sizeof(float));
    const char *fault = getenv("HOST_CUDNN_REDUCE");
    const float *before = fault && !strcmp(fault, "accumulate") && !t_out.is_virtual ? read_tensor(job, d) : NULL;
    for (size_t i = 0; i < n_out; i++) out[i] = (float)sums[i] + (before ? before[i] : 0.0f);
    free(sums);
    return out;
}

static void run_job(void *arg) {
    Job *job = arg;
    const Attr *ops = find(job->graph, CUDNN_ATTR_OPERATIONGRAPH_OPS);
    for (int64_t k = 0; k < ops->count; k++) {
        Op op;
        describe_op(((HostDesc *const *)ops->values)[k], &op);
        Tensor t_in = tensor_of(op.in[0]);
        const float *in = read_tensor(job, op.in[0]);
        switch (op.kind) {
        case OP_CONV_FPROP:
        case OP_CONV_DGRAD:
        case OP_CONV_WGRAD: {
            Tensor t_w = tensor_of(filter_of(&op));
            write_tensor(job, op.out[0], convolve(op.kind, in, read_tensor(job, op.in[1]), &t_in, &t_w));
            break;
        }
        case OP_POINTWISE: write_tensor(job, op.out[0], pointwise(job, &op)); break;
        case OP_REDUCTION: write_tensor(job, op.out[0], reduce(job, in, &t_in, op.out[0], 0)); break;
        case OP_GENSTATS:
            write_tensor(job, op.out[0], reduce(job, in, &t_in, op.out[0], 0));
            write_tensor(job, op.out[1], reduce(job, in, &t_in, op.out[1], 1));
            break;
        }
    }
    for (int i = 0; i < job->n_values; i++) free(job->values[i].values);
    free(job);
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t handle, cudnnBackendDescriptor_t plan_descriptor,
                                  cudnnBackendDescriptor_t pack_descriptor) {
    const HostDesc *plan = plan_descriptor, *pack = pack_descriptor;
    if (!handle || !plan || !plan->finalized || !plan->graph || !pack || !pack->finalized)
        return fail(CUDNN_STATUS_BAD_PARAM, "execution needs a handle, a plan and a variant pack, finalized");
    const Attr *uids = find(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS), *pointers = find(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS);
    if (!uids || !pointers || uids->count != pointers->count || uids->count > 16)
        return fail(CUDNN_STATUS_BAD_PARAM, "a variant pack needs as many pointers as unique ids (16 at most)");
    const char *refuse = getenv("HOST_CUDNN_EXECUTE");
    if (plan->fallback && refuse && !strcmp(refuse, "refuse-fallback"))
        return fail(CUDNN_STATUS_NOT_SUPPORTED, "HOST_CUDNN_EXECUTE=refuse-fallback: this engine config refuses to run");
    Job *job = calloc(1, sizeof *job);
    job->graph = plan->graph;
    job->n_pack = (int)uids->count;
    memcpy(job->uids, uids->values, (size_t)uids->count * sizeof(int64_t));
    memcpy(job->pointers, pointers->values, (size_t)pointers->count * sizeof(void *));
    host_note("cudnn_graph");
    host_enqueue(handle->stream, run_job, job);
    return CUDNN_STATUS_SUCCESS;
}
