// whiten.cu: the whitening layer. The patch covariance for its init, the 2x2 conv + bias +
// GELU forward (24 channels, NHWC out), and the gradient of its bias.
//
// Patch order everywhere: tap r = (channel * 2 + dy) * 2 + dx, which is also the order of
// a filter's 12 weights in the 24 x 3 x 2 x 2 (OIHW) weight.
#include "augment.h"
#include "kernel_common.h"

#define COV_MAX_BLOCKS 256
#define COV_THREADS 256
#define OUT_SIDE 31                      // 32 - 2 + 1
#define POSITIONS (OUT_SIDE * OUT_SIDE)  // output rows per image
#define CHANNELS 24                      // WHITEN_WIDTH: 3 groups of 8 channels
// Filter k of group g (channels 8g .. 8g+7) tap r sits at g * GROUP_STRIDE + k * 12 + r in
// shared memory: the stride 100 (not 96) puts the three groups, read by neighbouring
// threads, in different banks.
#define GROUP_STRIDE 100

// The 12 taps of the 2x2 patch at (y, x) of one CHW image, from any float/half source.
template <typename T>
__device__ __forceinline__ void gather_patch(float patch[COV_DIM], const T *image, int y, int x) {
#pragma unroll
    for (int c = 0; c < 3; c++)
#pragma unroll
        for (int dy = 0; dy < 2; dy++)
#pragma unroll
            for (int dx = 0; dx < 2; dx++)
                patch[(c * 2 + dy) * 2 + dx] = (float)image[c * 1024 + (y + dy) * 32 + x + dx];
}

// Loads the whitening weight and bias into shared memory (layout above).
__device__ __forceinline__ void stage_filters(float *w_shared, float *b_shared, const float *weight,
                                              const float *bias) {
    for (int i = threadIdx.x; i < CHANNELS * COV_DIM; i += blockDim.x) {
        int ch = i / COV_DIM, r = i % COV_DIM;
        w_shared[(ch / 8) * GROUP_STRIDE + (ch % 8) * COV_DIM + r] = weight[i];
    }
    if (threadIdx.x < CHANNELS) b_shared[threadIdx.x] = bias[threadIdx.x];
}

// Pre-activations z of the 8 channels of `group` at one patch: bias, then the taps in
// order (the forward and the bias backward share it, so both see the same z).
__device__ __forceinline__ void whiten_z(float z[8], const float patch[COV_DIM], const float *w_shared,
                                         const float *b_shared, int group) {
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const float *w = w_shared + group * GROUP_STRIDE + k * COV_DIM;
        float acc = b_shared[group * 8 + k];
#pragma unroll
        for (int r = 0; r < COV_DIM; r++) acc = __fmaf_rn(w[r], patch[r], acc);
        z[k] = acc;
    }
}

// ---- patch covariance ----------------------------------------------------------------
// Block b handles images b, b + gridDim.x, ...: it normalizes one image into shared memory,
// each thread adds the 78 products of its patches into registers, then the block adds the
// threads up (warp shuffles, then the 8 warps in order) into partials[b][78].
__global__ void __launch_bounds__(COV_THREADS) patch_covariance_kernel(float *partials, const uint8_t *images, int n) {
    __shared__ float pixels[3 * 32 * 32];
    __shared__ float warp_sums[COV_THREADS / 32][COV_ENTRIES];
    float acc[COV_ENTRIES];
#pragma unroll
    for (int e = 0; e < COV_ENTRIES; e++) acc[e] = 0.0f;
    for (int img = blockIdx.x; img < n; img += gridDim.x) {
        __syncthreads();  // the previous image is no longer read
        const uint8_t *src = images + (size_t)img * 3072;
        for (int i = threadIdx.x; i < 3072; i += blockDim.x) pixels[i] = aug_normalize(src[i], i / 1024);
        __syncthreads();
        for (int p = threadIdx.x; p < POSITIONS; p += blockDim.x) {
            float v[COV_DIM];
            gather_patch(v, pixels, p / OUT_SIDE, p % OUT_SIDE);
            int e = 0;  // upper-triangle entry (i, j), i <= j, row-major: a compile-time index
#pragma unroll
            for (int i = 0; i < COV_DIM; i++)
#pragma unroll
                for (int j = i; j < COV_DIM; j++, e++) acc[e] = __fmaf_rn(v[i], v[j], acc[e]);
        }
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int e = 0; e < COV_ENTRIES; e++) {
        float s = acc[e];
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
        if (lane == 0) warp_sums[warp][e] = s;
    }
    __syncthreads();
    if (threadIdx.x < COV_ENTRIES) {
        float s = 0.0f;
        for (int w = 0; w < COV_THREADS / 32; w++) s += warp_sums[w][threadIdx.x];
        partials[(size_t)blockIdx.x * COV_ENTRIES + threadIdx.x] = s;
    }
}

