// benchstat: statistics over airbench.c run files (schema "airbench.c/run-v1", documented in
// docs/run-file.md and read by airbench/runfile.c). `build/benchstat --help` lists every
// option with its default, and the exit codes.
//
//   build/benchstat [--target ACC] [--check [--allow-other-gpu]] [--time-tolerance PCT]
//                   [--json OUT] A.json [B.json]
//   build/benchstat --table FILE... | --tsv FILE | --plot OUT.png FILE... | --merge OUT FILE...
//
// One file: n; mean and sample standard deviation of the accuracy; the 95% confidence
// interval of the mean (Student t); a one-sample t-test against the target accuracy; the
// time mean, median, min and max; and the ratio of the mean time to the published A100
// time of the variant. The test's p-value is one-sided, for H1 "the mean is below the
// target": a small p is evidence of a shortfall, a large one says the runs are consistent
// with reaching the target (it does not prove they do).
//
// Two files (B is the baseline): the accuracy difference A - B with Welch's t-test
// (two-sided p) and the ratio of mean times A / B with a 95% confidence interval. The
// interval comes from the delta method on log(mean_A / mean_B):
//     var(log mean) ~= s^2 / (n mean^2)  for each file, the two variances add,
// with a Student t quantile whose degrees of freedom are Welch-Satterthwaite's over those
// two variance terms; the interval is exp(log ratio +- q se), so it is not symmetric.
//
// A file that says "complete": false (its writer stopped early) is reported loudly and its
// runs are used; diverged runs are listed and left out of every statistic.
//
// --check exits 1 when A or B is incomplete or holds a diverged run; when the mean accuracy
// is significantly below the target (one-sided p < 0.05); with a baseline, when A and B ran
// on different GPU models (unless --allow-other-gpu) or the point estimate of A / B exceeds
// 1 + PCT/100 (default 3%); and when any number it judges is not finite (a NaN would
// otherwise pass every comparison). The point estimate, not the interval, decides the time:
// the tolerance is there to absorb drift between sessions (clocks, temperature), which no
// within-file interval can see, and an interval-based rule would let real regressions pass
// on noisy machines. When the interval is wider than the tolerance a note says that more
// runs are needed for the check to mean much.
//
// Target accuracy: --target (a percentage such as 94, or a fraction such as 0.94), else the
// file's target_accuracy, else from the variant (94 and 94-muon: 0.94, 95: 0.95, 96: 0.96;
// PyTorch peers such as "pytorch-airbench94_compiled" map the same way). Files hold
// accuracies as fractions; the report prints percent and percentage points ("pts").
//
// --json OUT writes every number above as JSON; --tsv prints the runs that count (seed,
// accuracy, time_s) as tab-separated rows; --table prints one Markdown table row per file,
// for a sweep: the settings it varies (batch size, epochs, translation, overrides) beside
// n, the accuracy's mean, std and 95% CI, and the time's mean, min and max. --plot draws
// histograms with gnuplot (tools/plot.c); --merge joins the chunk files of one benchmark.
// No output file ever replaces an existing one.
//
// Exit status: 0 fine, 1 --check failed, 2 bad usage, an unreadable / invalid file, an
// existing output, files --merge refuses, or --plot without gnuplot.
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plot.h"
#include "runfile.h"
#include "stats.h"

#define EXIT_CHECK_FAILED 1
#define EXIT_USAGE 2
#define ERR_SIZE 1024
#define MAX_OUTPUT_PATH 4000                  // longer than any path the system takes
#define TMP_PATH_SIZE (MAX_OUTPUT_PATH + 32)  // room for a temporary suffix

static const char USAGE[] =
    "usage: benchstat [options] A.json [B.json]   report on A, or compare A with the baseline B\n"
    "       benchstat --table FILE...              one Markdown table row per run file\n"
    "       benchstat --tsv FILE                   FILE's runs as tab-separated rows\n"
    "       benchstat --plot OUT.png FILE...       accuracy and time histograms (gnuplot)\n"
    "       benchstat --merge OUT.json FILE...     one run file with the runs of all FILEs\n"
    "\n"
    "Run files come from build/airbenchXX --json, bench.sh or dev/run_peer.py (docs/run-file.md).\n"
    "Units: files hold accuracies as fractions (0.94); reports print them in percent, spreads\n"
    "and differences in percentage points (pts), times in seconds (s) of GPU time per run,\n"
    "time ratios as plain factors.\n"
    "\n"
    "  --target ACC          target accuracy: a percentage (94) or a fraction (0.94); a value\n"
    "                        above 1 is a percentage. Default: the file's target_accuracy,\n"
    "                        else the variant's (94 and 94-muon: 94%, 95: 95%, 96: 96%)\n"
    "  --check               exit 1 when a check fails (below); each prints a line\n"
    "  --time-tolerance PCT  slowdown of A against B that --check allows, in percent\n"
    "                        (default 3)\n"
    "  --allow-other-gpu     with --check: A and B from different GPU models give a note\n"
    "                        instead of a failure (default: fail, their times do not compare)\n"
    "  --json OUT            also write the statistics to OUT as JSON (accuracies as\n"
    "                        fractions); OUT must not exist (default: no JSON)\n"
    "  --tsv                 print FILE's runs as 'seed accuracy time_s' rows (diverged\n"
    "                        runs left out)\n"
    "  --table               one Markdown row per file: variant, GPU, batch size, epochs,\n"
    "                        translation, runs, accuracy mean, std and 95% CI, time mean\n"
    "  --plot OUT.png        draw every FILE's accuracy and time histograms side by side in\n"
    "                        one PNG with gnuplot (diverged runs left out); OUT.png must not\n"
    "                        exist\n"
    "  --merge OUT.json      write OUT.json (which must not exist) with the runs of all FILEs\n"
    "                        in order; refused when the files differ in variant, GPU, git\n"
    "                        commit, dirty flag or diff, or config apart from the seed\n"
    "  -h, --help            print this text\n"
    "\n"
    "--check fails when A or B is incomplete or holds a diverged run; when A's mean accuracy\n"
    "is significantly below the target (one-sided t-test, p < 0.05); with B, when A and B ran\n"
    "on different GPU models (unless --allow-other-gpu) or A's mean time exceeds B's by more\n"
    "than the tolerance (point estimate of A/B); and when a number it judges is not finite.\n"
    "\n"
    "Exit status: 0 fine; 1 --check failed; 2 bad usage, an unreadable or invalid run file,\n"
    "an output file that exists, files --merge refuses, or --plot without gnuplot.\n";

