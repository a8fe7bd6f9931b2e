// test_benchstat: the statistics of tools/stats.c against independently computed values,
// and build/benchstat itself (run as a subprocess, under `timeout`) on the hand-made run
// files in tests/fixtures/runs/: numbers, messages for broken and hostile files (a FIFO,
// /dev/zero, a directory, a file over the size cap), incomplete files and diverged runs,
// --check exit codes (GPU models, non-finite numbers), --target units, --json/--merge/--plot
// never overwriting, --merge refusals, --plot (the PNG part skipped without gnuplot), and
// every committed run file under runs/. Run from the repository root (as `make test` does);
// BENCHSTAT overrides the binary's path; BENCHSTAT_SANITIZED=1 drops the memory limit of
// the /dev/zero case, which sanitizer builds cannot run under.
//
// Every expected number below was computed once with Python 3.11, numpy and scipy 1.17.1:
//   scipy.special.betainc(a, b, x), scipy.stats.t.cdf(t, df), scipy.stats.t.ppf(p, df);
//   for a file's accuracies a: a.mean(), a.std(ddof=1),
//     scipy.stats.ttest_1samp(a, 0.94, alternative="less") -> t, p,
//     scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=std / sqrt(n)) -> CI;
//   for A vs B: scipy.stats.ttest_ind(a, b, equal_var=False) -> t, p; Welch df and the
//     difference's CI from df = (va + vb)^2 / (va^2 / (na - 1) + vb^2 / (nb - 1)),
//     va = a.var(ddof=1) / na, and scipy.stats.t.ppf(0.975, df);
//   the time ratio's CI by the same formula on va = ta.var(ddof=1) / (na ta.mean()^2):
//     R exp(+-t.ppf(0.975, df) sqrt(va + vb)), R = ta.mean() / tb.mean();
//   times: numpy mean, std(ddof=1), median, min, max.
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../tools/stats.h"
#include "test.h"

#define FIXTURES "tests/fixtures/runs/"
#define REL_TOL 1e-9
#define TIMEOUT_S 20

#define CHECK_REL(got, want, what) CHECK_NEAR((got), (want), REL_TOL * fabs(want) + 1e-300, (what))

// The accuracies and times of tests/fixtures/runs/a94.json and b94.json.
static const double A94_ACC[] = {0.9412, 0.9398, 0.9405, 0.9391, 0.9420,
                                 0.9403, 0.9396, 0.9410, 0.9388, 0.9407};
static const double A94_TIME[] = {2.911, 2.905, 2.932, 2.898, 2.920,
                                  2.915, 2.903, 2.941, 2.909, 2.917};
static const double B94_ACC[] = {0.9401, 0.9395, 0.9418, 0.9386, 0.9409,
                                 0.9399, 0.9392, 0.9404, 0.9411, 0.9390};
static const double B94_TIME[] = {3.021, 3.044, 3.018, 3.036, 3.052,
                                  3.027, 3.031, 3.040, 3.025, 3.049};

static void test_incomplete_beta(void) {
    CHECK_REL(incomplete_beta(0.5, 0.5, 0.3), 0.36901011956554536, "I_0.3(0.5, 0.5)");
    CHECK_REL(incomplete_beta(2, 3, 0.4), 0.5247999999999999, "I_0.4(2, 3)");
    CHECK_REL(incomplete_beta(10, 0.5, 0.95), 0.31715157546554495, "I_0.95(10, 0.5)");
    CHECK_REL(incomplete_beta(50, 60, 0.45), 0.4642352914306031, "I_0.45(50, 60)");
    CHECK_REL(incomplete_beta(4.5, 0.5, 0.999), 0.9264613833688512, "I_0.999(4.5, 0.5)");
    CHECK(incomplete_beta(2, 3, 0.0) == 0.0 && incomplete_beta(2, 3, 1.0) == 1.0, "I ends");
}

static void test_t_distribution(void) {
    CHECK_REL(t_cdf(0.0, 5), 0.5, "t_cdf(0, 5)");
    CHECK_REL(t_cdf(1.0, 1), 0.75, "t_cdf(1, 1)");
    CHECK_REL(t_cdf(-2.5, 3), 0.04385332350403278, "t_cdf(-2.5, 3)");
    CHECK_REL(t_cdf(2.0, 7.5), 0.9585515023509168, "t_cdf(2, 7.5)");
    CHECK_REL(t_cdf(-4.0, 30), 0.0001909228180418782, "t_cdf(-4, 30)");
    CHECK_REL(t_cdf(3.2, 1000), 0.9992912308478412, "t_cdf(3.2, 1000)");
    CHECK_REL(t_cdf(-12.0, 4), 0.0001382142742514865, "t_cdf(-12, 4)");
    CHECK_REL(t_cdf(0.3, 0.7), 0.5853824068143325, "t_cdf(0.3, 0.7)");
    CHECK_REL(t_cdf(-40.0, 9), 9.491499224669911e-12, "t_cdf(-40, 9)");
    CHECK(t_cdf(INFINITY, 3) == 1.0 && t_cdf(-INFINITY, 3) == 0.0, "t_cdf at +-inf");
    CHECK_REL(t_quantile(0.975, 1), 12.706204736174694, "t_ppf(0.975, 1)");
    CHECK_REL(t_quantile(0.975, 9), 2.262157162798205, "t_ppf(0.975, 9)");
    CHECK_REL(t_quantile(0.975, 17.6), 2.104349842943036, "t_ppf(0.975, 17.6)");
    CHECK_REL(t_quantile(0.975, 1e4), 1.960201239890626, "t_ppf(0.975, 1e4)");
    CHECK_REL(t_quantile(0.05, 3), -2.353363434801824, "t_ppf(0.05, 3)");
    CHECK_REL(t_quantile(0.999, 2.5), 13.82219311086596, "t_ppf(0.999, 2.5)");
}

