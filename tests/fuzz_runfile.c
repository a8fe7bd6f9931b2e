// fuzz_runfile.c: fuzzes the run-file parser that benchstat reads every file through,
// runfile_parse (airbench/runfile.c), with the engine of fuzz.h. The input is the file's
// text as it is: the seeds in tests/fuzz/corpus/runfile are small valid run files of each
// kind (trainer, complete and incomplete, a diverged run, a PyTorch peer, the reference's)
// and near misses, and the mutations break their JSON and their fields.
//
// The contract checked on every input: runfile_parse returns 0 or -1 and nothing else.
// After 0: the runs that count are the runs that did not diverge, each with an accuracy in
// [0, 1] and a finite positive time; n + n_diverged = n_runs; complete is 0 or 1; every
// string the struct points to is a NUL-terminated string. After -1: a message that names
// the input. Either way runfile_free releases everything (the leak checker watches).
#include <math.h>
#include <string.h>

#include "fuzz.h"
#include "runfile.h"

#define NAME "fuzzed.json"

static long n_parsed, n_refused, n_incomplete, n_with_diverged;

static void check_string(const char *s, const char *what) {
    FUZZ_ASSERT(s != NULL, "%s is NULL", what);
    FUZZ_ASSERT(strlen(s) < RUNFILE_MAX_BYTES, "%s is not terminated", what);
}

static void check_parsed(const RunFile *f) {
    FUZZ_ASSERT(f->n >= 0 && f->n_diverged >= 0 && f->n + f->n_diverged == f->n_runs,
                "n %d + n_diverged %d != n_runs %d", f->n, f->n_diverged, f->n_runs);
    FUZZ_ASSERT(f->complete == 0 || f->complete == 1, "complete = %d", f->complete);
    const char *strings[] = {f->variant, f->gpu_name, f->gpu_driver, f->git_commit, f->git_diff_sha256,
                             f->translate_mode, f->overrides, f->incomplete_reason};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) check_string(strings[i], "a string field");
    int counted = 0;
    for (int i = 0; i < f->n_runs; i++) {
        const RunFileRun *run = &f->runs[i];
        check_string(run->divergence, "a run's divergence");
        if (run->diverged) continue;
        FUZZ_ASSERT(run->accuracy >= 0 && run->accuracy <= 1, "run %d accuracy %g", i, run->accuracy);
        FUZZ_ASSERT(isfinite(run->time_s) && run->time_s > 0, "run %d time %g", i, run->time_s);
        FUZZ_ASSERT(counted < f->n && f->accuracy[counted] == run->accuracy && f->time_s[counted] == run->time_s,
                    "the counted arrays disagree with run %d", i);
        counted++;
    }
    FUZZ_ASSERT(counted == f->n, "%d runs counted, n = %d", counted, f->n);
    FUZZ_ASSERT(isnan(f->target_accuracy) || (f->target_accuracy > 0 && f->target_accuracy < 1),
                "target_accuracy %g", f->target_accuracy);
    FUZZ_ASSERT(f->batch_size >= 0, "batch_size %d", f->batch_size);
}

static int fuzz_runfile(const uint8_t *data, size_t size) {
    RunFile f;
    char err[1024] = "";
    int status = runfile_parse((const char *)data, size, NAME, &f, err, sizeof err);
    FUZZ_ASSERT(status == 0 || status == -1, "runfile_parse returned %d", status);
    if (status == 0) {
        check_parsed(&f);
        n_parsed++;
        n_incomplete += !f.complete;
        n_with_diverged += f.n_diverged > 0;
    } else {
        FUZZ_ASSERT(strstr(err, NAME) != NULL, "the message does not name the input: '%s'", err);
        n_refused++;
    }
    runfile_free(&f);
    return 0;
}

static void print_summary(void) {
    printf("fuzz_runfile: parsed %ld (incomplete %ld, with diverged runs %ld), refused %ld\n", n_parsed,
           n_incomplete, n_with_diverged, n_refused);
}

int main(int argc, char **argv) {
    static const FuzzConfig config = {
        .name = "runfile",
        .target = fuzz_runfile,
        .max_size = 16384,
        .corpus_dir = "tests/fuzz/corpus/runfile",
        .runs = 20000,  // about 2 s under the sanitizers
        .seconds = 10,
        .summary = print_summary,
    };
    return fuzz_main(argc, argv, &config);
}