// The published results (NVIDIA A100, PyTorch; shared/spec/recipe.md).
typedef struct {
    const char *variant;
    double target, a100_seconds;
} PublishedResult;

static const PublishedResult PUBLISHED[] = {
    {"airbench94", 0.94, 3.29},
    {"airbench94-muon", 0.94, 2.59},
    {"airbench95", 0.95, 10.4},
    {"airbench96", 0.96, 34.7},
    {"airbench94-record", 0.94, 2.015},  // hiverge/cifar10-speedrun, 2025 (A100 at 1410 MHz)
    {"airbench96-filter", 0.96, 27.3},   // airbench96_faster.py: 96.00% over 200 runs, proxy included
};

// The published result a variant name refers to: ours ("airbench94", "airbench94-muon",
// "airbench94-record", "airbench96-filter", ...) or a PyTorch peer's
// ("pytorch-airbench94_compiled", "pytorch-airbench94_muon", "pytorch-cifar10_speedrun",
// "pytorch-airbench96_faster"). NULL if none.
static const PublishedResult *published_result(const char *variant) {
    char name[32];
    const char *base = strstr(variant, "airbench");
    if (strstr(variant, "speedrun") || strstr(variant, "record"))
        snprintf(name, sizeof name, "airbench94-record");
    else if (base && strlen(base) >= strlen("airbench94"))
        snprintf(name, sizeof name, "airbench%.2s%s", base + strlen("airbench"),
                 strstr(base, "muon") ? "-muon" : strstr(base, "filter") || strstr(base, "faster") ? "-filter" : "");
    else
        return NULL;
    for (size_t i = 0; i < sizeof PUBLISHED / sizeof PUBLISHED[0]; i++)
        if (!strcmp(name, PUBLISHED[i].variant)) return &PUBLISHED[i];
    return NULL;
}

__attribute__((format(printf, 3, 4)))
static void format_error(char *err, size_t err_size, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(err, err_size, fmt, args);
    va_end(args);
}

static const char *file_basename(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

// "airbench94", or "airbench94 (overrides: lr=11, label_smoothing=0.15)".
static void describe_variant(const RunFile *f, char *out, size_t out_size) {
    if (f->overrides[0])
        snprintf(out, out_size, "%s (overrides: %s)", f->variant, f->overrides);
    else
        snprintf(out, out_size, "%s", f->variant);
}

// ---------------------------------------------------------------------------------------
// Output files: never replace one. The text goes to a temporary sibling first, which is then
// hard-linked to the final name (link fails when that name exists) and removed, so the
// output appears whole or not at all and nothing that exists is touched.

static int refuse_existing(const char *path, char *err, size_t err_size) {
    struct stat info;
    if (lstat(path, &info) != 0) return 0;
    format_error(err, err_size, "%s exists; benchstat never overwrites a file (choose a new "
                 "name, or remove the old file yourself)", path);
    return -1;
}

// A temporary name beside path that no one else uses: PATH.<pid>.tmp.
static void sibling_tmp_path(const char *path, char *out, size_t out_size) {
    snprintf(out, out_size, "%s.%ld.tmp", path, (long)getpid());
}

// Links tmp_path's file to path unless path exists, then removes tmp_path. 0 or -1 and err.
static int publish_without_replacing(const char *tmp_path, const char *path, char *err,
                                     size_t err_size) {
    int status = link(tmp_path, path);
    int saved_errno = errno;
    unlink(tmp_path);
    if (status == 0) return 0;
    if (saved_errno == EEXIST) return refuse_existing(path, err, err_size);
    format_error(err, err_size, "%s: cannot create: %s", path, strerror(saved_errno));
    return -1;
}

// Writes text and a newline to the new file path. 0, or -1 and err (path then does not exist,
// or is the file that was there before).
static int write_new_file(const char *path, const char *text, char *err, size_t err_size) {
    char tmp_path[TMP_PATH_SIZE];
    sibling_tmp_path(path, tmp_path, sizeof tmp_path);
    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        format_error(err, err_size, "%s: cannot create %s: %s (does the directory exist?)", path,
                     tmp_path, strerror(errno));
        return -1;
    }
    int ok = runfile_write_all(fd, text, strlen(text)) == 0 && runfile_write_all(fd, "\n", 1) == 0;
    int saved_errno = errno;
    if (close(fd) != 0 && ok) ok = 0, saved_errno = errno;
    if (!ok) {
        unlink(tmp_path);
        format_error(err, err_size, "%s: cannot write: %s", path, strerror(saved_errno));
        return -1;
    }
    return publish_without_replacing(tmp_path, path, err, err_size);
}

// ---------------------------------------------------------------------------------------
// Statistics of a file.

// Everything computed about one file.
typedef struct {
    const RunFile *file;
    Summary acc, time;
    double target;
    TargetTest vs_target;
    const PublishedResult *published;  // NULL for an unknown variant
} FileStats;

static const char *incomplete_reason(const RunFile *f) {
    return f->incomplete_reason[0] ? f->incomplete_reason
                                   : "the writer stopped before ending the file (killed, or "
                                     "still running)";
}

// Statistics need two runs that count (for a standard deviation). 0, or -1 and err, which
// also says when the file is incomplete (the likely reason it has too few).
static int require_two_runs(const RunFile *f, char *err, size_t err_size) {
    if (f->n >= 2) return 0;
    format_error(err, err_size, "%s: %d run%s%s; at least 2 are needed for a standard deviation "
                 "(train with --runs 2 or more)%s%s", f->name, f->n, f->n == 1 ? "" : "s",
                 f->n_diverged ? " that did not diverge" : "",
                 f->complete ? "" : "; the file is incomplete: ", f->complete ? "" : incomplete_reason(f));
    return -1;
}