static void test_summary_and_target(void) {
    Summary acc = summarize(A94_ACC, 10), time = summarize(A94_TIME, 10);
    CHECK(acc.n == 10, "n = %d", acc.n);
    CHECK_REL(acc.mean, 0.9403, "a94 accuracy mean");
    CHECK_REL(acc.std, 0.0009899494936611573, "a94 accuracy std");
    CHECK_REL(time.mean, 2.9151, "a94 time mean");
    CHECK_REL(time.std, 0.01324512488930671, "a94 time std");
    CHECK_REL(time.median, 2.9130000000000003, "a94 time median");
    CHECK(time.min == 2.898 && time.max == 2.941, "a94 time min %g max %g", time.min, time.max);
    Summary odd = summarize(A94_TIME, 9);
    CHECK(odd.median == 2.911, "median of an odd count: %g", odd.median);

    TargetTest t = test_against_target(acc, 0.94);
    CHECK_REL(t.t, 0.9583148475001679, "a94 t vs 0.94");
    CHECK_REL(t.p_below, 0.8185308806604971, "a94 p(mean < 0.94)");
    CHECK_REL(t.ci_low, 0.9395918327931474, "a94 CI low");
    CHECK_REL(t.ci_high, 0.9410081672068527, "a94 CI high");

    const double constant[] = {0.93, 0.93, 0.93};
    TargetTest flat = test_against_target(summarize(constant, 3), 0.94);
    CHECK(flat.p_below == 0.0 && flat.ci_low == 0.93, "zero spread below target: p 0");
    flat = test_against_target(summarize(constant, 3), 0.92);
    CHECK(flat.p_below == 1.0, "zero spread above target: p 1");
}

static void test_comparison(void) {
    Summary a = summarize(A94_ACC, 10), b = summarize(B94_ACC, 10);
    WelchTest w = welch_test(a, b);
    CHECK_REL(w.diff, 0.0002500000000000835, "Welch difference");
    CHECK_REL(w.t, 0.5577017494687041, "Welch t");
    CHECK_REL(w.df, 17.98910837615664, "Welch df");
    CHECK_REL(w.p_two_sided, 0.5839222965184296, "Welch p");
    CHECK_REL(w.ci_low, -0.000691817568034438, "difference CI low");
    CHECK_REL(w.ci_high, 0.001191817568034605, "difference CI high");

    RatioInterval r = ratio_of_means(summarize(A94_TIME, 10), summarize(B94_TIME, 10));
    CHECK_REL(r.ratio, 0.9607158158389085, "time ratio");
    CHECK_REL(r.df, 17.57888823219173, "time ratio df");
    CHECK_REL(r.ci_low, 0.9569002750897259, "time ratio CI low");
    CHECK_REL(r.ci_high, 0.9645465706616866, "time ratio CI high");
}

// Runs `timeout TIMEOUT_S [wrapper] build/benchstat args` through the shell, after the shell
// text prefix (e.g. a ulimit); stdout and stderr go into out. Under `timeout`, a hang shows
// as exit 124 instead of stopping the suite. Returns the exit status, or -1.
static int run_benchstat_with(const char *prefix, const char *wrapper, const char *args,
                              char *out, size_t out_size) {
    const char *binary = getenv("BENCHSTAT") ? getenv("BENCHSTAT") : "build/benchstat";
    char command[8192];
    snprintf(command, sizeof command, "%stimeout %d %s %s %s 2>&1", prefix, TIMEOUT_S, wrapper,
             binary, args);
    FILE *pipe = popen(command, "r");
    if (!pipe) return -1;
    size_t used = fread(out, 1, out_size - 1, pipe);
    out[used] = '\0';
    int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run_benchstat(const char *args, char *out, size_t out_size) {
    return run_benchstat_with("", "", args, out, out_size);
}

static char tmp_dir[] = "/tmp/test_benchstat-XXXXXX";
static char json_path[128];

// tmp_dir/name, in one of a few rotating buffers (several may be in use in one call).
static const char *tmp_file(const char *name) {
    static char paths[4][256];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof paths[0], "%s/%s", tmp_dir, name);
    return path;
}

// Runs a shell command for a test's setup; a failure is a failed check.
static void shell(const char *command) {
    int status = system(command);
    CHECK(status == 0, "setup command failed (%d): %s", status, command);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char text[1 << 16];
    size_t used = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[used] = '\0';
    return text;
}

// The number after "key": that first follows "section": in benchstat's --json output
// (sections a, b, comparison hold distinct keys, in that order). NAN if absent.
static double json_number(const char *text, const char *section, const char *key) {
    char pattern[80];
    snprintf(pattern, sizeof pattern, "\"%s\":", section);
    const char *at = text ? strstr(text, pattern) : NULL;
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    at = at ? strstr(at, pattern) : NULL;
    return at ? strtod(at + strlen(pattern), NULL) : NAN;
}

