// tta.cu: selective test-time augmentation. The plain view's top softmax probability of
// every test image, the indices of the k least sure images (one block, deterministic,
// in increasing index order), and the scatter of their TTA logits back into place. The
// same selection, of the k largest, picks data filtering's highest-loss examples.
#include "kernel_common.h"
#include "net.h"

#define SELECT_THREADS 1024

__global__ void top_probability_kernel(float *probability, const float *logits, int n) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= n) return;
    const float *z = logits + (size_t)b * NET_CLASSES;
    float max_z = z[0], sum = 0.0f;
    for (int k = 1; k < NET_CLASSES; k++) max_z = fmaxf(max_z, z[k]);
    for (int k = 0; k < NET_CLASSES; k++) sum += expf(z[k] - max_z);
    probability[b] = 1.0f / sum;
}

// A float's bits as an unsigned key with the same order (negative values flipped whole,
// non-negative ones with the sign bit set), so the selection can search over integers.
__device__ __forceinline__ uint32_t order_key(float x) {
    uint32_t bits = __float_as_uint(x);
    return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

// The sum of one int per thread over the block (SELECT_THREADS), in every thread.
__device__ int block_sum(int value, int *scratch) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
    __syncthreads();  // scratch may still be read from the previous call
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = value;
    __syncthreads();
    int total = 0;
    for (int w = 0; w < SELECT_THREADS / 32; w++) total += scratch[w];
    return total;
}

// The sum of one int per thread over the threads before this one (an exclusive scan).
__device__ int block_exclusive_scan(int value, int *scratch) {
    __syncthreads();
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (int offset = 1; offset < SELECT_THREADS; offset *= 2) {  // Hillis-Steele, inclusive
        int add = threadIdx.x >= (unsigned)offset ? scratch[threadIdx.x - offset] : 0;
        __syncthreads();
        scratch[threadIdx.x] += add;
        __syncthreads();
    }
    return scratch[threadIdx.x] - value;
}

// The key the selection takes the k smallest of: order_key, or its complement (the reverse
// order) to take the k largest values.
template <bool LARGEST>
__device__ __forceinline__ uint32_t select_key(float x) {
    return LARGEST ? ~order_key(x) : order_key(x);
}

// Thread t owns indices [t * per, (t + 1) * per): the block writes the selection in index
// order. The k-th smallest key is found by bisection on its 32 bits (counts of keys <= a
// candidate); then every key below it is taken, and of the keys equal to it the ones with
// the lowest indices, as many as k needs.
template <bool LARGEST>
__global__ void __launch_bounds__(SELECT_THREADS) select_kernel(int *indices, const float *values, int n, int k) {
    __shared__ int scratch[SELECT_THREADS];
    int per = (int)ceil_div(n, SELECT_THREADS), first = threadIdx.x * per, last = min(n, first + per);
    uint32_t lo = 0, hi = 0xffffffffu;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int below = 0;
        for (int i = first; i < last; i++) below += select_key<LARGEST>(values[i]) <= mid;
        if (block_sum(below, scratch) >= k) hi = mid;
        else lo = mid + 1;
    }
    int n_less = 0, n_equal = 0;
    for (int i = first; i < last; i++) {
        uint32_t key = select_key<LARGEST>(values[i]);
        n_less += key < lo;
        n_equal += key == lo;
    }
    int equal_needed = k - block_sum(n_less, scratch);
    int equal_before = block_exclusive_scan(n_equal, scratch);
    int equal_taken = max(0, min(n_equal, equal_needed - equal_before));
    int out = block_exclusive_scan(n_less + equal_taken, scratch);
    for (int i = first; i < last; i++) {
        uint32_t key = select_key<LARGEST>(values[i]);
        if (key < lo || (key == lo && equal_taken-- > 0)) indices[out++] = i;
    }
}

__global__ void scatter_rows_kernel(float *dst, const float *src, const int *indices, int n, int width) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n * width) dst[(size_t)indices[i / width] * width + i % width] = src[i];
}

extern "C" {

cudaError_t launch_top_probability(float *probability, const float *logits, int n, cudaStream_t stream) {
    if (n > 0) top_probability_kernel<<<(int)ceil_div(n, BLOCK), BLOCK, 0, stream>>>(probability, logits, n);
    return cudaGetLastError();
}

cudaError_t launch_select_lowest(int *indices, const float *values, int n, int k, cudaStream_t stream) {
    if (n > 0 && k > 0) select_kernel<false><<<1, SELECT_THREADS, 0, stream>>>(indices, values, n, k);
    return cudaGetLastError();
}

cudaError_t launch_select_highest(int *indices, const float *values, int n, int k, cudaStream_t stream) {
    if (n > 0 && k > 0) select_kernel<true><<<1, SELECT_THREADS, 0, stream>>>(indices, values, n, k);
    return cudaGetLastError();
}

cudaError_t launch_scatter_rows(float *dst, const float *src, const int *indices, int n, int width,
                                cudaStream_t stream) {
    if (n > 0)
        scatter_rows_kernel<<<(int)ceil_div((long long)n * width, BLOCK), BLOCK, 0, stream>>>(dst, src, indices, n,
                                                                                          width);
    return cudaGetLastError();
}

}  // extern "C"
