// net.h: the network's parameter tensors, their order in the one flat parameter buffer,
// and their initialization, shared by the CPU reference and the GPU trainer.
//
// Order: whitening weight (frozen), whitening bias, the conv3x3 weights (group g, conv j),
// the head, then the BatchNorm biases. So the "other" optimizer group is one contiguous
// range and the BN-bias group another, and the conv weights are contiguous too.
// Every tensor is described in PyTorch's layout (OIHW for convs, [10][w3] for the head);
// its tensor id is its position here, which keys its init random stream.
#pragma once
#include <math.h>
#include <stddef.h>
#include "rng.h"

#define NET_MAX_DEPTH 3
#define NET_MAX_TENSORS (2 + 3 * NET_MAX_DEPTH * 2 + 1)
#define NET_CLASSES 10
#define WHITEN_WIDTH 24   // 2 * 3 * 2 * 2: the 12 whitening filters and their negations
#define WHITEN_KERNEL 2

typedef enum { TENSOR_WHITEN_W, TENSOR_WHITEN_B, TENSOR_CONV, TENSOR_HEAD, TENSOR_BN_BIAS } TensorKind;

typedef struct {
    TensorKind kind;
    int group, conv;        // ConvGroup and conv index within it (convs and BN biases)
    int c_out, c_in, kernel;
    size_t size, offset;    // elements, and start in the flat buffer
} TensorInfo;

typedef struct {
    int widths[3];
    int depth;
    int n_tensors;
    TensorInfo tensors[NET_MAX_TENSORS];
    size_t n_params;
    int first_conv, n_convs;  // tensor ids of the conv weights (contiguous)
    int head, first_bn;       // tensor id of the head and of the first BN bias
} NetLayout;

#define WHITEN_SIDE (32 - WHITEN_KERNEL + 1)  // 31: the whitening conv has no padding

// Spatial side at the input of group g (31, 15, 7), after its pool (15, 7, 3), and of
// conv j's input and output (3x3, pad 1: the same side): before the pool for j = 0.
static inline int net_group_in_side(int g) { return WHITEN_SIDE >> g; }
static inline int net_group_out_side(int g) { return net_group_in_side(g) / 2; }
static inline int net_conv_side(int g, int j) { return j == 0 ? net_group_in_side(g) : net_group_out_side(g); }

// The residual of the depth-3 groups (96): the group's first activation x0 joins the last
// BN output before its GELU,
//   conv0 -> pool -> BN -> GELU = x0 -> conv1 -> BN -> GELU -> conv2 -> BN -> (+ x0) -> GELU.
// net_residual_joins: BN (g, j)'s output gets x0 added. net_residual_splits: conv j's input
// is x0, which also feeds the residual, so x0's gradient is the sum of both paths'.
static inline int net_residual_joins(int depth, int j) { return depth == 3 && j == 2; }
static inline int net_residual_splits(int depth, int j) { return depth == 3 && j == 1; }

// The activation after each BN of the ConvGroups (recipe.h's `activation`; the whitening
// conv's stays GELU): exact GELU x Phi(x), or SiLU x sigmoid(x) (the 2025 record recipe).
// Shared with the kernels, whose launch functions take it as an int. The identity is for
// the backward apply kernels alone (kernels.h): their d_out is then already the gradient
// at the activation's input, which --fused-bn's dgrad computed (fusion.h).
typedef enum { ACTIVATION_GELU = 0, ACTIVATION_SILU = 1, ACTIVATION_IDENTITY = 2 } Activation;

// Input channels of conv j of group g.
static inline int net_conv_in(const int widths[3], int g, int j) {
    if (j > 0) return widths[g];
    return g == 0 ? WHITEN_WIDTH : widths[g - 1];
}

static inline void net_layout_add(NetLayout *l, TensorKind kind, int g, int j, int c_out, int c_in, int kernel) {
    TensorInfo *t = &l->tensors[l->n_tensors++];
    t->kind = kind;
    t->group = g;
    t->conv = j;
    t->c_out = c_out;
    t->c_in = c_in;
    t->kernel = kernel;
    t->size = (size_t)c_out * (c_in ? c_in : 1) * kernel * kernel;
    t->offset = l->n_params;
    l->n_params += t->size;
}