// Runs benchstat --json on args and returns the JSON text (NULL on failure).
static char *run_json(const char *args, int want_status) {
    char command[512], out[8192];
    snprintf(command, sizeof command, "--json %s %s", json_path, args);
    unlink(json_path);
    int status = run_benchstat(command, out, sizeof out);
    CHECK(status == want_status, "benchstat %s: exit %d, want %d; output:\n%s", args, status,
          want_status, out);
    return read_text(json_path);
}

static void test_files_end_to_end(void) {
    char *json = run_json(FIXTURES "a94.json " FIXTURES "b94.json", 0);
    CHECK(json != NULL, "no --json output");
    CHECK(json_number(json, "a", "n") == 10, "a.n");
    CHECK_REL(json_number(json, "a", "acc_mean"), 0.9403, "file a94 mean");
    CHECK_REL(json_number(json, "a", "acc_std"), 0.0009899494936611573, "file a94 std");
    CHECK_REL(json_number(json, "a", "acc_ci_low"), 0.9395918327931474, "file a94 CI low");
    CHECK_REL(json_number(json, "a", "acc_ci_high"), 0.9410081672068527, "file a94 CI high");
    CHECK_REL(json_number(json, "a", "t"), 0.9583148475001679, "file a94 t");
    CHECK_REL(json_number(json, "a", "p_below_target"), 0.8185308806604971, "file a94 p");
    CHECK_REL(json_number(json, "a", "time_median"), 2.9130000000000003, "file a94 median");
    CHECK_REL(json_number(json, "a", "ratio_to_a100"), 2.9151 / 3.29, "file a94 vs A100");
    CHECK_REL(json_number(json, "b", "acc_mean"), 0.9400499999999999, "file b94 mean");
    CHECK_REL(json_number(json, "b", "acc_std"), 0.0010146154170149635, "file b94 std");
    CHECK_REL(json_number(json, "b", "p_below_target"), 0.5601992821070121, "file b94 p");
    CHECK_REL(json_number(json, "b", "time_mean"), 3.0342999999999996, "file b94 time");
    CHECK_REL(json_number(json, "comparison", "welch_p"), 0.5839222965184296, "file Welch p");
    CHECK_REL(json_number(json, "comparison", "welch_df"), 17.98910837615664, "file Welch df");
    CHECK_REL(json_number(json, "comparison", "time_ratio_ci_low"), 0.9569002750897259,
              "file ratio CI low");
    CHECK_REL(json_number(json, "comparison", "time_ratio_ci_high"), 0.9645465706616866,
              "file ratio CI high");

    json = run_json(FIXTURES "below94.json", 0);
    CHECK_REL(json_number(json, "a", "t"), -15.551331011021587, "below94 t");
    CHECK_REL(json_number(json, "a", "p_below_target"), 5.492987946177384e-07, "below94 p");
    CHECK_REL(json_number(json, "a", "acc_ci_high"), 0.9369791882895959, "below94 CI high");

    json = run_json(FIXTURES "slow94.json " FIXTURES "b94.json", 0);
    CHECK_REL(json_number(json, "comparison", "welch_p"), 0.478005531578854, "slow94 Welch p");
    CHECK_REL(json_number(json, "comparison", "time_ratio"), 1.0552681013742875, "slow94 ratio");
    CHECK_REL(json_number(json, "comparison", "time_ratio_ci_low"), 1.051653896208723,
              "slow94 ratio CI low");
}

static const char *edited_fixture(const char *name, const char *copy, const char *from, const char *to);

// Targets and published times from the variant name.
static void test_variants(void) {
    char *json = run_json(FIXTURES "muon.json", 0);
    CHECK(json_number(json, "a", "target") == 0.94, "muon target");
    CHECK(json_number(json, "a", "a100_seconds") == 2.59, "muon A100 time");
    json = run_json(FIXTURES "peer94.json", 0);
    CHECK(json_number(json, "a", "target") == 0.94, "peer target");
    CHECK(json_number(json, "a", "a100_seconds") == 3.29, "peer A100 time");
    json = run_json("--target 0.9 " FIXTURES "unknown_variant.json", 0);
    CHECK(json_number(json, "a", "target") == 0.9, "--target");
    CHECK(isnan(json_number(json, "a", "a100_seconds")), "no A100 time for airbench97");
    json = run_json("--target 0.95 " FIXTURES "a94.json", 0);
    CHECK(json_number(json, "a", "target") == 0.95, "--target beats target_accuracy");

    char out[8192];
    int status = run_benchstat(FIXTURES "unknown_variant.json", out, sizeof out);
    CHECK(status == 2 && strstr(out, "unknown_variant.json") && strstr(out, "--target"),
          "unknown variant without --target: exit %d, output:\n%s", status, out);

    // the 2025 record, ours and the PyTorch script's, against its own published time
    const char *names[2] = {"airbench94-record", "pytorch-cifar10_speedrun"};
    for (int i = 0; i < 2; i++) {
        char copy[64], args[512];
        snprintf(copy, sizeof copy, "record%d.json", i);
        snprintf(args, sizeof args, "%s", edited_fixture("muon.json", copy, "airbench94-muon", names[i]));
        json = run_json(args, 0);
        CHECK(json_number(json, "a", "a100_seconds") == 2.015, "%s: A100 time of the record", names[i]);
    }
    // airbench96 with data filtering, ours and the PyTorch script (airbench96_faster.py)
    const char *filter_names[2] = {"airbench96-filter", "pytorch-airbench96_faster"};
    for (int i = 0; i < 2; i++) {
        char copy[64], args[512];
        snprintf(copy, sizeof copy, "filter%d.json", i);
        snprintf(args, sizeof args, "%s", edited_fixture("muon.json", copy, "airbench94-muon", filter_names[i]));
        json = run_json(args, 0);
        CHECK(json_number(json, "a", "a100_seconds") == 27.3, "%s: A100 time of airbench96_faster", filter_names[i]);
    }
}

