// benchstat: statistics over airbench.c run files (schema "airbench.c/run-v1").
//
//   build/benchstat [--target ACC] [--check] [--time-tolerance PCT] [--json OUT] [--tsv]
//                   A.json [B.json]
//   build/benchstat --table FILE...
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
// --check exits 1 when the mean accuracy is significantly below the target (one-sided
// p < 0.05) or, with a baseline, when the point estimate of A / B exceeds 1 + PCT/100
// (default 3%). The point estimate, not the interval, decides the time: the tolerance is
// there to absorb drift between sessions (clocks, temperature), which no within-file
// interval can see, and an interval-based rule would let real regressions pass on noisy
// machines. When the interval is wider than the tolerance a note says that more runs are
// needed for the check to mean much.
//
// Target accuracy: --target, else the file's target_accuracy, else from the variant
// (94 and 94-muon: 0.94, 95: 0.95, 96: 0.96; PyTorch peers such as
// "pytorch-airbench94_compiled" map the same way).
// --json OUT writes every number above as JSON; --tsv prints A's runs (seed, accuracy,
// time_s) as tab-separated rows instead of the report (bench.sh plots from it).
// --table prints one Markdown table row per file, for any number of files: the settings a
// sweep varies (batch size, epochs, translation, from the file's config) beside n, the
// accuracy's mean, std and 95% CI, and the time's mean, min and max.
//
// Exit status: 0 fine, 1 --check failed, 2 bad usage or an unreadable / invalid file.
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------
// Statistics: no I/O. tests/test_benchstat.c compiles only this part (BENCHSTAT_STATS_ONLY),
// since the test program is linked without cJSON.
// ---------------------------------------------------------------------------------------

// Continued fraction of the regularized incomplete beta function,
//     I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * 1 / (1 + d1 / (1 + d2 / (1 + ...))),
//     d_{2m}   =  m (b - m) x / ((a + 2m - 1)(a + 2m)),
//     d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),
// evaluated with the modified Lentz method (running products c, d kept away from zero).
// Returns the fraction 1 / (1 + d1 / ...); it converges fast for x < (a + 1) / (a + b + 2).
static double beta_continued_fraction(double a, double b, double x) {
    const double tiny = 1e-300, eps = 1e-16;
    double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);  // 1 + d1
    if (fabs(d) < tiny) d = tiny;
    d = 1.0 / d;
    double fraction = d;
    for (int m = 1; m <= 10000; m++) {
        double coefs[2] = {m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                           -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))};
        double change = 1.0;
        for (int k = 0; k < 2; k++) {
            d = 1.0 + coefs[k] * d;
            if (fabs(d) < tiny) d = tiny;
            c = 1.0 + coefs[k] / c;
            if (fabs(c) < tiny) c = tiny;
            d = 1.0 / d;
            change = c * d;
            fraction *= change;
        }
        if (fabs(change - 1.0) < eps) break;
    }
    return fraction;
}

// Regularized incomplete beta I_x(a, b), using I_x(a, b) = 1 - I_{1-x}(b, a) to stay on
// the side where the continued fraction converges.
static double incomplete_beta(double a, double b, double x) {
    if (x <= 0.0) return 0.0;
    if (x >= 1.0) return 1.0;
    double log_front = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    if (x < (a + 1.0) / (a + b + 2.0)) return exp(log_front) * beta_continued_fraction(a, b, x) / a;
    return 1.0 - exp(log_front) * beta_continued_fraction(b, a, 1.0 - x) / b;
}

// P(T <= t) for Student's t with df degrees of freedom (df may be fractional):
// P(|T| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2).
static double t_cdf(double t, double df) {
    if (isnan(t) || isnan(df)) return NAN;
    if (isinf(t)) return t > 0 ? 1.0 : 0.0;
    double tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));  // P(T >= |t|)
    return t > 0 ? 1.0 - tail : tail;
}

