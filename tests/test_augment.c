// test_augment.c: the random decisions of kernels/rng.h and data/augment.h, on their own
// (no data files): the permutation is a bijection, flips alternate, translations and cutout
// positions are uniform over their ranges, the derandomized translation never repeats an
// offset within (2T+1)^2 epochs, the brightness and contrast jitter is uniform, independent
// and exactly rounded, reflect padding matches a direct construction, and the uniform
// initializer stays in range. Every draw is deterministic, so the statistical bounds
// either always pass or always fail; they are set several standard deviations wide.
#include <stdlib.h>
#include <string.h>

#include "augment.h"
#include "test.h"

static const uint64_t SEED = 12345;

static void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) abort();
    return p;
}

// rng_permute(seed, stream, a, ., n) is a bijection on [0, n).
static void test_permute_bijection(void) {
    const uint32_t sizes[] = {1, 2, 3, 4, 5, 10, 17, 64, 100, 1000, 1023, 1024, 1025, 4097, 50000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        uint32_t n = sizes[s];
        for (uint32_t a = 0; a < 3; a++) {
            uint8_t *seen = xcalloc(n, 1);
            int ok = 1;
            for (uint32_t i = 0; i < n; i++) {
                uint32_t j = rng_permute(SEED, RNG_STREAM_SHUFFLE, a, i, n);
                if (j >= n || seen[j]) {
                    ok = 0;
                    break;
                }
                seen[j] = 1;
            }
            CHECK(ok, "rng_permute(n = %u, a = %u) is not a bijection on [0, n)", n, a);
            free(seen);
        }
    }
    // not the identity, and keyed by the stream and the seed
    uint32_t same_stream = 0, same_seed = 0, fixed = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        uint32_t j = rng_permute(SEED, RNG_STREAM_SHUFFLE, 0, i, 1000);
        fixed += j == i;
        same_stream += j == rng_permute(SEED, RNG_STREAM_TRANSLATE_ORDER, 0, i, 1000);
        same_seed += j == rng_permute(SEED + 1, RNG_STREAM_SHUFFLE, 0, i, 1000);
    }
    CHECK(fixed < 20, "rng_permute has %u fixed points of 1000 (expect ~1)", fixed);
    CHECK(same_stream < 20, "rng_permute: streams agree at %u of 1000 points", same_stream);
    CHECK(same_seed < 20, "rng_permute: seeds agree at %u of 1000 points", same_seed);
}

// aug_shuffle: each epoch a bijection, and each pair of epochs a different one.
static void test_shuffle_epochs(void) {
    enum { N = 1000, EPOCHS = 10 };
    static uint32_t perm[EPOCHS][N];
    for (int e = 0; e < EPOCHS; e++) {
        uint8_t seen[N] = {0};
        int ok = 1;
        for (uint32_t s = 0; s < N; s++) {
            perm[e][s] = aug_shuffle(SEED, e, s, N);
            if (perm[e][s] >= N || seen[perm[e][s]]) ok = 0;
            else seen[perm[e][s]] = 1;
        }
        CHECK(ok, "aug_shuffle epoch %d is not a permutation of [0, %d)", e, N);
    }
    int worst = 0;
    for (int e = 0; e < EPOCHS; e++)
        for (int f = e + 1; f < EPOCHS; f++) {
            int same = 0;
            for (int s = 0; s < N; s++) same += perm[e][s] == perm[f][s];
            if (same > worst) worst = same;
        }
    // two independent permutations agree at ~1 place
    CHECK(worst < 10, "aug_shuffle: two epochs agree at %d of %d slots", worst, N);
    // the full training set: epochs 0 and 1 differ
    int differ = 0;
    for (uint32_t s = 0; s < 50000; s += 7) differ += aug_shuffle(SEED, 0, s, 50000) != aug_shuffle(SEED, 1, s, 50000);
    CHECK(differ > 7000, "aug_shuffle on 50000: epochs 0 and 1 differ at only %d of 7143 slots", differ);
}

