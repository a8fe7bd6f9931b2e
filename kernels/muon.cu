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

// Each kernel below runs over every matrix of a MuonMatrices at once: the grid is split
// into runs of blocks, run i working on matrix i alone. first[i] is the first block of
// matrix i's run, first[n] the grid's size.
typedef struct {
    int first[MUON_MAX_MATRICES + 1];
} BlockRuns;

static BlockRuns block_runs(const MuonMatrices *m, int (*blocks_for)(size_t count)) {
    BlockRuns runs = {{0}};
    for (int i = 0; i < m->n; i++) runs.first[i + 1] = runs.first[i] + blocks_for(m->count[i]);
    return runs;
}

// This block's place: the matrix whose run holds it, its index in that run, the run's length.
typedef struct {
    int matrix, block, blocks;
} RunPlace;

__device__ RunPlace run_place(const BlockRuns &runs) {
    int i = 0;
    while ((int)blockIdx.x >= runs.first[i + 1]) i++;
    return {i, (int)blockIdx.x - runs.first[i], runs.first[i + 1] - runs.first[i]};
}

static bool matrices_ok(const MuonMatrices *m) {
    if (m->n < 1 || m->n > MUON_MAX_MATRICES) return false;
    for (int i = 0; i < m->n; i++)
        if (m->count[i] == 0 || m->c_out[i] < 1) return false;
    return true;
}

// The sum of squares in two deterministic passes: block b of matrix i's run (its length
// depends on count[i] only) sums a strided slice of the matrix, thread by thread and then
// as a tree in shared memory, into sum_partials[b]; then one warp per matrix adds its
// run's partials in a fixed order. The partials live in device memory of this file, so the
// launches keep their one-buffer signature; they are reused by every call (one stream:
// calls never overlap).
#define SUM_THREADS 512
#define SUM_MAX_BLOCKS 256  // per matrix
__device__ float sum_partials[SUM_MAX_BLOCKS * MUON_MAX_MATRICES];

template <typename T>
__global__ void sum_squares_partials_kernel(const T *x, MuonMatrices m, BlockRuns runs) {
    __shared__ float partial[SUM_THREADS];
    const RunPlace place = run_place(runs);
    const int i = place.matrix, block = place.block, blocks = place.blocks;
    const T *values = x + m.offset[i];
    float acc = 0.0f;
    for (size_t k = block * (size_t)SUM_THREADS + threadIdx.x; k < m.count[i]; k += (size_t)blocks * SUM_THREADS) {
        float v = (float)values[k];
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

// Block i, one warp: lane l adds matrix i's partials l, l + 32, ..., then the lanes' sums
// meet in a fixed tree.
__global__ void sum_partials_kernel(float *sums, BlockRuns runs) {
    const int first = runs.first[blockIdx.x], blocks = runs.first[blockIdx.x + 1] - first;
    float sum = 0.0f;
    for (int b = threadIdx.x; b < blocks; b += 32) sum += sum_partials[first + b];
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (threadIdx.x == 0) sums[blockIdx.x] = sum;
}

static int sum_blocks(size_t count) {
    size_t blocks = (count + 4 * SUM_THREADS - 1) / (4 * SUM_THREADS);  // about 4 values a thread
    return (int)(blocks < 1 ? 1 : blocks < SUM_MAX_BLOCKS ? blocks : SUM_MAX_BLOCKS);
}

template <typename T>
static cudaError_t sum_squares(float *sums, const T *x, const MuonMatrices *m, cudaStream_t stream) {
    if (!matrices_ok(m)) return cudaErrorInvalidValue;
    BlockRuns runs = block_runs(m, sum_blocks);
    sum_squares_partials_kernel<T><<<runs.first[m->n], SUM_THREADS, 0, stream>>>(x, *m, runs);
    sum_partials_kernel<<<m->n, 32, 0, stream>>>(sums, runs);
    return cudaGetLastError();
}

__global__ void scale_by_inverse_norm_kernel(__nv_bfloat16 *x, MuonMatrices m, BlockRuns runs, const float *sums,
                                             float eps) {
    const RunPlace place = run_place(runs);
    const int i = place.matrix, block = place.block, blocks = place.blocks;
    const float scale = 1.0f / (sqrtf(sums[i]) + eps);
    __nv_bfloat16 *values = x + m.offset[i];
    for (size_t k = block * (size_t)blockDim.x + threadIdx.x; k < m.count[i]; k += (size_t)blocks * blockDim.x)
        values[k] = __float2bfloat16(__bfloat162float(values[k]) * scale);
}

__global__ void muon_apply_kernel(float *w, __half *w_half, const __nv_bfloat16 *update, MuonMatrices m,
                                  BlockRuns runs, const float *w_sums, float lr, float decay) {
    const RunPlace place = run_place(runs);
    const int i = place.matrix, block = place.block, blocks = place.blocks;
    const float scale = w_sums ? sqrtf((float)m.c_out[i]) / sqrtf(w_sums[i]) : 1.0f;
    const size_t at = m.offset[i];
    for (size_t k = block * (size_t)blockDim.x + threadIdx.x; k < m.count[i]; k += (size_t)blocks * blockDim.x) {
        float v = (w[at + k] * scale - lr * __bfloat162float(update[at + k])) * decay;
        w[at + k] = v;
        w_half[at + k] = __float2half(v);
    }
}

extern "C" {

cudaError_t launch_muon_momentum(__nv_bfloat16 *update, float *momentum, const __half *grad, size_t count, float m,
                                 cudaStream_t stream) {
    muon_momentum_kernel<<<muon_blocks(count), MUON_THREADS, 0, stream>>>(update, momentum, grad, count, m);
    return cudaGetLastError();
}

cudaError_t launch_sum_squares(float *sums, const float *x, const MuonMatrices *m, cudaStream_t stream) {
    return sum_squares<float>(sums, x, m, stream);
}

cudaError_t launch_sum_squares_bf16(float *sums, const __nv_bfloat16 *x, const MuonMatrices *m,
                                    cudaStream_t stream) {
    return sum_squares<__nv_bfloat16>(sums, x, m, stream);
}

cudaError_t launch_scale_by_inverse_norm(__nv_bfloat16 *x, const MuonMatrices *m, const float *sums, float eps,
                                         cudaStream_t stream) {
    if (!matrices_ok(m)) return cudaErrorInvalidValue;
    BlockRuns runs = block_runs(m, muon_blocks);
    scale_by_inverse_norm_kernel<<<runs.first[m->n], MUON_THREADS, 0, stream>>>(x, *m, runs, sums, eps);
    return cudaGetLastError();
}

cudaError_t launch_muon_apply(float *w, __half *w_half, const __nv_bfloat16 *update, const MuonMatrices *m,
                              const float *w_sums, float lr, float decay, cudaStream_t stream) {
    if (!matrices_ok(m)) return cudaErrorInvalidValue;
    BlockRuns runs = block_runs(m, muon_blocks);
    muon_apply_kernel<<<runs.first[m->n], MUON_THREADS, 0, stream>>>(w, w_half, update, *m, runs, w_sums, lr,
                                                                    decay);
    return cudaGetLastError();
}

}  // extern "C"