// The t with P(T <= t) = p, by bisection on t_cdf (monotone), to full double precision.
static double t_quantile(double p, double df) {
    if (!(p > 0.0 && p < 1.0) || isnan(df)) return NAN;
    if (p < 0.5) return -t_quantile(1.0 - p, df);
    double lo = 0.0, hi = 1.0;
    while (t_cdf(hi, df) < p) hi *= 2.0;
    for (int i = 0; i < 200 && hi - lo > 1e-15 * hi; i++) {
        double mid = 0.5 * (lo + hi);
        if (t_cdf(mid, df) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

typedef struct {
    int n;
    double mean, std;  // std: the sample standard deviation (divides by n - 1)
    double median, min, max;
} Summary;

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Summary of x[0..n-1], n >= 2. The mean is taken first and the deviations from it summed
// (two passes), which keeps the variance exact for data with a large common offset.
static Summary summarize(const double *x, int n) {
    Summary s = {.n = n};
    double sum = 0.0, squares = 0.0;
    for (int i = 0; i < n; i++) sum += x[i];
    s.mean = sum / n;
    for (int i = 0; i < n; i++) squares += (x[i] - s.mean) * (x[i] - s.mean);
    s.std = sqrt(squares / (n - 1));
    double *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) abort();
    memcpy(sorted, x, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, compare_doubles);
    s.min = sorted[0];
    s.max = sorted[n - 1];
    s.median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    free(sorted);
    return s;
}

typedef struct {
    double t, df;
    double p_below;           // one-sided p for H1: mean < target
    double ci_low, ci_high;   // 95% confidence interval of the mean
} TargetTest;

// The 95% confidence interval of the mean (Student t with n - 1 degrees of freedom).
static void mean_interval(Summary s, double *low, double *high) {
    double half_width = t_quantile(0.975, s.n - 1) * s.std / sqrt(s.n);
    *low = s.mean - half_width;
    *high = s.mean + half_width;
}

// One-sample t-test of "mean >= target". With zero spread there is no t: p is 0 when the
// mean is below the target and 1 otherwise.
static TargetTest test_against_target(Summary s, double target) {
    TargetTest r = {.df = s.n - 1};
    double se = s.std / sqrt(s.n);
    mean_interval(s, &r.ci_low, &r.ci_high);
    if (se == 0.0) {
        r.t = s.mean < target ? -INFINITY : s.mean > target ? INFINITY : 0.0;
        r.p_below = s.mean < target ? 0.0 : 1.0;
        return r;
    }
    r.t = (s.mean - target) / se;
    r.p_below = t_cdf(r.t, r.df);
    return r;
}

// Welch-Satterthwaite degrees of freedom for the sum of two variance terms v_a, v_b
// estimated from n_a and n_b observations.
static double welch_df(double v_a, int n_a, double v_b, int n_b) {
    double denominator = v_a * v_a / (n_a - 1) + v_b * v_b / (n_b - 1);
    if (denominator == 0.0) return n_a + n_b - 2;  // no spread: df is moot, keep it finite
    return (v_a + v_b) * (v_a + v_b) / denominator;
}

typedef struct {
    double diff, t, df, p_two_sided;
    double ci_low, ci_high;   // 95% confidence interval of the difference
} WelchTest;

// Welch's unequal-variance t-test of mean(a) - mean(b).
static WelchTest welch_test(Summary a, Summary b) {
    double v_a = a.std * a.std / a.n, v_b = b.std * b.std / b.n, se = sqrt(v_a + v_b);
    WelchTest r = {.diff = a.mean - b.mean, .df = welch_df(v_a, a.n, v_b, b.n)};
    double q = t_quantile(0.975, r.df);
    r.ci_low = r.diff - q * se;
    r.ci_high = r.diff + q * se;
    if (se == 0.0) {
        r.t = r.diff == 0.0 ? 0.0 : copysign(INFINITY, r.diff);
        r.p_two_sided = r.diff == 0.0 ? 1.0 : 0.0;
        return r;
    }
    r.t = r.diff / se;
    r.p_two_sided = 2.0 * t_cdf(-fabs(r.t), r.df);
    return r;
}

typedef struct {
    double ratio, df;
    double ci_low, ci_high;   // 95% confidence interval of the ratio
} RatioInterval;

// mean(a) / mean(b) (both positive) with the delta-method interval on the log scale
// described at the top of this file.
static RatioInterval ratio_of_means(Summary a, Summary b) {
    double v_a = a.std * a.std / (a.n * a.mean * a.mean);
    double v_b = b.std * b.std / (b.n * b.mean * b.mean);
    RatioInterval r = {.ratio = a.mean / b.mean, .df = welch_df(v_a, a.n, v_b, b.n)};
    double half_width = t_quantile(0.975, r.df) * sqrt(v_a + v_b);
    r.ci_low = r.ratio * exp(-half_width);
    r.ci_high = r.ratio * exp(half_width);
    return r;
}

#ifndef BENCHSTAT_STATS_ONLY
// ---------------------------------------------------------------------------------------
// Run files, report, main.
// ---------------------------------------------------------------------------------------
#include <cjson/cJSON.h>

#define RUN_SCHEMA "airbench.c/run-v1"
#define EXIT_CHECK_FAILED 1
#define EXIT_USAGE 2

static const char USAGE[] =
    "usage: benchstat [--target ACC] [--check] [--time-tolerance PCT] [--json OUT] [--tsv]\n"
    "                 A.json [B.json]\n"
    "       benchstat --table FILE...\n"
    "  A.json           run file written by build/airbenchXX --json (or dev/run_peer.py)\n"
    "  B.json           baseline to compare A against (accuracy: Welch t-test; time: A/B)\n"
    "  --target ACC     target accuracy as a fraction (default: the file's target_accuracy,\n"
    "                   else from the variant: 0.94, 0.95 or 0.96)\n"
    "  --check          exit 1 if the accuracy is significantly below target (p < 0.05) or,\n"
    "                   with B, if A's mean time exceeds B's by more than the tolerance\n"
    "  --time-tolerance PCT  allowed slowdown for --check in percent (default 3)\n"
    "  --json OUT       also write the statistics to OUT as JSON\n"
    "  --tsv            print A's runs as 'seed accuracy time_s' rows instead of the report\n"
    "  --table          one Markdown table row per file (any number of files): settings,\n"
    "                   n, accuracy mean, std and 95% CI, time mean (min-max)\n";

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
};

// The published result a variant name refers to: "airbench94", "airbench94-muon", or a
// peer such as "pytorch-airbench94_compiled" or "pytorch-airbench94_muon". NULL if none.
static const PublishedResult *published_result(const char *variant) {
    const char *base = strstr(variant, "airbench");
    if (!base) return NULL;
    int is_muon = strstr(base, "muon") != NULL;
    size_t prefix = strlen("airbench94");  // every name starts with "airbench" + 2 digits
    for (size_t i = 0; i < sizeof PUBLISHED / sizeof PUBLISHED[0]; i++) {
        int name_is_muon = strstr(PUBLISHED[i].variant, "muon") != NULL;
        if (strncmp(base, PUBLISHED[i].variant, prefix) == 0 && is_muon == name_is_muon)
            return &PUBLISHED[i];
    }
    return NULL;
}

typedef struct {
    const char *path;
    char variant[128], gpu_name[128], git_commit[48];
    int git_dirty;            // 1, 0, or -1 when not recorded
    double target_accuracy;   // NAN when the file has none
    int batch_size;           // config.batch_size; 0 when not recorded
    double epochs;            // config.epochs; NAN when not recorded
    char translate_mode[32];  // config.translate_mode; "" when not recorded
    int n;
    double *seed, *accuracy, *time_s;  // seed is NAN where a run has none
} RunFile;

static void run_file_free(RunFile *f) {
    free(f->seed);
    free(f->accuracy);
    free(f->time_s);
}

__attribute__((format(printf, 3, 4)))
static void format_error(char *err, size_t err_size, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(err, err_size, fmt, args);
    va_end(args);
}

// Reads the whole file into a NUL-terminated buffer; sets *size. NULL (and err) on failure.
static char *read_whole_file(const char *path, size_t *size, char *err, size_t err_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        format_error(err, err_size, "%s: cannot open: %s (check the path; bench.sh writes "
                     "run files under runs/)", path, strerror(errno));
        return NULL;
    }
    size_t capacity = 1 << 16, used = 0, got = 0;
    char *text = malloc(capacity);
    while (text) {
        if (used + 1 == capacity) {
            char *bigger = realloc(text, capacity *= 2);
            if (!bigger) free(text);
            text = bigger;
            if (!text) break;
        }
        if ((got = fread(text + used, 1, capacity - used - 1, f)) == 0) break;
        used += got;
    }
    int read_error = ferror(f) ? errno : 0;
    fclose(f);
    if (!text || read_error) {
        format_error(err, err_size, "%s: cannot read: %s", path,
                     text ? strerror(read_error) : "out of memory");
        free(text);
        return NULL;
    }
    text[used] = '\0';
    *size = used;
    return text;
}

