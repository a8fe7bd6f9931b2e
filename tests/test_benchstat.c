// test_benchstat: the statistics of tools/benchstat.c against independently computed values,
// and build/benchstat itself (run as a subprocess) on the hand-made run files in
// tests/fixtures/runs/: numbers, messages for broken files, and --check exit codes.
// Run from the repository root (as `make test` does); BENCHSTAT overrides the binary's path.
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
#define BENCHSTAT_STATS_ONLY
#include "../tools/benchstat.c"

#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#define FIXTURES "tests/fixtures/runs/"
#define REL_TOL 1e-9

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

// Runs build/benchstat with args (a shell fragment); its stdout and stderr go into out.
// Returns the exit status, or -1 if it could not run.
static int run_benchstat(const char *args, char *out, size_t out_size) {
    const char *binary = getenv("BENCHSTAT") ? getenv("BENCHSTAT") : "build/benchstat";
    char command[1024];
    snprintf(command, sizeof command, "%s %s 2>&1", binary, args);
    FILE *pipe = popen(command, "r");
    if (!pipe) return -1;
    size_t used = fread(out, 1, out_size - 1, pipe);
    out[used] = '\0';
    int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char json_path[64];

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

static void test_usage_errors(void) {
    static const char *const cases[] = {
        "",
        "--frobnicate " FIXTURES "a94.json",
        "--target 94 " FIXTURES "a94.json",
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
    snprintf(json_path, sizeof json_path, "/tmp/test_benchstat_XXXXXX");
    int fd = mkstemp(json_path);
    CHECK(fd >= 0, "mkstemp failed");
    if (fd >= 0) close(fd);
    test_files_end_to_end();
    test_variants();
    test_report_text();
    test_table();
    test_broken_files();
    test_check_exit_codes();
    test_usage_errors();
    unlink(json_path);
    return test_finish("test_benchstat");
}
