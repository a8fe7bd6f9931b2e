// test_emu.cu: the CPU emulation of CUDA kernels (tests/emu/emu.h) against what CUDA
// promises: barriers, shared memory per block, warp shuffles, __syncthreads_count, atomics,
// 3-D indices; and the faults it must report instead of computing on: threads of a block at
// different barriers, a shuffle reading an exited lane, a partial shuffle mask, an invalid
// launch configuration, a pointer into no allocation. Plain CUDA, built like the kernels
// (the Makefile's launch rewrite, emu.h included first), run with several worker threads.
// With --race it runs a kernel with a shared-memory race and nothing else: built for make
// host-racecheck, ThreadSanitizer must report it (tests/test_racecheck.sh).
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "test.h"
}

#define THREADS 256

// ---- kernels: what must work -----------------------------------------------------------------

// out[b] = sum of in over block b's THREADS values: a shared-memory tree with barriers.
__global__ void block_sum_kernel(int *out, const int *in) {
    __shared__ int partial[THREADS];
    partial[threadIdx.x] = in[blockIdx.x * THREADS + threadIdx.x];
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

// Each thread's results of the four shuffles of its own value 100 * lane + warp.
__global__ void shuffle_kernel(int *down, int *up, int *xor_, int *broadcast) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, value = 100 * lane + warp;
    down[threadIdx.x] = __shfl_down_sync(0xffffffffu, value, 3);
    up[threadIdx.x] = __shfl_up_sync(0xffffffffu, value, 5);
    xor_[threadIdx.x] = __shfl_xor_sync(0xffffffffu, value, 9);
    broadcast[threadIdx.x] = __shfl_sync(0xffffffffu, value, 7);
}

// Two counting barriers in a row, each with its own predicate.
__global__ void count_kernel(int *counts) {
    int a = __syncthreads_count(threadIdx.x % 3 == 0);
    int b = __syncthreads_count(threadIdx.x < 10);
    if (threadIdx.x == 0) {
        counts[2 * blockIdx.x] = a;
        counts[2 * blockIdx.x + 1] = b;
    }
}

__global__ void atomic_kernel(int *total, float *total_f) {
    atomicAdd(total, 1);
    atomicAdd(total_f, 0.5f);
}

// Every thread of a 3-D grid of 3-D blocks writes its coordinates at its flat index.
__global__ void index_kernel(int *out) {
    int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    int at = block * blockDim.x * blockDim.y * blockDim.z + thread;
    out[at] = blockIdx.x + 10 * blockIdx.y + 100 * blockIdx.z + 1000 * threadIdx.x + 10000 * threadIdx.y +
              100000 * threadIdx.z;
}

// Thread 0 parks the block's index in shared memory; everyone reads it after the barrier.
__global__ void shared_per_block_kernel(int *out) {
    __shared__ int mine;
    if (threadIdx.x == 0) mine = blockIdx.x;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = mine;
}

// ---- kernels: what must be reported --------------------------------------------------------

// Half the threads wait at a barrier the others never reach: they wait at the second.
__global__ void divergent_barrier_kernel(int *out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1;
    __syncthreads();
}

__global__ void exited_lane_kernel(int *out) {
    if (threadIdx.x == 3) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

__global__ void partial_mask_kernel(int *out) { out[threadIdx.x] = __shfl_down_sync(0x0000ffffu, 1, 1); }

__global__ void plain_kernel(int *out) { out[threadIdx.x] = 1; }

// For make host-racecheck (test_emu --race): a read of a neighbour's shared value with no
// barrier between its write and the read, which only a race detector sees.
__global__ void shared_race_kernel(int *out) {
    __shared__ int values[64];
    values[threadIdx.x] = threadIdx.x;
    out[threadIdx.x] = values[(threadIdx.x + 1) % 64];
}

// ---- host side -------------------------------------------------------------------------------

static void *device_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        fprintf(stderr, "test_emu: cudaMalloc failed\n");
        exit(2);
    }
    return p;
}

