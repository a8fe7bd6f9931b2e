// whiten.cu: the whitening layer. The patch covariance for its init, the 2x2 conv + bias +
// GELU forward (24 channels, NHWC out), and the gradient of its bias; the latter two are
// kernels/whiten_layer.h's, with the weights read one float at a time.
#include "augment.h"
#include "whiten_layer.h"

#define COV_MAX_BLOCKS 256
#define COV_THREADS 256

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

extern "C" {

int patch_cov_blocks(int n) { return n < 1 ? 1 : n < COV_MAX_BLOCKS ? n : COV_MAX_BLOCKS; }

cudaError_t launch_patch_covariance(float *partials, const uint8_t *images, int n, cudaStream_t stream) {
    patch_covariance_kernel<<<patch_cov_blocks(n), COV_THREADS, 0, stream>>>(partials, images, n);
    return cudaGetLastError();
}

cudaError_t launch_whiten_forward(__half *out, const __half *x, const float *weight, const float *bias, int n,
                                  cudaStream_t stream) {
    if (n > 0) whiten_forward_kernel<WEIGHTS_SCALAR><<<n, BLOCK, 0, stream>>>(out, x, weight, bias);
    return cudaGetLastError();
}

cudaError_t launch_whiten_bias_backward(float *partials, const __half *x, const __half *d_out, const float *weight,
                                        const float *bias, int n, cudaStream_t stream) {
    int rows = n * POSITIONS;
    whiten_bias_backward_kernel<WEIGHTS_SCALAR><<<stats_blocks(rows, CHANNELS), BLOCK, 0, stream>>>(
        partials, x, d_out, weight, bias, rows);
    return cudaGetLastError();
}

}  // extern "C"
