// kernel_common.h: device helpers shared by the kernels/*.cu files. CUDA C++ only: the C
// interface is kernels.h; nothing here is visible to the C callers.
//
// Shared conventions of the kernels:
// - Activations are read and written as 16-byte vectors of 8 halves (8 channels of one
//   row); tensor pointers must be 16-byte aligned (cudaMalloc'd, or offset by multiples
//   of 16 bytes). Per-channel fp32 parameters are read with scalar loads (any alignment).
// - Per-channel reductions use stats_blocks(rows, c) blocks, each over a contiguous range
//   of rows, accumulating in fp32 per thread, then across the block in a fixed order; the
//   finalize kernels add the block partials in block order, in double. Nothing depends on
//   timing or on atomics, so results are bit-reproducible run to run.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels.h"

#define BLOCK 256          // threads per block of the row-tiled and elementwise kernels
#define COLUMN_SLICES 16   // column_sum blocks: 32 columns x COLUMN_SLICES threads

// ---- host side ----------------------------------------------------------------------

__host__ __device__ __forceinline__ long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }

// Streaming multiprocessors of the current device (cached on first use).
static inline int device_sm_count(void) {
    static int count = 0;
    if (count <= 0) {
        int device = 0, value = 0;
        if (cudaGetDevice(&device) == cudaSuccess &&
            cudaDeviceGetAttribute(&value, cudaDevAttrMultiProcessorCount, device) == cudaSuccess && value > 0)
            count = value;
        else
            count = 132;
    }
    return count;
}

// Blocks for a grid-stride kernel that would use `needed` blocks of BLOCK threads at one
// work item per thread: no more than needed, no more than fill the GPU (8 blocks = 2048
// threads per SM). Only for kernels whose results do not depend on the grid.
static inline int stride_grid(long long needed) {
    long long cap = 8LL * device_sm_count();
    if (needed < 1) needed = 1;
    return (int)(needed < cap ? needed : cap);
}

// ---- 16-byte vectors of 8 channels ----------------------------------------------------

// The halves are moved in and out of the 32-bit words of a uint4 with bit-cast intrinsics
// (no pointer punning of locals, which C++ aliasing rules do not allow).
__device__ __forceinline__ uint4 load_raw8(const __half *p) { return *reinterpret_cast<const uint4 *>(p); }

__device__ __forceinline__ void unpack_half8(float v[8], uint4 raw) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        v[2 * k] = __half2float(__ushort_as_half((unsigned short)(words[k] & 0xffffu)));
        v[2 * k + 1] = __half2float(__ushort_as_half((unsigned short)(words[k] >> 16)));
    }
}

__device__ __forceinline__ void load_half8(float v[8], const __half *p) { unpack_half8(v, load_raw8(p)); }

// Rounds to nearest even.
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    __half2 pair = __floats2half2_rn(lo, hi);
    return (uint32_t)__half_as_ushort(__low2half(pair)) | ((uint32_t)__half_as_ushort(__high2half(pair)) << 16);
}

__device__ __forceinline__ void store_half8(__half *p, const float v[8]) {
    *reinterpret_cast<uint4 *>(p) =
        make_uint4(pack_half2(v[0], v[1]), pack_half2(v[2], v[3]), pack_half2(v[4], v[5]), pack_half2(v[6], v[7]));
}

// 8 per-channel fp32 values (scalar loads: read once per thread, any alignment).
__device__ __forceinline__ void load_param8(float v[8], const float *p) {
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = p[k];
}

// 8 argmax bytes as one 8-byte access.
__device__ __forceinline__ void load_bytes8(uint8_t b[8], const uint8_t *p) {
    uint2 raw = *reinterpret_cast<const uint2 *>(p);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        b[k] = (uint8_t)(raw.x >> (8 * k));
        b[4 + k] = (uint8_t)(raw.y >> (8 * k));
    }
}

__device__ __forceinline__ void store_bytes8(uint8_t *p, const uint8_t b[8]) {
    uint2 raw = make_uint2(0u, 0u);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        raw.x |= (uint32_t)b[k] << (8 * k);
        raw.y |= (uint32_t)b[4 + k] << (8 * k);
    }
    *reinterpret_cast<uint2 *>(p) = raw;
}

// ---- exact GELU ----------------------------------------------------------------------

#define GELU_SQRT1_2 0.70710678118654752440f     // 1 / sqrt(2)
#define GELU_INV_SQRT_2PI 0.39894228040143267794f  // 1 / sqrt(2 pi)

// x * Phi(x), erf form.
__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.0f + erff(x * GELU_SQRT1_2)); }

// d/dx [x Phi(x)] = Phi(x) + x phi(x).
__device__ __forceinline__ float gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * GELU_SQRT1_2));
    float pdf = expf(-0.5f * x * x) * GELU_INV_SQRT_2PI;
    return cdf + x * pdf;
}

