// fusion.c: conv + BatchNorm fusions as cuDNN backend graphs, their plans, and the trainer's
// fused dgrad (fusion.h).
#include "fusion.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu.h"
#include "net.h"

const char *const FUSION_NAMES[N_FUSIONS] = {
    "fprop", "fprop+sum", "fprop+genstats", "fprop+reduce", "bnact+fprop", "bnact+fprop+genstats",
    "dgrad", "dgrad+act'", "dgrad+act'+sum", "dgrad+bn-reduce", "wgrad"};

// ---------------------------------------------------------------------------------------
// Building descriptors. The first cuDNN call that fails is remembered in the graph (status
// and message); later calls on a failed graph do nothing, so a builder reads straight through.

typedef cudnnBackendDescriptor_t Desc;

static int failed(const FusionGraph *g) { return g->status != CUDNN_STATUS_SUCCESS; }

static void note(FusionGraph *g, cudnnStatus_t status, const char *what) {
    if (status == CUDNN_STATUS_SUCCESS || failed(g)) return;
    g->status = status;
    char last[400];
    cudnnGetLastErrorString(last, sizeof last);
    snprintf(g->why, sizeof g->why, "%s: %s%s%s", what, cudnnGetErrorString(status), last[0] ? ": " : "", last);
}

static Desc make(FusionGraph *g, cudnnBackendDescriptorType_t type) {
    if (failed(g)) return NULL;
    if (g->n_descs == FUSION_MAX_DESCS) die(1, "fusion.c: more than %d descriptors in one graph", FUSION_MAX_DESCS);
    Desc d = NULL;
    note(g, cudnnBackendCreateDescriptor(type, &d), "cudnnBackendCreateDescriptor");
    if (d) g->descs[g->n_descs++] = d;
    return d;
}

static void set(FusionGraph *g, Desc d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                int64_t count, const void *value, const char *what) {
    if (failed(g)) return;
    note(g, cudnnBackendSetAttribute(d, name, type, count, value), what);
}

static void finalize(FusionGraph *g, Desc d, const char *what) {
    if (failed(g)) return;
    note(g, cudnnBackendFinalize(d), what);
}

#define SET(g, d, name, type, count, value) set(g, d, name, type, count, value, #name)