static int compute_file_stats(FileStats *st, const RunFile *f, double target_override,
                              char *err, size_t err_size) {
    *st = (FileStats){.file = f, .published = published_result(f->variant)};
    if (require_two_runs(f, err, err_size)) return -1;
    st->acc = summarize(f->accuracy, f->n);
    st->time = summarize(f->time_s, f->n);
    st->target = !isnan(target_override) ? target_override
                 : !isnan(f->target_accuracy) ? f->target_accuracy
                 : st->published ? st->published->target : NAN;
    if (isnan(st->target)) {
        format_error(err, err_size, "%s: no target accuracy for variant \"%s\" (the file has "
                     "no target_accuracy); pass --target ACC", f->name, f->variant);
        return -1;
    }
    st->vs_target = test_against_target(st->acc, st->target);
    return 0;
}

// ---------------------------------------------------------------------------------------
// The report.

static int gpu_is_a100(const RunFile *f) { return strstr(f->gpu_name, "A100") != NULL; }

// "A = path: variant, n runs on GPU (driver D) (commit C, dirty tree, diff sha256 S)"; the
// diff's hash goes with a commit, relative to which it was taken.
static void print_file_title(const RunFile *f, const char *role) {
    char variant[512];
    describe_variant(f, variant, sizeof variant);
    printf("%s%s: %s, %d runs on %s", role, f->name, variant, f->n,
           f->gpu_name[0] ? f->gpu_name : "an unrecorded GPU");
    if (f->gpu_driver[0]) printf(" (driver %s)", f->gpu_driver);
    if (f->git_commit[0])
        printf(" (commit %.7s%s", f->git_commit, f->git_dirty == 1 ? ", dirty tree" : "");
    if (f->git_commit[0] && f->git_diff_sha256[0]) printf(", diff sha256 %.12s", f->git_diff_sha256);
    printf("%s\n", f->git_commit[0] ? ")" : "");
}

// The loud lines: an incomplete file, and every diverged run.
static void print_file_warnings(const RunFile *f) {
    if (!f->complete)
        printf("  WARNING    incomplete run file: %s; the statistics cover the %d run%s it "
               "holds\n", incomplete_reason(f), f->n, f->n == 1 ? "" : "s");
    if (f->n_diverged)
        printf("  diverged   %d run%s, left out of every statistic below:\n", f->n_diverged,
               f->n_diverged == 1 ? "" : "s");
    for (int i = 0; i < f->n_runs; i++) {
        const RunFileRun *run = &f->runs[i];
        if (!run->diverged) continue;
        printf("             runs[%d]", i);
        if (!isnan(run->seed)) printf(" (seed %.0f)", run->seed);
        printf(": %s\n", run->divergence[0] ? run->divergence : "no reason recorded");
    }
}

static void print_file_stats(const FileStats *st, const char *role) {
    const RunFile *f = st->file;
    const TargetTest *t = &st->vs_target;
    print_file_title(f, role);
    print_file_warnings(f);
    printf("  accuracy   mean %.3f%%  std %.3f pts  95%% CI of the mean %.3f%% to %.3f%%\n",
           100 * st->acc.mean, 100 * st->acc.std, 100 * t->ci_low, 100 * t->ci_high);
    printf("  vs target  %.4g%%: t = %.3f (df %g), p = %.3g for H1 \"mean < %.4g%%\" "
           "(one-sided)\n", 100 * st->target, t->t, t->df, t->p_below, 100 * st->target);
    printf("             %s\n", t->p_below < 0.05
               ? "-> the mean is significantly below the target (p < 0.05)"
               : "-> no significant evidence that the mean is below the target");
    printf("  time (s)   mean %.4f  median %.4f  min %.4f  max %.4f  (std %.4f)\n",
           st->time.mean, st->time.median, st->time.min, st->time.max, st->time.std);
    if (!st->published) {
        printf("  vs A100    no published time for variant \"%s\"\n", f->variant);
        return;
    }
    printf("  vs A100    %.3fx the published %s time of %g s", st->time.mean /
           st->published->a100_seconds, st->published->variant, st->published->a100_seconds);
    if (!gpu_is_a100(f))
        printf(" (different GPU: %s)", f->gpu_name[0] ? f->gpu_name : "not recorded");
    printf("\n");
}

typedef struct {
    WelchTest acc;
    RatioInterval time;
} Comparison;

// "faster by 4.1% (95% CI 3.2-5.0%)", "slower by ...", or "time unchanged (...)".
static void describe_time(const RatioInterval *r, char *out, size_t out_size) {
    if (r->ci_high < 1.0)
        snprintf(out, out_size, "faster by %.1f%% (95%% CI %.1f-%.1f%%)",
                 100 * (1 - r->ratio), 100 * (1 - r->ci_high), 100 * (1 - r->ci_low));
    else if (r->ci_low > 1.0)
        snprintf(out, out_size, "slower by %.1f%% (95%% CI %.1f-%.1f%%)",
                 100 * (r->ratio - 1), 100 * (r->ci_low - 1), 100 * (r->ci_high - 1));
    else
        snprintf(out, out_size, "time unchanged (A/B = %.3f, 95%% CI %.3f-%.3f)", r->ratio,
                 r->ci_low, r->ci_high);
}

// "accuracy unchanged (p=0.41)" or "accuracy higher by 0.12 points (p=0.003)".
static void describe_accuracy(const WelchTest *w, char *out, size_t out_size) {
    if (w->p_two_sided < 0.05)
        snprintf(out, out_size, "accuracy %s by %.3f points (p=%.2g)",
                 w->diff > 0 ? "higher" : "lower", 100 * fabs(w->diff), w->p_two_sided);
    else
        snprintf(out, out_size, "accuracy unchanged (p=%.2g)", w->p_two_sided);
}

static int same_gpu_model(const RunFile *a, const RunFile *b) {
    return strcmp(a->gpu_name, b->gpu_name) == 0;
}