static void test_report_text(void) {
    char out[8192];
    run_benchstat(FIXTURES "a94.json " FIXTURES "b94.json", out, sizeof out);
    CHECK(strstr(out, "verdict    faster by 3.9% (95% CI 3.5-4.3%), accuracy unchanged (p=0.58)")
          != NULL, "verdict; output:\n%s", out);
    CHECK(strstr(out, "(different GPU: NVIDIA H100 80GB HBM3)") != NULL, "H100 label:\n%s", out);
    CHECK(strstr(out, "H1 \"mean < 94%\" (one-sided)") != NULL, "tail named:\n%s", out);
    run_benchstat(FIXTURES "slow94.json " FIXTURES "b94.json", out, sizeof out);
    CHECK(strstr(out, "slower by 5.5% (95% CI 5.2-5.9%)") != NULL, "slower verdict:\n%s", out);
    run_benchstat(FIXTURES "a100_94.json", out, sizeof out);
    CHECK(strstr(out, "published airbench94 time of 3.29 s") && !strstr(out, "different GPU"),
          "A100 run has no different-GPU label:\n%s", out);
    run_benchstat("--tsv " FIXTURES "a94.json", out, sizeof out);
    CHECK(strncmp(out, "seed\taccuracy\ttime_s\n0\t0.941200\t2.911000\n", 39) == 0,
          "--tsv rows:\n%s", out);
}

// --table: the header, a row per file in order with the numbers scipy gives (see the top
// of this file; minimal.json has accuracies 0.9503 0.9491 0.9512, times 4.11 4.07 4.09),
// and "-" for the settings a file does not record.
static void test_table(void) {
    char out[8192];
    int status = run_benchstat("--table " FIXTURES "a94.json " FIXTURES "muon.json " FIXTURES
                               "minimal.json", out, sizeof out);
    const char *header = strstr(out, "| run file | variant | GPU | batch | epochs | translation |");
    const char *a94 = strstr(out, "| a94.json | airbench94 | NVIDIA H100 80GB HBM3 | 1024 | 9.9 | "
                             "random | 10 | 94.030% | 0.099 | 93.959-94.101% | 2.915 s "
                             "(2.898-2.941) |\n");
    const char *muon = strstr(out, "| muon.json | airbench94-muon |");
    const char *minimal = strstr(out, "| minimal.json | airbench95 | - | - | - | - | 3 | 95.020% | "
                                 "0.105 | 94.758-95.282% | 4.090 s (4.070-4.110) |\n");
    CHECK(status == 0 && header && a94 && muon && minimal && header < a94 && a94 < muon &&
          muon < minimal, "--table: exit %d, output:\n%s", status, out);
    status = run_benchstat("--table " FIXTURES "a94.json " FIXTURES "truncated.json", out, sizeof out);
    CHECK(status == 2 && strstr(out, "truncated.json") && !strstr(out, "| a94.json"),
          "--table with a broken file: exit %d, output:\n%s", status, out);
}