// aug_flip alternates every epoch for every image, and the first bits are ~half ones.
static void test_flip(void) {
    enum { N = 50000, EPOCHS = 8 };
    int alternates = 1, ones = 0;
    for (uint32_t i = 0; i < N; i++) {
        int first = aug_flip(SEED, 0, i);
        ones += first;
        for (uint32_t e = 1; e < EPOCHS; e++) alternates &= aug_flip(SEED, e, i) == (first ^ (int)(e & 1));
    }
    CHECK(alternates, "aug_flip does not alternate every epoch for every image");
    // binomial(50000, 1/2): sd 112; allow 5 sd
    CHECK(abs(ones - N / 2) < 560, "aug_flip: %d of %d images start flipped", ones, N);
    // neighbouring images are independent: the bit pairs (i, i+1) are ~uniform over 4 cases
    int pairs[4] = {0};
    for (uint32_t i = 0; i + 1 < N; i += 2) pairs[aug_flip(SEED, 0, i) * 2 + aug_flip(SEED, 0, i + 1)]++;
    for (int k = 0; k < 4; k++) CHECK(abs(pairs[k] - N / 8) < 5 * 74, "aug_flip: pair %d seen %d times", k, pairs[k]);
}

// Pearson's chi-square of counts against a uniform expectation.
static double chi_square(const int *counts, int k, double expected) {
    double chi = 0.0;
    for (int i = 0; i < k; i++) chi += (counts[i] - expected) * (counts[i] - expected) / expected;
    return chi;
}

// Random translation: offsets in [-T, T]^2, all (2T+1)^2 about equally often.
static void test_translate_random(int max_shift) {
    int side = 2 * max_shift + 1, k = side * side;
    int *counts = xcalloc(k, sizeof(int));
    int in_range = 1, draws = 0;
    for (uint32_t e = 0; e < 20; e++)
        for (uint32_t i = 0; i < 5000; i++) {
            int dy, dx;
            aug_translate(SEED, TRANSLATE_RANDOM, max_shift, e, i, &dy, &dx);
            if (dy < -max_shift || dy > max_shift || dx < -max_shift || dx > max_shift) {
                in_range = 0;
                continue;
            }
            counts[(dy + max_shift) * side + dx + max_shift]++;
            draws++;
        }
    CHECK(in_range, "aug_translate (T = %d): offset outside [-T, T]", max_shift);
    int min_count = draws;
    for (int i = 0; i < k; i++) min_count = counts[i] < min_count ? counts[i] : min_count;
    CHECK(min_count > 0, "aug_translate (T = %d): an offset never drawn", max_shift);
    // chi-square with k - 1 degrees of freedom: mean k - 1, sd sqrt(2 (k - 1)); allow 6 sd
    double chi = chi_square(counts, k, (double)draws / k), df = k - 1;
    printf("  random translation T = %d: %d draws over %d offsets, chi-square %.1f (df %.0f)\n", max_shift, draws,
           k, chi, df);
    CHECK(chi < df + 6 * sqrt(2 * df), "aug_translate (T = %d): chi-square %.1f with df %.0f", max_shift, chi, df);
    // epochs are independent: the same image gets a different offset from one epoch to the next ~(k-1)/k
    int changed = 0;
    for (uint32_t i = 0; i < 5000; i++) {
        int dy0, dx0, dy1, dx1;
        aug_translate(SEED, TRANSLATE_RANDOM, max_shift, 4, i, &dy0, &dx0);
        aug_translate(SEED, TRANSLATE_RANDOM, max_shift, 5, i, &dy1, &dx1);
        changed += dy0 != dy1 || dx0 != dx1;
    }
    double want = 5000.0 * (k - 1) / k, sd = sqrt(5000.0 * (k - 1) / k / k);
    CHECK(fabs(changed - want) < 6 * sd + 1, "aug_translate (T = %d): offset changed for %d of 5000 images", max_shift,
          changed);
    free(counts);
}

