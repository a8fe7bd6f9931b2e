// bn_gelu.cu: BatchNorm (batch or running statistics, weight 1, trained bias) fused with
// the activation, exact GELU or SiLU (net.h's Activation), forward and backward; the 96
// recipe's residual joins before the activation.
//
// The activation is a template parameter of every kernel: each launch function checks the
// activation once and launches the kernel instance with it compiled in, so the per-element
// code has no branch on it and the GELU instances are the kernels as they were without SiLU.
//
// All kernels use the row tiling of kernel_common.h: a thread owns 8 channels, keeps their
// per-channel parameters in registers, and walks rows. The elementwise passes (forward,
// apply, apply_pool) read each input once and write each output once, grid-stride; the
// reduce pass is a stats_blocks reduction. The apply kernels hold 40 parameter registers:
// __launch_bounds__(BLOCK, 3) keeps them at 80 registers (3 blocks per SM) without spills.
#include "bn_gelu_layer.h"

#define COLUMN_THREADS (32 * COLUMN_SLICES)

// ---- forward ---------------------------------------------------------------------------

template <Activation A>
__global__ void __launch_bounds__(BLOCK) bn_gelu_forward_kernel(__half *__restrict__ out, const __half *__restrict__ in,
                                                                const __half *__restrict__ residual, const float *mean,
                                                                const float *rstd, const float *bias, int rows, int c) {
    RowTile tile = row_tile(c);
    if (!tile.active) return;
    int ch0 = tile.group * 8;
    BnParams p;
    load_bn_params(&p, mean, rstd, bias, ch0);
    for (int r = first_row(tile); r < rows; r += row_stride(tile)) {
        size_t at = (size_t)r * c + ch0;
        float v[8], res[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        load_half8(v, in + at);
        if (residual) load_half8(res, residual + at);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            float z = bn_z(v[k], p.mean[k], p.rstd[k], p.bias[k]);
            if (residual) z = __fadd_rn(z, res[k]);
            v[k] = activate<A>(z);
        }
        store_half8(out + at, v);
    }
}

// ---- backward pass 1: per-channel sums of dz and dz * xhat -------------------------------

