// fuzz.h: a small seeded mutation fuzzer for the project's parsers, with no dependencies.
//
// A target has libFuzzer's signature: it runs the code under test on one input, checks the
// code's contract with FUZZ_ASSERT, and returns 0.
//
//     static int fuzz_thing(const uint8_t *data, size_t size) { ...; return 0; }
//     static const FuzzConfig config = {.name = "thing", .target = fuzz_thing, ...};
//     int main(int argc, char **argv) { return fuzz_main(argc, argv, &config); }
//
// Build the program and the code under test with -fsanitize=address,undefined
// -fno-sanitize-recover=all, so that a memory error or undefined behaviour ends the run with a
// non-zero exit, as a failed FUZZ_ASSERT does (it aborts). A target must not let one input
// change what a later one does (no state that matters, nothing leaked), so that any input can
// be replayed alone. The same target links unchanged into a clang -fsanitize=fuzzer build:
//
//     int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
//         return fuzz_thing(data, size);
//     }
//
// What fuzz_main does: it reads every file of the seed corpus folder (in name order) and runs
// the seeds as they are, then mutated seeds until the budget is spent. Each mutated input is a
// random seed with 1 to 5 stacked mutations: bit flip, byte flip, random byte, an interesting
// value (0, 1, 0x7f, 0x80, 0xff and the 16- and 32-bit limits, either byte order), insert,
// delete, duplicate or copy a range, splice with another seed, truncate, extend. Input number
// k depends only on --seed, k and the corpus, so a run is reproducible. There is no coverage
// feedback: inputs never join the corpus, so a target's seeds should reach its code paths.
//
// Before each input runs, it is written to the crash file (default build/fuzz-NAME-crash.bin),
// so when a run dies the input that killed it is there, and `PROGRAM --replay FILE` runs that
// one input again. The crash file is removed when the budget finishes without a failure.
//
// Flags (each takes one value): --corpus DIR, --seed N (default 1), --runs N and --seconds S
// (the budget: it ends at whichever comes first; 0 lifts that limit, but not both),
// --timeout S (per input; default 10), --crash-file FILE, --replay FILE; -h/--help.
//
// Output: what will run, then one summary line with a hash of all the inputs (runs with the
// same corpus, --seed and input count print the same hash), the target's summary if it has
// one, and "RESULT 1 0", the tests/test.h convention for one passing check, so that
// tests/run.sh counts the run.
// Exit status: 0 the budget (or the replay) finished without a failure; 1 the target returned
// non-zero or ran past --timeout; 2 a bad command line, or a corpus or crash file that cannot
// be read or written. A sanitizer's report or a failed FUZZ_ASSERT ends the process with its
// own non-zero status (1 for the sanitizers, 134 for abort).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// Runs the code under test on one input and returns 0; a broken contract aborts.
typedef int (*FuzzTarget)(const uint8_t *data, size_t size);

typedef struct {
    const char *name;        // names the messages (fuzz_NAME) and the crash file
    FuzzTarget target;
    size_t max_size;         // inputs never grow past this many bytes, nor may seeds
    const char *corpus_dir;  // the seed folder when --corpus is not given
    long runs;               // the default budget in inputs (0: no limit) ...
    double seconds;          // ... and in seconds (0: no limit); make test runs these
    void (*summary)(void);   // optional: prints what the target saw, after a clean budget
} FuzzConfig;

// Parses the flags above and fuzzes (or replays); returns 0 when nothing failed, and exits
// with the status above otherwise.
int fuzz_main(int argc, char **argv, const FuzzConfig *config);

// Aborts with the location and a printf-style message unless cond holds.
#define FUZZ_ASSERT(cond, ...)                                                        \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz: contract broken at %s:%d: ", __FILE__, __LINE__);  \
            fprintf(stderr, __VA_ARGS__);                                             \
            fprintf(stderr, "\n");                                                    \
            abort();                                                                  \
        }                                                                             \
    } while (0)