// Each broken file: exit 2 and a message naming the file and the problem.
static void test_broken_files(void) {
    static const struct {
        const char *file, *problem;
    } cases[] = {
        {"empty.json", "the file is empty"},
        {"truncated.json", "looks truncated"},
        {"notjson.json", "not valid JSON"},
        {"wrong_schema.json", "schema is \"airbench.c/run-v0\""},
        {"missing_accuracy.json", "runs[3] has no numeric \"accuracy\""},
        {"one_run.json", "at least 2 are needed"},
        {"percent_accuracy.json", "accuracies are fractions"},
        {"no_such_file.json", "cannot open"},
        {"batch_huge.json", "config.batch_size = 1e+300 is not a whole number from 1 to"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[256], out[8192];
        snprintf(args, sizeof args, FIXTURES "%s", cases[i].file);
        int status = run_benchstat(args, out, sizeof out);
        CHECK(status == 2 && strstr(out, cases[i].file) && strstr(out, cases[i].problem),
              "%s: exit %d, want 2 and \"%s\"; output:\n%s", cases[i].file, status,
              cases[i].problem, out);
    }
    char out[8192];  // a broken baseline is named too
    int status = run_benchstat(FIXTURES "a94.json " FIXTURES "empty.json", out, sizeof out);
    CHECK(status == 2 && strstr(out, "empty.json"), "broken baseline: exit %d:\n%s", status, out);
}

static void test_check_exit_codes(void) {
    static const struct {
        const char *args;
        int status;
        const char *says;
    } cases[] = {
        {"--check " FIXTURES "a94.json", 0, "check ok:   mean accuracy"},
        {"--check " FIXTURES "below94.json", 1, "check FAIL: mean accuracy 93.644%"},
        {FIXTURES "below94.json", 0, "significantly below the target"},
        {"--check " FIXTURES "a94.json " FIXTURES "b94.json", 0, "within the +3% tolerance"},
        {"--check " FIXTURES "slow94.json " FIXTURES "b94.json", 1,
         "slower than the baseline by 5.53%"},
        {"--check --time-tolerance 6 " FIXTURES "slow94.json " FIXTURES "b94.json", 0,
         "within the +6% tolerance"},
        {"--check --time-tolerance 5.5 " FIXTURES "slow94.json " FIXTURES "b94.json", 1,
         "more than the 5.5% tolerance"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[8192];
        int status = run_benchstat(cases[i].args, out, sizeof out);
        CHECK(status == cases[i].status && strstr(out, cases[i].says),
              "benchstat %s: exit %d, want %d and \"%s\"; output:\n%s", cases[i].args, status,
              cases[i].status, cases[i].says, out);
    }
}

// An output name longer than any path the system takes is refused as such.
static void test_long_output_name(void) {
    char args[4200], out[8192];
    snprintf(args, sizeof args, "--json /tmp/%04100d " FIXTURES "a94.json", 0);
    int status = run_benchstat(args, out, sizeof out);
    CHECK(status == 2 && strstr(out, "an output file name is too long"),
          "a 4100-character --json name: exit %d; output:\n%.300s", status, out);
}

static void test_usage_errors(void) {
    static const char *const cases[] = {
        "",
        "--frobnicate " FIXTURES "a94.json",
        "--target 100 " FIXTURES "a94.json",
        "--target 1 " FIXTURES "a94.json",
        "--target 0 " FIXTURES "a94.json",
        "--target -94 " FIXTURES "a94.json",
        "--allow-other-gpu " FIXTURES "a94.json " FIXTURES "b94.json",
        "--tsv " FIXTURES "a94.json " FIXTURES "b94.json",
        "--merge",
        "--plot x.jpg " FIXTURES "a94.json",
        "--plot x.png --merge y.json " FIXTURES "a94.json",
        "--merge y.json --check " FIXTURES "a94.json",
        "--table --target 94 " FIXTURES "a94.json",
        "--time-tolerance abc " FIXTURES "a94.json",
        FIXTURES "a94.json --target",
        FIXTURES "a94.json " FIXTURES "b94.json " FIXTURES "a94.json",
        "--table --check " FIXTURES "a94.json",
        "--table --tsv " FIXTURES "a94.json",
        "--table",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[8192];
        int status = run_benchstat(cases[i], out, sizeof out);
        CHECK(status == 2 && strstr(out, "usage: benchstat"), "benchstat %s: exit %d, want 2 "
              "with usage; output:\n%s", cases[i], status, out);
    }
}

// Hostile inputs (issue 15): a FIFO or a device must be refused at once, not read (a FIFO
// with no writer blocks a plain open forever; /dev/zero never ends); a regular file above
// the size cap is refused before it is read.
static void test_hostile_files(void) {
    char out[8192], args[512];
    snprintf(args, sizeof args, "mkfifo %s", tmp_file("fifo.json"));
    shell(args);
    int status = run_benchstat(tmp_file("fifo.json"), out, sizeof out);
    CHECK(status == 2 && strstr(out, "fifo.json") && strstr(out, "not a regular file"),
          "a FIFO: exit %d (124: it hung), want 2 and \"not a regular file\"; output:\n%s",
          status, out);
    // The memory limit keeps a benchstat that reads /dev/zero from taking the machine's
    // memory; sanitizer builds reserve terabytes of address space, so they run without it.
    const char *limit = getenv("BENCHSTAT_SANITIZED") ? "" : "ulimit -v 4000000; ";
    status = run_benchstat_with(limit, "", "/dev/zero", out, sizeof out);
    CHECK(status == 2 && strstr(out, "/dev/zero") && strstr(out, "not a regular file"),
          "/dev/zero: exit %d, want 2 and \"not a regular file\"; output:\n%s", status, out);
    status = run_benchstat(tmp_dir, out, sizeof out);
    CHECK(status == 2 && strstr(out, "not a regular file"),
          "a directory: exit %d, want 2; output:\n%s", status, out);
    snprintf(args, sizeof args, "truncate -s 65M %s", tmp_file("big.json"));
    shell(args);
    status = run_benchstat(tmp_file("big.json"), out, sizeof out);
    CHECK(status == 2 && strstr(out, "big.json") && strstr(out, "larger than the 64 MiB"),
          "a 65 MiB file: exit %d, want 2 and the size cap; output:\n%s", status, out);
}

// Whether the files at a and b hold the same bytes.
static int same_contents(const char *a, const char *b) {
    char command[600];
    snprintf(command, sizeof command, "cmp -s %s %s", a, b);
    return system(command) == 0;
}

// --json OUT never replaces a file: not an unrelated one, not its own input. On success it
// leaves no temporary file beside OUT.
static void test_json_never_overwrites(void) {
    char out[8192], args[1024];
    const char *input = tmp_file("input.json"), *other = tmp_file("other.txt");
    snprintf(args, sizeof args, "cp " FIXTURES "a94.json %s && echo keep > %s", input, other);
    shell(args);
    snprintf(args, sizeof args, "--json %s %s", input, input);
    int status = run_benchstat(args, out, sizeof out);
    CHECK(status == 2 && strstr(out, "exists") && same_contents(input, FIXTURES "a94.json"),
          "--json onto its own input: exit %d, want 2, input kept; output:\n%s", status, out);
    snprintf(args, sizeof args, "--json %s " FIXTURES "a94.json", other);
    status = run_benchstat(args, out, sizeof out);
    CHECK(status == 2 && strstr(out, "other.txt") && strstr(out, "exists"),
          "--json onto an existing file: exit %d, want 2; output:\n%s", status, out);
    char *kept = read_text(other);
    CHECK(kept && !strcmp(kept, "keep\n"), "the existing file was changed: %s", kept ? kept : "(gone)");
    const char *fresh = tmp_file("fresh.json");
    snprintf(args, sizeof args, "--json %s " FIXTURES "a94.json && ls %s", fresh, tmp_dir);
    status = run_benchstat(args, out, sizeof out);
    CHECK(status == 0 && !strstr(out, ".tmp") && json_number(read_text(fresh), "a", "n") == 10,
          "--json to a new file: exit %d, no temporary left; output:\n%s", status, out);
}

// --check fails when a number it judges is not finite: here the times' sum overflows, so a
// mean is infinite and A/B is NaN (inf / inf) or 0 (finite / inf).
static void test_check_fails_on_non_finite(void) {
    static const char *const cases[] = {
        "--check " FIXTURES "huge_time.json " FIXTURES "huge_time.json",
        "--check " FIXTURES "b94.json " FIXTURES "huge_time.json",
        "--check " FIXTURES "huge_time.json " FIXTURES "b94.json",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[8192];
        int status = run_benchstat(cases[i], out, sizeof out);
        CHECK(status == 1 && strstr(out, "check FAIL") && strstr(out, "not a finite number"),
              "benchstat %s: exit %d, want 1 and \"not a finite number\"; output:\n%s",
              cases[i], status, out);
    }
}

// The number after "key": at its first occurrence in text (NAN if absent).
static double first_number(const char *text, const char *key) {
    char pattern[80];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = text ? strstr(text, pattern) : NULL;
    return at ? strtod(at + strlen(pattern), NULL) : NAN;
}

// Runs benchstat args and checks its exit status and that its output holds every one of
// the NULL-terminated texts.
static void expect_output(const char *args, int want_status, const char *const *texts) {
    char out[16384];
    int status = run_benchstat(args, out, sizeof out);
    int all_there = 1;
    for (const char *const *text = texts; *text; text++) all_there = all_there && strstr(out, *text);
    CHECK(status == want_status && all_there, "benchstat %s: exit %d, want %d and the texts "
          "starting \"%s\"; output:\n%s", args, status, want_status, texts[0], out);
}

#define EXPECT(args, status, ...) expect_output((args), (status), (const char *const[]){__VA_ARGS__, NULL})

// --target: a percentage (anything above 1) or a fraction; both mean the same target.
static void test_target_units(void) {
    char *json = run_json("--target 94.5 " FIXTURES "a94.json", 0);
    CHECK_REL(json_number(json, "a", "target"), 0.945, "--target 94.5 is a percentage");
    json = run_json("--target 0.945 " FIXTURES "a94.json", 0);
    CHECK_REL(json_number(json, "a", "target"), 0.945, "--target 0.945 is a fraction");
    EXPECT("--target 94.5 " FIXTURES "a94.json", 0, "vs target  94.5%");
    EXPECT(FIXTURES "a94.json", 0, "units: accuracy in %", "time (s)", "std 0.099 pts");
}

// The new fields (complete, overrides, git_diff_sha256, driver_version) and the old ones
// (driver) are shown; a complete file with no diverged run passes --check.
static void test_new_fields(void) {
    EXPECT("--check " FIXTURES "new94.json", 0,
           "new94.json: airbench94 (overrides: lr=11, label_smoothing=0.15), 5 runs on NVIDIA "
           "H100 80GB HBM3 (driver 580.159.04) (commit 89abcde, dirty tree, diff sha256 "
           "5f2b0c6e1d9a)\n", "check ok:");
    EXPECT(FIXTURES "peer94.json", 0, "(driver 580.159.04)");  // the old name, "driver"
    EXPECT("--table " FIXTURES "new94.json", 0,
           "| new94.json | airbench94 (overrides: lr=11, label_smoothing=0.15) |");
}

// An incomplete file is reported loudly and its runs are used; diverged runs are listed and
// left out of the statistics; --check fails on both, for A and for the baseline.
static void test_incomplete_and_diverged(void) {
    EXPECT(FIXTURES "incomplete94.json", 0,
           "WARNING    incomplete run file: run 4 (seed 3) diverged: the training loss is NaN "
           "at epoch 2; the statistics cover the 3 runs it holds",
           "diverged   1 run, left out of every statistic below:\n"
           "             runs[3] (seed 3): the training loss is NaN at epoch 2");
    char *json = run_json(FIXTURES "incomplete94.json", 0);
    CHECK(json_number(json, "a", "n") == 3 && json_number(json, "a", "n_diverged") == 1,
          "incomplete94: n %g, n_diverged %g", json_number(json, "a", "n"),
          json_number(json, "a", "n_diverged"));
    CHECK_REL(json_number(json, "a", "acc_mean"), (0.9395 + 0.9411 + 0.9402) / 3,
              "the diverged run's accuracy is not averaged in");
    CHECK(json && strstr(json, "\"complete\":\tfalse"), "JSON says complete false:\n%s", json);
    EXPECT(FIXTURES "killed94.json", 0, "WARNING    incomplete run file: the writer stopped "
           "before ending the file (killed, or still running)");
    EXPECT("--tsv " FIXTURES "killed94.json", 0, "warning: " FIXTURES "killed94.json is incomplete");
    const char *one_run = tmp_file("killed_after_one.json");
    FILE *f = fopen(one_run, "w");
    CHECK(f != NULL, "cannot write %s", one_run);
    if (f) {
        fputs("{\"schema\": \"airbench.c/run-v1\", \"variant\": \"airbench94\", \"complete\": false, "
              "\"runs\": [{\"seed\": 0, \"accuracy\": 0.94, \"time_s\": 2.9}]}\n", f);
        fclose(f);
    }
    char args[512];
    snprintf(args, sizeof args, "--check %s", one_run);
    EXPECT(args, 2, "1 run; at least 2 are needed", "the file is incomplete: the writer stopped");
    EXPECT("--check " FIXTURES "incomplete94.json", 1,
           "check FAIL: A (" FIXTURES "incomplete94.json) is an incomplete run file: run 4",
           "check FAIL: 1 run of A (" FIXTURES "incomplete94.json) diverged");
    EXPECT("--check " FIXTURES "killed94.json", 1, "check FAIL: A (" FIXTURES "killed94.json) "
           "is an incomplete run file: the writer stopped");
    EXPECT("--check " FIXTURES "diverged94.json", 1, "check FAIL: 1 run of A");
    EXPECT("--check " FIXTURES "a94.json " FIXTURES "killed94.json", 1,
           "check FAIL: B (" FIXTURES "killed94.json) is an incomplete run file");
    EXPECT("--tsv " FIXTURES "diverged94.json", 0, "seed\taccuracy\ttime_s\n0\t0.939500\t2.871000\n"
           "1\t0.941100\t2.866000\n2\t0.940200\t2.880000\n3\t0.938900\t2.874000\n");
}

// Different GPU models fail --check unless --allow-other-gpu, which makes it a note.
static void test_other_gpu(void) {
    EXPECT("--check " FIXTURES "a94.json " FIXTURES "a100_94.json", 1,
           "check FAIL: A and B ran on different GPU models (NVIDIA H100 80GB HBM3 vs NVIDIA "
           "A100-SXM4-80GB)", "--allow-other-gpu");
    EXPECT("--check --allow-other-gpu " FIXTURES "a94.json " FIXTURES "a100_94.json", 0,
           "check note: A and B ran on different GPU models", "check ok:   A/B time");
    EXPECT("--check " FIXTURES "a94.json " FIXTURES "minimal.json", 1,
           "different GPU models (NVIDIA H100 80GB HBM3 vs not recorded)");
}

// --help names every option, its default and the exit codes.
static void test_help(void) {
    EXPECT("--help", 0, "--target ACC", "--check", "--time-tolerance PCT", "(default 3)",
           "--allow-other-gpu", "--json OUT", "--tsv", "--table", "--plot OUT.png",
           "--merge OUT.json", "-h, --help", "Exit status: 0", "1 --check failed", "2 bad usage",
           "a percentage (94) or a fraction (0.94)");
}

// Copies the fixture name into tmp_dir as copy with every `from` replaced by `to`.
static const char *edited_fixture(const char *name, const char *copy, const char *from,
                                  const char *to) {
    char command[1024];
    const char *path = tmp_file(copy);
    snprintf(command, sizeof command, "sed 's/%s/%s/' " FIXTURES "%s > %s", from, to, name, path);
    shell(command);
    return path;
}

// --merge: the runs of all files in order, through the run-file writer; the output's
// completeness follows the inputs'; files of different benchmarks and existing outputs are
// refused.
static void test_merge(void) {
    char args[1024], out[16384];
    const char *merged = tmp_file("merged.json");
    snprintf(args, sizeof args, "--merge %s " FIXTURES "chunk1.json " FIXTURES "chunk2.json", merged);
    EXPECT(args, 0, "merged 4 runs from 2 files into");
    snprintf(args, sizeof args, "--tsv %s", merged);
    EXPECT(args, 0, "seed\taccuracy\ttime_s\n0\t0.939500\t2.871000\n1\t0.941100\t2.866000\n"
           "2\t0.940200\t2.880000\n3\t0.938900\t2.874000\n");
    char *text = read_text(merged);
    CHECK(text && strstr(text, "\"complete\":\ttrue") && strstr(text, "\"merged_from\":\t[\"chunk1.json\", \"chunk2.json\"]")
          && strstr(text, "\"lr\":\t11") && !strstr(text, "incomplete_reason"),
          "merged file header:\n%.2000s", text ? text : "(none)");
    CHECK(first_number(text, "n") == 4, "merged summary n = %g", first_number(text, "n"));
    snprintf(args, sizeof args, "%s", merged);
    EXPECT(args, 0, "airbench94 (overrides: lr=11, label_smoothing=0.15), 4 runs");

    snprintf(args, sizeof args, "--merge %s " FIXTURES "chunk1.json " FIXTURES "chunk2.json", merged);
    char *before = strdup(read_text(merged));
    EXPECT(args, 2, "merged.json exists; benchstat never overwrites a file");
    CHECK(before && !strcmp(before, read_text(merged)), "--merge changed an existing output");
    free(before);

    const char *partial = tmp_file("partial.json");
    snprintf(args, sizeof args, "--merge %s " FIXTURES "chunk1.json " FIXTURES "killed94.json", partial);
    EXPECT(args, 0, "merged 5 runs from 2 files");
    text = read_text(partial);
    CHECK(text && strstr(text, "\"complete\":\tfalse") &&
          strstr(text, "killed94.json is incomplete: the writer stopped before ending the file"),
          "a merge with an incomplete input is incomplete:\n%.3000s", text ? text : "(none)");

    static const struct {
        const char *from, *to, *says;
    } differences[] = {
        {"\"variant\": \"airbench94\"", "\"variant\": \"airbench95\"", "in variant (airbench94 vs airbench95)"},
        {"H100 80GB HBM3", "A100-SXM4-80GB", "in gpu.name (NVIDIA H100 80GB HBM3 vs NVIDIA A100-SXM4-80GB)"},
        {"\"git_commit\": \"89", "\"git_commit\": \"77", "in git_commit"},
        {"\"git_dirty\": true", "\"git_dirty\": false", "in git_dirty (true vs false)"},
        {"\"git_diff_sha256\": \"5f", "\"git_diff_sha256\": \"6f", "in git_diff_sha256"},
        {"\"lr\": 11.0,", "\"lr\": 12.0,", "in config.lr (11 vs 12)"},
        {"\"momentum\": 0.85,", "", "in config.momentum (0.85 vs absent)"},
        {"\"label_smoothing\": 0.15$", "\"label_smoothing\": 0.2", "in config.overrides"},
    };
    for (size_t i = 0; i < sizeof differences / sizeof differences[0]; i++) {
        const char *edited = edited_fixture("chunk2.json", "edited.json", differences[i].from,
                                            differences[i].to);
        const char *refused = tmp_file("refused.json");
        snprintf(args, sizeof args, "--merge %s " FIXTURES "chunk1.json %s", refused, edited);
        int status = run_benchstat(args, out, sizeof out);
        CHECK(status == 2 && strstr(out, differences[i].says) && access(refused, F_OK) != 0,
              "merge of files that differ (%s): exit %d, want 2 and \"%s\", no output; output:\n%s",
              differences[i].to, status, differences[i].says, out);
    }
}

// Whether path starts with the PNG signature.
static int is_png(const char *path) {
    unsigned char head[8] = {0};
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) fclose(f);
    return got == 8 && !memcmp(head, "\x89PNG\r\n\x1a\n", 8);
}

// --plot: without gnuplot, exit 2 with the package to install; with it, a PNG for one file
// and for several, never over an existing file.
static void test_plot(void) {
    char args[1024];
    const char *png = tmp_file("plot.png");
    snprintf(args, sizeof args, "--plot %s " FIXTURES "a94.json", png);
    char out[8192];
    int status = run_benchstat_with("", "env PATH=/nonexistent", args, out, sizeof out);
    CHECK(status == 2 && strstr(out, "apt-get install gnuplot-nox") && access(png, F_OK) != 0,
          "--plot without gnuplot: exit %d, want 2 and the package; output:\n%s", status, out);
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("skip: --plot with gnuplot (gnuplot is not installed)\n");
        return;
    }
    EXPECT(args, 0, "plotted 1 run file into");
    CHECK(is_png(png), "--plot wrote no PNG at %s", png);
    EXPECT(args, 2, "plot.png exists; benchstat never overwrites a file");
    png = tmp_file("plot2.png");
    snprintf(args, sizeof args, "--plot %s " FIXTURES "a94.json " FIXTURES "incomplete94.json "
             FIXTURES "unknown_variant.json", png);
    EXPECT(args, 0, "plotted 3 run files into");
    CHECK(is_png(png), "--plot of three files wrote no PNG at %s", png);
    snprintf(args, sizeof args, "ls %s | grep -q tmp", tmp_dir);
    CHECK(system(args) != 0, "--plot left a temporary file in %s", tmp_dir);
}

