// trainer.h: the GPU trainer's state, shared by the files of the trainer: airbench.c (the
// method), trainer.c (setting the state up and tearing it down) and muon.c (the Muon
// optimizer's Newton-Schulz part).
#pragma once
#include <cublas_v2.h>

#include "cifar10.h"
#include "conv.h"
#include "fusion.h"
#include "gpu.h"
#include "graph.h"
#include "kernels.h"
#include "net.h"
#include "recipe.h"

typedef struct {
    __half *x;                                   // input images, n x 3 x 32 x 32 (NCHW)
    __half *whiten_out;                          // n*31*31 x 24
    __half *conv_out[3][NET_MAX_DEPTH];          // conv outputs (before the pool for j = 0)
    __half *pooled[3];                           // j = 0: pooled conv output, the BN input
    uint8_t *pool_argmax[3];
    __half *act[3][NET_MAX_DEPTH];               // activation outputs (GELU or SiLU)
    float *bn_mean[3][NET_MAX_DEPTH], *bn_rstd[3][NET_MAX_DEPTH];
    float *features, *logits;                    // n x w3, n x 10
    uint8_t *feature_argmax, *labels;
} Activations;

// A run of conv filters of equal shape (rows = c_out, cols = 9 c_in), count of them from
// element `offset` of the conv segment, their Gram matrices from element gram_offset of
// ns_gram and ns_poly: one batched Newton-Schulz (muon.c).
typedef struct {
    int rows, cols, count;
    size_t offset, gram_offset;
} MuonGroup;

typedef struct Trainer {
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
    float *d_logits, *d_features, *partials, *bn_sums, *bn_group_bias;  // the last: per BN group
    double *loss_sum;
    int *correct;
    // Muon (muon recipes only): the groups of equal-shape filters and every filter as the
    // Muon kernels see it; the update matrices and their Newton-Schulz iterates (bf16, laid
    // out as the conv segment), every group's Gram matrices and polynomials (bf16,
    // muon_gram_size values), and each filter's two sums of squares (update, weight).
    MuonGroup muon_groups[3 * NET_MAX_DEPTH];
    int n_muon_groups;
    MuonMatrices muon_matrices;
    size_t muon_gram_size;
    __nv_bfloat16 *ns_x, *ns_next, *ns_gram, *ns_poly;
    float *sum_sq;
    // Selective TTA (tta_select_frac < 1): every test image's logits, the plain view's top
    // probabilities, and the indices of the images that get TTA.
    float *test_logits, *top_probability;
    int *tta_indices;
    // Data filtering (filter_keep > 0). The main network holds the proxy network (a Trainer
    // of recipe_proxy's recipe that shares the data, the stream and the cuBLAS handle) and
    // each step's kept rows, total steps x filter_keep indices into its batch, which the
    // proxy's selection writes and the main network's loader reads. The proxy holds its
    // batch's per-example losses, the 0/1 loss weights of its steps (backward weights the
    // loss by loss_weights when it is not NULL) and filter_keep ones to scatter into them.
    struct Trainer *proxy;
    int *kept_rows;
    float *example_losses, *loss_weights, *ones;
    // Data, uploaded once: uint8 CHW images and labels.
    uint8_t *train_images, *train_labels, *test_images, *test_labels;
    int n_train, n_test;
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *cublas_workspace;  // set explicitly, so that cuBLAS never allocates inside a captured step
    Convs *convs;
    StepGraphs *graphs;  // --graphs on: the training steps as CUDA graphs (graph.h); else NULL
    // --wgrad-stream on (trainer_use_filter_stream; else all NULL): the filter gradients on
    // a stream of their own, beside the rest of the backward pass; a second conv-output
    // gradient buffer, so that one layer's can be written while the filter gradient of the
    // layer before still reads the other; an event for "this layer's d_conv is written",
    // and one per buffer for "the filter gradient that read it is done".
    cudaStream_t filter_stream;
    __half *d_conv_spare;
    cudaEvent_t d_conv_ready, filter_done[2];
    // --muon-streams on (muon_use_streams; else n_muon_streams 0): each Muon group's
    // Newton-Schulz on a stream of its own, with its own cuBLAS handle and workspace (the
    // main handle's size, so that cuBLAS picks the same kernels); an event for "the updates
    // are scaled" and one per group for "its orthogonal updates are written".
    int n_muon_streams;
    cudaStream_t muon_stream[3 * NET_MAX_DEPTH];
    cublasHandle_t muon_cublas[3 * NET_MAX_DEPTH];
    void *muon_workspace[3 * NET_MAX_DEPTH];
    cudaEvent_t muon_fork, muon_done[3 * NET_MAX_DEPTH];
    // --fused-bn on (trainer_use_fused_bn; else all NULL): the plans of conv (g, j)'s dgrad as
    // one cuDNN graph with the BatchNorm + activation backward's reduction of the layer below
    // it (fusion.h; none for conv (0, 0), below which is the whitening); the layer's two sums
    // go to fused_sums (sum dz, then sum dz * xhat: one block of bn_backward_finalize's
    // partials); a cuDNN handle on the stream for them.
    cudnnHandle_t fusion_cudnn;
    FusedDgrad *fused[3][NET_MAX_DEPTH];
    float *fused_sums;
} Trainer;