static const char *gpu_or_unrecorded(const RunFile *f) {
    return f->gpu_name[0] ? f->gpu_name : "not recorded";
}

static void print_comparison(const Comparison *c, const FileStats *a, const FileStats *b) {
    char time_words[160], acc_words[96];
    printf("A vs B (B = baseline %s)\n", b->file->name);
    printf("  accuracy   A - B = %+.3f pts (95%% CI %+.3f to %+.3f), Welch t = %.3f, "
           "df = %.1f, p = %.3g (two-sided)\n", 100 * c->acc.diff, 100 * c->acc.ci_low,
           100 * c->acc.ci_high, c->acc.t, c->acc.df, c->acc.p_two_sided);
    printf("  time       A / B = %.4f (95%% CI %.4f to %.4f; delta method on the log of the "
           "ratio of means, df = %.1f)\n", c->time.ratio, c->time.ci_low, c->time.ci_high,
           c->time.df);
    if (!same_gpu_model(a->file, b->file))
        printf("  note       different GPUs (%s vs %s): the time ratio mixes GPU and code\n",
               gpu_or_unrecorded(a->file), gpu_or_unrecorded(b->file));
    else if (strcmp(a->file->gpu_driver, b->file->gpu_driver) != 0)
        printf("  note       different NVIDIA drivers (%s vs %s)\n",
               a->file->gpu_driver[0] ? a->file->gpu_driver : "not recorded",
               b->file->gpu_driver[0] ? b->file->gpu_driver : "not recorded");
    if (a->published != b->published)
        printf("  note       different variants (%s vs %s)\n", a->file->variant,
               b->file->variant);
    describe_time(&c->time, time_words, sizeof time_words);
    describe_accuracy(&c->acc, acc_words, sizeof acc_words);
    printf("  verdict    %s, %s\n", time_words, acc_words);
}

// ---------------------------------------------------------------------------------------
// --check: one line per criterion; each returns the number of failures it printed.

// A file that did not finish, or that holds diverged runs, cannot pass.
static int check_integrity(const RunFile *f, const char *role) {
    int failures = 0;
    if (!f->complete) {
        printf("check FAIL: %s (%s) is an incomplete run file: %s; a benchmark that did not "
               "finish is no pass, rerun it\n", role, f->name, incomplete_reason(f));
        failures++;
    }
    if (f->n_diverged) {
        printf("check FAIL: %d run%s of %s (%s) diverged (listed above); a recipe that "
               "diverges is no pass, whatever the other runs' mean\n", f->n_diverged,
               f->n_diverged == 1 ? "" : "s", role, f->name);
        failures++;
    }
    return failures;
}

typedef struct {
    const char *what;
    double value;
} JudgedNumber;

// Every number a check decides on must be finite: NaN compares false with everything, so
// an unchecked NaN would pass silently (huge times, for one, overflow their sum).
static int check_finite(const JudgedNumber *numbers, int count) {
    int failures = 0;
    for (int i = 0; i < count; i++) {
        if (isfinite(numbers[i].value)) continue;
        printf("check FAIL: %s is not a finite number (%g), so it cannot be judged; look for "
               "absurd values in the run file\n", numbers[i].what, numbers[i].value);
        failures++;
    }
    return failures;
}

static int check_accuracy(const FileStats *a) {
    const TargetTest *t = &a->vs_target;
    if (!isfinite(t->p_below) || !isfinite(a->acc.mean)) return 0;  // failed as not finite
    if (t->p_below < 0.05) {
        printf("check FAIL: mean accuracy %.3f%% is significantly below the target %.4g%% "
               "(one-sided t-test p = %.3g < 0.05)\n", 100 * a->acc.mean, 100 * a->target,
               t->p_below);
        return 1;
    }
    printf("check ok:   mean accuracy %.3f%% is not significantly below the target %.4g%% "
           "(p = %.3g)\n", 100 * a->acc.mean, 100 * a->target, t->p_below);
    return 0;
}

// Times from two GPU models do not compare; --allow-other-gpu turns the failure into a note.
static int check_gpu(const FileStats *a, const FileStats *b, int allow_other_gpu) {
    if (same_gpu_model(a->file, b->file)) return 0;
    if (allow_other_gpu) {
        printf("check note: A and B ran on different GPU models (%s vs %s); compared anyway "
               "(--allow-other-gpu)\n", gpu_or_unrecorded(a->file), gpu_or_unrecorded(b->file));
        return 0;
    }
    printf("check FAIL: A and B ran on different GPU models (%s vs %s), so their times do not "
           "compare; measure the baseline on A's GPU, or pass --allow-other-gpu\n",
           gpu_or_unrecorded(a->file), gpu_or_unrecorded(b->file));
    return 1;
}

static int check_time(const Comparison *c, double tolerance_pct) {
    if (!isfinite(c->time.ratio)) return 0;  // failed as not finite
    int failures = 0;
    double limit = 1.0 + tolerance_pct / 100.0;
    if (c->time.ratio > limit) {
        printf("check FAIL: A is slower than the baseline by %.2f%% (A/B = %.4f, 95%% CI "
               "%.4f-%.4f), more than the %g%% tolerance\n", 100 * (c->time.ratio - 1),
               c->time.ratio, c->time.ci_low, c->time.ci_high, tolerance_pct);
        failures++;
    } else {
        printf("check ok:   A/B time = %.4f is within the +%g%% tolerance\n", c->time.ratio,
               tolerance_pct);
    }
    if (c->time.ci_high - c->time.ci_low > 2 * tolerance_pct / 100.0)
        printf("check note: the time ratio's 95%% CI (%.4f-%.4f) is wider than the "
               "tolerance; more runs would make the time check meaningful\n",
               c->time.ci_low, c->time.ci_high);
    return failures;
}