// Whether text ends inside an unclosed string, object or array: the mark of a file cut
// short (a trainer killed while writing, a partial copy).
static int json_is_unclosed(const char *text, size_t size) {
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < size; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\') i++;
            else if (c == '"') in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return in_string || depth > 0;
}

static cJSON *parse_json(const char *path, const char *text, size_t size, char *err,
                         size_t err_size) {
    if (size == 0) {
        format_error(err, err_size, "%s: the file is empty (the trainer may have stopped "
                     "before writing it); rerun the benchmark", path);
        return NULL;
    }
    // The length includes the terminating NUL: that is how cJSON checks that nothing but
    // whitespace follows the document.
    const char *error_at = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, size + 1, &error_at, 1);
    if (root) return root;
    int line = 1, column = 1;
    for (const char *p = text; error_at && p < error_at && p < text + size; p++) {
        if (*p == '\n') line++, column = 1;
        else column++;
    }
    format_error(err, err_size, "%s: not valid JSON (parse error at line %d, column %d): %s",
                 path, line, column,
                 json_is_unclosed(text, size)
                     ? "the text ends inside an unclosed string, object or array, so the "
                       "file looks truncated; rerun the benchmark or restore the file"
                     : "is this an airbench.c run file?");
    return NULL;
}

// Copies the string member `key` of obj into out; 1 if it was there and a string.
static int copy_string(const cJSON *obj, const char *key, char *out, size_t out_size) {
    const char *value = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, key));
    if (!value) return 0;
    snprintf(out, out_size, "%s", value);
    return 1;
}