// Derandomized translation: any (2T+1)^2 consecutive epochs give every offset exactly once,
// per image; the orders differ between images; and over images the offsets are uniform.
static void test_translate_derandomized(int max_shift) {
    int side = 2 * max_shift + 1, k = side * side, n_images = 300, windows = 2 * k + 3;
    int *offsets = xcalloc((size_t)(windows + k), sizeof(int));
    int *seen = xcalloc(k, sizeof(int));
    int ok = 1, in_range = 1, bad_image = -1, bad_start = -1;
    for (uint32_t i = 0; i < (uint32_t)n_images && ok; i++) {
        for (int e = 0; e < windows + k; e++) {
            int dy, dx;
            aug_translate(SEED, TRANSLATE_DERANDOMIZED, max_shift, (uint32_t)e, i, &dy, &dx);
            if (dy < -max_shift || dy > max_shift || dx < -max_shift || dx > max_shift) in_range = 0;
            offsets[e] = (dy + max_shift) * side + dx + max_shift;
        }
        for (int start = 0; start < windows && ok; start++) {  // every window of k epochs
            memset(seen, 0, k * sizeof(int));
            for (int e = start; e < start + k; e++) {
                if (offsets[e] < 0 || offsets[e] >= k || seen[offsets[e]]) ok = 0;
                else seen[offsets[e]] = 1;
            }
            if (!ok) bad_image = (int)i, bad_start = start;
        }
    }
    CHECK(ok, "derandomized translation (T = %d): image %d repeats an offset within epochs %d..%d", max_shift,
          bad_image, bad_start, bad_start + k - 1);
    CHECK(in_range, "derandomized translation (T = %d): offset outside [-T, T]", max_shift);
    // images walk in different orders: epoch 0's offset is ~uniform over images
    int *counts = xcalloc(k, sizeof(int)), differ = 0, n = 20000;
    for (uint32_t i = 0; i < (uint32_t)n; i++) {
        int dy, dx, dy2, dx2;
        aug_translate(SEED, TRANSLATE_DERANDOMIZED, max_shift, 0, i, &dy, &dx);
        aug_translate(SEED, TRANSLATE_DERANDOMIZED, max_shift, 0, i + 1, &dy2, &dx2);
        counts[(dy + max_shift) * side + dx + max_shift]++;
        differ += dy != dy2 || dx != dx2;
    }
    double chi = chi_square(counts, k, (double)n / k), df = k - 1;
    printf("  derandomized translation T = %d: no repeat in any %d-epoch window (%d images, %d windows); "
           "epoch-0 chi-square %.1f (df %.0f)\n", max_shift, k, n_images, windows, chi, df);
    CHECK(chi < df + 6 * sqrt(2 * df), "derandomized translation (T = %d): epoch-0 chi-square %.1f", max_shift, chi);
    CHECK(differ > n * (k - 1) / k - 6 * sqrt((double)n / k) - 1, "derandomized translation (T = %d): neighbouring "
          "images share their order (%d of %d differ)", max_shift, differ, n);
    free(offsets);
    free(seen);
    free(counts);
}

// Cutout: the square always lies inside the image, and every position occurs.
static void test_cutout(int size) {
    int side = 32 - size + 1, k = side * side, draws = 0, inside = 1;
    int *counts = xcalloc(k, sizeof(int));
    for (uint32_t e = 0; e < 40; e++)
        for (uint32_t i = 0; i < 5000; i++) {
            int y0, x0;
            aug_cutout(SEED, size, e, i, &y0, &x0);
            if (y0 < 0 || x0 < 0 || y0 + size > 32 || x0 + size > 32) {
                inside = 0;
                continue;
            }
            counts[y0 * side + x0]++;
            draws++;
        }
    CHECK(inside, "aug_cutout (size %d): square leaves the 32x32 image", size);
    int min_count = draws;
    for (int i = 0; i < k; i++) min_count = counts[i] < min_count ? counts[i] : min_count;
    CHECK(min_count > 0, "aug_cutout (size %d): a position is never drawn", size);
    double chi = chi_square(counts, k, (double)draws / k), df = k - 1;
    printf("  cutout %d: %d draws over %d positions, min count %d, chi-square %.1f (df %.0f)\n", size, draws, k,
           min_count, chi, df);
    CHECK(chi < df + 6 * sqrt(2 * df), "aug_cutout (size %d): chi-square %.1f with df %.0f", size, chi, df);
    free(counts);
}