// All checks; b and c are NULL without a baseline. Returns the number that failed.
static int run_checks(const FileStats *a, const FileStats *b, const Comparison *c,
                      double tolerance_pct, int allow_other_gpu) {
    int failures = check_integrity(a->file, "A");
    if (b) failures += check_integrity(b->file, "B");
    JudgedNumber judged[5] = {{"A's mean accuracy", a->acc.mean},
                              {"A's p-value against the target", a->vs_target.p_below}};
    int n_judged = 2;
    if (c) {
        judged[n_judged++] = (JudgedNumber){"A's mean time (s)", a->time.mean};
        judged[n_judged++] = (JudgedNumber){"B's mean time (s)", b->time.mean};
        judged[n_judged++] = (JudgedNumber){"the time ratio A/B", c->time.ratio};
    }
    failures += check_finite(judged, n_judged);
    failures += check_accuracy(a);
    if (!c) return failures;
    failures += check_gpu(a, b, allow_other_gpu);
    return failures + check_time(c, tolerance_pct);
}

// ---------------------------------------------------------------------------------------
// --json OUT.

static cJSON *file_stats_json(const FileStats *st) {
    const RunFile *f = st->file;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", f->name);
    cJSON_AddStringToObject(o, "variant", f->variant);
    if (f->overrides[0]) cJSON_AddStringToObject(o, "overrides", f->overrides);
    cJSON_AddStringToObject(o, "gpu", f->gpu_name);
    cJSON_AddBoolToObject(o, "complete", f->complete);
    if (!f->complete) cJSON_AddStringToObject(o, "incomplete_reason", incomplete_reason(f));
    cJSON_AddNumberToObject(o, "n", st->acc.n);
    cJSON_AddNumberToObject(o, "n_diverged", f->n_diverged);
    cJSON_AddNumberToObject(o, "acc_mean", st->acc.mean);
    cJSON_AddNumberToObject(o, "acc_std", st->acc.std);
    cJSON_AddNumberToObject(o, "acc_ci_low", st->vs_target.ci_low);
    cJSON_AddNumberToObject(o, "acc_ci_high", st->vs_target.ci_high);
    cJSON_AddNumberToObject(o, "target", st->target);
    cJSON_AddNumberToObject(o, "t", st->vs_target.t);
    cJSON_AddNumberToObject(o, "df", st->vs_target.df);
    cJSON_AddNumberToObject(o, "p_below_target", st->vs_target.p_below);
    cJSON_AddNumberToObject(o, "time_mean", st->time.mean);
    cJSON_AddNumberToObject(o, "time_std", st->time.std);
    cJSON_AddNumberToObject(o, "time_median", st->time.median);
    cJSON_AddNumberToObject(o, "time_min", st->time.min);
    cJSON_AddNumberToObject(o, "time_max", st->time.max);
    if (st->published) {
        cJSON_AddNumberToObject(o, "a100_seconds", st->published->a100_seconds);
        cJSON_AddNumberToObject(o, "ratio_to_a100", st->time.mean / st->published->a100_seconds);
    }
    return o;
}

static cJSON *comparison_json(const Comparison *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "acc_diff", c->acc.diff);
    cJSON_AddNumberToObject(o, "acc_diff_ci_low", c->acc.ci_low);
    cJSON_AddNumberToObject(o, "acc_diff_ci_high", c->acc.ci_high);
    cJSON_AddNumberToObject(o, "welch_t", c->acc.t);
    cJSON_AddNumberToObject(o, "welch_df", c->acc.df);
    cJSON_AddNumberToObject(o, "welch_p", c->acc.p_two_sided);
    cJSON_AddNumberToObject(o, "time_ratio", c->time.ratio);
    cJSON_AddNumberToObject(o, "time_ratio_ci_low", c->time.ci_low);
    cJSON_AddNumberToObject(o, "time_ratio_ci_high", c->time.ci_high);
    cJSON_AddNumberToObject(o, "time_ratio_df", c->time.df);
    return o;
}

static cJSON *units_json(void) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "accuracy", "fraction (acc_*, target, acc_diff*)");
    cJSON_AddStringToObject(o, "time", "seconds of GPU time per run (time_*, a100_seconds)");
    cJSON_AddStringToObject(o, "ratio", "plain factor (time_ratio*, ratio_to_a100)");
    return o;
}

// Writes {"schema", "units", "a", "b", "comparison", "check_failures"} to the new file
// out_path (b and comparison only with a baseline, check_failures only with --check).
static int write_json(const char *out_path, const FileStats *a, const FileStats *b,
                      const Comparison *c, int check_failures) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "schema", "airbench.c/benchstat-v1");
    cJSON_AddItemToObject(root, "units", units_json());
    cJSON_AddItemToObject(root, "a", file_stats_json(a));
    if (b) cJSON_AddItemToObject(root, "b", file_stats_json(b));
    if (c) cJSON_AddItemToObject(root, "comparison", comparison_json(c));
    if (check_failures >= 0) cJSON_AddNumberToObject(root, "check_failures", check_failures);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    char err[ERR_SIZE] = "out of memory";
    int status = text ? write_new_file(out_path, text, err, sizeof err) : -1;
    free(text);
    if (status) fprintf(stderr, "benchstat: --json: %s\n", err);
    return status;
}

// ---------------------------------------------------------------------------------------
// --table and --tsv.

// "10", or "3 (incomplete, 1 diverged)".
static void describe_run_count(const RunFile *f, char *out, size_t out_size) {
    if (f->complete && !f->n_diverged)
        snprintf(out, out_size, "%d", f->n);
    else if (!f->n_diverged)
        snprintf(out, out_size, "%d (incomplete)", f->n);
    else
        snprintf(out, out_size, "%d (%s%d diverged)", f->n, f->complete ? "" : "incomplete, ",
                 f->n_diverged);
}

