// head.cu: the network's head. The global max pool (and its backward), the 10-class
// linear layer (and its backward), the label-smoothed cross-entropy and the hit count.
#include "kernel_common.h"
#include "net.h"

#define HEAD_WARPS 8                            // head_forward: one warp per image
#define HEAD_BWD_SLICES 16                      // head_backward: 32 channels x 16 row slices
#define HEAD_BWD_THREADS (32 * HEAD_BWD_SLICES)
#define LOSS_THREADS 512                        // loss: one block (a power of two)

// ---- global max pool -----------------------------------------------------------------
// Work item = (image, 8-channel group); the max runs over the side^2 positions in
// row-major order, keeping the first of equal values.
__global__ void maxpool_global_kernel(float *features, uint8_t *argmax, const __half *__restrict__ in, int n,
                                      int side, int c) {
    int groups = c / 8, positions = side * side;
    for (int item = blockIdx.x * blockDim.x + threadIdx.x; item < n * groups; item += gridDim.x * blockDim.x) {
        int img = item / groups, ch0 = (item % groups) * 8;
        const __half *src = in + (size_t)img * positions * c + ch0;
        float best[8], v[8];
        uint8_t best_q[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        load_half8(best, src);
        for (int q = 1; q < positions; q++) {
            load_half8(v, src + (size_t)q * c);
#pragma unroll
            for (int k = 0; k < 8; k++)
                if (v[k] > best[k]) {
                    best[k] = v[k];
                    best_q[k] = (uint8_t)q;
                }
        }
        float4 *dst = reinterpret_cast<float4 *>(features + (size_t)img * c + ch0);
        dst[0] = make_float4(best[0], best[1], best[2], best[3]);
        dst[1] = make_float4(best[4], best[5], best[6], best[7]);
        store_bytes8(argmax + (size_t)img * c + ch0, best_q);
    }
}

__global__ void maxpool_global_backward_kernel(__half *__restrict__ d_in, const float *__restrict__ d_features,
                                               const uint8_t *__restrict__ argmax, int n, int side, int c) {
    int groups = c / 8, positions = side * side;
    for (int item = blockIdx.x * blockDim.x + threadIdx.x; item < n * groups; item += gridDim.x * blockDim.x) {
        int img = item / groups, ch0 = (item % groups) * 8;
        const float4 *src = reinterpret_cast<const float4 *>(d_features + (size_t)img * c + ch0);
        float4 lo = src[0], hi = src[1];
        float grad[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
        uint8_t q_max[8];
        load_bytes8(q_max, argmax + (size_t)img * c + ch0);
        __half *dst = d_in + (size_t)img * positions * c + ch0;
        for (int q = 0; q < positions; q++) {
            float values[8];
#pragma unroll
            for (int k = 0; k < 8; k++) values[k] = q_max[k] == q ? grad[k] : 0.0f;
            store_half8(dst + (size_t)q * c, values);
        }
    }
}

// ---- linear head -----------------------------------------------------------------------
// One warp per image: lane l adds channels l, l + 32, ... for the 10 classes, then a
// butterfly (every lane ends with the same, fixed-order sums); lane k writes class k.
// beta == 0 does not read the old logits (they may be uninitialized).
__global__ void head_forward_kernel(float *logits, const float *__restrict__ features,
                                    const float *__restrict__ weight, int n, int c, float scale, float alpha,
                                    float beta) {
    int lane = threadIdx.x % 32, img = blockIdx.x * HEAD_WARPS + threadIdx.x / 32;
    if (img >= n) return;  // whole warps leave together
    float acc[NET_CLASSES];
#pragma unroll
    for (int k = 0; k < NET_CLASSES; k++) acc[k] = 0.0f;
    const float *f = features + (size_t)img * c;
    for (int ch = lane; ch < c; ch += 32) {
        float v = f[ch];
#pragma unroll
        for (int k = 0; k < NET_CLASSES; k++) acc[k] = __fmaf_rn(v, weight[(size_t)k * c + ch], acc[k]);
    }
    float mine = 0.0f;
#pragma unroll
    for (int k = 0; k < NET_CLASSES; k++) {
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) acc[k] += __shfl_xor_sync(0xffffffffu, acc[k], offset);
        if (lane == k) mine = acc[k];
    }
    if (lane < NET_CLASSES) {
        float *dst = logits + (size_t)img * NET_CLASSES + lane;
        float old = beta == 0.0f ? 0.0f : beta * *dst;
        *dst = old + alpha * scale * mine;
    }
}

// Blocks [0, weight_blocks): d_weight for 32 channels each; thread (slice, lane) adds rows
// slice, slice + 16, ... for all 10 classes, then the slices are added in order. Blocks
// after: d_features, one element per thread.
__global__ void __launch_bounds__(HEAD_BWD_THREADS) head_backward_kernel(float *d_weight, float *d_features,
                                                                         const float *__restrict__ d_logits,
                                                                         const float *__restrict__ features,
                                                                         const float *__restrict__ weight, int n,
                                                                         int c, float scale, int weight_blocks) {
    __shared__ float slice_sums[HEAD_BWD_SLICES][NET_CLASSES][32];
    if ((int)blockIdx.x < weight_blocks) {
        int lane = threadIdx.x % 32, slice = threadIdx.x / 32, ch = blockIdx.x * 32 + lane;
        float acc[NET_CLASSES];
#pragma unroll
        for (int k = 0; k < NET_CLASSES; k++) acc[k] = 0.0f;
        if (ch < c)
            for (int b = slice; b < n; b += HEAD_BWD_SLICES) {
                float f = features[(size_t)b * c + ch];
#pragma unroll
                for (int k = 0; k < NET_CLASSES; k++)
                    acc[k] = __fmaf_rn(d_logits[(size_t)b * NET_CLASSES + k], f, acc[k]);
            }
#pragma unroll
        for (int k = 0; k < NET_CLASSES; k++) slice_sums[slice][k][lane] = acc[k];
        __syncthreads();
        if (threadIdx.x < NET_CLASSES * 32 && ch < c) {
            int k = threadIdx.x / 32;  // this thread's class; its lane (channel) is unchanged
            float sum = 0.0f;
            for (int s = 0; s < HEAD_BWD_SLICES; s++) sum += slice_sums[s][k][lane];
            d_weight[(size_t)k * c + ch] = scale * sum;
        }
        return;
    }
    size_t i = (size_t)(blockIdx.x - weight_blocks) * HEAD_BWD_THREADS + threadIdx.x;
    if (i >= (size_t)n * c) return;
    size_t b = i / c, ch = i % c;
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < NET_CLASSES; k++) sum = __fmaf_rn(d_logits[b * NET_CLASSES + k], weight[k * c + ch], sum);
    d_features[i] = scale * sum;
}