// The bin of x in [-bound, bound] cut into k equal bins (bound itself in the last).
static int uniform_bin(double x, double bound, int k) {
    int bin = (int)floor((x / bound + 1.0) / 2.0 * k);
    return bin < 0 ? 0 : bin >= k ? k - 1 : bin;
}

// Brightness and contrast jitter with amplitudes (B, C): b in [-B, B) and c - 1 in [-C, C]
// (the sum's rounding can reach 1 + C), each uniform (chi-square over bins) with mean ~0,
// b and c uncorrelated, a fresh draw per epoch and per image, and each value the two-step
// rounding fl(s B), fl(1 + fl(s' C)) (computed here in double, where the products and the
// sum are exact, then rounded once: what no FMA can have produced).
static void test_jitter(float max_b, float max_c) {
    enum { EPOCHS = 20, IMAGES = 5000, BINS = 20 };
    int b_counts[BINS] = {0}, c_counts[BINS] = {0}, n = 0, in_range = 1, rounding = 1;
    double sum_b = 0, sum_c = 0, sum_bc = 0, sum_bb = 0, sum_cc = 0;
    for (uint32_t e = 0; e < EPOCHS; e++)
        for (uint32_t i = 0; i < IMAGES; i++) {
            float b, c;
            aug_jitter(SEED, max_b, max_c, e, i, &b, &c);
            double u = (double)c - 1.0;  // exact: c is within a factor 2 of 1
            in_range &= b >= -max_b && b < max_b && u >= -max_c && u <= max_c;
            float s_b = rng_unit_pm(rng_u32(SEED, RNG_STREAM_BRIGHTNESS, e, i));
            float s_c = rng_unit_pm(rng_u32(SEED, RNG_STREAM_CONTRAST, e, i));
            rounding &= b == (float)((double)s_b * max_b) &&
                        c == (float)(1.0 + (double)(float)((double)s_c * max_c));
            b_counts[uniform_bin(b, max_b, BINS)]++;
            c_counts[uniform_bin(u, max_c, BINS)]++;
            sum_b += b, sum_c += u, sum_bc += b * u, sum_bb += (double)b * b, sum_cc += u * u;
            n++;
        }
    CHECK(in_range, "aug_jitter(%g, %g): b outside [-B, B) or c outside [1 - C, 1 + C]", max_b, max_c);
    CHECK(rounding, "aug_jitter(%g, %g): b or c is not the two-step float rounding", max_b, max_c);
    // means: sd of the mean of n uniforms on [-A, A) is A / sqrt(3 n); allow 6 sd
    CHECK(fabs(sum_b / n) < 6 * max_b / sqrt(3.0 * n), "aug_jitter(%g, %g): mean b %.3g", max_b, max_c, sum_b / n);
    CHECK(fabs(sum_c / n) < 6 * max_c / sqrt(3.0 * n), "aug_jitter(%g, %g): mean c - 1 %.3g", max_b, max_c, sum_c / n);
    double chi_b = chi_square(b_counts, BINS, (double)n / BINS), chi_c = chi_square(c_counts, BINS, (double)n / BINS);
    double df = BINS - 1, corr = sum_bc / sqrt(sum_bb * sum_cc);
    printf("  jitter B = %g, C = %g: %d draws, chi-square b %.1f, c %.1f (df %.0f), corr(b, c) %+.4f\n", max_b, max_c,
           n, chi_b, chi_c, df, corr);
    CHECK(chi_b < df + 6 * sqrt(2 * df), "aug_jitter(%g, %g): b chi-square %.1f", max_b, max_c, chi_b);
    CHECK(chi_c < df + 6 * sqrt(2 * df), "aug_jitter(%g, %g): c chi-square %.1f", max_b, max_c, chi_c);
    // independent b and c: correlation ~ N(0, 1 / n); allow 6 sd
    CHECK(fabs(corr) < 6 / sqrt((double)n), "aug_jitter(%g, %g): corr(b, c) = %.4f", max_b, max_c, corr);
    // a fresh draw per epoch and per image: two floats on a 2^24 grid agree by chance ~never
    int same_epoch = 0, same_image = 0;
    for (uint32_t i = 0; i < IMAGES; i++) {
        float b0, c0, b1, c1, b2, c2;
        aug_jitter(SEED, max_b, max_c, 7, i, &b0, &c0);
        aug_jitter(SEED, max_b, max_c, 8, i, &b1, &c1);
        aug_jitter(SEED, max_b, max_c, 7, i + 1, &b2, &c2);
        same_epoch += b0 == b1 || c0 == c1;
        same_image += b0 == b2 || c0 == c2;
    }
    CHECK(same_epoch == 0, "aug_jitter(%g, %g): %d images keep b or c from epoch 7 to 8", max_b, max_c, same_epoch);
    CHECK(same_image == 0, "aug_jitter(%g, %g): %d neighbouring images share b or c", max_b, max_c, same_image);
}