static inline void net_layout_init(NetLayout *l, const int widths[3], int depth) {
    l->widths[0] = widths[0];
    l->widths[1] = widths[1];
    l->widths[2] = widths[2];
    l->depth = depth;
    l->n_tensors = 0;
    l->n_params = 0;
    net_layout_add(l, TENSOR_WHITEN_W, -1, -1, WHITEN_WIDTH, 3, WHITEN_KERNEL);
    net_layout_add(l, TENSOR_WHITEN_B, -1, -1, WHITEN_WIDTH, 0, 1);
    l->first_conv = l->n_tensors;
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < depth; j++)
            net_layout_add(l, TENSOR_CONV, g, j, widths[g], net_conv_in(widths, g, j), 3);
    l->n_convs = l->n_tensors - l->first_conv;
    l->head = l->n_tensors;
    net_layout_add(l, TENSOR_HEAD, -1, -1, NET_CLASSES, widths[2], 1);
    l->first_bn = l->n_tensors;
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < depth; j++)
            net_layout_add(l, TENSOR_BN_BIAS, g, j, widths[g], 0, 1);
}

// Tensor id of conv j of group g, and of its BN bias.
static inline int net_conv_id(const NetLayout *l, int g, int j) { return l->first_conv + g * l->depth + j; }
static inline int net_bn_id(const NetLayout *l, int g, int j) { return l->first_bn + g * l->depth + j; }

// The flat buffer's four optimizer segments as offsets [begin[i], end[i]), in buffer order:
// whitening bias, conv filters, head, BN biases (kernels.h's SEG_*, recipe.h's GROUP_*).
static inline void net_segments(const NetLayout *l, size_t begin[4], size_t end[4]) {
    const TensorInfo *first[4] = {&l->tensors[1], &l->tensors[l->first_conv], &l->tensors[l->head],
                                  &l->tensors[l->first_bn]};
    const TensorInfo *last[4] = {&l->tensors[1], &l->tensors[l->first_conv + l->n_convs - 1], &l->tensors[l->head],
                                 &l->tensors[l->n_tensors - 1]};
    for (int i = 0; i < 4; i++) {
        begin[i] = first[i]->offset;
        end[i] = last[i]->offset + last[i]->size;
    }
}

// Initial value of element `index` (PyTorch layout) of a conv3x3 weight: PyTorch's default
// uniform(+-1/sqrt(fan_in)), with the first c_in filters overwritten by identity (Dirac)
// kernels, 1 at [o][o][1][1].
RNG_HD float net_init_conv(uint64_t seed, int tensor_id, int c_out, int c_in, size_t index) {
    (void)c_out;
    int per_filter = c_in * 9;
    int o = (int)(index / per_filter), rest = (int)(index % per_filter);
    if (o < c_in) return rest == o * 9 + 4 ? 1.0f : 0.0f;
    float bound = 1.0f / sqrtf((float)per_filter);
    return rng_uniform_pm(rng_u32(seed, RNG_STREAM_INIT, (uint32_t)tensor_id, (uint32_t)index), bound);
}

// Initial value of element `index` of the head weight, and of the whitening bias in the
// Muon variant (PyTorch's default bias init): uniform(+-1/sqrt(fan_in)).
RNG_HD float net_init_uniform(uint64_t seed, int tensor_id, int fan_in, size_t index) {
    float bound = 1.0f / sqrtf((float)fan_in);
    return rng_uniform_pm(rng_u32(seed, RNG_STREAM_INIT, (uint32_t)tensor_id, (uint32_t)index), bound);
}

// Rescales values to unit (unbiased) standard deviation: the Muon variant's head init.
static inline void net_scale_to_unit_std(float *values, size_t count) {
    double sum = 0.0, sum_sq = 0.0;
    for (size_t i = 0; i < count; i++) sum += values[i];
    double mean = sum / count;
    for (size_t i = 0; i < count; i++) sum_sq += (values[i] - mean) * (values[i] - mean);
    float scale = (float)(1.0 / sqrt(sum_sq / (count - 1)));
    for (size_t i = 0; i < count; i++) values[i] *= scale;
}