// A Markdown table, one row per file; "-" where a file does not record a setting.
static void print_table(const RunFile *files, int n_files) {
    printf("| run file | variant | GPU | batch | epochs | translation | runs | mean accuracy | "
           "std (pts) | 95%% CI of the mean | time mean (min-max) |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n_files; i++) {
        const RunFile *f = &files[i];
        Summary acc = summarize(f->accuracy, f->n), time = summarize(f->time_s, f->n);
        double acc_low, acc_high;
        mean_interval(acc, &acc_low, &acc_high);
        char batch[16] = "-", epochs[16] = "-", variant[512], runs[64];
        if (f->batch_size) snprintf(batch, sizeof batch, "%d", f->batch_size);
        if (!isnan(f->epochs)) snprintf(epochs, sizeof epochs, "%g", f->epochs);
        describe_variant(f, variant, sizeof variant);
        describe_run_count(f, runs, sizeof runs);
        printf("| %s | %s | %s | %s | %s | %s | %s | %.3f%% | %.3f | %.3f-%.3f%% "
               "| %.3f s (%.3f-%.3f) |\n", file_basename(f->name), variant,
               f->gpu_name[0] ? f->gpu_name : "-", batch, epochs,
               f->translate_mode[0] ? f->translate_mode : "-", runs, 100 * acc.mean,
               100 * acc.std, 100 * acc_low, 100 * acc_high, time.mean, time.min, time.max);
    }
}

static void print_runs_tsv(const RunFile *f) {
    printf("seed\taccuracy\ttime_s\n");
    for (int i = 0; i < f->n; i++)
        printf("%.0f\t%.6f\t%.6f\n", f->seed[i], f->accuracy[i], f->time_s[i]);
}

// ---------------------------------------------------------------------------------------
// --merge OUT FILE...: the chunks of one benchmark (bench.sh --against runs the two sides
// interleaved, a few runs at a time) become one run file, written by the run-file writer.

// A printable JSON value for a message: "11", "\"random\"", or "absent".
static char *value_text(const cJSON *value) {
    return value ? cJSON_PrintUnformatted(value) : strdup("absent");
}

// The first config member, apart from "seed", in which a and b differ; NULL if none.
static const char *config_difference(const cJSON *a, const cJSON *b, char **a_value,
                                     char **b_value) {
    const cJSON *sides[2][2] = {{a, b}, {b, a}}, *item;
    for (int s = 0; s < 2; s++) {
        cJSON_ArrayForEach(item, sides[s][0]) {
            const cJSON *other = cJSON_GetObjectItemCaseSensitive(sides[s][1], item->string);
            if (!strcmp(item->string, "seed") || (other && cJSON_Compare(item, other, 1)))
                continue;
            *a_value = value_text(s == 0 ? item : other);
            *b_value = value_text(s == 0 ? other : item);
            return item->string;
        }
    }
    return NULL;
}

// 0 when f may be merged with first; else -1 and a message naming the field that differs.
static int check_mergeable(const RunFile *first, const RunFile *f, char *err, size_t err_size) {
    const struct {
        const char *field, *a, *b;
    } strings[] = {
        {"variant", first->variant, f->variant},
        {"gpu.name", first->gpu_name, f->gpu_name},
        {"git_commit", first->git_commit, f->git_commit},
        {"git_diff_sha256", first->git_diff_sha256, f->git_diff_sha256},
    };
    const char *field = NULL;
    char *a_value = NULL, *b_value = NULL;
    for (size_t i = 0; i < sizeof strings / sizeof strings[0] && !field; i++) {
        if (strcmp(strings[i].a, strings[i].b) == 0) continue;
        field = strings[i].field;
        a_value = strdup(strings[i].a[0] ? strings[i].a : "absent");
        b_value = strdup(strings[i].b[0] ? strings[i].b : "absent");
    }
    if (!field && first->git_dirty != f->git_dirty) {
        static const char *const dirty[] = {"absent", "false", "true"};
        field = "git_dirty";
        a_value = strdup(dirty[first->git_dirty + 1]);
        b_value = strdup(dirty[f->git_dirty + 1]);
    }
    const char *config_field = field ? NULL
        : config_difference(cJSON_GetObjectItemCaseSensitive(first->root, "config"),
                            cJSON_GetObjectItemCaseSensitive(f->root, "config"), &a_value, &b_value);
    if (field || config_field)
        format_error(err, err_size, "%s differs from %s in %s%s (%s vs %s); --merge joins only "
                     "the chunks of one benchmark", f->name, first->name, field ? "" : "config.",
                     field ? field : config_field, a_value ? a_value : "?", b_value ? b_value : "?");
    free(a_value);
    free(b_value);
    return field || config_field ? -1 : 0;
}