// Zero amplitudes: exactly b = +0 and c = 1, and then the jitter leaves every value the
// loader can produce (aug_normalize of any byte and channel) unchanged, bit for bit; a zero
// amplitude on one side leaves the other side's draws as they were.
static void test_jitter_off(void) {
    int off = 1, alone = 1;
    for (uint32_t i = 0; i < 5000; i++) {
        float b, c, b_only, c_only, b_both, c_both;
        aug_jitter(SEED, 0.0f, 0.0f, 3, i, &b, &c);
        off &= b == 0.0f && !signbit(b) && c == 1.0f;
        aug_jitter(SEED, 0.25f, 0.0f, 3, i, &b_only, &c);
        alone &= c == 1.0f;
        aug_jitter(SEED, 0.0f, 0.25f, 3, i, &b, &c_only);
        alone &= b == 0.0f;
        aug_jitter(SEED, 0.25f, 0.25f, 3, i, &b_both, &c_both);
        alone &= b_only == b_both && c_only == c_both;
    }
    CHECK(off, "aug_jitter(0, 0) is not exactly b = +0, c = 1");
    CHECK(alone, "aug_jitter: one amplitude changes the other's draws, or a zero one draws");
    int identity = 1;
    for (int ch = 0; ch < 3; ch++)
        for (int v = 0; v < 256; v++) {
            float x = aug_normalize((uint8_t)v, ch), y = aug_jitter_apply(x, 0.0f, 1.0f);
            identity &= memcmp(&x, &y, sizeof x) == 0;
        }
    CHECK(identity, "aug_jitter_apply(x, 0, 1) changes an aug_normalize value");
}

// aug_reflect against a reflect-padded row built directly: [T, T-1, .., 1, 0, 1, .., n-1,
// n-2, .., n-1-T]; and aug_source_pixel against pad-crop-mirror done on index images.
static void test_reflect(void) {
    int ok = 1;
    for (int size = 2; size <= 32; size++)
        for (int pad = 1; pad < size; pad++) {
            int padded[3 * 32], len = 0;
            for (int i = pad; i >= 1; i--) padded[len++] = i;
            for (int i = 0; i < size; i++) padded[len++] = i;
            for (int i = size - 2; i >= size - 1 - pad; i--) padded[len++] = i;
            for (int p = 0; p < len; p++) ok &= aug_reflect(p - pad, size) == padded[p];
        }
    CHECK(ok, "aug_reflect differs from reflect padding built directly");

    // source pixel = the (dy, dx)-shifted view of the reflect-padded image, mirrored if flip
    enum { T = 4, P = 32 + 2 * T };
    static int pad_y[P][P], pad_x[P][P];
    for (int y = 0; y < P; y++)
        for (int x = 0; x < P; x++) {
            // reflect each axis by folding: index of the padded row/column in the image
            int yy = y - T, xx = x - T;
            pad_y[y][x] = yy < 0 ? -yy : yy > 31 ? 62 - yy : yy;
            pad_x[y][x] = xx < 0 ? -xx : xx > 31 ? 62 - xx : xx;
        }
    int src_ok = 1;
    for (int dy = -T; dy <= T; dy++)
        for (int dx = -T; dx <= T; dx++)
            for (int flip = 0; flip < 2; flip++)
                for (int y = 0; y < 32; y++)
                    for (int x = 0; x < 32; x++) {
                        int cx = flip ? 31 - x : x;  // mirror the cropped view
                        int want_y = pad_y[T + dy + y][T + dx + cx], want_x = pad_x[T + dy + y][T + dx + cx];
                        int sy, sx;
                        aug_source_pixel(y, x, dy, dx, flip, &sy, &sx);
                        src_ok &= sy == want_y && sx == want_x;
                    }
    CHECK(src_ok, "aug_source_pixel differs from pad + crop + mirror");
}

