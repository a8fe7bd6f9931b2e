// gpu_test.h: the GPU side of the test helpers, shared by tests/gpu_test_*.c and
// dev/kernel_bench: CUDA error checks, tracked allocations (device memory filled with NaN
// bytes, so that an element a kernel forgets to write shows up), uploads and downloads,
// NHWC <-> NCHW, random activations, block partials
// added up on the host, and the trainer's parameter segments.
//
// Every array these helpers hand out (dev_alloc, dev_upload, host_buffer and the download_*
// results) is tracked: free_all() releases all of them at the end of a test or bench case;
// never free() one.
//
// With airbench.c (included first): CUDA_CHECK is then airbench.c's, which also prints
// and exits; no other name here is one of airbench.c's.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "net.h"
#include "test_helpers.h"

#ifndef CUDA_CHECK
#define CUDA_CHECK(call)                                                                         \
    do {                                                                                         \
        cudaError_t err_ = (call);                                                               \
        if (err_ != cudaSuccess) {                                                               \
            printf("FATAL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
            fflush(stdout);                                                                      \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)
#endif

// A launch, then a full synchronization, so that an execution error is blamed on it.
#define LAUNCH(call)                         \
    do {                                     \
        CUDA_CHECK(call);                    \
        CUDA_CHECK(cudaDeviceSynchronize()); \
    } while (0)

// Prints the GPU the program runs on and returns 0, or prints why there is none and
// returns 2 (the exit status of a program that needs a GPU and has none).
static inline int find_gpu(const char *program) {
    int n_devices = 0;
    cudaError_t status = cudaGetDeviceCount(&n_devices);
    if (status != cudaSuccess || n_devices == 0) {
        printf("%s: no CUDA GPU available (%s); this program needs one\n", program,
               status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
        return 2;
    }
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("%s on %s (%d SMs, sm_%d%d)\n", program, prop.name, prop.multiProcessorCount, prop.major, prop.minor);
    return 0;
}

// ---- tracked allocations -----------------------------------------------------------------

enum { MAX_TRACKED = 512 };
static void *tracked_device[MAX_TRACKED], *tracked_host[MAX_TRACKED];
static int n_tracked_device, n_tracked_host;

// Device memory filled with 0xff bytes: NaN as fp16, bf16 and fp32, 255 as a byte.
static inline void *dev_alloc(size_t bytes) {
    if (n_tracked_device == MAX_TRACKED) {
        printf("FATAL: more than %d device allocations before free_all\n", MAX_TRACKED);
        exit(1);
    }
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    CUDA_CHECK(cudaMemset(p, 0xff, bytes));
    tracked_device[n_tracked_device++] = p;
    return p;
}

static inline void *dev_upload(const void *host, size_t bytes) {
    void *p = dev_alloc(bytes);
    CUDA_CHECK(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice));
    return p;
}

// Zeroed host memory.
static inline void *host_buffer(size_t bytes) {
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p || n_tracked_host == MAX_TRACKED) {
        printf("FATAL: cannot allocate %zu host bytes (or more than %d before free_all)\n", bytes, MAX_TRACKED);
        exit(1);
    }
    tracked_host[n_tracked_host++] = p;
    return p;
}

#define HOST_FLOATS(count) ((float *)host_buffer((size_t)(count) * sizeof(float)))
#define HOST_HALVES(count) ((uint16_t *)host_buffer((size_t)(count) * sizeof(uint16_t)))

// A point in the tracked allocations: free_since(mark) releases what was handed out after
// it (say one engine's buffers, in a bench case whose inputs the next engine reuses).
typedef struct {
    int device, host;
} TrackedMark;

static inline TrackedMark tracked_mark(void) { return (TrackedMark){n_tracked_device, n_tracked_host}; }

static inline void free_since(TrackedMark mark) {
    for (int i = mark.device; i < n_tracked_device; i++) CUDA_CHECK(cudaFree(tracked_device[i]));
    for (int i = mark.host; i < n_tracked_host; i++) free(tracked_host[i]);
    n_tracked_device = mark.device;
    n_tracked_host = mark.host;
}

static inline void free_all(void) { free_since((TrackedMark){0, 0}); }

static inline void download(void *host, const void *dev, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

// ---- layouts and random activations ----------------------------------------------------------

// NHWC (n x hw x c) <-> NCHW (n x c x hw).
static inline void nhwc_to_nchw(float *dst, const float *src, int n, int hw, int c) {
    for (int b = 0; b < n; b++)
        for (int p = 0; p < hw; p++)
            for (int ch = 0; ch < c; ch++) dst[((size_t)b * c + ch) * hw + p] = src[((size_t)b * hw + p) * c + ch];
}

static inline void nchw_to_nhwc(float *dst, const float *src, int n, int hw, int c) {
    for (int b = 0; b < n; b++)
        for (int p = 0; p < hw; p++)
            for (int ch = 0; ch < c; ch++) dst[((size_t)b * hw + p) * c + ch] = src[((size_t)b * c + ch) * hw + p];
}

// Random fp16 activation of rows x c (NHWC): channel ch is mean[ch] + std[ch] * N(0,1)
// (mean/std NULL: 0/1); coarse rounds to multiples of 1/4 first, so that maxima tie
// often. h gets the fp16 bits, f the same values as floats.
static inline void random_activation(uint16_t *h, float *f, size_t rows, int c, const float *mean, const float *std,
                                     int coarse) {
    uint64_t base = test_rng_claim(2 * rows * c);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < rows * c; i++) {
        int ch = (int)(i % c);
        double v = (mean ? mean[ch] : 0.0) + (std ? std[ch] : 1.0) * normal_at(base, i);
        if (coarse) v = round(4.0 * v) / 4.0;
        h[i] = float_to_half((float)v);
        f[i] = half_to_float(h[i]);
    }
}

// ---- downloads into tracked host arrays ------------------------------------------------------

static inline float *download_floats(const void *dev, size_t count) {
    float *f = HOST_FLOATS(count);
    download(f, dev, count * sizeof(float));
    return f;
}

// fp16 values as floats.
static inline float *download_halves(const void *dev, size_t count) {
    uint16_t *h = HOST_HALVES(count);
    float *f = HOST_FLOATS(count);
    download(h, dev, count * sizeof(uint16_t));
    halves_to_floats(f, h, count);
    return f;
}

// bf16 values as floats.
static inline float *download_bf16s(const void *dev, size_t count) {
    uint16_t *b = HOST_HALVES(count);
    float *f = HOST_FLOATS(count);
    download(b, dev, count * sizeof(uint16_t));
    for (size_t i = 0; i < count; i++) f[i] = bf16_to_float(b[i]);
    return f;
}

// A GPU fp16 NHWC tensor (n x hw x c) as NCHW floats, the reference's layout.
static inline float *download_nchw(const void *dev, int n, int hw, int c) {
    size_t count = (size_t)n * hw * c;
    float *out = HOST_FLOATS(count);
    nhwc_to_nchw(out, download_halves(dev, count), n, hw, c);
    return out;
}

// Column sums of GPU block partials (n_blocks x width), added on the host in double.
static inline float *sum_partials(const void *partials_dev, int n_blocks, int width) {
    const float *partials = download_floats(partials_dev, (size_t)n_blocks * width);
    float *sums = HOST_FLOATS(width);
    for (int col = 0; col < width; col++) {
        double sum = 0.0;
        for (int b = 0; b < n_blocks; b++) sum += partials[(size_t)b * width + col];
        sums[col] = (float)sum;
    }
    return sums;
}

// ---- the flat parameter buffer -------------------------------------------------------------

