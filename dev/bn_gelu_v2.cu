// bn_gelu_v2.cu: v2 of bn_gelu_backward_reduce for kernel_bench: each thread loads
// ROWS_IN_FLIGHT rows (every 16-byte piece of in, d_out and the residual) before any of
// their arithmetic. Why: in the ncu table of an H100 at 790450e, v1's six launches of a
// step moved about 1.5 TB/s (302 MB in 206 us), where the apply pass's three, which read
// the same tensors and write one more, moved 2.4 (226 MB in 94 us). v1 has 256 blocks, two
// per SM (16 warps), and its PTX loads the next row only after the current row's
// per-channel math, whose erff/expf and residual tests are branches the loads are not
// hoisted over: one row's two or three loads in flight per thread. v2 keeps 4 rows' loads
// in flight; the prediction is the reduce at the apply's bandwidth or better (the four
// layers that read 67 MB from ~45 us to ~28 us each). It adds the rows in v1's order.
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