template <Activation A>
__global__ void __launch_bounds__(BLOCK) bn_gelu_backward_reduce_kernel(float *partials, const __half *__restrict__ d_out,
                                                                        const __half *__restrict__ in,
                                                                        const __half *__restrict__ residual,
                                                                        const float *mean, const float *rstd,
                                                                        const float *bias, int rows, int c) {
    __shared__ float reduce[BLOCK * 8];
    RowTile tile = row_tile(c);
    int row0, row1;
    block_rows(rows, &row0, &row1);
    float sum_dz[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sum_dz_xhat[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (tile.active) {
        int ch0 = tile.group * 8;
        BnParams p;
        load_bn_params(&p, mean, rstd, bias, ch0);
#pragma unroll 2
        for (int r = row0 + tile.sub; r < row1; r += tile.rows_per_pass) {
            size_t at = (size_t)r * c + ch0;
            float v[8], d[8], res[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            load_half8(v, in + at);
            load_half8(d, d_out + at);
            if (residual) load_half8(res, residual + at);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                float dz, xhat;
                bn_gelu_dz<A>(&dz, &xhat, v[k], d[k], res[k], residual != nullptr, p, k);
                sum_dz[k] += dz;
                sum_dz_xhat[k] = __fmaf_rn(dz, xhat, sum_dz_xhat[k]);
            }
        }
    }
    float *out = partials + (size_t)blockIdx.x * 2 * c;
    block_channel_sum(out, sum_dz, reduce, c, tile);
    block_channel_sum(out + c, sum_dz_xhat, reduce, c, tile);
}

// d_bias = sum dz; sums[0..c) = mean dz, sums[c..2c) = mean dz * xhat (column_sum order).
__global__ void __launch_bounds__(COLUMN_THREADS) bn_backward_finalize_kernel(float *d_bias, float *sums,
                                                                              const float *partials, int n_blocks,
                                                                              int c, int count) {
    __shared__ double shared[COLUMN_THREADS];
    int ch = blockIdx.x * 32 + threadIdx.x % 32;
    double sum_dz = column_sum(partials, n_blocks, 2 * c, ch, c, shared);
    double sum_dz_xhat = column_sum(partials + c, n_blocks, 2 * c, ch, c, shared);
    if (threadIdx.x >= 32 || ch >= c) return;
    d_bias[ch] = (float)sum_dz;
    sums[ch] = (float)(sum_dz / count);
    sums[c + ch] = (float)(sum_dz_xhat / count);
}

// ---- backward pass 2 ---------------------------------------------------------------------

// The BN-input gradient of 8 channels of one row: rstd * (dz - mean dz - xhat * mean dz xhat);
// dz_out receives dz.
template <Activation A>
__device__ __forceinline__ void bn_input_grad(float grad[8], float dz_out[8], const float v[8], const float d[8],
                                              const float res[8], bool has_residual, const BnParams &p,
                                              const float mean_dz[8], const float mean_dz_xhat[8]) {
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float dz, xhat;
        bn_gelu_dz<A>(&dz, &xhat, v[k], d[k], res[k], has_residual, p, k);
        grad[k] = p.rstd[k] * (dz - mean_dz[k] - xhat * mean_dz_xhat[k]);
        dz_out[k] = dz;
    }
}

template <Activation A>
__global__ void __launch_bounds__(BLOCK, 3) bn_gelu_backward_apply_kernel(
    __half *__restrict__ d_in, __half *__restrict__ d_residual, const __half *__restrict__ d_out,
    const __half *__restrict__ in, const __half *__restrict__ residual, const float *mean, const float *rstd,
    const float *bias, const float *sums, int rows, int c) {
    RowTile tile = row_tile(c);
    if (!tile.active) return;
    int ch0 = tile.group * 8;
    BnParams p;
    float mean_dz[8], mean_dz_xhat[8];
    load_bn_params(&p, mean, rstd, bias, ch0);
    load_param8(mean_dz, sums + ch0);
    load_param8(mean_dz_xhat, sums + c + ch0);
    for (int r = first_row(tile); r < rows; r += row_stride(tile)) {
        size_t at = (size_t)r * c + ch0;
        float v[8], d[8], res[8] = {0, 0, 0, 0, 0, 0, 0, 0}, grad[8], dz[8];
        load_half8(v, in + at);
        load_half8(d, d_out + at);
        if (residual) load_half8(res, residual + at);
        bn_input_grad<A>(grad, dz, v, d, res, residual != nullptr, p, mean_dz, mean_dz_xhat);
        store_half8(d_in + at, grad);
        if (d_residual) store_half8(d_residual + at, dz);
    }
}

// The row tile runs over pooled rows r = (img, oy, ox). The gradient goes to window
// position q = 2 dy + dx = argmax, i.e. input pixel (2oy + dy, 2ox + dx); the other three
// positions get 0. The thread of the last pooled column (row) also zeroes the input
// column w-1 (row h-1) that the floor pool dropped when w (h) is odd, and the thread of
// the last pooled pixel the corner (h-1, w-1).
template <Activation A>
__global__ void __launch_bounds__(BLOCK, 3) bn_gelu_backward_apply_pool_kernel(
    __half *__restrict__ d_prepool, const __half *__restrict__ d_out, const __half *__restrict__ in,
    const uint8_t *__restrict__ argmax, const float *mean, const float *rstd, const float *bias, const float *sums,
    int n, int h, int w, int c) {
    RowTile tile = row_tile(c);
    if (!tile.active) return;
    int ch0 = tile.group * 8, oh = h / 2, ow = w / 2, rows = n * oh * ow;
    bool odd_h = h & 1, odd_w = w & 1;
    BnParams p;
    float mean_dz[8], mean_dz_xhat[8];
    load_bn_params(&p, mean, rstd, bias, ch0);
    load_param8(mean_dz, sums + ch0);
    load_param8(mean_dz_xhat, sums + c + ch0);
    const float zeros[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int r = first_row(tile); r < rows; r += row_stride(tile)) {
        int img = r / (oh * ow), pix = r % (oh * ow), oy = pix / ow, ox = pix % ow;
        size_t at = (size_t)r * c + ch0;
        float v[8], d[8], grad[8], dz[8];
        uint8_t q_max[8];
        load_half8(v, in + at);
        load_half8(d, d_out + at);
        load_bytes8(q_max, argmax + at);
        bn_input_grad<A>(grad, dz, v, d, zeros, false, p, mean_dz, mean_dz_xhat);
        // (y, x) -> corner + (y * w + x) * c, relative to input pixel (2oy, 2ox)
        __half *corner = d_prepool + (((size_t)img * h + 2 * oy) * w + 2 * ox) * c + ch0;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            float values[8];
#pragma unroll
            for (int k = 0; k < 8; k++) values[k] = q_max[k] == q ? grad[k] : 0.0f;
            store_half8(corner + ((size_t)(q >> 1) * w + (q & 1)) * c, values);
        }
        bool last_col = odd_w && ox == ow - 1, last_row = odd_h && oy == oh - 1;
        if (last_col) {  // input column 2ox + 2 = w - 1, rows 2oy and 2oy + 1
            store_half8(corner + (size_t)2 * c, zeros);
            store_half8(corner + ((size_t)w + 2) * c, zeros);
        }
        if (last_row) {  // input row 2oy + 2 = h - 1, columns 2ox and 2ox + 1
            store_half8(corner + (size_t)2 * w * c, zeros);
            store_half8(corner + ((size_t)2 * w + 1) * c, zeros);
        }
        if (last_row && last_col) store_half8(corner + ((size_t)2 * w + 2) * c, zeros);
    }
}