static int check_schema(const char *path, const cJSON *root, char *err, size_t err_size) {
    if (!cJSON_IsObject(root)) {
        format_error(err, err_size, "%s: the top level is not a JSON object; expected an %s "
                     "run file", path, RUN_SCHEMA);
        return -1;
    }
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(root, "schema");
    if (!cJSON_IsString(schema)) {
        format_error(err, err_size, "%s: no \"schema\" string; expected \"%s\" (not a run "
                     "file written by the trainer, bench.sh or dev/run_peer.py?)",
                     path, RUN_SCHEMA);
        return -1;
    }
    if (strcmp(schema->valuestring, RUN_SCHEMA) != 0) {
        format_error(err, err_size, "%s: schema is \"%s\", but benchstat reads \"%s\"", path,
                     schema->valuestring, RUN_SCHEMA);
        return -1;
    }
    return 0;
}

// Reads the optional settings of config: batch_size, epochs, translate_mode.
static void read_config(RunFile *f, const cJSON *root) {
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(root, "config");
    const cJSON *batch = cJSON_GetObjectItemCaseSensitive(config, "batch_size");
    const cJSON *epochs = cJSON_GetObjectItemCaseSensitive(config, "epochs");
    f->batch_size = cJSON_IsNumber(batch) && batch->valuedouble >= 1 ? (int)batch->valuedouble : 0;
    f->epochs = cJSON_IsNumber(epochs) && epochs->valuedouble > 0 ? epochs->valuedouble : NAN;
    if (!copy_string(config, "translate_mode", f->translate_mode, sizeof f->translate_mode))
        f->translate_mode[0] = '\0';
}

