// fuzz_selftest.c: a target with planted faults, through which tests/test_fuzz.sh checks the
// engine of fuzz.h: that the sanitizers stop the run, that --timeout stops a hang, and that a
// fault the mutations can reach is found, its input kept for --replay.
//
// An input that starts with "overflow" reads one byte past its end, "signed" overflows an int,
// "hang" waits forever, "fail" returns 1 instead of 0. An input whose first two bytes are both
// 0xff breaks the contract (FUZZ_ASSERT): the fault to find, from seeds without such bytes,
// through the interesting values and the fills.
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"

static bool starts_with(const uint8_t *data, size_t size, const char *prefix) {
    size_t n = strlen(prefix);
    return size >= n && memcmp(data, prefix, n) == 0;
}

static int fuzz_selftest(const uint8_t *data, size_t size) {
    if (starts_with(data, size, "overflow")) return data[size] == 0;
    if (starts_with(data, size, "signed")) {
        int sum = INT_MAX;
        sum += data[0];
        return sum == INT_MAX;
    }
    if (starts_with(data, size, "hang"))
        for (;;) pause();
    if (starts_with(data, size, "fail")) return 1;
    FUZZ_ASSERT(!(size >= 2 && data[0] == 0xff && data[1] == 0xff),
                "the planted fault: the input starts with two 0xff bytes");
    return 0;
}

int main(int argc, char **argv) {
    static const FuzzConfig config = {
        .name = "selftest",
        .target = fuzz_selftest,
        .max_size = 64,
        .corpus_dir = "tests/fuzz/corpus/selftest",
        .runs = 5000,
        .seconds = 10,
    };
    return fuzz_main(argc, argv, &config);
}