static void download(void *host, const void *device, size_t bytes) {
    if (cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
        fprintf(stderr, "test_emu: cudaMemcpy failed\n");
        exit(2);
    }
}

static void test_block_sum(void) {
    const int blocks = 37;
    int *in = (int *)malloc(sizeof(int) * blocks * THREADS), want[blocks], got[blocks];
    for (int b = 0; b < blocks; b++) {
        want[b] = 0;
        for (int t = 0; t < THREADS; t++) want[b] += in[b * THREADS + t] = (b * 7919 + t * 31) % 1000 - 500;
    }
    int *in_d = (int *)device_alloc(sizeof(int) * blocks * THREADS), *out_d = (int *)device_alloc(sizeof got);
    cudaMemcpy(in_d, in, sizeof(int) * blocks * THREADS, cudaMemcpyHostToDevice);
    block_sum_kernel<<<blocks, THREADS>>>(out_d, in_d);
    CHECK(cudaGetLastError() == cudaSuccess, "block_sum launch");
    download(got, out_d, sizeof got);
    int wrong = 0;
    for (int b = 0; b < blocks; b++) wrong += got[b] != want[b];
    CHECK(wrong == 0, "block_sum: %d of %d block sums wrong (a barrier let threads run ahead)", wrong, blocks);
    free(in);
}

static void test_shuffles(void) {
    const int n = 96;  // three full warps
    int *d = (int *)device_alloc(4 * n * sizeof(int)), got[4][n];
    shuffle_kernel<<<1, n>>>(d, d + n, d + 2 * n, d + 3 * n);
    CHECK(cudaGetLastError() == cudaSuccess, "shuffle launch");
    download(got, d, sizeof got);
    int wrong = 0;
    for (int t = 0; t < n; t++) {
        int lane = t % 32, warp = t / 32, own = 100 * lane + warp;
        wrong += got[0][t] != (lane + 3 < 32 ? own + 300 : own);
        wrong += got[1][t] != (lane >= 5 ? own - 500 : own);
        wrong += got[2][t] != 100 * (lane ^ 9) + warp;
        wrong += got[3][t] != 700 + warp;
    }
    CHECK(wrong == 0, "shuffles: %d of %d results wrong", wrong, 4 * n);
}

static void test_count_and_atomics(void) {
    const int blocks = 5, count_threads = 200;
    int *counts_d = (int *)device_alloc(2 * blocks * sizeof(int)), counts[2 * blocks];
    count_kernel<<<blocks, count_threads>>>(counts_d);
    download(counts, counts_d, sizeof counts);
    int wrong = 0;
    for (int b = 0; b < blocks; b++) wrong += counts[2 * b] != 67 || counts[2 * b + 1] != 10;
    CHECK(wrong == 0, "__syncthreads_count: %d of %d blocks wrong (want 67 and 10)", wrong, blocks);

    int *total_d = (int *)device_alloc(sizeof(int)), total = 0;
    float *total_f_d = (float *)device_alloc(sizeof(float)), total_f = 0.0f;
    cudaMemset(total_d, 0, sizeof(int));
    cudaMemset(total_f_d, 0, sizeof(float));
    atomic_kernel<<<1000, 64>>>(total_d, total_f_d);
    download(&total, total_d, sizeof total);
    download(&total_f, total_f_d, sizeof total_f);
    CHECK(total == 64000, "atomicAdd(int) from 1000 blocks: %d, want 64000", total);
    CHECK(total_f == 32000.0f, "atomicAdd(float) from 1000 blocks: %g, want 32000", total_f);
}