// Reads the optional descriptive fields: gpu.name, git_commit, git_dirty, target_accuracy,
// and the config's settings.
static int read_metadata(RunFile *f, const cJSON *root, char *err, size_t err_size) {
    if (!copy_string(root, "variant", f->variant, sizeof f->variant)) {
        format_error(err, err_size, "%s: no \"variant\" string (e.g. \"airbench94\")", f->path);
        return -1;
    }
    if (!copy_string(cJSON_GetObjectItemCaseSensitive(root, "gpu"), "name", f->gpu_name,
                     sizeof f->gpu_name))
        f->gpu_name[0] = '\0';
    if (!copy_string(root, "git_commit", f->git_commit, sizeof f->git_commit))
        f->git_commit[0] = '\0';
    const cJSON *dirty = cJSON_GetObjectItemCaseSensitive(root, "git_dirty");
    f->git_dirty = cJSON_IsBool(dirty) ? cJSON_IsTrue(dirty) : -1;
    const cJSON *target = cJSON_GetObjectItemCaseSensitive(root, "target_accuracy");
    f->target_accuracy = NAN;
    if (target && !cJSON_IsNull(target)) {
        if (!cJSON_IsNumber(target) || !(target->valuedouble > 0 && target->valuedouble < 1)) {
            format_error(err, err_size, "%s: \"target_accuracy\" must be a fraction in (0, 1) "
                         "such as 0.94", f->path);
            return -1;
        }
        f->target_accuracy = target->valuedouble;
    }
    read_config(f, root);
    return 0;
}

// Reads member `key` of run i as a finite number in [min, max]; -1 (and err) otherwise.
static int read_run_number(const RunFile *f, const cJSON *run, int i, const char *key,
                           double min, double max, const char *hint, double *out, char *err,
                           size_t err_size) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(run, key);
    if (!cJSON_IsNumber(item)) {
        format_error(err, err_size, "%s: runs[%d] has no numeric \"%s\"", f->path, i, key);
        return -1;
    }
    *out = item->valuedouble;
    if (!isfinite(*out) || *out < min || *out > max) {
        format_error(err, err_size, "%s: runs[%d].%s = %g is out of range (%s)", f->path, i,
                     key, *out, hint);
        return -1;
    }
    return 0;
}

static int read_runs(RunFile *f, const cJSON *root, char *err, size_t err_size) {
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(root, "runs");
    if (!cJSON_IsArray(runs)) {
        format_error(err, err_size, "%s: no \"runs\" array", f->path);
        return -1;
    }
    f->n = cJSON_GetArraySize(runs);
    if (f->n < 2) {
        format_error(err, err_size, "%s: %d run%s; at least 2 are needed for a standard "
                     "deviation (train with --runs 2 or more)", f->path, f->n,
                     f->n == 1 ? "" : "s");
        return -1;
    }
    f->seed = malloc((size_t)f->n * sizeof *f->seed);
    f->accuracy = malloc((size_t)f->n * sizeof *f->accuracy);
    f->time_s = malloc((size_t)f->n * sizeof *f->time_s);
    if (!f->seed || !f->accuracy || !f->time_s) abort();
    int i = 0;
    for (const cJSON *run = runs->child; run; run = run->next, i++) {
        if (!cJSON_IsObject(run)) {
            format_error(err, err_size, "%s: runs[%d] is not an object", f->path, i);
            return -1;
        }
        if (read_run_number(f, run, i, "accuracy", 0.0, 1.0,
                            "accuracies are fractions: 0.94, not 94", &f->accuracy[i], err,
                            err_size) ||
            read_run_number(f, run, i, "time_s", 1e-9, INFINITY,
                            "a time in seconds must be positive", &f->time_s[i], err,
                            err_size))
            return -1;
        const cJSON *seed = cJSON_GetObjectItemCaseSensitive(run, "seed");
        f->seed[i] = cJSON_IsNumber(seed) ? seed->valuedouble : NAN;
    }
    return 0;
}

