// fusion.h: conv + BatchNorm fusions as cuDNN graphs (the backend API), and the plans cuDNN
// makes of them. The trainer takes one of them with --fused-bn on (fused_dgrad_* below);
// dev/fusion/fusion_bench.c asks which ones cuDNN supports on a GPU (or on a GPU described by
// a device-properties file, no GPU needed) and, on a GPU, times each against the trainer's
// separate conv and kernel launches.
//
// The fusions, at one conv's shape (NHWC fp16 tensors, fp32 accumulation, 3x3, pad 1):
//   fprop               y = conv(x, w): the unfused forward, as a graph (the sanity case)
//   fprop+sum           y, and its per-channel sum by one REDUCTION (add) op
//   fprop+genstats      y, and its per-channel sum and sum of squares by a GEN_STATS op
//   fprop+reduce        the same statistics by two REDUCTION ops
//   bnact+fprop         the conv input computed on the fly, x = act((in - mean) * rstd + bias):
//                       the BatchNorm apply and activation as the conv's prologue
//   bnact+fprop+genstats  both
//   dgrad               d_out = the input gradient of a conv (the sanity case)
//   dgrad+act'          dz = d_out * act'(z), z = (in - mean) * rstd + bias: the gradient
//                       through the activation of the BatchNorm layer below the conv
//   dgrad+act'+sum      dz, and per channel sum dz * xhat (xhat = (in - mean) * rstd): one reduction
//   dgrad+bn-reduce     dz, sum dz and sum dz * xhat: everything bn_gelu_backward_reduce
//                       computes, in the dgrad's epilogue (two reductions)
//   wgrad               dw = the filter gradient of a conv: no fusion, but which engines the
//                       graph API has for it (the first conv's took 7% of a step at 790450e)
// Each output tensor and per-channel input has a fixed unique id (FusionUid) for the variant
// pack. Per-channel tensors are fp32 [1, C, 1, 1].
#pragma once
#include <cudnn.h>
#include <stdint.h>

typedef enum {
    FUSION_FPROP,
    FUSION_FPROP_SUM,
    FUSION_FPROP_GENSTATS,
    FUSION_FPROP_REDUCE,
    FUSION_BNACT_FPROP,
    FUSION_BNACT_FPROP_GENSTATS,
    FUSION_DGRAD,
    FUSION_DGRAD_ACT,
    FUSION_DGRAD_ACT_SUM,
    FUSION_DGRAD_BN_REDUCE,
    FUSION_WGRAD,
    N_FUSIONS
} Fusion;

extern const char *const FUSION_NAMES[N_FUSIONS];

static inline int fusion_is_dgrad(Fusion f) { return f >= FUSION_DGRAD && f <= FUSION_DGRAD_BN_REDUCE; }

// The variant pack's tensors. For fprop fusions: X (the conv input, or for bnact+fprop the
// BatchNorm input IN), W, Y, SUM, SQSUM, and MEAN, RSTD, BIAS for the prologue. For dgrad
// fusions: DY (the conv's output gradient), W, IN (the forward input of the BatchNorm layer
// below, conv output side), MEAN, RSTD, BIAS, then DOUT (plain dgrad) or DZ, SUM_DZ,
// SUM_DZ_XHAT. For wgrad: X, DY and DW (the filter gradient, fp16 like the filters).
typedef enum {
    UID_X = 1,
    UID_W,
    UID_Y,
    UID_SUM,
    UID_SQSUM,
    UID_IN,
    UID_MEAN,
    UID_RSTD,
    UID_BIAS,
    UID_DY,
    UID_DOUT,
    UID_DZ,
    UID_SUM_DZ,
    UID_SUM_DZ_XHAT,
    UID_DW,
    N_UIDS
} FusionUid;

// One conv: batch x c_in x side x side in, c_out x c_in x 3 x 3 filters, batch x c_out x
// side x side out. activation: net.h's Activation (GELU or SiLU).
typedef struct {
    int batch, c_in, c_out, side, activation;
} FusionShape;

enum { FUSION_MAX_DESCS = 48, FUSION_MAX_UIDS = 12 };

// A finalized operation graph, or why cuDNN refused it (graph NULL, status and why set).
typedef struct {
    cudnnBackendDescriptor_t graph;
    cudnnStatus_t status;
    char why[512];
    // The graph's non-virtual tensors, in the order a variant pack lists them.
    int64_t uids[FUSION_MAX_UIDS];
    int n_uids;
    // Every descriptor made for the graph, destroyed by fusion_graph_free.
    cudnnBackendDescriptor_t descs[FUSION_MAX_DESCS];
    int n_descs;
} FusionGraph;

// Builds fusion f at shape s, its reductions deterministic (a fixed summation order, as the
// trainer's bit-reproducible runs need) or not (atomics). A descriptor cuDNN rejects is not
// fatal: the graph comes back NULL with the status and cuDNN's last error message. A shape
// that cannot be described at all (too many descriptors: this file's bug) is fatal.
void fusion_graph_build(FusionGraph *g, Fusion f, const FusionShape *s, int deterministic);
// Whether fusion f has a reduction (so that its determinism is a choice).
int fusion_reduces(Fusion f);
void fusion_graph_free(FusionGraph *g);