// The first file's top-level fields, less those the writer makes (schema, complete, runs,
// summary, incomplete_reason), plus "merged_from": the input files' names.
static cJSON *merged_header(const RunFile *files, int n_files) {
    cJSON *header = cJSON_Duplicate(files[0].root, 1);
    static const char *const written_by_writer[] = {"schema", "complete", "incomplete_reason",
                                                    "runs", "summary", "merged_from"};
    for (size_t i = 0; i < sizeof written_by_writer / sizeof written_by_writer[0]; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(header, written_by_writer[i]);
    cJSON *names = cJSON_AddArrayToObject(header, "merged_from");
    for (int i = 0; i < n_files; i++)
        cJSON_AddItemToArray(names, cJSON_CreateString(file_basename(files[i].name)));
    return header;
}

// "a.json: reason; b.json: reason" for the incomplete inputs; NULL when all are complete.
static char *merged_incomplete_reason(const RunFile *files, int n_files) {
    size_t size = 1;
    for (int i = 0; i < n_files; i++)
        if (!files[i].complete) size += strlen(files[i].name) + strlen(incomplete_reason(&files[i])) + 64;
    if (size == 1) return NULL;
    char *reason = malloc(size);
    if (!reason) abort();
    size_t used = 0;
    for (int i = 0; i < n_files; i++)
        if (!files[i].complete)
            used += (size_t)snprintf(reason + used, size - used, "%sinput %s is incomplete: %s",
                                     used ? "; " : "", files[i].name, incomplete_reason(&files[i]));
    return reason;
}

// Writes every run of every file, in order, through the run-file writer to tmp_path.
static int write_merged(const char *tmp_path, const RunFile *files, int n_files, char *err,
                        size_t err_size) {
    RunFileWriter *w = runfile_begin(tmp_path, merged_header(files, n_files), err, err_size);
    if (!w) return -1;
    for (int i = 0; i < n_files; i++) {
        const cJSON *run;
        cJSON_ArrayForEach(run, cJSON_GetObjectItemCaseSensitive(files[i].root, "runs")) {
            if (runfile_add_run(w, cJSON_Duplicate(run, 1), err, err_size)) {
                runfile_end(w, "the merge failed", NULL, 0);
                return -1;
            }
        }
    }
    char *reason = merged_incomplete_reason(files, n_files);
    int status = runfile_end(w, reason, err, err_size);
    free(reason);
    return status;
}

static int merge_files(const char *out_path, const RunFile *files, int n_files) {
    char err[ERR_SIZE], tmp_path[TMP_PATH_SIZE];
    for (int i = 1; i < n_files; i++) {
        if (check_mergeable(&files[0], &files[i], err, sizeof err)) {
            fprintf(stderr, "benchstat: --merge: %s\n", err);
            return EXIT_USAGE;
        }
    }
    for (int i = 0; i < n_files; i++)
        if (!files[i].complete)
            fprintf(stderr, "benchstat: --merge: warning: %s is incomplete (%s), so the merged "
                    "file will say it is incomplete\n", files[i].name, incomplete_reason(&files[i]));
    sibling_tmp_path(out_path, tmp_path, sizeof tmp_path);
    if (write_merged(tmp_path, files, n_files, err, sizeof err) ||
        publish_without_replacing(tmp_path, out_path, err, sizeof err)) {
        unlink(tmp_path);
        fprintf(stderr, "benchstat: --merge: %s\n", err);
        return EXIT_USAGE;
    }
    int runs = 0;
    for (int i = 0; i < n_files; i++) runs += files[i].n_runs;
    printf("benchstat: merged %d runs from %d file%s into %s\n", runs, n_files,
           n_files == 1 ? "" : "s", out_path);
    return 0;
}

// ---------------------------------------------------------------------------------------
// --plot OUT.png FILE...

static int plot_files(const char *png_path, const RunFile *files, int n_files,
                      double target_override) {
    char err[ERR_SIZE], tmp_path[TMP_PATH_SIZE];
    double *targets = malloc((size_t)n_files * sizeof *targets);
    if (!targets) abort();
    for (int i = 0; i < n_files; i++) {
        const PublishedResult *published = published_result(files[i].variant);
        targets[i] = !isnan(target_override) ? target_override
                     : !isnan(files[i].target_accuracy) ? files[i].target_accuracy
                     : published ? published->target : NAN;
    }
    snprintf(tmp_path, sizeof tmp_path, "%s.%ld.tmp.png", png_path, (long)getpid());
    int status = plot_run_files(tmp_path, files, targets, n_files, err, sizeof err);
    free(targets);
    if (status == 0) status = publish_without_replacing(tmp_path, png_path, err, sizeof err);
    if (status) {
        unlink(tmp_path);
        fprintf(stderr, "benchstat: --plot: %s\n", err);
        return EXIT_USAGE;
    }
    printf("benchstat: plotted %d run file%s into %s\n", n_files, n_files == 1 ? "" : "s",
           png_path);
    return 0;
}

// ---------------------------------------------------------------------------------------
// Options and main.

#define MAX_FILES 256

typedef struct {
    const char *paths[MAX_FILES];
    int n_paths, check, tsv, table, allow_other_gpu;
    double target, tolerance_pct;  // target: a fraction, NAN when not given
    const char *json_out, *plot_out, *merge_out;
} Options;

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "benchstat: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s", USAGE);
    return -1;
}

// Parses a finite number filling the whole argument; -1 otherwise.
static int parse_number(const char *text, double *out) {
    char *end;
    errno = 0;
    *out = strtod(text, &end);
    return (end == text || *end || errno || !isfinite(*out)) ? -1 : 0;
}

// --target: a percentage (94, anything above 1) or a fraction (0.94); stored as a fraction.
static int parse_target(const char *text, double *target) {
    if (parse_number(text, target)) return -1;
    if (*target > 1.0) *target /= 100.0;
    return *target > 0.0 && *target < 1.0 ? 0 : -1;
}

static int takes_value(const char *arg) {
    static const char *const names[] = {"--target", "--time-tolerance", "--json", "--plot",
                                        "--merge"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(arg, names[i])) return 1;
    return 0;
}

// One option (arg, and value when it takes one). 0, or -1 for a usage error (reported).
static int parse_option(const char *arg, const char *value, Options *o) {
    if (!strcmp(arg, "--check")) o->check = 1;
    else if (!strcmp(arg, "--tsv")) o->tsv = 1;
    else if (!strcmp(arg, "--table")) o->table = 1;
    else if (!strcmp(arg, "--allow-other-gpu")) o->allow_other_gpu = 1;
    else if (!strcmp(arg, "--json")) o->json_out = value;
    else if (!strcmp(arg, "--plot")) o->plot_out = value;
    else if (!strcmp(arg, "--merge")) o->merge_out = value;
    else if (!strcmp(arg, "--target")) {
        if (parse_target(value, &o->target))
            return usage_error("--target takes the target accuracy as a percentage (94) or a "
                               "fraction (0.94), strictly between 0 and 100%%, not %s", value);
    } else if (!strcmp(arg, "--time-tolerance")) {
        if (parse_number(value, &o->tolerance_pct) || o->tolerance_pct < 0)
            return usage_error("--time-tolerance takes a percentage >= 0 such as 3, not %s",
                               value);
    } else {
        return usage_error("unknown option %s", arg);
    }
    return 0;
}

