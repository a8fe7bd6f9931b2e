// rng.h: the counter-based random number generator shared by the CPU reference and the GPU.
//
// Every random choice in airbench.c (weight init, flip bits, translation offsets, cutout
// positions, brightness and contrast jitter, the per-epoch shuffle) is a pure function of
// (seed, stream, a, b): no state, no sequence. The same header compiles as host C and as
// CUDA device code, and uses only integer arithmetic and exactly rounded float operations,
// so a GPU thread and the CPU reference draw bit-identical numbers for the same counters.
#pragma once
#include <stdint.h>

#ifdef __CUDACC__
#define RNG_HD __host__ __device__ __forceinline__
#else
#define RNG_HD static inline
#endif

// Streams: one per kind of random decision, so that changing one never shifts another.
enum {
    RNG_STREAM_INIT = 1,       // weight init: a = parameter tensor id, b = element index
    RNG_STREAM_FLIP = 2,       // per-image flip bit: a = 0, b = image index
    RNG_STREAM_TRANSLATE = 3,  // random translation: a = epoch, b = image index
    RNG_STREAM_TRANSLATE_ORDER = 4, // derandomized translation order: a = image index
    RNG_STREAM_CUTOUT = 5,     // cutout corner: a = epoch, b = image index
    RNG_STREAM_SHUFFLE = 6,    // per-epoch permutation: a = epoch
    RNG_STREAM_BRIGHTNESS = 7, // brightness jitter: a = epoch, b = image index
    RNG_STREAM_CONTRAST = 8,   // contrast jitter: a = epoch, b = image index
};

// splitmix64's finalizer: a bijective 64-bit mix with full avalanche.
RNG_HD uint64_t rng_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// 32 random bits for counter (a, b) of a stream of a seed.
RNG_HD uint32_t rng_u32(uint64_t seed, uint32_t stream, uint32_t a, uint32_t b) {
    uint64_t key = rng_mix64(seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(stream + 1)));
    uint64_t counter = ((uint64_t)a << 32) | b;
    return (uint32_t)(rng_mix64(key ^ rng_mix64(counter)) >> 32);
}

// Uniform integer in [0, n): the high word of a 32x32-bit product (no modulo bias worth
// speaking of for the small n used here).
RNG_HD uint32_t rng_below(uint32_t bits, uint32_t n) {
    return (uint32_t)(((uint64_t)bits * n) >> 32);
}

// Uniform float in [-1, 1) on the grid of multiples of 2^-23: x = k / 2^24 (k the top 24
// bits) is exact, and so is 2x - 1.
RNG_HD float rng_unit_pm(uint32_t bits) {
    float x = (float)(bits >> 8) * (1.0f / 16777216.0f);
    return x + x - 1.0f;
}

// Uniform float in [-bound, bound): the one rounding is the final multiply, so host and
// device agree to the bit.
RNG_HD float rng_uniform_pm(uint32_t bits, float bound) { return rng_unit_pm(bits) * bound; }

// x * y rounded once to float, as a value that no later addition is fused with: nvcc
// contracts a * b + c into one fused multiply-add (one rounding instead of two) by default,
// and so does gcc in its default gnu mode on a target with FMA (aarch64, x86 with -mfma),
// each at its own places, which would make a sum differ between host and device.
// __fmul_rn is never contracted; a volatile's value is unknown to the compiler, so nothing
// can be fused with its read.
RNG_HD float rng_mul_rn(float x, float y) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(x, y);
#else
    volatile float product = x * y;
    return product;
#endif
}

// A pseudo-random permutation of [0, n) evaluated at i, keyed by (seed, stream, a): a
// 6-round Feistel network on the smallest even number of bits covering n, with cycle
// walking to stay inside [0, n). Being a bijection, it needs no sort and no storage: image
// i of epoch e sits at position rng_permute(seed, RNG_STREAM_SHUFFLE, e, i, n).
RNG_HD uint32_t rng_permute(uint64_t seed, uint32_t stream, uint32_t a, uint32_t i, uint32_t n) {
    uint32_t half_bits = 1;
    while ((1u << (2 * half_bits)) < n) half_bits++;
    uint32_t half_mask = (1u << half_bits) - 1;
    uint32_t x = i;
    do {
        uint32_t left = x >> half_bits, right = x & half_mask;
        for (uint32_t round = 0; round < 6; round++) {
            uint32_t f = rng_u32(seed, stream, a, (round << 24) | right) & half_mask;
            uint32_t next_right = left ^ f;
            left = right;
            right = next_right;
        }
        x = (left << half_bits) | right;
    } while (x >= n);
    return x;
}
