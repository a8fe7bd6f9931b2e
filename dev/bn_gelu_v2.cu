// bn_gelu_v2.cu: v2s of two BatchNorm + activation kernels for kernel_bench, each loading
// several rows (every 16-byte piece a row needs) before any of their arithmetic. Both v1s
// walk rows one at a time, and their PTX loads the next row only after the current row's
// per-channel math, whose erff/expf and residual tests are branches the loads are not
// hoisted over: one row's loads in flight per thread.
//
// bn_gelu_backward_reduce, ROWS_IN_FLIGHT rows. In the ncu table of an H100 at 790450e
// (docs/speed.md), v1's six launches of a step moved about 1.2 TB/s (240 MB in 206 us),
// where the apply pass's three, which read the same tensors and write one more, moved 1.9
// (180 MB in 94 us); v1 has 256 blocks, two per SM (16 warps). The prediction is the
// reduce at 1.9 TB/s or better: the six launches from 206 us to ~125 us a step. It adds the
// rows in v1's order.
#include "bn_gelu_layer.h"

#define ROWS_IN_FLIGHT 4

template <Activation A>
__global__ void __launch_bounds__(BLOCK) bn_gelu_backward_reduce_v2_kernel(
    float *partials, const __half *__restrict__ d_out, const __half *__restrict__ in,
    const __half *__restrict__ residual, const float *mean, const float *rstd, const float *bias, int rows, int c) {
    __shared__ float reduce[BLOCK * 8];
    RowTile tile = row_tile(c);
    int row0, row1;
    block_rows(rows, &row0, &row1);
    float sum_dz[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sum_dz_xhat[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (tile.active) {
        int ch0 = tile.group * 8, step = tile.rows_per_pass;
        BnParams p;
        load_bn_params(&p, mean, rstd, bias, ch0);
        for (int r = row0 + tile.sub; r < row1; r += ROWS_IN_FLIGHT * step) {
            uint4 raw_in[ROWS_IN_FLIGHT], raw_d[ROWS_IN_FLIGHT], raw_res[ROWS_IN_FLIGHT];
#pragma unroll
            for (int i = 0; i < ROWS_IN_FLIGHT; i++) {
                // Rows past the block's end load its last row again (a valid address) and are
                // skipped below.
                size_t at = (size_t)min(r + i * step, row1 - 1) * c + ch0;
                raw_in[i] = load_raw8(in + at);
                raw_d[i] = load_raw8(d_out + at);
                raw_res[i] = residual ? load_raw8(residual + at) : make_uint4(0u, 0u, 0u, 0u);
            }
#pragma unroll
            for (int i = 0; i < ROWS_IN_FLIGHT; i++) {
                if (r + i * step >= row1) break;
                float v[8], d[8], res[8];
                unpack_half8(v, raw_in[i]);
                unpack_half8(d, raw_d[i]);
                unpack_half8(res, raw_res[i]);
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    float dz, xhat;
                    bn_gelu_dz<A>(&dz, &xhat, v[k], d[k], res[k], residual != nullptr, p, k);
                    sum_dz[k] += dz;
                    sum_dz_xhat[k] = __fmaf_rn(dz, xhat, sum_dz_xhat[k]);
                }
            }
        }
    }
    float *out = partials + (size_t)blockIdx.x * 2 * c;
    block_channel_sum(out, sum_dz, reduce, c, tile);
    block_channel_sum(out + c, sum_dz_xhat, reduce, c, tile);
}

extern "C" cudaError_t launch_bn_gelu_backward_reduce_v2(float *partials, const __half *d_out, const __half *in,
                                                         const __half *residual, const float *mean, const float *rstd,
                                                         const float *bias, int rows, int c, int activation,
                                                         cudaStream_t stream) {
    auto kernel = kernel_for(activation, bn_gelu_backward_reduce_v2_kernel<ACTIVATION_GELU>,
                             bn_gelu_backward_reduce_v2_kernel<ACTIVATION_SILU>);
    if (!kernel) return cudaErrorInvalidValue;
    kernel<<<stats_blocks(rows, c), BLOCK, 0, stream>>>(partials, d_out, in, residual, mean, rstd, bias, rows, c);
    return cudaGetLastError();
}

// ---- forward ---------------------------------------------------------------------------------
// bn_gelu_forward, FORWARD_ROWS rows of its grid-stride walk at a time. Its six launches of a
// step moved about 2.0 TB/s in the same table (240 MB in ~122 us), with 32 warps per SM. The
// prediction is the forward near the 2.7 TB/s of the maxpool2_stats pass: ~90 us a step.
#define FORWARD_ROWS 2

template <Activation A>
__global__ void __launch_bounds__(BLOCK) bn_gelu_forward_v2_kernel(__half *__restrict__ out,
                                                                   const __half *__restrict__ in,
                                                                   const __half *__restrict__ residual,
                                                                   const float *mean, const float *rstd,
                                                                   const float *bias, int rows, int c) {
    RowTile tile = row_tile(c);
    if (!tile.active) return;
    int ch0 = tile.group * 8, stride = row_stride(tile);
    BnParams p;
    load_bn_params(&p, mean, rstd, bias, ch0);
    for (int r = first_row(tile); r < rows; r += FORWARD_ROWS * stride) {
        uint4 raw_in[FORWARD_ROWS], raw_res[FORWARD_ROWS];
#pragma unroll
        for (int i = 0; i < FORWARD_ROWS; i++) {
            size_t at = (size_t)min(r + i * stride, rows - 1) * c + ch0;  // past the end: reloads the last row
            raw_in[i] = load_raw8(in + at);
            raw_res[i] = residual ? load_raw8(residual + at) : make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int i = 0; i < FORWARD_ROWS; i++) {
            if (r + i * stride >= rows) break;
            float v[8], res[8];
            unpack_half8(v, raw_in[i]);
            unpack_half8(res, raw_res[i]);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                float z = bn_z(v[k], p.mean[k], p.rstd[k], p.bias[k]);
                if (residual) z = __fadd_rn(z, res[k]);
                v[k] = activate<A>(z);
            }
            store_half8(out + (size_t)(r + i * stride) * c + ch0, v);
        }
    }
}

extern "C" cudaError_t launch_bn_gelu_forward_v2(__half *out, const __half *in, const __half *residual,
                                                 const float *mean, const float *rstd, const float *bias, int rows,
                                                 int c, int activation, cudaStream_t stream) {
    auto kernel = kernel_for(activation, bn_gelu_forward_v2_kernel<ACTIVATION_GELU>,
                             bn_gelu_forward_v2_kernel<ACTIVATION_SILU>);
    if (!kernel) return cudaErrorInvalidValue;
    if (rows > 0) kernel<<<rows_grid(rows, c), BLOCK, 0, stream>>>(out, in, residual, mean, rstd, bias, rows, c);
    return cudaGetLastError();
}