// Loads and validates a run file. 0 on success; -1 with a message naming the file in err.
static int load_run_file(RunFile *f, const char *path, char *err, size_t err_size) {
    *f = (RunFile){.path = path};
    size_t size = 0;
    char *text = read_whole_file(path, &size, err, err_size);
    if (!text) return -1;
    cJSON *root = parse_json(path, text, size, err, err_size);
    free(text);
    if (!root) return -1;
    int status = check_schema(path, root, err, err_size);
    if (status == 0) status = read_metadata(f, root, err, err_size);
    if (status == 0) status = read_runs(f, root, err, err_size);
    cJSON_Delete(root);
    if (status) run_file_free(f);
    return status;
}

// Everything computed about one file.
typedef struct {
    const RunFile *file;
    Summary acc, time;
    double target;
    TargetTest vs_target;
    const PublishedResult *published;  // NULL for an unknown variant
} FileStats;

static int compute_file_stats(FileStats *st, const RunFile *f, double target_override,
                              char *err, size_t err_size) {
    *st = (FileStats){.file = f, .published = published_result(f->variant)};
    st->acc = summarize(f->accuracy, f->n);
    st->time = summarize(f->time_s, f->n);
    st->target = !isnan(target_override) ? target_override
                 : !isnan(f->target_accuracy) ? f->target_accuracy
                 : st->published ? st->published->target : NAN;
    if (isnan(st->target)) {
        format_error(err, err_size, "%s: no target accuracy for variant \"%s\" (the file has "
                     "no target_accuracy); pass --target ACC", f->path, f->variant);
        return -1;
    }
    st->vs_target = test_against_target(st->acc, st->target);
    return 0;
}

static int gpu_is_a100(const RunFile *f) { return strstr(f->gpu_name, "A100") != NULL; }