#define EVAL_BATCH 2000  // test images per evaluation forward pass
#define CUBLAS_WORKSPACE_BYTES (32u << 20)  // each cuBLAS handle's: cuBLAS's own default on Hopper

// Training batches normalize each group of recipe.bn_group images with its own statistics
// (simulated workers); evaluation uses the running stats, in one group. A group's images
// are contiguous rows of every activation, so each group is the same kernels on a slice.
static inline int bn_groups(const Trainer *t, int n, int train) {
    return train && t->recipe.bn_group ? n / t->recipe.bn_group : 1;
}

static inline float *param_ptr(const Trainer *t, float *base, int tensor_id) {
    return base + t->layout.tensors[tensor_id].offset;
}
static inline __half *conv_half_ptr(const Trainer *t, __half *base, int g, int j) {
    return base + (t->layout.tensors[net_conv_id(&t->layout, g, j)].offset - t->pb.begin[SEG_CONV]);
}

// Muon (muon.c): its scratch buffers, and the conv weights' step of a Muon recipe.
void muon_alloc(Trainer *t);
void muon_step(Trainer *t, const StepPlan *plan);
// --muon-streams on: each group's Newton-Schulz on its own stream (the fields above); exits
// with status 2 for a recipe without Muon. muon_free_streams releases them.
void muon_use_streams(Trainer *t);
void muon_free_streams(Trainer *t);

// Everything for training `recipe` on the first n_train / n_test images of data (and, with
// data filtering, the proxy network), with the convolution algorithms chosen as conv_algo
// says (conv_cache: the algorithm cache file, or NULL); trainer_free releases it all.
Trainer *trainer_create(const Recipe *recipe, const Cifar10 *data, int n_train, int n_test,
                        ConvAlgoChoice conv_algo, const char *conv_cache);
void trainer_free(Trainer *t);
// Moves the network's filter gradients onto a second stream (the fields above).
void trainer_use_filter_stream(Trainer *t);
// --conv-graph: the training batch's convolutions (the proxy's too) through cuDNN's graph-API
// engines where they are faster (convs_use_graph_engines, its timings written to log or
// NULL). Overwrites the weights' buffers: before a run initializes them.
void trainer_use_conv_graph(Trainer *t, ConvGraphChoice choice, FILE *log);
// Fuses each BatchNorm layer's backward reduction into the dgrad above it (the fields
// above). Dies with exit code 2 for a network it does not fit: the residual (depth 3),
// BatchNorm over groups of the batch, data filtering.
void trainer_use_fused_bn(Trainer *t);
// Whether every convolution algorithm chosen, the proxy's and the fused dgrads' included, is
// deterministic.
int trainer_deterministic(const Trainer *t);