static void test_indices_and_shared(void) {
    dim3 grid(3, 2, 2), block(4, 3, 2);
    const int n = 3 * 2 * 2 * 4 * 3 * 2;
    int *d = (int *)device_alloc(n * sizeof(int)), got[n];
    index_kernel<<<grid, block>>>(d);
    download(got, d, sizeof got);
    int wrong = 0, at = 0;
    for (int bz = 0; bz < 2; bz++)
        for (int by = 0; by < 2; by++)
            for (int bx = 0; bx < 3; bx++)
                for (int tz = 0; tz < 2; tz++)
                    for (int ty = 0; ty < 3; ty++)
                        for (int tx = 0; tx < 4; tx++, at++)
                            wrong += got[at] != bx + 10 * by + 100 * bz + 1000 * tx + 10000 * ty + 100000 * tz;
    CHECK(wrong == 0, "3-D indices: %d of %d threads wrong", wrong, n);

    const int blocks = 500, threads = 64;
    int *shared_d = (int *)device_alloc(blocks * threads * sizeof(int));
    int *shared_got = (int *)malloc(blocks * threads * sizeof(int));
    shared_per_block_kernel<<<blocks, threads>>>(shared_d);
    download(shared_got, shared_d, blocks * threads * sizeof(int));
    wrong = 0;
    for (int i = 0; i < blocks * threads; i++) wrong += shared_got[i] != i / threads;
    CHECK(wrong == 0, "shared memory: %d of %d threads saw another block's value", wrong, blocks * threads);
    free(shared_got);
}

// A fault is sticky, as on a GPU: the error stays until cudaDeviceReset.
static void check_fault(const char *what, cudaError_t want) {
    cudaError_t got = cudaGetLastError();
    CHECK(got == want, "%s: cudaGetLastError gave %d, want %d", what, (int)got, (int)want);
    if (want == cudaErrorLaunchFailure || want == cudaErrorIllegalAddress) {
        CHECK(cudaDeviceSynchronize() == want, "%s: the fault is not sticky", what);
        cudaDeviceReset();
    }
    CHECK(cudaDeviceSynchronize() == cudaSuccess, "%s: an error remains after it was read", what);
}

static void test_faults(void) {
    printf("(the emu: lines below are the faults this test provokes)\n");
    fflush(stdout);
    const int bytes = 64 * sizeof(int);
    divergent_barrier_kernel<<<1, 32>>>((int *)device_alloc(bytes));
    check_fault("threads at different __syncthreads", cudaErrorLaunchFailure);
    exited_lane_kernel<<<1, 32>>>((int *)device_alloc(bytes));
    check_fault("a shuffle reading an exited lane", cudaErrorLaunchFailure);
    partial_mask_kernel<<<1, 32>>>((int *)device_alloc(bytes));
    check_fault("a partial shuffle mask", cudaErrorLaunchFailure);

    int *d = (int *)device_alloc(bytes);
    plain_kernel<<<1, 2048>>>(d);
    check_fault("2048 threads per block", cudaErrorInvalidConfiguration);
    plain_kernel<<<0, 32>>>(d);
    check_fault("an empty grid", cudaErrorInvalidConfiguration);
    int host[32];
    plain_kernel<<<1, 32>>>(host);
    check_fault("a host pointer", cudaErrorIllegalAddress);

    d = (int *)device_alloc(bytes);
    plain_kernel<<<1, 32>>>(d);
    check_fault("a correct launch after the faults", cudaSuccess);
    int got[32], wrong = 0;
    download(got, d, sizeof got);
    for (int t = 0; t < 32; t++) wrong += got[t] != 1;
    CHECK(wrong == 0, "a correct launch after the faults: %d of 32 values unwritten", wrong);
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--race")) {  // the race detector must report this
        shared_race_kernel<<<1, 64>>>((int *)device_alloc(64 * sizeof(int)));
        return cudaDeviceSynchronize() == cudaSuccess ? 0 : 1;
    }
    test_block_sum();
    test_shuffles();
    test_count_and_atomics();
    test_indices_and_shared();
    test_faults();
    return test_finish("test_emu");
}
