// whiten_layer.h: the whitening layer's device code that kernels/whiten.cu and a v2 being
// tried in dev/ (kernel_bench, dev/README.md) share: the patch gather, the filters in shared
// memory, and the forward and bias-backward kernels, templated on how a thread reads the
// filter weights. CUDA C++ only; the C interface is kernels.h.
//
// Patch order everywhere: tap r = (channel * 2 + dy) * 2 + dx, which is also the order of
// a filter's 12 weights in the 24 x 3 x 2 x 2 (OIHW) weight.
#pragma once
#include "kernel_common.h"

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

// How whiten_z reads a filter's 12 weights and its group's 8 biases from shared memory: one
// 4-byte load each (WEIGHTS_SCALAR), or 16-byte loads (WEIGHTS_VECTOR: a quarter of the
// shared-memory instructions; w_shared and b_shared 16-byte aligned, which the layout keeps
// for every filter: GROUP_STRIDE and COV_DIM are multiples of 4 floats).
enum WeightLoad { WEIGHTS_SCALAR, WEIGHTS_VECTOR };

// The alignment of the filters in shared memory: 16 bytes for vector loads; 4 (a float's)
// for scalar ones, so that the compiler does not vectorize those by itself either.
template <WeightLoad L> __host__ __device__ constexpr int filter_align() { return L == WEIGHTS_VECTOR ? 16 : 4; }

// count (a multiple of 4) floats from shared memory, the way L says.
template <WeightLoad L, int count> __device__ __forceinline__ void load_shared(float *dst, const float *src) {
    if constexpr (L == WEIGHTS_VECTOR) {
#pragma unroll
        for (int q = 0; q < count / 4; q++) {
            float4 v = reinterpret_cast<const float4 *>(src)[q];
            dst[4 * q] = v.x;
            dst[4 * q + 1] = v.y;
            dst[4 * q + 2] = v.z;
            dst[4 * q + 3] = v.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < count; i++) dst[i] = src[i];
    }
}

// Pre-activations z of the 8 channels of `group` at one patch: bias, then the taps in
// order (the forward and the bias backward share it, so both see the same z, whichever way
// the weights are read).
template <WeightLoad L>
__device__ __forceinline__ void whiten_z(float z[8], const float patch[COV_DIM], const float *w_shared,
                                         const float *b_shared, int group) {
    float b[8];
    load_shared<L, 8>(b, b_shared + group * 8);
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float w[COV_DIM];
        load_shared<L, COV_DIM>(w, w_shared + group * GROUP_STRIDE + k * COV_DIM);
        float acc = b[k];
#pragma unroll
        for (int r = 0; r < COV_DIM; r++) acc = __fmaf_rn(w[r], patch[r], acc);
        z[k] = acc;
    }
}

// ---- forward -------------------------------------------------------------------------
// One block per image: the image (fp16 NCHW) goes to shared memory as floats, then work
// item i = 3 * position + group computes 8 channels of one output position and stores
// them as one 16-byte vector; consecutive items write consecutive 16 bytes.
template <WeightLoad L>
__global__ void __launch_bounds__(BLOCK) whiten_forward_kernel(__half *out, const __half *x, const float *weight,
                                                               const float *bias) {
    __shared__ float pixels[3 * 32 * 32];
    __shared__ __align__(filter_align<L>()) float w_shared[3 * GROUP_STRIDE];
    __shared__ __align__(filter_align<L>()) float b_shared[CHANNELS];
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
        whiten_z<L>(z, patch, w_shared, b_shared, group);
#pragma unroll
        for (int k = 0; k < 8; k++) z[k] = gelu(z[k]);
        store_half8(dst + (size_t)item * 8, z);  // = dst + pos * 24 + group * 8
    }
}

// ---- bias backward ---------------------------------------------------------------------
// A stats_blocks reduction over the n*31*31 output rows of 24 channels (row tiling with
// c = 24: 3 threads per row, 85 rows per pass). z is recomputed from x read straight from
// global memory (an image is 6 KB: its patches hit in L1).
template <WeightLoad L>
__global__ void __launch_bounds__(BLOCK) whiten_bias_backward_kernel(float *partials, const __half *x,
                                                                     const __half *d_out, const float *weight,
                                                                     const float *bias, int rows) {
    __shared__ __align__(filter_align<L>()) float w_shared[3 * GROUP_STRIDE];
    __shared__ __align__(filter_align<L>()) float b_shared[CHANNELS];
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
            whiten_z<L>(z, patch, w_shared, b_shared, tile.group);
            load_half8(d, d_out + (size_t)r * CHANNELS + tile.group * 8);
#pragma unroll
            for (int k = 0; k < 8; k++) acc[k] = __fmaf_rn(d[k], gelu_grad(z[k]), acc[k]);
        }
    block_channel_sum(partials + (size_t)blockIdx.x * CHANNELS, acc, reduce, CHANNELS, tile);
}