// ---- forward -------------------------------------------------------------------------
// One block per image: the image (fp16 NCHW) goes to shared memory as floats, then work
// item i = 3 * position + group computes 8 channels of one output position and stores
// them as one 16-byte vector; consecutive items write consecutive 16 bytes.
__global__ void __launch_bounds__(BLOCK) whiten_forward_kernel(__half *out, const __half *x, const float *weight,
                                                               const float *bias) {
    __shared__ float pixels[3 * 32 * 32];
    __shared__ float w_shared[3 * GROUP_STRIDE];
    __shared__ float b_shared[CHANNELS];
    int img = blockIdx.x;
    const __half *src = x + (size_t)img * 3072;
    for (int v = threadIdx.x; v < 3072 / 8; v += blockDim.x) {
        float values[8];
        load_half8(values, src + v * 8);
#pragma unroll
        for (int k = 0; k < 8; k++) pixels[v * 8 + k] = values[k];
    }
    stage_filters(w_shared, b_shared, weight, bias);
    __syncthreads();
    __half *dst = out + (size_t)img * POSITIONS * CHANNELS;
    for (int item = threadIdx.x; item < POSITIONS * 3; item += blockDim.x) {
        int pos = item / 3, group = item % 3;
        float patch[COV_DIM], z[8];
        gather_patch(patch, pixels, pos / OUT_SIDE, pos % OUT_SIDE);
        whiten_z(z, patch, w_shared, b_shared, group);
#pragma unroll
        for (int k = 0; k < 8; k++) z[k] = gelu(z[k]);
        store_half8(dst + (size_t)item * 8, z);  // = dst + pos * 24 + group * 8
    }
}

// ---- bias backward ---------------------------------------------------------------------
// A stats_blocks reduction over the n*31*31 output rows of 24 channels (row tiling with
// c = 24: 3 threads per row, 85 rows per pass). z is recomputed from x read straight from
// global memory (an image is 6 KB: its patches hit in L1).
__global__ void __launch_bounds__(BLOCK) whiten_bias_backward_kernel(float *partials, const __half *x,
                                                                     const __half *d_out, const float *weight,
                                                                     const float *bias, int rows) {
    __shared__ float w_shared[3 * GROUP_STRIDE];
    __shared__ float b_shared[CHANNELS];
    __shared__ float reduce[BLOCK * 8];
    stage_filters(w_shared, b_shared, weight, bias);
    __syncthreads();
    RowTile tile = row_tile(CHANNELS);
    int row0, row1;
    block_rows(rows, &row0, &row1);
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (tile.active)
        for (int r = row0 + tile.sub; r < row1; r += tile.rows_per_pass) {
            int img = r / POSITIONS, pos = r % POSITIONS;
            float patch[COV_DIM], z[8], d[8];
            gather_patch(patch, x + (size_t)img * 3072, pos / OUT_SIDE, pos % OUT_SIDE);
            whiten_z(z, patch, w_shared, b_shared, tile.group);
            load_half8(d, d_out + (size_t)r * CHANNELS + tile.group * 8);
#pragma unroll
            for (int k = 0; k < 8; k++) acc[k] = __fmaf_rn(d[k], gelu_grad(z[k]), acc[k]);
        }
    block_channel_sum(partials + (size_t)blockIdx.x * CHANNELS, acc, reduce, CHANNELS, tile);
}

extern "C" {

int patch_cov_blocks(int n) { return n < 1 ? 1 : n < COV_MAX_BLOCKS ? n : COV_MAX_BLOCKS; }

cudaError_t launch_patch_covariance(float *partials, const uint8_t *images, int n, cudaStream_t stream) {
    patch_covariance_kernel<<<patch_cov_blocks(n), COV_THREADS, 0, stream>>>(partials, images, n);
    return cudaGetLastError();
}

cudaError_t launch_whiten_forward(__half *out, const __half *x, const float *weight, const float *bias, int n,
                                  cudaStream_t stream) {
    if (n > 0) whiten_forward_kernel<<<n, BLOCK, 0, stream>>>(out, x, weight, bias);
    return cudaGetLastError();
}

cudaError_t launch_whiten_bias_backward(float *partials, const __half *x, const __half *d_out, const float *weight,
                                        const float *bias, int n, cudaStream_t stream) {
    int rows = n * POSITIONS;
    whiten_bias_backward_kernel<<<stats_blocks(rows, CHANNELS), BLOCK, 0, stream>>>(partials, x, d_out, weight,
                                                                                   bias, rows);
    return cudaGetLastError();
}

}  // extern "C"