// An NHWC tensor [n, c, h, w] (dims in cuDNN's NCHW order, strides of the NHWC layout).
static Desc tensor(FusionGraph *g, int64_t uid, cudnnDataType_t type, int64_t n, int64_t c, int64_t h, int64_t w,
                   bool is_virtual) {
    Desc d = make(g, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    int64_t dims[4] = {n, c, h, w}, strides[4] = {c * h * w, 1, w * c, c}, alignment = 16;
    SET(g, d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    SET(g, d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
    SET(g, d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
    SET(g, d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    SET(g, d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    SET(g, d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    finalize(g, d, "tensor descriptor");
    if (!is_virtual && !failed(g)) {
        if (g->n_uids == FUSION_MAX_UIDS) die(1, "fusion.c: more than %d tensors in one graph", FUSION_MAX_UIDS);
        g->uids[g->n_uids++] = uid;
    }
    return d;
}

// Intermediate (virtual) tensors get ids from 100 up; they never appear in a variant pack.
static int64_t next_virtual_uid(const FusionGraph *g) { return 100 + g->n_descs; }

static Desc activation_map(FusionGraph *g, const FusionShape *s, int64_t uid, cudnnDataType_t type, bool is_virtual) {
    return tensor(g, uid, type, s->batch, s->c_out, s->side, s->side, is_virtual);
}

static Desc per_channel(FusionGraph *g, int64_t uid, int c) {
    return tensor(g, uid, CUDNN_DATA_FLOAT, 1, c, 1, 1, false);
}

static Desc conv_descriptor(FusionGraph *g) {
    Desc d = make(g, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
    int64_t spatial = 2, pad[2] = {1, 1}, one[2] = {1, 1};
    cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    SET(g, d, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial);
    SET(g, d, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
    SET(g, d, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
    SET(g, d, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad);
    SET(g, d, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad);
    SET(g, d, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, one);
    SET(g, d, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, one);
    finalize(g, d, "convolution descriptor");
    return d;
}

// The operation graph is made of the ops in the order added.
typedef struct {
    Desc ops[16];
    int n;
} Ops;

static void add_op(FusionGraph *g, Ops *ops, Desc op, const char *what) {
    finalize(g, op, what);
    if (!failed(g)) ops->ops[ops->n++] = op;
}

// A convolution operation of the graph API: its descriptor type and attribute names (its
// three tensors: two in, one out), alpha 1 and beta 0 (the output written, not added to).
typedef struct {
    cudnnBackendDescriptorType_t type;
    cudnnBackendAttributeName_t tensors[3], conv, alpha, beta;
    const char *what;
} ConvOp;

static const ConvOp CONV_FPROP = {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
                                  {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                                   CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                                   CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y},
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
                                  "convolution forward operation"};
static const ConvOp CONV_DGRAD = {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
                                  {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
                                   CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
                                   CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX},
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA,
                                  "convolution backward data operation"};
static const ConvOp CONV_WGRAD = {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
                                  {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
                                   CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
                                   CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW},
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
                                  CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA,
                                  "convolution backward filter operation"};

// fprop: x, w -> y; dgrad: dy, w -> dx; wgrad: x, dy -> dw.
static void convolution(FusionGraph *g, Ops *ops, const ConvOp *kind, Desc in0, Desc in1, Desc out) {
    Desc op = make(g, kind->type);
    Desc conv = conv_descriptor(g), tensors[3] = {in0, in1, out};
    float alpha = 1.0f, beta = 0.0f;
    for (int i = 0; i < 3; i++) set(g, op, kind->tensors[i], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tensors[i], kind->what);
    set(g, op, kind->conv, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv, kind->what);
    set(g, op, kind->alpha, CUDNN_TYPE_FLOAT, 1, &alpha, kind->what);
    set(g, op, kind->beta, CUDNN_TYPE_FLOAT, 1, &beta, kind->what);
    add_op(g, ops, op, kind->what);
}

// A pointwise operation's mode, fp32 math.
static Desc pointwise_descriptor(FusionGraph *g, cudnnPointwiseMode_t mode) {
    Desc pw = make(g, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    cudnnDataType_t math = CUDNN_DATA_FLOAT;
    SET(g, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    SET(g, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
    if (mode == CUDNN_POINTWISE_SWISH_FWD || mode == CUDNN_POINTWISE_SWISH_BWD) {
        double beta = 1.0;  // SiLU: x sigmoid(beta x) with beta 1
        SET(g, pw, CUDNN_ATTR_POINTWISE_SWISH_BETA, CUDNN_TYPE_DOUBLE, 1, &beta);
    }
    finalize(g, pw, "pointwise descriptor");
    return pw;
}

// y = mode(x) or mode(x, b) elementwise (b broadcast along size-1 dims).
static void pointwise(FusionGraph *g, Ops *ops, cudnnPointwiseMode_t mode, Desc x, Desc b, Desc y) {
    Desc pw = pointwise_descriptor(g, mode);
    Desc op = make(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    SET(g, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw);
    SET(g, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    if (b) SET(g, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    SET(g, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    add_op(g, ops, op, "pointwise operation");
}

// dx = dy * act'(x): the activation's backward pointwise op (GELU_BWD or SWISH_BWD).
static void activation_backward(FusionGraph *g, Ops *ops, int activation, Desc dy, Desc x, Desc dx) {
    Desc pw = pointwise_descriptor(g, activation == ACTIVATION_SILU ? CUDNN_POINTWISE_SWISH_BWD
                                                                     : CUDNN_POINTWISE_GELU_BWD);
    Desc op = make(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    SET(g, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw);
    SET(g, op, CUDNN_ATTR_OPERATION_POINTWISE_DYDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dy);
    SET(g, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    SET(g, op, CUDNN_ATTR_OPERATION_POINTWISE_DXDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &dx);
    add_op(g, ops, op, "activation backward operation");
}

// y[1, c, 1, 1] = the sum of x over n, h and w, in fp32.
static void channel_sum(FusionGraph *g, Ops *ops, Desc x, Desc y, bool deterministic) {
    Desc red = make(g, CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    cudnnReduceTensorOp_t add = CUDNN_REDUCE_TENSOR_ADD;
    cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    SET(g, red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &add);
    SET(g, red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
    SET(g, red, CUDNN_ATTR_REDUCTION_IS_DETERMINISTIC, CUDNN_TYPE_BOOLEAN, 1, &deterministic);
    finalize(g, red, "reduction descriptor");
    Desc op = make(g, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    SET(g, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &red);
    SET(g, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    SET(g, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    add_op(g, ops, op, "reduction operation");
}

static void genstats(FusionGraph *g, Ops *ops, Desc x, Desc sum, Desc sqsum) {
    Desc op = make(g, CUDNN_BACKEND_OPERATION_GEN_STATS_DESCRIPTOR);
    cudnnGenStatsMode_t mode = CUDNN_GENSTATS_SUM_SQSUM;
    cudnnDataType_t math = CUDNN_DATA_FLOAT;
    SET(g, op, CUDNN_ATTR_OPERATION_GENSTATS_MODE, CUDNN_TYPE_GENSTATS_MODE, 1, &mode);
    SET(g, op, CUDNN_ATTR_OPERATION_GENSTATS_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
    SET(g, op, CUDNN_ATTR_OPERATION_GENSTATS_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    SET(g, op, CUDNN_ATTR_OPERATION_GENSTATS_SUMDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &sum);
    SET(g, op, CUDNN_ATTR_OPERATION_GENSTATS_SQSUMDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &sqsum);
    add_op(g, ops, op, "genstats operation");
}

// xhat = (in - mean) * rstd and z = xhat + bias from the per-channel tensors MEAN, RSTD,
// BIAS (the trainer's BatchNorm has no scale), on maps of c channels; the intermediate maps
// are of `type` (a conv's prologue must match the filter's fp16; an epilogue computes in fp32).
static void batchnorm_apply(FusionGraph *g, Ops *ops, const FusionShape *s, int c, cudnnDataType_t type, Desc in,
                            Desc *xhat, Desc *z) {
    Desc mean = per_channel(g, UID_MEAN, c), rstd = per_channel(g, UID_RSTD, c), bias = per_channel(g, UID_BIAS, c);
    Desc centered = tensor(g, next_virtual_uid(g), type, s->batch, c, s->side, s->side, true);
    pointwise(g, ops, CUDNN_POINTWISE_SUB, in, mean, centered);
    *xhat = tensor(g, next_virtual_uid(g), type, s->batch, c, s->side, s->side, true);
    pointwise(g, ops, CUDNN_POINTWISE_MUL, centered, rstd, *xhat);
    *z = tensor(g, next_virtual_uid(g), type, s->batch, c, s->side, s->side, true);
    pointwise(g, ops, CUDNN_POINTWISE_ADD, *xhat, bias, *z);
}

static void build_fprop(FusionGraph *g, Ops *ops, Fusion f, const FusionShape *s, bool deterministic) {
    Desc x;
    if (f == FUSION_BNACT_FPROP || f == FUSION_BNACT_FPROP_GENSTATS) {
        Desc in = tensor(g, UID_IN, CUDNN_DATA_HALF, s->batch, s->c_in, s->side, s->side, false), xhat, z;
        batchnorm_apply(g, ops, s, s->c_in, CUDNN_DATA_HALF, in, &xhat, &z);
        x = tensor(g, next_virtual_uid(g), CUDNN_DATA_HALF, s->batch, s->c_in, s->side, s->side, true);
        pointwise(g, ops, s->activation == ACTIVATION_SILU ? CUDNN_POINTWISE_SWISH_FWD : CUDNN_POINTWISE_GELU_FWD, z,
                  NULL, x);
    } else {
        x = tensor(g, UID_X, CUDNN_DATA_HALF, s->batch, s->c_in, s->side, s->side, false);
    }
    Desc w = tensor(g, UID_W, CUDNN_DATA_HALF, s->c_out, s->c_in, 3, 3, false);
    Desc y = activation_map(g, s, UID_Y, CUDNN_DATA_HALF, false);
    convolution(g, ops, &CONV_FPROP, x, w, y);
    if (f == FUSION_FPROP || f == FUSION_BNACT_FPROP) return;
    Desc sum = per_channel(g, UID_SUM, s->c_out);
    if (f == FUSION_FPROP_SUM) {
        channel_sum(g, ops, y, sum, deterministic);
        return;
    }
    Desc sqsum = per_channel(g, UID_SQSUM, s->c_out);
    if (f == FUSION_FPROP_REDUCE) {
        Desc squares = activation_map(g, s, next_virtual_uid(g), CUDNN_DATA_FLOAT, true);
        channel_sum(g, ops, y, sum, deterministic);
        pointwise(g, ops, CUDNN_POINTWISE_MUL, y, y, squares);
        channel_sum(g, ops, squares, sqsum, deterministic);
    } else {
        genstats(g, ops, y, sum, sqsum);
    }
}

// The dgrad of a conv whose input has c_in channels: its result is the output gradient of
// the BatchNorm + activation layer below (c_in channels at the same side).
static void build_dgrad(FusionGraph *g, Ops *ops, Fusion f, const FusionShape *s, bool deterministic) {
    int c = s->c_in;
    Desc dy = activation_map(g, s, UID_DY, CUDNN_DATA_HALF, false);
    Desc w = tensor(g, UID_W, CUDNN_DATA_HALF, s->c_out, c, 3, 3, false);
    if (f == FUSION_DGRAD) {
        Desc d_out = tensor(g, UID_DOUT, CUDNN_DATA_HALF, s->batch, c, s->side, s->side, false);
        convolution(g, ops, &CONV_DGRAD, dy, w, d_out);
        return;
    }
    Desc d_out = tensor(g, next_virtual_uid(g), CUDNN_DATA_FLOAT, s->batch, c, s->side, s->side, true);
    convolution(g, ops, &CONV_DGRAD, dy, w, d_out);
    Desc in = tensor(g, UID_IN, CUDNN_DATA_HALF, s->batch, c, s->side, s->side, false), xhat, z;
    batchnorm_apply(g, ops, s, c, CUDNN_DATA_FLOAT, in, &xhat, &z);
    Desc dz = tensor(g, UID_DZ, CUDNN_DATA_HALF, s->batch, c, s->side, s->side, false);
    activation_backward(g, ops, s->activation, d_out, z, dz);
    if (f == FUSION_DGRAD_ACT) return;
    Desc dz_xhat = tensor(g, next_virtual_uid(g), CUDNN_DATA_FLOAT, s->batch, c, s->side, s->side, true);
    if (f == FUSION_DGRAD_BN_REDUCE) channel_sum(g, ops, dz, per_channel(g, UID_SUM_DZ, c), deterministic);
    pointwise(g, ops, CUDNN_POINTWISE_MUL, dz, xhat, dz_xhat);
    channel_sum(g, ops, dz_xhat, per_channel(g, UID_SUM_DZ_XHAT, c), deterministic);
}

static void build_wgrad(FusionGraph *g, Ops *ops, const FusionShape *s) {
    Desc x = tensor(g, UID_X, CUDNN_DATA_HALF, s->batch, s->c_in, s->side, s->side, false);
    Desc dy = activation_map(g, s, UID_DY, CUDNN_DATA_HALF, false);
    convolution(g, ops, &CONV_WGRAD, x, dy, tensor(g, UID_DW, CUDNN_DATA_HALF, s->c_out, s->c_in, 3, 3, false));
}

int fusion_reduces(Fusion f) {
    return f == FUSION_FPROP_SUM || f == FUSION_FPROP_REDUCE || f == FUSION_DGRAD_ACT_SUM || f == FUSION_DGRAD_BN_REDUCE;
}

void fusion_graph_build(FusionGraph *g, Fusion f, const FusionShape *s, int deterministic) {
    memset(g, 0, sizeof *g);
    Ops ops = {.n = 0};
    if (f == FUSION_WGRAD)
        build_wgrad(g, &ops, s);
    else if (fusion_is_dgrad(f))
        build_dgrad(g, &ops, f, s, deterministic);
    else
        build_fprop(g, &ops, f, s, deterministic);
    Desc graph = make(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    SET(g, graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, ops.n, ops.ops);
    finalize(g, graph, "operation graph");
    if (!failed(g)) g->graph = graph;
}

void fusion_graph_free(FusionGraph *g) {
    for (int i = g->n_descs - 1; i >= 0; i--) cudnnBackendDestroyDescriptor(g->descs[i]);
    memset(g, 0, sizeof *g);
}

// ---------------------------------------------------------------------------------------
// Plans

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void plan_failure(FusionPlan *p, cudnnStatus_t status, const char *what) {
    p->status = status;
    char last[400];
    cudnnGetLastErrorString(last, sizeof last);
    snprintf(p->why, sizeof p->why, "%s: %s%s%s", what, cudnnGetErrorString(status), last[0] ? ": " : "", last);
}


// The engine configs heuristics mode `mode` offers for the graph, appended to cfgs.
static int heuristic_configs(FusionPlan *p, const FusionGraph *g, cudnnBackendDescriptor_t device,
                             cudnnBackendHeurMode_t mode, Desc *cfgs, int n_have) {
    Desc heur = NULL;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                      &g->graph);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &device);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(heur);
    int64_t n = 0;
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &n, NULL);
    int room = FUSION_MAX_CONFIGS - n_have, got = 0;
    if (st == CUDNN_STATUS_SUCCESS && n > 0 && room > 0) {
        int want = 0;
        while (want < n && want < room && st == CUDNN_STATUS_SUCCESS)
            st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[n_have + want++]);
        if (st != CUDNN_STATUS_SUCCESS) want--;  // the one that failed was not made
        int64_t returned = 0;
        if (st == CUDNN_STATUS_SUCCESS)
            st = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, want,
                                          &returned, &cfgs[n_have]);
        got = st == CUDNN_STATUS_SUCCESS ? (int)returned : 0;
        for (int i = got; i < want; i++) cudnnBackendDestroyDescriptor(cfgs[n_have + i]);
    }
    if (st != CUDNN_STATUS_SUCCESS && p->status == CUDNN_STATUS_SUCCESS) plan_failure(p, st, "engine heuristics");
    if (heur) cudnnBackendDestroyDescriptor(heur);
    return got;
}

// The engine of a config: its global index, whether it compiles at runtime, and whether
// cuDNN notes it as nondeterministic.
static void describe_engine(FusionPlan *p, Desc cfg) {
    Desc engine = NULL;
    int64_t count = 0;
    p->engine = -1;
    p->runtime_compiled = p->nondeterministic = 0;
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine);
    if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count, &engine) ==
        CUDNN_STATUS_SUCCESS) {
        cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &count, &p->engine);
        cudnnBackendBehaviorNote_t notes[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
        if (cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                     CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &count, notes) == CUDNN_STATUS_SUCCESS)
            for (int i = 0; i < count; i++)
                if (notes[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) p->runtime_compiled = 1;
        cudnnBackendNumericalNote_t numerical[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
        if (cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                     CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &count, numerical) == CUDNN_STATUS_SUCCESS)
            for (int i = 0; i < count; i++)
                if (numerical[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) p->nondeterministic = 1;
    }
    cudnnBackendDestroyDescriptor(engine);
}

void fusion_plan_build(FusionPlan *p, const FusionGraph *g, cudnnBackendDescriptor_t device) {
    fusion_plan_build_from(p, g, device, 0);
}

// Finalizes config i (cfg) into p's plan. A failure is noted in p unless an earlier one
// is already (the first failure says why), or this one got further: compiled its kernel,
// which without a GPU is as far as any config gets.
static void try_config(FusionPlan *p, Desc cfg, cudnnBackendDescriptor_t device, int i) {
    Desc plan = NULL;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                      &cfg);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                      &device);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(plan);
    if (st != CUDNN_STATUS_SUCCESS) {
        int compiled = st == CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER;
        if (p->status == CUDNN_STATUS_SUCCESS || (compiled && !p->compiled_only)) {
            plan_failure(p, st, compiled ? "compiled, but not loaded (no GPU)" : "execution plan");
            if (compiled) {
                describe_engine(p, cfg);
                p->config = i;
            }
        }
        p->compiled_only |= compiled;
        if (plan) cudnnBackendDestroyDescriptor(plan);
        return;
    }
    int64_t count = 0;
    cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &count,
                             &p->workspace);
    describe_engine(p, cfg);
    p->plan = plan;
    p->compiled_only = 0;
    p->config = i;
    p->status = CUDNN_STATUS_SUCCESS;
    p->why[0] = 0;
}

static void plan_reset(FusionPlan *p, int n_configs) {
    memset(p, 0, sizeof *p);
    p->config = p->engine = -1;
    p->n_configs = n_configs;
}

void fusion_configs_list(FusionConfigs *list, FusionPlan *p, const FusionGraph *g,
                         cudnnBackendDescriptor_t device) {
    plan_reset(p, 0);
    list->n = 0;
    if (!g->graph) {
        p->status = g->status;
        snprintf(p->why, sizeof p->why, "%s", g->why);
        return;
    }
    list->n = heuristic_configs(p, g, device, CUDNN_HEUR_MODE_A, list->cfgs, 0);
    list->n += heuristic_configs(p, g, device, CUDNN_HEUR_MODE_FALLBACK, list->cfgs, list->n);
    p->n_configs = list->n;
}

void fusion_configs_free(FusionConfigs *list) {
    for (int i = 0; i < list->n; i++) cudnnBackendDestroyDescriptor(list->cfgs[i]);
    list->n = 0;
}

static void no_config_left(FusionPlan *p, int first) {
    if (p->plan || p->status != CUDNN_STATUS_SUCCESS) return;
    p->status = CUDNN_STATUS_NOT_SUPPORTED;
    if (p->n_configs)
        snprintf(p->why, sizeof p->why, "no engine config from %d of the %d offered", first, p->n_configs);
    else
        snprintf(p->why, sizeof p->why, "the heuristics offered no engine config");
}

void fusion_plan_build_from(FusionPlan *p, const FusionGraph *g, cudnnBackendDescriptor_t device, int first) {
    double begin = now_ms();
    FusionConfigs list;
    fusion_configs_list(&list, p, g, device);
    if (!g->graph) return;
    // Without a GPU, a config that compiled is as far as any gets: the first one answers.
    for (int i = first; i < list.n && !p->plan && !p->compiled_only; i++) try_config(p, list.cfgs[i], device, i);
    no_config_left(p, first);
    fusion_configs_free(&list);
    p->build_ms = now_ms() - begin;
}

void fusion_plan_build_listed(FusionPlan *p, const FusionConfigs *list, cudnnBackendDescriptor_t device, int config,
                              int only_ready) {
    double begin = now_ms();
    plan_reset(p, list->n);
    if (config < list->n) {
        describe_engine(p, list->cfgs[config]);
        if (only_ready && (p->nondeterministic || p->runtime_compiled)) {
            p->status = CUDNN_STATUS_NOT_SUPPORTED;
            snprintf(p->why, sizeof p->why, "engine %lld %s", (long long)p->engine,
                     p->nondeterministic ? "is nondeterministic" : "compiles its kernel at run time");
        } else {
            try_config(p, list->cfgs[config], device, config);
        }
    }
    no_config_left(p, config);
    p->build_ms = now_ms() - begin;
}


cudnnBackendDescriptor_t fusion_pack(const FusionGraph *g, void *const by_uid[N_UIDS], void *workspace) {
    void *pointers[FUSION_MAX_UIDS];
    for (int i = 0; i < g->n_uids; i++)
        if (!(pointers[i] = by_uid[g->uids[i]]))
            die(1, "fusion.c: tensor %lld of the graph has no buffer", (long long)g->uids[i]);
    cudnnBackendDescriptor_t pack;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
    CUDNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, g->n_uids, g->uids));
    CUDNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, g->n_uids,
                                         pointers));
    CUDNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace));
    CUDNN_CHECK(cudnnBackendFinalize(pack));
    return pack;
}

void fusion_plan_free(FusionPlan *p) {
    if (p->plan) cudnnBackendDestroyDescriptor(p->plan);
    memset(p, 0, sizeof *p);
}

// ---------------------------------------------------------------------------------------
// Device properties

cudnnBackendDescriptor_t fusion_device_finish(cudnnBackendDescriptor_t d, cudnnStatus_t st, const char *what,
                                              int code) {
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(d);
    if (st != CUDNN_STATUS_SUCCESS) {
        char last[400];
        cudnnGetLastErrorString(last, sizeof last);
        die(code,
            "%s: cuDNN refused the device properties: %s %s (they need cuDNN 9.8 or newer, and a file cuDNN "
            "wrote or one with the members of dev/fusion/h100-sxm-handwritten.json)",
            what, cudnnGetErrorString(st), last);
    }
    return d;
}

cudnnBackendDescriptor_t fusion_device_from_handle(cudnnHandle_t handle) {
    Desc d = NULL;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, &d);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(d, CUDNN_ATTR_DEVICEPROP_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    return fusion_device_finish(d, st, "this GPU", 1);
}

// ---------------------------------------------------------------------------------------
// The trainer's fused dgrad

struct FusedDgrad {
    FusionGraph graph;
    FusionPlan plan;
    void *workspace;
};

FusedDgrad *fused_dgrad_create(cudnnBackendDescriptor_t device, const FusionShape *s) {
    FusedDgrad *f = host_alloc(sizeof *f);
    fusion_graph_build(&f->graph, FUSION_DGRAD_BN_REDUCE, s, 1);
    fusion_plan_build(&f->plan, &f->graph, device);
    if (!f->plan.plan)
        die(1, "--fused-bn on: cuDNN has no plan for the dgrad of a %dx%d conv at %dx%d, batch %d, with the BatchNorm "
            "backward's reduction: %s (run without --fused-bn; dev/fusion/fusion_bench tells which fusions this GPU "
            "supports)",
            s->c_out, s->c_in, s->side, s->side, s->batch, f->plan.why);
    f->workspace = f->plan.workspace ? gpu_alloc((size_t)f->plan.workspace) : NULL;
    return f;
}

// The variant pack is made per call: host work only, and the buffers may change between calls.
void fused_dgrad_run(const FusedDgrad *f, cudnnHandle_t handle, const FusedDgradBuffers *b) {
    void *by_uid[N_UIDS] = {0};
    by_uid[UID_DY] = (void *)b->dy;
    by_uid[UID_W] = (void *)b->w;
    by_uid[UID_IN] = (void *)b->in;
    by_uid[UID_MEAN] = (void *)b->mean;
    by_uid[UID_RSTD] = (void *)b->rstd;
    by_uid[UID_BIAS] = (void *)b->bias;
    by_uid[UID_DZ] = b->dz;
    by_uid[UID_SUM_DZ] = b->sum_dz;
    by_uid[UID_SUM_DZ_XHAT] = b->sum_dz_xhat;
    cudnnBackendDescriptor_t pack = fusion_pack(&f->graph, by_uid, f->workspace);
    CUDNN_CHECK(cudnnBackendExecute(handle, f->plan.plan, pack));
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(pack));
}

int fused_dgrad_deterministic(const FusedDgrad *f) { return !f->plan.nondeterministic; }

void fused_dgrad_free(FusedDgrad *f) {
    if (!f) return;
    fusion_plan_free(&f->plan);
    fusion_graph_free(&f->graph);
    cudaFree(f->workspace);
    free(f);
}