// The execution plan of a graph: the first engine config of cuDNN's heuristics (mode A,
// then the fallback list) that finalizes for the device, or why none did. Without a GPU
// (deviceless plans) a runtime-fusion engine compiles its kernel and then fails to load it
// into the driver (CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER; with the CUDA toolkit's stub
// libcuda.so.1): compiled_only says that this happened, i.e. cuDNN accepted the graph.
typedef struct {
    cudnnBackendDescriptor_t plan;
    int compiled_only;
    cudnnStatus_t status;
    char why[512];
    int n_configs;         // configs the heuristics offered (A and fallback together)
    int config;            // the index of the one taken among them
    int64_t engine;        // its engine's global index
    int runtime_compiled;  // the engine compiles its kernel at plan time (a runtime fusion engine)
    int nondeterministic;  // cuDNN notes the engine as nondeterministic
    int64_t workspace;     // bytes
    double build_ms;       // wall time of heuristics + plan finalization
} FusionPlan;

void fusion_plan_build(FusionPlan *p, const FusionGraph *g, cudnnBackendDescriptor_t device);
// The same from config `first` of the heuristics' list on: fusion_plan_build_from(p, g,
// device, q.config + 1) gives the plan of the next config that finalizes after q's, so that
// a loop can try every engine the heuristics offer (p->config is -1 when none is left).
void fusion_plan_build_from(FusionPlan *p, const FusionGraph *g, cudnnBackendDescriptor_t device, int first);
// Several configs of one graph without asking the heuristics each time: list them once,
// plan any of them, free the list (the plans made from it live on, and need the graph).
// Deviceless (H100 JSON, 2-core CPU), the 390 configs of 9 of airbench94's conv directions
// took 5.4 s planned one by one, the heuristics asked each time (as fusion_plan_build_from
// does), and 0.29 s from one list per direction.
enum { FUSION_MAX_CONFIGS = 64 };
typedef struct {
    cudnnBackendDescriptor_t cfgs[FUSION_MAX_CONFIGS];
    int n;
} FusionConfigs;
// Lists the configs for g (none if g was refused, p then says why; a heuristics failure is
// noted in p too, which is otherwise reset).
void fusion_configs_list(FusionConfigs *list, FusionPlan *p, const FusionGraph *g, cudnnBackendDescriptor_t device);
// Config `config` of the list only (p->config == config when it finalized; p->n_configs is
// list->n). With only_ready, a config whose engine is noted nondeterministic or compiles its
// kernel at run time is refused before it is finalized (which, for the latter, takes seconds).
void fusion_plan_build_listed(FusionPlan *p, const FusionConfigs *list, cudnnBackendDescriptor_t device, int config,
                              int only_ready);
void fusion_configs_free(FusionConfigs *list);
void fusion_plan_free(FusionPlan *p);

// The variant pack of a graph's tensors: by_uid[uid] is each one's device pointer (entries
// the graph does not use are ignored; one it uses must not be NULL). Destroy it with
// cudnnBackendDestroyDescriptor.
cudnnBackendDescriptor_t fusion_pack(const FusionGraph *g, void *const by_uid[N_UIDS], void *workspace);

// The properties of the GPU a cuDNN handle runs on (cuDNN 9.8 or newer), for heuristics and plans.
cudnnBackendDescriptor_t fusion_device_from_handle(cudnnHandle_t handle);
// Finalizes a device-properties descriptor whose making returned st, or dies with `code`,
// naming `what` and cuDNN's reason.
cudnnBackendDescriptor_t fusion_device_finish(cudnnBackendDescriptor_t d, cudnnStatus_t st, const char *what,
                                              int code);

// ---- the trainer's fusion: a conv's dgrad with the BatchNorm backward's reduction ---------
// (dgrad+bn-reduce above, deterministic reductions), planned once per shape.
typedef struct {
    const void *dy, *w;              // the conv's output gradient and its filters (fp16)
    const void *in;                  // the input of the BatchNorm layer below (fp16, c_in channels)
    const float *mean, *rstd, *bias;  // that layer's batch statistics and bias
    void *dz;                        // out: the gradient at its activation's input (fp16)
    float *sum_dz, *sum_dz_xhat;     // out: per channel sum dz and sum dz * xhat
} FusedDgradBuffers;

typedef struct FusedDgrad FusedDgrad;
// Dies with cuDNN's reason if it has no plan for the shape.
FusedDgrad *fused_dgrad_create(cudnnBackendDescriptor_t device, const FusionShape *s);
// Enqueues it on the handle's stream, on buffers of the shape's sizes.
void fused_dgrad_run(const FusedDgrad *f, cudnnHandle_t handle, const FusedDgradBuffers *b);
// Whether cuDNN notes its engine as deterministic (its reductions are asked to be).
int fused_dgrad_deterministic(const FusedDgrad *f);
void fused_dgrad_free(FusedDgrad *f);
