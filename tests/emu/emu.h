// emu.h: the project's CUDA kernels (kernels/*.cu) compiled by the host C++ compiler and run
// on the CPU, so that tests/gpu_test_kernels.c checks the kernels' own code against the
// reference on a machine without a GPU. The Makefile rewrites each `kernel<<<grid, block, 0,
// stream>>>(args)` into `emu_launch(EmuConfig(grid, block, 0, stream), "kernel", kernel)(args)`
// and compiles the result with this header included first (-include).
//
// The model (emu.cc): a launch runs to completion as one call on its stream (at once, or
// queued until a synchronization: tests/host/cuda_host.c's HOST_STREAMS), one block at a time
// per worker thread; each CUDA thread of a block is a fiber on its own small stack. A fiber runs
// until it reaches __syncthreads, a warp shuffle or its end; the block's fibers take turns
// in passes, one segment each per pass, and a __syncthreads lets its fibers go on only when
// every fiber still running has reached it. So:
// - __shared__ variables are one copy per worker thread (a function-local static), shared
//   by the block's fibers as on the GPU; a block starts with what the worker's previous
//   block left there (not cleared: the GPU promises nothing either);
// - a warp shuffle is a rendezvous of the warp's 32 lanes within one pass, and a lane that
//   reads from a lane that is not at the same shuffle (exited, or elsewhere) is reported;
// - threads of one block that wait at different __syncthreads are reported;
// - a pointer argument into no cudaMalloc allocation, and an invalid launch configuration,
//   fail the launch (cudaGetLastError), as on the GPU;
// - a kernel's fault is reported on stderr and sticks, as on the GPU (tests/host/host.h).
// It does not model the GPU's rounding (no fma contraction here: -ffp-contract=off), its
// math library's last bits (expf, erff are the C library's) or its timing. Out-of-bounds
// accesses are AddressSanitizer's to find (make host-sanitize), races ThreadSanitizer's
// (make host-racecheck, emu.cc).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

// ---- the CUDA C++ language on the host ----------------------------------------------------
// host_defines.h already makes __global__, __device__, __host__ and __launch_bounds__ empty
// for a host compiler; shared memory needs one copy per block, not per fiber.
#undef __shared__
#define __shared__ static thread_local
#undef __launch_bounds__
#define __launch_bounds__(...)

struct EmuThreadState {
    uint3 thread_idx, block_idx;
    dim3 block_dim, grid_dim;
};
extern __thread EmuThreadState *emu_self;  // the running fiber's indices (no C++ TLS wrapper)

#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim
#define threadIdx (emu_self->thread_idx)
#define blockIdx (emu_self->block_idx)
#define blockDim (emu_self->block_dim)
#define gridDim (emu_self->grid_dim)

// A barrier is known by its place in the source, which the compiler's duplicating a call
// (allowed for a host function, not for __syncthreads under nvcc) does not change.
void emu_syncthreads(const char *file, int line);
int emu_syncthreads_count(int predicate, const char *file, int line);
#define __syncthreads() emu_syncthreads(__FILE__, __LINE__)
#define __syncthreads_count(p) emu_syncthreads_count(p, __FILE__, __LINE__)

// A shuffle's 8 bytes: lane `source` of the caller's warp at the same shuffle, or (source
// outside the warp) the caller's own value.
uint64_t emu_shuffle(uint64_t bits, int source);

template <typename T> T emu_shuffle_value(T value, int source) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffles move at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &value, sizeof(T));
    bits = emu_shuffle(bits, source);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}

inline int emu_lane(void) {
    const EmuThreadState *s = emu_self;
    return (int)((s->thread_idx.z * s->block_dim.y + s->thread_idx.y) * s->block_dim.x + s->thread_idx.x) % 32;
}

// Full-warp shuffles (mask 0xffffffff) are all the kernels use; other masks are refused.
void emu_check_full_mask(unsigned mask);

template <typename T> T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    emu_check_full_mask(mask);
    int lane = emu_lane(), source = lane % width + (int)delta < width ? lane + (int)delta : -1;
    return emu_shuffle_value(value, source);
}
template <typename T> T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    emu_check_full_mask(mask);
    int lane = emu_lane(), source = lane % width >= (int)delta ? lane - (int)delta : -1;
    return emu_shuffle_value(value, source);
}
template <typename T> T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    emu_check_full_mask(mask);
    int lane = emu_lane(), source = lane ^ lane_mask;
    if (source / width != lane / width) source = -1;
    return emu_shuffle_value(value, source);
}
template <typename T> T __shfl_sync(unsigned mask, T value, int source_lane, int width = 32) {
    emu_check_full_mask(mask);
    int lane = emu_lane();
    return emu_shuffle_value(value, lane / width * width + source_lane % width);
}

// Blocks of a launch may run on several worker threads at once: atomics are atomic.
template <typename T> T atomicAdd(T *address, T value) {
    if constexpr (std::is_integral<T>::value) {
        return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
    } else {
        T old, sum;
        __atomic_load(address, &old, __ATOMIC_RELAXED);
        do sum = old + value;
        while (!__atomic_compare_exchange(address, &old, &sum, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
        return old;
    }
}

// Intrinsics with one IEEE rounding each (this file's callers compile with -ffp-contract=off).
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline unsigned __float_as_uint(float x) {
    unsigned u;
    memcpy(&u, &x, sizeof u);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
using std::max;
using std::min;

// ---- launches ---------------------------------------------------------------------------------

struct EmuConfig {
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;
    EmuConfig(dim3 g, dim3 b, size_t shared = 0, cudaStream_t s = 0)
        : grid(g), block(b), shared_bytes(shared), stream(s) {}
};

// Checks the configuration (an invalid one is reported and recorded for the next
// cudaGetLastError, as a failed launch) and, if it is valid, runs body once per CUDA thread
// of the grid (emu.cc) as a call on config.stream (tests/host's host_enqueue: at once, or
// queued); release(context) follows the run, or the refusal.
void emu_submit(const EmuConfig &config, void (*body)(void *), void *context, void (*release)(void *),
                const char *kernel);

// A pointer argument must be NULL or point into a live cudaMalloc allocation (a host
// pointer or a freed buffer is reported, and the launch fails as the GPU's would).
bool emu_pointer_ok(const char *kernel, int index, const void *p);

template <typename T> bool emu_argument_ok(const char *kernel, int index, const T &value) {
    if constexpr (std::is_pointer<T>::value) return emu_pointer_ok(kernel, index, (const void *)value);
    return true;
}

// emu_launch(config, "name", kernel)(args...): the call converts the arguments to the
// kernel's parameter types as the launch would (a literal NULL included), checks them, and
// submits the grid with a copy of them.
template <typename... Params> struct EmuLauncher {
    EmuConfig config;
    const char *name;
    void (*kernel)(Params...);
    void operator()(Params... args) const {
        int index = 0;
        bool ok = true;
        ((ok = emu_argument_ok(name, index++, args) && ok), ...);
        if (!ok) return;
        struct Call {
            void (*kernel)(Params...);
            std::tuple<Params...> values;
        };
        emu_submit(config, [](void *p) { std::apply(static_cast<Call *>(p)->kernel, static_cast<Call *>(p)->values); },
                   new Call{kernel, std::tuple<Params...>(args...)}, [](void *p) { delete static_cast<Call *>(p); },
                   name);
    }
};
template <typename... Params>
EmuLauncher<Params...> emu_launch(const EmuConfig &config, const char *name, void (*kernel)(Params...)) {
    return EmuLauncher<Params...>{config, name, kernel};
}