// rng_uniform_pm: values in [-b, b), mean ~0, variance ~b^2/3, extremes at the bit extremes.
static void test_uniform(void) {
    const float bounds[3] = {1.0f, 0.125f, 1.0f / sqrtf(216.0f)};
    for (int k = 0; k < 3; k++) {
        float b = bounds[k];
        int n = 1000000, in_range = 1;
        double sum = 0, sum_sq = 0;
        for (int i = 0; i < n; i++) {
            float v = rng_uniform_pm(rng_u32(SEED, RNG_STREAM_INIT, 3, (uint32_t)i), b);
            in_range &= v >= -b && v < b;
            sum += v;
            sum_sq += (double)v * v;
        }
        double mean = sum / n, var = sum_sq / n - mean * mean;
        double sd_mean = b / sqrt(3.0 * n);
        CHECK(in_range, "rng_uniform_pm(b = %g) left [-b, b)", b);
        CHECK(fabs(mean) < 6 * sd_mean, "rng_uniform_pm(b = %g): mean %.3g", b, mean);
        CHECK(fabs(var / (b * b / 3.0) - 1.0) < 0.01, "rng_uniform_pm(b = %g): variance %.4g, want %.4g", b, var,
              b * b / 3.0);
        CHECK(rng_uniform_pm(0u, b) == -b, "rng_uniform_pm(0, %g) is not -b", b);
        CHECK(rng_uniform_pm(0xffffffffu, b) < b, "rng_uniform_pm(max, %g) reaches b", b);
    }
    // rng_below: in range, and about uniform
    int counts[7] = {0}, ok = 1;
    for (uint32_t i = 0; i < 70000; i++) {
        uint32_t v = rng_below(rng_u32(SEED, 9, 0, i), 7);
        if (v >= 7) ok = 0;
        else counts[v]++;
    }
    CHECK(ok, "rng_below left [0, n)");
    CHECK(chi_square(counts, 7, 10000.0) < 6 + 6 * sqrt(12.0), "rng_below(., 7) not uniform");
}

// The same counters always give the same bits, and each counter part matters.
static void test_rng_counters(void) {
    uint32_t base = rng_u32(SEED, 1, 2, 3);
    CHECK(base == rng_u32(SEED, 1, 2, 3), "rng_u32 is not a pure function");
    CHECK(base != rng_u32(SEED + 1, 1, 2, 3) && base != rng_u32(SEED, 2, 2, 3) && base != rng_u32(SEED, 1, 3, 3) &&
              base != rng_u32(SEED, 1, 2, 4) && base != rng_u32(SEED, 1, 3, 2),
          "rng_u32 ignores part of (seed, stream, a, b)");
    // bits are balanced: each of the 32 bit positions ~half ones
    int worst = 0;
    for (int bit = 0; bit < 32; bit++) {
        int ones = 0;
        for (uint32_t i = 0; i < 20000; i++) ones += (rng_u32(SEED, 1, 0, i) >> bit) & 1;
        int off = abs(ones - 10000);
        if (off > worst) worst = off;
    }
    CHECK(worst < 6 * 71, "rng_u32: a bit position is unbalanced by %d of 20000", worst);
}

int main(void) {
    test_rng_counters();
    test_permute_bijection();
    test_shuffle_epochs();
    test_flip();
    test_translate_random(2);
    test_translate_random(4);
    test_translate_derandomized(2);
    test_translate_derandomized(4);
    test_cutout(12);
    test_cutout(16);
    test_cutout(1);
    test_jitter(0.1399f, 0.1308f);
    test_jitter(0.9f, 0.7f);
    test_jitter_off();
    test_reflect();
    test_uniform();
    return test_finish("test_augment");
}