// ---- SiLU ----------------------------------------------------------------------------

// 1 / (1 + e^-x): for very negative x, e^-x overflows to inf and the result is 0, no NaN.
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// x * sigmoid(x).
__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }

// d/dx [x s(x)] = s(x) + x s(x) (1 - s(x)) = s(x) (1 + x (1 - s(x))), s the sigmoid.
__device__ __forceinline__ float silu_grad(float x) {
    float s = sigmoid(x);
    return s * (1.0f + x * (1.0f - s));
}

// ---- BatchNorm -----------------------------------------------------------------------

// BatchNorm (weight 1) pre-activation, written once so that the forward and the backward
// recompute the very same z: z = (x - mean) * rstd + bias, one rounding for the fma.
__device__ __forceinline__ float bn_z(float x, float mean, float rstd, float bias) {
    return __fmaf_rn(__fsub_rn(x, mean), rstd, bias);
}

__device__ __forceinline__ float bn_xhat(float x, float mean, float rstd) {
    return __fmul_rn(__fsub_rn(x, mean), rstd);
}

// ---- row tiling of a rows x c activation --------------------------------------------
// A block of BLOCK threads covers rows_per_pass rows of c channels at a time: thread t
// owns the 8 channels [8 * group, 8 * group + 8) of rows sub, sub + rows_per_pass, ...
// with group = t % (c / 8) and sub = t / (c / 8), so consecutive threads read consecutive
// 16-byte pieces of consecutive rows. When c / 8 does not divide BLOCK (c = 24, 384, ...)
// the last BLOCK % (c / 8) threads own no rows (active = false).
struct RowTile {
    int group, sub, rows_per_pass;
    bool active;
};

__device__ __forceinline__ RowTile row_tile(int c) {
    int groups = c / 8;
    RowTile tile;
    tile.rows_per_pass = BLOCK / groups;
    tile.group = (int)threadIdx.x % groups;
    tile.sub = (int)threadIdx.x / groups;
    tile.active = tile.sub < tile.rows_per_pass;
    return tile;
}

// Rows per block of a stats_blocks reduction: block b owns rows [row0, row1), one
// contiguous range, the same split for every kernel that writes stats partials.
__device__ __forceinline__ void block_rows(int rows, int *row0, int *row1) {
    int per_block = (int)ceil_div(rows, gridDim.x);
    *row0 = (int)blockIdx.x * per_block;
    *row1 = min(rows, *row0 + per_block);
}

// Adds up per channel the 8-channel accumulators `acc` of all threads of a row-tiled
// block and writes the c sums to out[0..c). Every thread of the block must call it.
// Active thread t = sub * (c/8) + group parks acc at shared[8t..8t+8) = shared[sub*c +
// 8*group ...]; then channel ch sums shared[r*c + ch] over r = 0..rows_per_pass-1 in order.
// shared: BLOCK * 8 floats.
__device__ __forceinline__ void block_channel_sum(float *out, const float acc[8], float *shared, int c,
                                                  const RowTile &tile) {
    if (tile.active) {
#pragma unroll
        for (int k = 0; k < 8; k++) shared[threadIdx.x * 8 + k] = acc[k];
    }
    __syncthreads();
    for (int ch = threadIdx.x; ch < c; ch += BLOCK) {
        float sum = 0.0f;
        for (int r = 0; r < tile.rows_per_pass; r++) sum += shared[r * c + ch];
        out[ch] = sum;
    }
    __syncthreads();  // shared may be reused by the caller
}

// ---- adding block partials in a fixed order ------------------------------------------
// For blocks of 32 * COLUMN_SLICES threads, each owning column col = 32 * blockIdx.x +
// lane: returns (to the threads of slice 0; others get 0) the double sum over blocks b of
// partials[b * stride + col], columns >= width contributing nothing. Slice s adds blocks
// s, s + COLUMN_SLICES, ... in order, then slice 0 adds the slices in order.
// Every thread of the block must call it. shared: 32 * COLUMN_SLICES doubles.
__device__ __forceinline__ double column_sum(const float *partials, int n_blocks, int stride, int col, int width,
                                             double *shared) {
    int lane = threadIdx.x % 32, slice = threadIdx.x / 32;
    double sum = 0.0;
    if (col < width)
        for (int b = slice; b < n_blocks; b += COLUMN_SLICES) sum += partials[(size_t)b * stride + col];
    shared[slice * 32 + lane] = sum;
    __syncthreads();
    double total = 0.0;
    if (slice == 0)
        for (int s = 0; s < COLUMN_SLICES; s++) total += shared[s * 32 + lane];
    __syncthreads();
    return total;
}