extern "C" {

cudaError_t launch_bn_gelu_forward(__half *out, const __half *in, const __half *residual, const float *mean,
                                   const float *rstd, const float *bias, int rows, int c, int activation,
                                   cudaStream_t stream) {
    auto kernel = kernel_for(activation, bn_gelu_forward_kernel<ACTIVATION_GELU>,
                             bn_gelu_forward_kernel<ACTIVATION_SILU>);
    if (!kernel) return cudaErrorInvalidValue;
    if (rows > 0) kernel<<<rows_grid(rows, c), BLOCK, 0, stream>>>(out, in, residual, mean, rstd, bias, rows, c);
    return cudaGetLastError();
}

cudaError_t launch_bn_gelu_backward_reduce(float *partials, const __half *d_out, const __half *in,
                                           const __half *residual, const float *mean, const float *rstd,
                                           const float *bias, int rows, int c, int activation,
                                           cudaStream_t stream) {
    auto kernel = kernel_for(activation, bn_gelu_backward_reduce_kernel<ACTIVATION_GELU>,
                             bn_gelu_backward_reduce_kernel<ACTIVATION_SILU>);
    if (!kernel) return cudaErrorInvalidValue;
    kernel<<<stats_blocks(rows, c), BLOCK, 0, stream>>>(partials, d_out, in, residual, mean, rstd, bias, rows, c);
    return cudaGetLastError();
}

cudaError_t launch_bn_backward_finalize(float *d_bias, float *sums, const float *partials, int n_blocks, int c,
                                        int count, cudaStream_t stream) {
    if (c > 0)
        bn_backward_finalize_kernel<<<(int)ceil_div(c, 32), COLUMN_THREADS, 0, stream>>>(d_bias, sums, partials,
                                                                                        n_blocks, c, count);
    return cudaGetLastError();
}

cudaError_t launch_bn_gelu_backward_apply(__half *d_in, __half *d_residual, const __half *d_out, const __half *in,
                                          const __half *residual, const float *mean, const float *rstd,
                                          const float *bias, const float *sums, int rows, int c, int activation,
                                          cudaStream_t stream) {
    auto kernel = kernel_for(activation, bn_gelu_backward_apply_kernel<ACTIVATION_GELU>,
                             bn_gelu_backward_apply_kernel<ACTIVATION_SILU>,
                             bn_gelu_backward_apply_kernel<ACTIVATION_IDENTITY>);
    if (!kernel) return cudaErrorInvalidValue;
    if (rows > 0)
        kernel<<<rows_grid(rows, c), BLOCK, 0, stream>>>(d_in, d_residual, d_out, in, residual, mean, rstd, bias,
                                                          sums, rows, c);
    return cudaGetLastError();
}

cudaError_t launch_bn_gelu_backward_apply_pool(__half *d_prepool, const __half *d_out, const __half *in,
                                               const uint8_t *argmax, const float *mean, const float *rstd,
                                               const float *bias, const float *sums, int n, int h, int w, int c,
                                               int activation, cudaStream_t stream) {
    auto kernel = kernel_for(activation, bn_gelu_backward_apply_pool_kernel<ACTIVATION_GELU>,
                             bn_gelu_backward_apply_pool_kernel<ACTIVATION_SILU>,
                             bn_gelu_backward_apply_pool_kernel<ACTIVATION_IDENTITY>);
    if (!kernel) return cudaErrorInvalidValue;
    int rows = n * (h / 2) * (w / 2);
    if (rows > 0)
        kernel<<<rows_grid(rows, c), BLOCK, 0, stream>>>(d_prepool, d_out, in, argmax, mean, rstd, bias, sums, n, h,
                                                          w, c);
    return cudaGetLastError();
}

}  // extern "C"
