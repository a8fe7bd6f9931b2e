// stats.cu: per-channel statistics for BatchNorm. Block partial sums (channel_stats, and
// maxpool2_stats which pools and takes the statistics of its output in the same pass),
// their fixed-order reduction (reduce_partials, bn_finalize), and the eval-mode params.
#include "kernel_common.h"

// Target elements per partial block: enough rows per block to amortize its reduction, and
// at batch 1024 every layer gets the cap, STATS_DEFAULT_BLOCKS blocks (2 per SM on an H100;
// whether more, for more threads per SM, is faster is dev/kernel_bench --stats-blocks's
// question).
#define STATS_ELEMENTS_PER_BLOCK 8192
#define COLUMN_THREADS (32 * COLUMN_SLICES)

// ---- partial sums ----------------------------------------------------------------------
// Block b: sums and sums of squares over its rows (block_rows) of the row tile's 8
// channels, in registers, then across the block: partials[b][0..c) sums, [c..2c) squares.
__global__ void __launch_bounds__(BLOCK) channel_stats_kernel(float *partials, const __half *__restrict__ in,
                                                              int rows, int c) {
    __shared__ float reduce[BLOCK * 8];
    RowTile tile = row_tile(c);
    int row0, row1;
    block_rows(rows, &row0, &row1);
    float sum[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sum_sq[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (tile.active) {
        const __half *src = in + tile.group * 8;
#pragma unroll 4
        for (int r = row0 + tile.sub; r < row1; r += tile.rows_per_pass) {
            float v[8];
            load_half8(v, src + (size_t)r * c);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                sum[k] += v[k];
                sum_sq[k] = __fmaf_rn(v[k], v[k], sum_sq[k]);
            }
        }
    }
    float *out = partials + (size_t)blockIdx.x * 2 * c;
    block_channel_sum(out, sum, reduce, c, tile);
    block_channel_sum(out + c, sum_sq, reduce, c, tile);
}

// The row tile runs over pooled rows r = (img, oy, ox); the window's four input rows are
// (2oy + dy, 2ox + dx), position q = 2 dy + dx. The max keeps the first of equal values
// (strict >), as the reference does.
__global__ void __launch_bounds__(BLOCK) maxpool2_stats_kernel(__half *__restrict__ out, uint8_t *__restrict__ argmax,
                                                               float *partials, const __half *__restrict__ in, int n,
                                                               int h, int w, int c) {
    __shared__ float reduce[BLOCK * 8];
    RowTile tile = row_tile(c);
    int oh = h / 2, ow = w / 2, rows = n * oh * ow;
    int row0, row1;
    block_rows(rows, &row0, &row1);
    float sum[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sum_sq[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (tile.active) {
        int ch0 = tile.group * 8;
        for (int r = row0 + tile.sub; r < row1; r += tile.rows_per_pass) {
            int img = r / (oh * ow), p = r % (oh * ow), oy = p / ow, ox = p % ow;
            const __half *window = in + (((size_t)img * h + 2 * oy) * w + 2 * ox) * c + ch0;
            float best[8], v[8];
            uint8_t best_q[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            load_half8(best, window);
#pragma unroll
            for (int q = 1; q < 4; q++) {
                load_half8(v, window + ((q >> 1) * w + (q & 1)) * (size_t)c);
#pragma unroll
                for (int k = 0; k < 8; k++)
                    if (v[k] > best[k]) {
                        best[k] = v[k];
                        best_q[k] = (uint8_t)q;
                    }
            }
            size_t at = (size_t)r * c + ch0;
            store_half8(out + at, best);  // exact: best holds fp16 values
            store_bytes8(argmax + at, best_q);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                sum[k] += best[k];
                sum_sq[k] = __fmaf_rn(best[k], best[k], sum_sq[k]);
            }
        }
    }
    float *partial = partials + (size_t)blockIdx.x * 2 * c;
    block_channel_sum(partial, sum, reduce, c, tile);
    block_channel_sum(partial + c, sum_sq, reduce, c, tile);
}

// ---- fixed-order reductions ------------------------------------------------------------

__global__ void __launch_bounds__(COLUMN_THREADS) reduce_partials_kernel(float *out, const float *partials,
                                                                         int n_blocks, int width) {
    __shared__ double shared[COLUMN_THREADS];
    int col = blockIdx.x * 32 + threadIdx.x % 32;
    double total = column_sum(partials, n_blocks, width, col, width, shared);
    if (threadIdx.x < 32 && col < width) out[col] = (float)total;
}

// One column thread per channel (column_sum): mean, biased var (clamped at 0: E[x^2] -
// mean^2 in double), rstd, and the running stats with the unbiased var.
__global__ void __launch_bounds__(COLUMN_THREADS) bn_finalize_kernel(float *mean, float *rstd, float *running_mean,
                                                                     float *running_var, const float *partials,
                                                                     int n_blocks, int c, int count, float eps,
                                                                     float keep) {
    __shared__ double shared[COLUMN_THREADS];
    int ch = blockIdx.x * 32 + threadIdx.x % 32;
    double sum = column_sum(partials, n_blocks, 2 * c, ch, c, shared);
    double sum_sq = column_sum(partials + c, n_blocks, 2 * c, ch, c, shared);
    if (threadIdx.x >= 32 || ch >= c) return;
    double m = sum / count, var = fmax(sum_sq / count - m * m, 0.0);
    mean[ch] = (float)m;
    rstd[ch] = (float)(1.0 / sqrt(var + (double)eps));
    if (running_mean) {
        double unbiased = count > 1 ? var * count / (count - 1.0) : var, k = keep;
        running_mean[ch] = (float)(k * running_mean[ch] + (1.0 - k) * m);
        running_var[ch] = (float)(k * running_var[ch] + (1.0 - k) * unbiased);
    }
}

__global__ void bn_eval_params_kernel(float *mean, float *rstd, const float *running_mean, const float *running_var,
                                      int c, float eps) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    mean[ch] = running_mean[ch];
    rstd[ch] = (float)(1.0 / sqrt((double)running_var[ch] + (double)eps));
}

extern "C" {

static int stats_block_cap = STATS_DEFAULT_BLOCKS;

int set_stats_block_cap(int cap) {
    if (cap < 1 || cap > STATS_MAX_BLOCKS) return -1;
    stats_block_cap = cap;
    return 0;
}

int stats_blocks(int rows, int c) {
    long long blocks = ceil_div((long long)rows * c, STATS_ELEMENTS_PER_BLOCK);
    if (blocks > stats_block_cap) blocks = stats_block_cap;
    if (blocks > rows) blocks = rows;
    return blocks < 1 ? 1 : (int)blocks;
}

cudaError_t launch_reduce_partials(float *out, const float *partials, int n_blocks, int width, cudaStream_t stream) {
    if (width > 0)
        reduce_partials_kernel<<<(int)ceil_div(width, 32), COLUMN_THREADS, 0, stream>>>(out, partials, n_blocks,
                                                                                        width);
    return cudaGetLastError();
}

cudaError_t launch_channel_stats(float *partials, const __half *in, int rows, int c, cudaStream_t stream) {
    channel_stats_kernel<<<stats_blocks(rows, c), BLOCK, 0, stream>>>(partials, in, rows, c);
    return cudaGetLastError();
}

cudaError_t launch_maxpool2_stats(__half *out, uint8_t *argmax, float *partials, const __half *in, int n, int h,
                                  int w, int c, cudaStream_t stream) {
    int rows = n * (h / 2) * (w / 2);
    maxpool2_stats_kernel<<<stats_blocks(rows, c), BLOCK, 0, stream>>>(out, argmax, partials, in, n, h, w, c);
    return cudaGetLastError();
}

cudaError_t launch_bn_finalize(float *mean, float *rstd, float *running_mean, float *running_var,
                               const float *partials, int n_blocks, int c, int count, float eps, float keep,
                               cudaStream_t stream) {
    if (c > 0)
        bn_finalize_kernel<<<(int)ceil_div(c, 32), COLUMN_THREADS, 0, stream>>>(
            mean, rstd, running_mean, running_var, partials, n_blocks, c, count, eps, keep);
    return cudaGetLastError();
}

cudaError_t launch_bn_eval_params(float *mean, float *rstd, const float *running_mean, const float *running_var,
                                  int c, float eps, cudaStream_t stream) {
    if (c > 0) bn_eval_params_kernel<<<(int)ceil_div(c, 128), 128, 0, stream>>>(mean, rstd, running_mean, running_var, c, eps);
    return cudaGetLastError();
}

}  // extern "C"
