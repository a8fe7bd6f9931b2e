// muon.cu: the elementwise and reduction parts of the Muon optimizer (airbench94-muon).
// The Newton-Schulz matrix products are cuBLAS bf16 GEMMs issued by the trainer.
#include "kernels.h"

static const int MUON_THREADS = 256;

static int muon_blocks(size_t count) {
    size_t blocks = (count + MUON_THREADS - 1) / MUON_THREADS;
    return (int)(blocks < 4096 ? blocks : 4096);
}

__global__ void muon_momentum_kernel(__nv_bfloat16 *update, float *momentum, const __half *grad, size_t count,
                                     float m) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        float g = __half2float(grad[i]);
        float buf = m * momentum[i] + g;
        momentum[i] = buf;
        update[i] = __float2bfloat16(g + m * buf);
    }
}

// The sum of squares in two deterministic passes: block b of a fixed grid (it depends on
// count only) sums a strided slice, thread by thread and then as a tree in shared memory,
// into sum_partials[b]; one warp then adds the partials in a fixed order. The partials
// live in device memory of this file, so the launches keep their one-buffer signature;
// they are reused by every call (one stream: calls never overlap).
#define SUM_THREADS 512
#define SUM_MAX_BLOCKS 256
__device__ float sum_partials[SUM_MAX_BLOCKS];

template <typename T>
__global__ void sum_squares_partials_kernel(const T *x, size_t count) {
    __shared__ float partial[SUM_THREADS];
    float acc = 0.0f;
    for (size_t i = blockIdx.x * (size_t)SUM_THREADS + threadIdx.x; i < count; i += (size_t)gridDim.x * SUM_THREADS) {
        float v = (float)x[i];
        acc += v * v;
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = SUM_THREADS / 2; stride > 0; stride /= 2) {
        if ((int)threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) sum_partials[blockIdx.x] = partial[0];
}

// One warp: lane l adds partials l, l + 32, ..., then the lanes' sums meet in a fixed tree.
__global__ void sum_partials_kernel(float *sum_sq, int n_blocks) {
    float sum = 0.0f;
    for (int b = threadIdx.x; b < n_blocks; b += 32) sum += sum_partials[b];
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (threadIdx.x == 0) *sum_sq = sum;
}

static int sum_blocks(size_t count) {
    size_t blocks = (count + 4 * SUM_THREADS - 1) / (4 * SUM_THREADS);  // about 4 values a thread
    return (int)(blocks < 1 ? 1 : blocks < SUM_MAX_BLOCKS ? blocks : SUM_MAX_BLOCKS);
}

template <typename T>
static cudaError_t sum_squares(float *sum_sq, const T *x, size_t count, cudaStream_t stream) {
    int blocks = sum_blocks(count);
    sum_squares_partials_kernel<T><<<blocks, SUM_THREADS, 0, stream>>>(x, count);
    sum_partials_kernel<<<1, 32, 0, stream>>>(sum_sq, blocks);
    return cudaGetLastError();
}

__global__ void scale_by_inverse_norm_kernel(__nv_bfloat16 *x, size_t count, const float *sum_sq, float eps) {
    float scale = 1.0f / (sqrtf(*sum_sq) + eps);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __float2bfloat16(__bfloat162float(x[i]) * scale);
}

__global__ void muon_apply_kernel(float *w, __half *w_half, const __nv_bfloat16 *update, size_t count, int c_out,
                                  const float *w_sum_sq, float lr, float decay) {
    float scale = w_sum_sq ? sqrtf((float)c_out) / sqrtf(*w_sum_sq) : 1.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        float v = (w[i] * scale - lr * __bfloat162float(update[i])) * decay;
        w[i] = v;
        w_half[i] = __float2half(v);
    }
}

extern "C" {

cudaError_t launch_muon_momentum(__nv_bfloat16 *update, float *momentum, const __half *grad, size_t count, float m,
                                 cudaStream_t stream) {
    muon_momentum_kernel<<<muon_blocks(count), MUON_THREADS, 0, stream>>>(update, momentum, grad, count, m);
    return cudaGetLastError();
}

cudaError_t launch_sum_squares(float *sum_sq, const float *x, size_t count, cudaStream_t stream) {
    return sum_squares<float>(sum_sq, x, count, stream);
}

cudaError_t launch_sum_squares_bf16(float *sum_sq, const __nv_bfloat16 *x, size_t count, cudaStream_t stream) {
    return sum_squares<__nv_bfloat16>(sum_sq, x, count, stream);
}

cudaError_t launch_scale_by_inverse_norm(__nv_bfloat16 *x, size_t count, const float *sum_sq, float eps,
                                         cudaStream_t stream) {
    scale_by_inverse_norm_kernel<<<muon_blocks(count), MUON_THREADS, 0, stream>>>(x, count, sum_sq, eps);
    return cudaGetLastError();
}

cudaError_t launch_muon_apply(float *w, __half *w_half, const __nv_bfloat16 *update, size_t count, int c_out,
                              const float *w_sum_sq, float lr, float decay, cudaStream_t stream) {
    muon_apply_kernel<<<muon_blocks(count), MUON_THREADS, 0, stream>>>(w, w_half, update, count, c_out, w_sum_sq, lr,
                                                                      decay);
    return cudaGetLastError();
}

}  // extern "C"