// The combinations that make sense: one mode (report, --table, --tsv, --plot, --merge), the
// report's options only with the report, and the right number of files.
static int check_option_combinations(const Options *o) {
    int modes = o->table + o->tsv + !!o->plot_out + !!o->merge_out;
    if (o->n_paths == 0) return usage_error("%s", "no run file given");
    if (modes > 1)
        return usage_error("%s", "--table, --tsv, --plot and --merge exclude each other");
    if (modes && (o->check || o->json_out))
        return usage_error("%s", "--check and --json go with the report only (not with --table, "
                                 "--tsv, --plot or --merge)");
    if (!isnan(o->target) && (o->table || o->tsv || o->merge_out))
        return usage_error("%s", "--target goes with the report or --plot");
    if (o->allow_other_gpu && !o->check)
        return usage_error("%s", "--allow-other-gpu only changes --check");
    if ((o->tsv && o->n_paths > 1) || (!modes && o->n_paths > 2))
        return usage_error("too many files: %s", o->paths[o->tsv ? 1 : 2]);
    const char *outputs[] = {o->json_out, o->plot_out, o->merge_out};
    for (size_t i = 0; i < sizeof outputs / sizeof outputs[0]; i++)
        if (outputs[i] && strlen(outputs[i]) > MAX_OUTPUT_PATH)
            return usage_error("%s", "an output file name is too long");
    if (o->plot_out && strchr(o->plot_out, '\n'))
        return usage_error("%s", "--plot: the output name holds a line break");
    const char *dot = o->plot_out ? strrchr(o->plot_out, '.') : NULL;
    if (o->plot_out && (!dot || strcmp(dot, ".png") != 0))
        return usage_error("--plot writes a PNG: give an output name ending in .png, not %s",
                           o->plot_out);
    return 0;
}

// 0 to run, 1 for --help, -1 for a usage error (already reported).
static int parse_options(int argc, char **argv, Options *o) {
    *o = (Options){.target = NAN, .tolerance_pct = 3.0};
    int options_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (options_done || arg[0] != '-') {
            if (o->n_paths == MAX_FILES) return usage_error("too many files: %s", arg);
            o->paths[o->n_paths++] = arg;
        } else if (!strcmp(arg, "--")) {
            options_done = 1;
        } else if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            return 1;
        } else if (takes_value(arg) && i + 1 >= argc) {
            return usage_error("%s needs a value", arg);
        } else if (parse_option(arg, takes_value(arg) ? argv[++i] : NULL, o)) {
            return -1;
        }
    }
    return check_option_combinations(o);
}

// Loads the files, prints the report and runs the checks; returns the exit status.
static int report(const Options *o, const RunFile *files) {
    char err[ERR_SIZE];
    FileStats stats[2];
    for (int i = 0; i < o->n_paths; i++) {
        if (compute_file_stats(&stats[i], &files[i], o->target, err, sizeof err)) {
            fprintf(stderr, "benchstat: %s\n", err);
            return EXIT_USAGE;
        }
    }
    const FileStats *baseline = o->n_paths == 2 ? &stats[1] : NULL;
    Comparison comparison, *c = NULL;
    printf("units: accuracy in %%, its std and differences in percentage points (pts), times "
           "in seconds of GPU time per run\n");
    print_file_stats(&stats[0], baseline ? "A = " : "");
    if (baseline) {
        print_file_stats(baseline, "B = ");
        comparison = (Comparison){.acc = welch_test(stats[0].acc, baseline->acc),
                                  .time = ratio_of_means(stats[0].time, baseline->time)};
        c = &comparison;
        print_comparison(c, &stats[0], baseline);
    }
    int failures = o->check ? run_checks(&stats[0], baseline, c, o->tolerance_pct,
                                         o->allow_other_gpu) : -1;
    if (o->json_out && write_json(o->json_out, &stats[0], baseline, c, failures))
        return EXIT_USAGE;
    return failures > 0 ? EXIT_CHECK_FAILED : 0;
}

// --table needs two runs per file for its statistics.
static int check_table_files(const RunFile *files, int n_files) {
    char err[ERR_SIZE];
    for (int i = 0; i < n_files; i++) {
        if (require_two_runs(&files[i], err, sizeof err)) {
            fprintf(stderr, "benchstat: %s\n", err);
            return EXIT_USAGE;
        }
    }
    return 0;
}

static int run_mode(const Options *o, const RunFile *files) {
    if (o->merge_out) return merge_files(o->merge_out, files, o->n_paths);
    if (o->plot_out) return plot_files(o->plot_out, files, o->n_paths, o->target);
    if (o->tsv) {
        if (!files[0].complete)  // the rows carry no mark of it
            fprintf(stderr, "benchstat: warning: %s is incomplete: %s\n", files[0].name,
                    incomplete_reason(&files[0]));
        print_runs_tsv(&files[0]);
        return 0;
    }
    if (o->table) {
        int status = check_table_files(files, o->n_paths);
        if (status == 0) print_table(files, o->n_paths);
        return status;
    }
    return report(o, files);
}

// Fails early, before any file is read, when an output exists or --plot has no gnuplot.
static int check_outputs(const Options *o) {
    char err[ERR_SIZE];
    const char *outputs[] = {o->json_out, o->plot_out, o->merge_out};
    for (size_t i = 0; i < sizeof outputs / sizeof outputs[0]; i++) {
        if (outputs[i] && refuse_existing(outputs[i], err, sizeof err)) {
            fprintf(stderr, "benchstat: %s\n", err);
            return -1;
        }
    }
    if (o->plot_out && !plot_gnuplot_found()) {
        fprintf(stderr, "benchstat: --plot needs gnuplot, which is not on PATH; install it "
                "(Debian/Ubuntu: apt-get install gnuplot-nox)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    Options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed) {
        if (parsed == 1) fputs(USAGE, stdout);
        return parsed == 1 ? 0 : EXIT_USAGE;
    }
    if (check_outputs(&o)) return EXIT_USAGE;
    RunFile *files = calloc((size_t)o.n_paths, sizeof *files);
    if (!files) abort();
    char err[ERR_SIZE];
    int status = 0, loaded = 0;
    while (loaded < o.n_paths && status == 0) {
        if (runfile_load(o.paths[loaded], &files[loaded], err, sizeof err)) {
            fprintf(stderr, "benchstat: %s\n", err);
            status = EXIT_USAGE;
        } else {
            loaded++;
        }
    }
    if (status == 0) status = run_mode(&o, files);
    for (int i = 0; i < loaded; i++) runfile_free(&files[i]);
    free(files);
    return status;
}