// Every committed run file (written before "complete" and the typed environment) still reads.
static void test_committed_run_files(void) {
    glob_t found;
    int status = glob("runs/*.json", 0, NULL, &found);
    if (status == 0) status = glob("runs/peers/*.json", GLOB_APPEND, NULL, &found);
    CHECK(status == 0 && found.gl_pathc >= 2, "no committed run files found under runs/");
    for (size_t i = 0; status == 0 && i < found.gl_pathc; i++) {
        char out[8192];
        int exit_status = run_benchstat(found.gl_pathv[i], out, sizeof out);
        CHECK(exit_status == 0 && strstr(out, "accuracy   mean") && !strstr(out, "incomplete"),
              "%s: exit %d; output:\n%s", found.gl_pathv[i], exit_status, out);
    }
    globfree(&found);
}

int main(void) {
    test_incomplete_beta();
    test_t_distribution();
    test_summary_and_target();
    test_comparison();

    const char *binary = getenv("BENCHSTAT") ? getenv("BENCHSTAT") : "build/benchstat";
    if (access(binary, X_OK) != 0) {
        CHECK(0, "%s is missing: run `make %s` first (from the repository root)", binary,
              binary);
        return test_finish("test_benchstat");
    }
    if (!mkdtemp(tmp_dir)) {
        CHECK(0, "cannot create a temporary folder: %s", strerror(errno));
        return test_finish("test_benchstat");
    }
    snprintf(json_path, sizeof json_path, "%s/out.json", tmp_dir);
    test_files_end_to_end();
    test_variants();
    test_report_text();
    test_table();
    test_broken_files();
    test_check_exit_codes();
    test_usage_errors();
    test_long_output_name();
    test_hostile_files();
    test_json_never_overwrites();
    test_check_fails_on_non_finite();
    test_target_units();
    test_new_fields();
    test_incomplete_and_diverged();
    test_other_gpu();
    test_help();
    test_merge();
    test_plot();
    test_committed_run_files();
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", tmp_dir);
    if (system(command) != 0) printf("note: could not remove %s\n", tmp_dir);
    return test_finish("test_benchstat");
}