static void print_file_stats(const FileStats *st, const char *role) {
    const RunFile *f = st->file;
    const TargetTest *t = &st->vs_target;
    printf("%s%s: %s, %d runs on %s", role, f->path, f->variant, f->n,
           f->gpu_name[0] ? f->gpu_name : "an unrecorded GPU");
    if (f->git_commit[0])
        printf(" (commit %.7s%s)", f->git_commit, f->git_dirty == 1 ? ", dirty tree" : "");
    printf("\n  accuracy   mean %.3f%%  std %.3f pts  95%% CI of the mean %.3f%% to %.3f%%\n",
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

static void print_comparison(const Comparison *c, const FileStats *a, const FileStats *b) {
    char time_words[160], acc_words[96];
    printf("A vs B (B = baseline %s)\n", b->file->path);
    printf("  accuracy   A - B = %+.3f pts (95%% CI %+.3f to %+.3f), Welch t = %.3f, "
           "df = %.1f, p = %.3g (two-sided)\n", 100 * c->acc.diff, 100 * c->acc.ci_low,
           100 * c->acc.ci_high, c->acc.t, c->acc.df, c->acc.p_two_sided);
    printf("  time       A / B = %.4f (95%% CI %.4f to %.4f; delta method on the log of the "
           "ratio of means, df = %.1f)\n", c->time.ratio, c->time.ci_low, c->time.ci_high,
           c->time.df);
    if (strcmp(a->file->gpu_name, b->file->gpu_name) != 0)
        printf("  note       different GPUs (%s vs %s): the time ratio mixes GPU and code\n",
               a->file->gpu_name, b->file->gpu_name);
    if (a->published != b->published)
        printf("  note       different variants (%s vs %s)\n", a->file->variant,
               b->file->variant);
    describe_time(&c->time, time_words, sizeof time_words);
    describe_accuracy(&c->acc, acc_words, sizeof acc_words);
    printf("  verdict    %s, %s\n", time_words, acc_words);
}

// --check: prints one line per criterion and returns the number that failed.
static int run_checks(const FileStats *a, const Comparison *c, double tolerance_pct) {
    int failures = 0;
    const TargetTest *t = &a->vs_target;
    if (t->p_below < 0.05) {
        printf("check FAIL: mean accuracy %.3f%% is significantly below the target %.4g%% "
               "(one-sided t-test p = %.3g < 0.05)\n", 100 * a->acc.mean, 100 * a->target,
               t->p_below);
        failures++;
    } else {
        printf("check ok:   mean accuracy %.3f%% is not significantly below the target "
               "%.4g%% (p = %.3g)\n", 100 * a->acc.mean, 100 * a->target, t->p_below);
    }
    if (!c) return failures;
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

static cJSON *file_stats_json(const FileStats *st) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", st->file->path);
    cJSON_AddStringToObject(o, "variant", st->file->variant);
    cJSON_AddStringToObject(o, "gpu", st->file->gpu_name);
    cJSON_AddNumberToObject(o, "n", st->acc.n);
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

// Writes {"a": ..., "b": ..., "comparison": ..., "check_failures": N} (b and comparison
// only with a baseline, check_failures only with --check). 0 on success.
static int write_json(const char *out_path, const FileStats *a, const FileStats *b,
                      const Comparison *c, int check_failures) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "schema", "airbench.c/benchstat-v1");
    cJSON_AddItemToObject(root, "a", file_stats_json(a));
    if (b) cJSON_AddItemToObject(root, "b", file_stats_json(b));
    if (c) cJSON_AddItemToObject(root, "comparison", comparison_json(c));
    if (check_failures >= 0) cJSON_AddNumberToObject(root, "check_failures", check_failures);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    FILE *out = fopen(out_path, "w");
    int ok = text && out && fputs(text, out) >= 0 && fputc('\n', out) != EOF;
    if (out && fclose(out) != 0) ok = 0;
    free(text);
    if (!ok) fprintf(stderr, "benchstat: %s: cannot write the JSON output: %s\n", out_path,
                     strerror(errno));
    return ok ? 0 : -1;
}

// --table: a Markdown table, one row per file; "-" where a file does not record a setting.
static void print_table(const RunFile *files, int n_files) {
    printf("| run file | variant | GPU | batch | epochs | translation | runs | mean accuracy | std "
           "| 95%% CI of the mean | time mean (min-max) |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n_files; i++) {
        const RunFile *f = &files[i];
        Summary acc = summarize(f->accuracy, f->n), time = summarize(f->time_s, f->n);
        double acc_low, acc_high;
        mean_interval(acc, &acc_low, &acc_high);
        const char *slash = strrchr(f->path, '/');
        char batch[16] = "-", epochs[16] = "-";
        if (f->batch_size) snprintf(batch, sizeof batch, "%d", f->batch_size);
        if (!isnan(f->epochs)) snprintf(epochs, sizeof epochs, "%g", f->epochs);
        printf("| %s | %s | %s | %s | %s | %s | %d | %.3f%% | %.3f | %.3f-%.3f%% "
               "| %.3f s (%.3f-%.3f) |\n", slash ? slash + 1 : f->path, f->variant,
               f->gpu_name[0] ? f->gpu_name : "-", batch, epochs,
               f->translate_mode[0] ? f->translate_mode : "-", f->n, 100 * acc.mean,
               100 * acc.std, 100 * acc_low, 100 * acc_high,
               time.mean, time.min, time.max);
    }
}

static void print_runs_tsv(const RunFile *f) {
    printf("seed\taccuracy\ttime_s\n");
    for (int i = 0; i < f->n; i++)
        printf("%.0f\t%.6f\t%.6f\n", f->seed[i], f->accuracy[i], f->time_s[i]);
}

#define MAX_FILES 256

typedef struct {
    const char *paths[MAX_FILES];
    int n_paths, check, tsv, table;
    double target, tolerance_pct;
    const char *json_out;
} Options;

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "benchstat: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", USAGE);
    return -1;
}

// Parses a finite number filling the whole argument; -1 otherwise.
static int parse_number(const char *text, double *out) {
    char *end;
    errno = 0;
    *out = strtod(text, &end);
    return (end == text || *end || errno || !isfinite(*out)) ? -1 : 0;
}