// ---- loss ------------------------------------------------------------------------------
// Row b's label-smoothed cross-entropy in double, exactly as the reference computes it
// (first max for the argmax, log-sum-exp around it); its argmax into *best and its
// log-sum-exp into *log_sum.
__device__ __forceinline__ double example_loss(const float *logits, int b, int label, float smoothing, int *best,
                                               double *log_sum) {
    float z[NET_CLASSES];
#pragma unroll
    for (int k = 0; k < NET_CLASSES; k++) z[k] = logits[(size_t)b * NET_CLASSES + k];
    float best_z = z[0], label_z = 0.0f;
    *best = 0;
#pragma unroll
    for (int k = 0; k < NET_CLASSES; k++) {
        if (z[k] > best_z) {
            best_z = z[k];
            *best = k;
        }
        if (k == label) label_z = z[k];
    }
    double sum_exp = 0.0, sum_z = 0.0;
#pragma unroll
    for (int k = 0; k < NET_CLASSES; k++) {
        sum_exp += exp((double)z[k] - best_z);
        sum_z += z[k];
    }
    *log_sum = best_z + log(sum_exp);
    return (1.0 - smoothing) * (*log_sum - label_z) + smoothing * (*log_sum - sum_z / NET_CLASSES);
}

// One block; thread t handles images t, t + LOSS_THREADS, ..., each weighted by weights[b]
// (NULL: 1; a weight of 1 leaves every value bit for bit as unweighted), then a fixed tree
// over the threads.
__global__ void __launch_bounds__(LOSS_THREADS) loss_kernel(float *d_logits, double *loss_sum, int *correct,
                                                            const float *logits, const uint8_t *labels,
                                                            const float *weights, int n, float smoothing) {
    __shared__ double loss_parts[LOSS_THREADS];
    __shared__ int hit_parts[LOSS_THREADS];
    double loss = 0.0;
    int hits = 0;
    for (int b = threadIdx.x; b < n; b += LOSS_THREADS) {
        int label = labels[b], best;
        double log_sum, weight = weights ? weights[b] : 1.0;
        loss += weight * example_loss(logits, b, label, smoothing, &best, &log_sum);
        hits += best == label;
        double uniform = smoothing / (float)NET_CLASSES;  // in float, as the reference
#pragma unroll
        for (int k = 0; k < NET_CLASSES; k++)
            d_logits[(size_t)b * NET_CLASSES + k] = (float)(weight * (exp(logits[(size_t)b * NET_CLASSES + k] - log_sum) -
                                                                      (1.0 - smoothing) * (k == label) - uniform));
    }
    loss_parts[threadIdx.x] = loss;
    hit_parts[threadIdx.x] = hits;
    __syncthreads();
    for (int width = LOSS_THREADS / 2; width > 0; width /= 2) {
        if ((int)threadIdx.x < width) {
            loss_parts[threadIdx.x] += loss_parts[threadIdx.x + width];
            hit_parts[threadIdx.x] += hit_parts[threadIdx.x + width];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        *loss_sum += loss_parts[0];
        *correct += hit_parts[0];
    }
}

// One image per thread: its loss, rounded to float.
__global__ void example_losses_kernel(float *losses, const float *logits, const uint8_t *labels, int n,
                                      float smoothing) {
    int b = blockIdx.x * blockDim.x + threadIdx.x, best;
    double log_sum;
    if (b < n) losses[b] = (float)example_loss(logits, b, labels[b], smoothing, &best, &log_sum);
}

// One image per thread; integer hit counts added with atomics (order-independent).
__global__ void count_correct_kernel(int *correct, const float *logits, const uint8_t *labels, int n) {
    int b = blockIdx.x * blockDim.x + threadIdx.x, hit = 0;
    if (b < n) {
        const float *z = logits + (size_t)b * NET_CLASSES;
        int best = 0;
        for (int k = 1; k < NET_CLASSES; k++)
            if (z[k] > z[best]) best = k;
        hit = best == labels[b];
    }
    int block_hits = __syncthreads_count(hit);
    if (threadIdx.x == 0 && block_hits) atomicAdd(correct, block_hits);
}

extern "C" {

cudaError_t launch_maxpool_global(float *features, uint8_t *argmax, const __half *in, int n, int side, int c,
                                  cudaStream_t stream) {
    if (n > 0)
        maxpool_global_kernel<<<stride_grid(ceil_div((long long)n * (c / 8), BLOCK)), BLOCK, 0, stream>>>(
            features, argmax, in, n, side, c);
    return cudaGetLastError();
}

cudaError_t launch_maxpool_global_backward(__half *d_in, const float *d_features, const uint8_t *argmax, int n,
                                           int side, int c, cudaStream_t stream) {
    if (n > 0)
        maxpool_global_backward_kernel<<<stride_grid(ceil_div((long long)n * (c / 8), BLOCK)), BLOCK, 0, stream>>>(
            d_in, d_features, argmax, n, side, c);
    return cudaGetLastError();
}

cudaError_t launch_head_forward(float *logits, const float *features, const float *weight, int n, int c, float scale,
                                float alpha, float beta, cudaStream_t stream) {
    if (n > 0)
        head_forward_kernel<<<(int)ceil_div(n, HEAD_WARPS), 32 * HEAD_WARPS, 0, stream>>>(logits, features, weight, n,
                                                                                          c, scale, alpha, beta);
    return cudaGetLastError();
}

cudaError_t launch_head_backward(float *d_weight, float *d_features, const float *d_logits, const float *features,
                                 const float *weight, int n, int c, float scale, cudaStream_t stream) {
    int weight_blocks = (int)ceil_div(c, 32);
    int feature_blocks = (int)ceil_div((long long)n * c, HEAD_BWD_THREADS);
    head_backward_kernel<<<weight_blocks + feature_blocks, HEAD_BWD_THREADS, 0, stream>>>(
        d_weight, d_features, d_logits, features, weight, n, c, scale, weight_blocks);
    return cudaGetLastError();
}

cudaError_t launch_loss(float *d_logits, double *loss_sum, int *correct, const float *logits, const uint8_t *labels,
                        const float *weights, int n, float smoothing, cudaStream_t stream) {
    loss_kernel<<<1, LOSS_THREADS, 0, stream>>>(d_logits, loss_sum, correct, logits, labels, weights, n, smoothing);
    return cudaGetLastError();
}

cudaError_t launch_example_losses(float *losses, const float *logits, const uint8_t *labels, int n, float smoothing,
                                  cudaStream_t stream) {
    if (n > 0)
        example_losses_kernel<<<(int)ceil_div(n, BLOCK), BLOCK, 0, stream>>>(losses, logits, labels, n, smoothing);
    return cudaGetLastError();
}

cudaError_t launch_count_correct(int *correct, const float *logits, const uint8_t *labels, int n,
                                 cudaStream_t stream) {
    if (n > 0) count_correct_kernel<<<(int)ceil_div(n, BLOCK), BLOCK, 0, stream>>>(correct, logits, labels, n);
    return cudaGetLastError();
}

}  // extern "C"
