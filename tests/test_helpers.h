// test_helpers.h: host-only helpers shared by the C tests and dev/kernel_bench: the
// relative error of a result against the reference, a reported check of an error against
// its bound, zeroed float buffers, a deterministic stream of random numbers, and fp16 and
// bf16 <-> float. test.h keeps only the counters every test needs; tests/gpu_test.h adds the
// GPU side.
#pragma once
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

// ||got - want|| / ||want||, or ||got - want|| when want is all zero. A NaN anywhere gives
// NaN, which fails every bound.
static inline double rel_error(const float *got, const float *want, size_t count) {
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < count; i++) {
        double d = (double)got[i] - want[i];
        diff += d * d;
        norm += (double)want[i] * want[i];
    }
    return norm > 0.0 ? sqrt(diff / norm) : sqrt(diff);
}

// Prints one check line (what, error, bound) and counts it: passed when error <= bound, so
// that NaN fails. A bound of 0 asks for an exact result (error: a count of mismatches).
static inline void check_error(double error, double bound, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static inline void check_error(double error, double bound, const char *format, ...) {
    char what[160];
    va_list args;
    va_start(args, format);
    vsnprintf(what, sizeof what, format, args);
    va_end(args);
    int ok = error <= bound;
    printf("  %-58s %10.3e  (bound %.0e)%s\n", what, error, bound, ok ? "" : "  <-- FAIL");
    CHECK(ok, "%s: error %.3e above the bound %.1e", what, error, bound);
    fflush(stdout);
}

// check_error of rel_error(got, want, count).
static inline void check_rel(const char *what, const float *got, const float *want, size_t count, double bound) {
    check_error(rel_error(got, want, count), bound, "%s", what);
}

// count zeroed floats (at least one), or abort: a test's buffers.
static inline float *calloc_floats(size_t count) {
    float *p = calloc(count ? count : 1, sizeof(float));
    if (!p) abort();
    return p;
}

// ---- random numbers: splitmix64, one stream per file, from a fixed seed -------------------
// Value k of the stream is a function of k alone, so a loop can claim a stretch of it and
// fill an array in parallel with the same numbers as calls made one after another.

#define TEST_RNG_STEP 0x9e3779b97f4a7c15ULL
static uint64_t test_rng_state = 0x243f6a8885a308d3ULL;

static inline uint64_t test_rng_at(uint64_t counter) {
    uint64_t z = counter;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t next_u64(void) { return test_rng_at(test_rng_state += TEST_RNG_STEP); }

// Claims the next n values: value k (1 <= k <= n) is test_rng_at(base + k * TEST_RNG_STEP).
static inline uint64_t test_rng_claim(uint64_t n) {
    uint64_t base = test_rng_state;
    test_rng_state += n * TEST_RNG_STEP;
    return base;
}

// The top 53 bits as a double in [0, 1).
static inline double unit_double(uint64_t bits) { return (double)(bits >> 11) * (1.0 / 9007199254740992.0); }

// Uniform in [lo, hi).
static inline double uniform(double lo, double hi) { return lo + (hi - lo) * unit_double(next_u64()); }

// N(0, 1) by Box-Muller from values 2i + 1 and 2i + 2 after base (1 - u1 is in (0, 1], so
// the log is finite).
static inline double normal_at(uint64_t base, uint64_t i) {
    double u1 = unit_double(test_rng_at(base + (2 * i + 1) * TEST_RNG_STEP));
    double u2 = unit_double(test_rng_at(base + (2 * i + 2) * TEST_RNG_STEP));
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

static inline double normal(void) { return normal_at(test_rng_claim(2), 0); }

// A random sign times uniform(lo, hi): per-channel offsets that keep sums away from 0.
static inline double signed_uniform(double lo, double hi) { return (next_u64() & 1 ? 1.0 : -1.0) * uniform(lo, hi); }

static inline void random_floats(float *f, size_t count, double mean, double std) {
    uint64_t base = test_rng_claim(2 * count);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) f[i] = (float)(mean + std * normal_at(base, i));
}

// Random bytes below `limit` (256: any byte): images, labels.
static inline void random_bytes(uint8_t *b, size_t count, unsigned limit) {
    for (size_t i = 0; i < count; i++) b[i] = (uint8_t)(next_u64() % limit);
}

// ---- fp16 and bf16 on the host -------------------------------------------------------------

// fp32 -> fp16 bits, round to nearest even (NaN stays NaN, overflow -> inf); checked
// against gcc's _Float16 on all 2^32 floats.
static inline uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, abs_x = x & 0x7fffffffu;
    if (abs_x >= 0x7f800000u) return (uint16_t)(sign | (abs_x > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (abs_x >= 0x47800000u) return (uint16_t)(sign | 0x7c00u);  // >= 65536: inf
    uint32_t exponent = abs_x >> 23, mantissa = (abs_x & 0x7fffffu) | 0x800000u;
    // In units of the result's last place (2^-24 for subnormals, 2^(exponent - 137) for
    // normals) the value is the 24-bit mantissa shifted right by:
    int shift = exponent >= 113 ? 13 : 126 - (int)exponent;
    if (shift > 24) return (uint16_t)sign;  // below 2^-25: rounds to zero
    uint32_t kept = mantissa >> shift, rest = mantissa & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (kept & 1u))) kept++;
    // Normals: kept includes the implicit 1 (adding 1 to the exponent field), and a carry
    // out of the mantissa moves into the exponent, as it should.
    uint32_t bits = exponent >= 113 ? ((exponent - 113) << 10) + kept : kept;
    return (uint16_t)(sign | bits);
}

static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
    if (exponent == 31) bits = sign | 0x7f800000u | (mantissa << 13);
    else if (exponent) bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    else if (!mantissa) bits = sign;
    else {  // subnormal: mantissa * 2^-24
        float f = (float)mantissa * (1.0f / 16777216.0f);
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float round_to_half(float f) { return half_to_float(float_to_half(f)); }

// bf16 is the top half of an fp32: fp32 -> bf16 bits rounds to nearest even (finite x).
static inline uint16_t float_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

static inline float bf16_to_float(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline void halves_to_floats(float *dst, const uint16_t *src, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = half_to_float(src[i]);
}