// 0 to run, 1 for --help, -1 for a usage error (already reported).
static int parse_options(int argc, char **argv, Options *o) {
    *o = (Options){.target = NAN, .tolerance_pct = 3.0};
    int options_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int takes_value = !options_done && (!strcmp(arg, "--target") ||
                          !strcmp(arg, "--time-tolerance") || !strcmp(arg, "--json"));
        if (takes_value && i + 1 >= argc) return usage_error("%s needs a value", arg);
        if (options_done || arg[0] != '-') {
            if (o->n_paths == MAX_FILES) return usage_error("too many files: %s", arg);
            o->paths[o->n_paths++] = arg;
        } else if (!strcmp(arg, "--")) {
            options_done = 1;
        } else if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            return 1;
        } else if (!strcmp(arg, "--check")) {
            o->check = 1;
        } else if (!strcmp(arg, "--tsv")) {
            o->tsv = 1;
        } else if (!strcmp(arg, "--table")) {
            o->table = 1;
        } else if (!strcmp(arg, "--json")) {
            o->json_out = argv[++i];
        } else if (!strcmp(arg, "--target")) {
            if (parse_number(argv[++i], &o->target) || !(o->target > 0 && o->target < 1))
                return usage_error("--target takes a fraction in (0, 1) such as 0.94, not %s",
                                   argv[i]);
        } else if (!strcmp(arg, "--time-tolerance")) {
            if (parse_number(argv[++i], &o->tolerance_pct) || o->tolerance_pct < 0)
                return usage_error("--time-tolerance takes a percentage >= 0 such as 3, "
                                   "not %s", argv[i]);
        } else {
            return usage_error("unknown option %s", arg);
        }
    }
    if (o->n_paths == 0) return usage_error("%s", "no run file given");
    if (o->table && (o->check || o->tsv || o->json_out))
        return usage_error("%s", "--table goes with no --check, --tsv or --json");
    if (!o->table && o->n_paths > 2)
        return usage_error("too many files (at most two without --table): %s", o->paths[2]);
    return 0;
}

// Loads the files, prints the report and runs the checks; returns the exit status.
static int report(const Options *o, const RunFile files[2]) {
    char err[1024];
    FileStats stats[2];
    for (int i = 0; i < o->n_paths; i++) {
        if (compute_file_stats(&stats[i], &files[i], o->target, err, sizeof err)) {
            fprintf(stderr, "benchstat: %s\n", err);
            return EXIT_USAGE;
        }
    }
    const FileStats *baseline = o->n_paths == 2 ? &stats[1] : NULL;
    Comparison comparison, *c = NULL;
    print_file_stats(&stats[0], baseline ? "A = " : "");
    if (baseline) {
        print_file_stats(baseline, "B = ");
        comparison = (Comparison){.acc = welch_test(stats[0].acc, baseline->acc),
                                  .time = ratio_of_means(stats[0].time, baseline->time)};
        c = &comparison;
        print_comparison(c, &stats[0], baseline);
    }
    int failures = o->check ? run_checks(&stats[0], c, o->tolerance_pct) : -1;
    if (o->json_out && write_json(o->json_out, &stats[0], baseline, c, failures))
        return EXIT_USAGE;
    return failures > 0 ? EXIT_CHECK_FAILED : 0;
}

int main(int argc, char **argv) {
    Options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed) {
        if (parsed == 1) fputs(USAGE, stdout);
        return parsed == 1 ? 0 : EXIT_USAGE;
    }
    RunFile *files = calloc((size_t)o.n_paths, sizeof *files);
    if (!files) abort();
    char err[1024];
    for (int i = 0; i < o.n_paths; i++) {
        if (load_run_file(&files[i], o.paths[i], err, sizeof err)) {
            fprintf(stderr, "benchstat: %s\n", err);
            for (int j = 0; j < i; j++) run_file_free(&files[j]);
            free(files);
            return EXIT_USAGE;
        }
    }
    int status = 0;
    if (o.table) print_table(files, o.n_paths);
    else if (o.tsv) print_runs_tsv(&files[0]);
    else status = report(&o, files);
    for (int i = 0; i < o.n_paths; i++) run_file_free(&files[i]);
    free(files);
    return status;
}
#endif  // BENCHSTAT_STATS_ONLY
