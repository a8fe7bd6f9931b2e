// bn_gelu_layer.h: the per-element BatchNorm + activation helpers that kernels/bn_gelu.cu
// and a v2 being tried in dev/ (kernel_bench, dev/README.md) share. CUDA C++ only; the C
// interface is kernels.h.
#pragma once
#include "kernel_common.h"
#include "net.h"

// Per-channel values a thread keeps for its 8 channels.
struct BnParams {
    float mean[8], rstd[8], bias[8];
};

__device__ __forceinline__ void load_bn_params(BnParams *p, const float *mean, const float *rstd, const float *bias,
                                               int ch0) {
    load_param8(p->mean, mean + ch0);
    load_param8(p->rstd, rstd + ch0);
    load_param8(p->bias, bias + ch0);
}

// The activation A and its derivative, chosen at compile time (identity: the backward apply
// kernels' d_out is already the activation input's gradient, net.h).
template <Activation A> __device__ __forceinline__ float activate(float z) {
    if constexpr (A == ACTIVATION_SILU) return silu(z);
    else if constexpr (A == ACTIVATION_IDENTITY) return z;
    else return gelu(z);
}

template <Activation A> __device__ __forceinline__ float activate_grad(float z) {
    if constexpr (A == ACTIVATION_SILU) return silu_grad(z);
    else if constexpr (A == ACTIVATION_IDENTITY) return 1.0f;
    else return gelu_grad(z);
}

// One element's backward quantities: xhat and dz = d_out * act'(z), z as in the forward.
template <Activation A>
__device__ __forceinline__ void bn_gelu_dz(float *dz, float *xhat, float x, float d_out, float residual,
                                           bool has_residual, const BnParams &p, int k) {
    float z = bn_z(x, p.mean[k], p.rstd[k], p.bias[k]);
    if (has_residual) z = __fadd_rn(z, residual);
    *xhat = bn_xhat(x, p.mean[k], p.rstd[k]);
    *dz = d_out * activate_grad<A>(z);
}

// First row of this thread in a grid-stride walk, and the stride.
__device__ __forceinline__ int first_row(const RowTile &tile) { return blockIdx.x * tile.rows_per_pass + tile.sub; }
__device__ __forceinline__ int row_stride(const RowTile &tile) { return gridDim.x * tile.rows_per_pass; }

// Grid for an elementwise row-tiled pass over `rows` rows of c channels.
static int rows_grid(int rows, int c) { return stride_grid(ceil_div(rows, BLOCK / (c / 8))); }

// The instance of a kernel template for the activation (net.h's Activation), chosen once
// per launch; NULL for an activation there is no instance of.
template <typename Kernel> static Kernel kernel_for(int activation, Kernel gelu_kernel, Kernel silu_kernel) {
    if (activation == ACTIVATION_GELU) return gelu_kernel;
    if (activation == ACTIVATION_SILU) return silu_kernel;
    return nullptr;
}
// The same for the backward apply kernels, which also take the identity.
template <typename Kernel>
static Kernel kernel_for(int activation, Kernel gelu_kernel, Kernel silu_kernel, Kernel identity_kernel) {
    return activation == ACTIVATION_IDENTITY ? identity_kernel : kernel_for(activation, gelu_kernel, silu_kernel);
}
