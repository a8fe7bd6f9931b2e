// kernel_bench.h: what dev/kernel_bench.c's table and its harness files share.
//
// A harness drives one kernels.h launch function (v1, or a v2 with the same signature) at
// a shape: `prepare` builds random inputs and output buffers, `run` enqueues one launch
// through the entry's function pointer, `check` compares the outputs of one launch with
// the CPU reference (reference.h) and keeps the worst comparison.
#pragma once
#include <math.h>
#include <stdio.h>

#include "gpu_test.h"
#include "kernels.h"

typedef struct {
    int batch;              // images per batch (airbench94: 1024)
    int widths[3];          // channels of the three conv groups (64, 256, 256)
    int depth;              // convs per group: 2, or 3 (airbench96's residual)
    Activation activation;  // the BN + activation kernels': GELU, or SiLU (the record recipe)
} Shape;

// Layer group g's sides: its first conv's output (the 2x2 max pool's input), and the pooled
// side of every later activation of the group (the BatchNorm layers' rows are batch x side^2).
static inline int group_conv_side(int g) { return 31 >> g; }
static inline int group_pooled_side(int g) { return (31 >> g) / 2; }

typedef struct {
    char shape[48];  // the shape, as the output line prints it
    double bytes;    // bytes the kernel must read and write, for the GB/s column
    void *state;     // the harness's device buffers and host copies of the inputs
} Case;

// The worst comparison of a check: the largest error / bound (a bound of 0 asks for an
// exact result, so any error is worst; NaN is worst of all).
typedef struct {
    double error, bound;
    int failed;      // some comparison was above its bound, or NaN
    char what[40];   // the output of the worst comparison
} Check;

static inline double check_badness(double error, double bound) {
    if (!(error == error)) return INFINITY;
    if (bound > 0) return error / bound;
    return error > 0 ? INFINITY : 0.0;
}

static inline void compare(Check *c, const char *what, double error, double bound) {
    if (!(error <= bound)) c->failed = 1;
    if (c->what[0] && !(check_badness(error, bound) > check_badness(c->error, c->bound))) return;
    c->error = error;
    c->bound = bound;
    snprintf(c->what, sizeof c->what, "%s", what);
}

// An entry's launch function, stored untyped; the harness's run calls it with v1's type:
// CALL_AS(launch_bn_gelu_forward, launch)(out, in, ...).
typedef void (*KernelFn)(void);
#define CALL_AS(v1, launch) ((__typeof__(&(v1)))(launch))

typedef struct {
    int per_group;  // the shape depends on the layer group: one case per selected group
    void (*prepare)(Case *c, const Shape *s, int group);
    cudaError_t (*run)(const Case *c, KernelFn launch, cudaStream_t stream);
    void (*check)(const Case *c, Check *result);
    // free_all of the harness's own file: gpu_test.h tracks allocations per file.
    void (*release)(void);
} Harness;

// bench_activations.c
extern const Harness TRAIN_LOADER, EVAL_LOADER, WHITEN_FORWARD, WHITEN_BIAS_BACKWARD, CHANNEL_STATS, MAXPOOL2_STATS,
    BN_FINALIZE, BN_GELU_FORWARD, BN_GELU_FORWARD_RESIDUAL, BN_GELU_BACKWARD_REDUCE,
    BN_GELU_BACKWARD_REDUCE_RESIDUAL, BN_BACKWARD_FINALIZE,
    BN_GELU_BACKWARD_APPLY, BN_GELU_BACKWARD_APPLY_RESIDUAL, BN_GELU_BACKWARD_APPLY_POOL;
// bench_head_optim.c
extern const Harness MAXPOOL_GLOBAL, MAXPOOL_GLOBAL_BACKWARD, HEAD_FORWARD, HEAD_BACKWARD, LOSS, LOSS_MASKED,
    EXAMPLE_LOSSES, SELECT_HIGHEST, SGD_STEP, LOOKAHEAD, MUON_MOMENTUM, SUM_SQUARES, SUM_SQUARES_BF16,
    SCALE_BY_INVERSE_NORM, MUON_APPLY;
