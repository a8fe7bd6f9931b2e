// test_helpers.h: host-only helpers shared by the C tests and dev/kernel_bench: the
// relative error of a result against the reference, a reported check of an error against
// its bound, and a deterministic stream of random numbers. test.h keeps only the counters
// every test needs; tests/gpu_test.h adds the GPU side.
#pragma once
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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
