// test_runfile.c: the run-file writer and reader (airbench/runfile.c). After every step the
// file on disk is valid JSON holding every finished run, no temporary file stays behind, a
// failed write keeps the previous contents, the end marks the file complete or incomplete
// with its reason, environment values get their JSON types, and a watched signal is
// recorded and re-raised. The reader takes old files and new fields, needs no terminating
// NUL, reads back what the writer wrote, and refuses every mistyped field with a message
// naming it; no prefix of a valid file crashes it. (benchstat's tests run the reader on
// files: FIFOs, devices, size cap.)
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runfile.h"
#include "test.h"

#define ERR_SIZE 1024

static char tmp_dir[] = "/tmp/test_runfile-XXXXXX";

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char text[1 << 16];
    size_t size = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[size] = '\0';
    return cJSON_Parse(text);
}

static int exists(const char *path) {
    struct stat info;
    return stat(path, &info) == 0;
}

static cJSON *run_json(int seed, double accuracy, double time_s) {
    cJSON *run = cJSON_CreateObject();
    cJSON_AddNumberToObject(run, "seed", seed);
    cJSON_AddNumberToObject(run, "accuracy", accuracy);
    cJSON_AddNumberToObject(run, "time_s", time_s);
    return run;
}

static double summary_number(const cJSON *root, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "summary"), key);
    return cJSON_IsNumber(item) ? item->valuedouble : NAN;
}

static int run_count(const cJSON *root) { return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "runs")); }

static void test_file_after_each_step(void) {
    char path[256], tmp[300], err[ERR_SIZE] = "";
    snprintf(path, sizeof path, "%s/steps.json", tmp_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cJSON *header = cJSON_CreateObject();
    cJSON_AddStringToObject(header, "variant", "airbench94");
    RunFileWriter *w = runfile_begin(path, header, err, sizeof err);
    CHECK(w != NULL, "runfile_begin failed: %s", err);
    if (!w) return;
    cJSON *root = read_json(path);
    CHECK(root != NULL, "the file is not valid JSON after runfile_begin");
    CHECK(root && root->child && !strcmp(root->child->string, "schema") &&
              !strcmp(root->child->valuestring, RUNFILE_SCHEMA), "\"schema\" is not the first field");
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(root, "complete")), "a new file must say complete: false");
    CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "variant")), "airbench94"),
          "the header's fields are kept");
    CHECK(run_count(root) == 0 && summary_number(root, "n") == 0, "a new file has no runs");
    cJSON_Delete(root);

    const double accuracies[3] = {0.94, 0.95, 0.93}, times[3] = {1.0, 2.0, 3.0};
    for (int i = 0; i < 3; i++) {
        CHECK(runfile_add_run(w, run_json(i, accuracies[i], times[i]), err, sizeof err) == 0, "add_run: %s", err);
        root = read_json(path);
        CHECK(root && run_count(root) == i + 1, "after run %d the file holds %d runs", i + 1, root ? run_count(root) : -1);
        CHECK(!exists(tmp), "%s left behind after run %d", tmp, i + 1);
        cJSON_Delete(root);
    }
    root = read_json(path);
    CHECK_NEAR(summary_number(root, "acc_mean"), 0.94, 1e-12, "summary acc_mean");
    CHECK_NEAR(summary_number(root, "acc_std"), 0.01, 1e-12, "summary acc_std (sample std)");
    CHECK_NEAR(summary_number(root, "time_mean"), 2.0, 1e-12, "summary time_mean");
    CHECK_NEAR(summary_number(root, "time_min"), 1.0, 0, "summary time_min");
    CHECK_NEAR(summary_number(root, "time_max"), 3.0, 0, "summary time_max");
    cJSON_Delete(root);

    CHECK(runfile_end(w, NULL, err, sizeof err) == 0, "runfile_end: %s", err);
    root = read_json(path);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "complete")), "an ended file says complete: true");
    CHECK(!cJSON_GetObjectItemCaseSensitive(root, "incomplete_reason"), "a complete file has no incomplete_reason");
    cJSON_Delete(root);
}

// A diverged run is kept in "runs" but left out of the summary's statistics.
static void test_incomplete_and_diverged(void) {
    char path[256], err[ERR_SIZE] = "";
    snprintf(path, sizeof path, "%s/diverged.json", tmp_dir);
    RunFileWriter *w = runfile_begin(path, cJSON_CreateObject(), err, sizeof err);
    CHECK(w != NULL, "runfile_begin failed: %s", err);
    if (!w) return;
    runfile_add_run(w, run_json(0, 0.94, 1.0), err, sizeof err);
    cJSON *bad = run_json(1, 0.10, 9.0);
    cJSON_AddTrueToObject(bad, "diverged");
    runfile_add_run(w, bad, err, sizeof err);
    CHECK(runfile_end(w, "training diverged in run 2", err, sizeof err) == 0, "runfile_end: %s", err);
    cJSON *root = read_json(path);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(root, "complete")), "an interrupted file says complete: false");
    const char *reason = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "incomplete_reason"));
    CHECK(reason && !strcmp(reason, "training diverged in run 2"), "incomplete_reason: %s", reason ? reason : "(none)");
    CHECK(run_count(root) == 2, "both runs are kept");
    CHECK(summary_number(root, "n") == 1 && summary_number(root, "n_diverged") == 1,
          "summary counts 1 run and 1 diverged, got %g and %g", summary_number(root, "n"),
          summary_number(root, "n_diverged"));
    CHECK_NEAR(summary_number(root, "time_mean"), 1.0, 0, "the diverged run's time is not averaged in");
    cJSON_Delete(root);
}

// When a rewrite fails, the file keeps the runs before it and no temporary file stays.
static void test_failed_write_keeps_previous(void) {
    char path[256], tmp[300], err[ERR_SIZE] = "";
    snprintf(path, sizeof path, "%s/fail.json", tmp_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    RunFileWriter *w = runfile_begin(path, cJSON_CreateObject(), err, sizeof err);
    CHECK(w != NULL, "runfile_begin failed: %s", err);
    if (!w) return;
    runfile_add_run(w, run_json(0, 0.94, 1.0), err, sizeof err);
    CHECK(mkdir(tmp, 0755) == 0, "cannot block %s: %s", tmp, strerror(errno));  // the rewrite cannot open it
    err[0] = '\0';
    CHECK(runfile_add_run(w, run_json(1, 0.95, 1.0), err, sizeof err) == -1, "a blocked rewrite must fail");
    CHECK(strstr(err, path) != NULL, "the error names the file: %s", err);
    cJSON *root = read_json(path);
    CHECK(root && run_count(root) == 1, "the file still holds the first run");
    cJSON_Delete(root);
    rmdir(tmp);
    runfile_end(w, NULL, err, sizeof err);
    root = read_json(path);
    CHECK(root && run_count(root) == 2, "the next rewrite catches up: %d runs", root ? run_count(root) : -1);
    cJSON_Delete(root);
}

static void test_unwritable(void) {
    char path[256], err[ERR_SIZE] = "";
    snprintf(path, sizeof path, "%s/no/such/dir/run.json", tmp_dir);
    CHECK(runfile_check_writable(path, err, sizeof err) == -1, "a missing directory is not writable");
    CHECK(strstr(err, path) && strstr(err, "directory"), "message: %s", err);
    err[0] = '\0';
    CHECK(runfile_begin(path, cJSON_CreateObject(), err, sizeof err) == NULL, "begin in a missing directory fails");
    CHECK(strstr(err, path) != NULL, "message names the file: %s", err);
    snprintf(path, sizeof path, "%s/ok.json", tmp_dir);
    CHECK(runfile_check_writable(path, err, sizeof err) == 0, "a writable path: %s", err);
    CHECK(!exists(path), "check_writable creates nothing that stays");
}

static void check_env(const char *text, int want_type, double want_number) {
    cJSON *value = runfile_env_value(text);
    CHECK((value->type & 0xff) == want_type, "env value '%s' has cJSON type %d, want %d", text, value->type & 0xff,
          want_type);
    if (want_type == cJSON_Number) CHECK_NEAR(value->valuedouble, want_number, 0, text);
    if (want_type == cJSON_String) CHECK(!strcmp(value->valuestring, text), "string kept: '%s'", value->valuestring);
    cJSON_Delete(value);
}

static void test_env_values(void) {
    check_env("1980", cJSON_Number, 1980);
    check_env("700.00", cJSON_Number, 700);
    check_env("-3", cJSON_Number, -3);
    check_env("1e3", cJSON_Number, 1000);
    check_env("true", cJSON_True, 0);
    check_env("false", cJSON_False, 0);
    check_env("580.159.04", cJSON_String, 0);
    check_env("NVIDIA H100 80GB HBM3", cJSON_String, 0);
    check_env("0x10", cJSON_String, 0);
    check_env("nan", cJSON_String, 0);
    check_env("inf", cJSON_String, 0);
    check_env("1e999", cJSON_String, 0);
    check_env("", cJSON_String, 0);
    check_env("Enabled", cJSON_String, 0);
}

static void expect_divergence(const double *loss, int n, int want, const char *want_text) {
    char reason[256] = "";
    int got = runfile_loss_diverged(loss, n, reason, sizeof reason);
    CHECK(got == want, "losses starting %g over %d epochs: diverged %d, want %d", loss[0], n, got, want);
    CHECK(!want_text || strstr(reason, want_text), "reason '%s' lacks '%s'", reason, want_text);
}

// The guard on per-epoch losses measured on an H100 (docs/run-file.md): a healthy 94 run,
// a batch-4096 run that rose above its first epoch, a NaN.
static void test_divergence_guard(void) {
    const double healthy[10] = {1.743, 1.313, 1.225, 1.174, 1.136, 1.096, 1.063, 1.022, 0.982, 0.946};
    const double unstable[10] = {2.1, 2.02, 2.28, 2.49, 2.34, 2.18, 2.03, 1.81, 1.66, 1.57};
    const double dips[10] = {1.908, 1.467, 1.494, 1.258, 1.218, 1.151, 1.107, 1.059, 1.012, 0.976};  // batch 2048
    const double nan_loss[3] = {2.0, NAN, 1.0};
    expect_divergence(healthy, 10, 0, NULL);
    expect_divergence(dips, 10, 0, NULL);
    expect_divergence(unstable, 10, 1, "rose above its first-epoch level (2.1000) to 2.2800 in epoch 3");
    expect_divergence(nan_loss, 3, 1, "the training loss is nan in epoch 2");
    expect_divergence(healthy, 1, 0, NULL);
}

// A watched signal is only recorded; runfile_exit_for_signal then dies of it.
static void test_signals(void) {
    pid_t child = fork();
    if (child == 0) {
        runfile_watch_signals();
        raise(SIGTERM);
        if (runfile_pending_signal() != SIGTERM) _exit(3);
        runfile_exit_for_signal(SIGTERM);
        _exit(4);
    }
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
          "the child should record SIGTERM, then die of it (status %d)", status);
}

// ---- reading -------------------------------------------------------------------------

// A run file's text with the given top-level fields (each followed by a comma) and runs.
static const char *run_file_text(const char *fields, const char *runs) {
    static char text[4096];
    snprintf(text, sizeof text, "{\"schema\": \"airbench.c/run-v1\", \"variant\": \"airbench94\", "
             "%s \"runs\": %s}", fields, runs);
    return text;
}

#define TWO_RUNS "[{\"seed\": 0, \"accuracy\": 0.94, \"time_s\": 1.5}, " \
                 "{\"seed\": 1, \"accuracy\": 0.95, \"time_s\": 2.5}]"

static int parse(const char *text, RunFile *f, char *err) {
    return runfile_parse(text, strlen(text), "mem.json", f, err, ERR_SIZE);
}

// A file from before "complete" and the other new fields: complete, with defaults.
static void test_read_old_file(void) {
    RunFile f;
    char err[ERR_SIZE] = "";
    int status = parse(run_file_text("\"gpu\": {\"name\": \"NVIDIA H100 80GB HBM3\", \"driver\": "
                                     "\"580.159.04\"}, \"config\": {\"batch_size\": 1024},", TWO_RUNS), &f, err);
    CHECK(status == 0, "an old file: %s", err);
    if (status) return;
    CHECK(f.complete == 1 && !f.incomplete_reason[0], "an old file counts as complete");
    CHECK(!strcmp(f.gpu_driver, "580.159.04"), "gpu.driver is read as the driver: '%s'", f.gpu_driver);
    CHECK(f.n == 2 && f.n_runs == 2 && f.n_diverged == 0, "runs: n %d of %d", f.n, f.n_runs);
    CHECK(f.accuracy[1] == 0.95 && f.time_s[0] == 1.5 && f.seed[1] == 1, "the runs' numbers");
    CHECK(f.batch_size == 1024 && isnan(f.epochs) && !f.overrides[0] && f.git_dirty == -1 &&
          isnan(f.target_accuracy), "defaults for what the file does not record");
    runfile_free(&f);
}

static void test_read_new_fields(void) {
    RunFile f;
    char err[ERR_SIZE] = "";
    const char *runs = "[{\"seed\": 0, \"accuracy\": 0.94, \"time_s\": 1.5}, "
                       "{\"seed\": 1, \"diverged\": true, \"divergence\": \"loss is NaN\", \"accuracy\": null},"
                       "{\"seed\": 2, \"accuracy\": 0.95, \"time_s\": 2.5}]";
    int status = parse(run_file_text(
        "\"complete\": false, \"incomplete_reason\": \"SIGTERM\", \"git_diff_sha256\": \"abc\", "
        "\"gpu\": {\"driver\": \"old\", \"driver_version\": \"580.159.04\"}, \"config\": {\"overrides\": "
        "{\"lr\": 11.0, \"translate_mode\": \"derandomized\", \"muon\": true, \"widths\": [64, 128, 128]}},",
        runs), &f, err);
    CHECK(status == 0, "new fields: %s", err);
    if (status) return;
    CHECK(f.complete == 0 && !strcmp(f.incomplete_reason, "SIGTERM"), "complete false with its reason");
    CHECK(!strcmp(f.git_diff_sha256, "abc") && !strcmp(f.gpu_driver, "580.159.04"),
          "git_diff_sha256 and driver_version (over driver): '%s' '%s'", f.git_diff_sha256, f.gpu_driver);
    CHECK(!strcmp(f.overrides, "lr=11, translate_mode=derandomized, muon=true, widths=[64,128,128]"),
          "overrides: '%s'", f.overrides);
    CHECK(f.n_runs == 3 && f.n == 2 && f.n_diverged == 1, "a diverged run is kept but does not count");
    CHECK(f.runs[1].diverged && !strcmp(f.runs[1].divergence, "loss is NaN") && isnan(f.runs[1].accuracy),
          "the diverged run's fields");
    CHECK(f.seed[1] == 2 && f.accuracy[1] == 0.95, "the runs that count skip the diverged one");
    runfile_free(&f);
}

// runfile_parse reads exactly size bytes: no NUL needed, and what follows is ignored.
static void test_read_buffer_bounds(void) {
    char buffer[4096];
    RunFile f;
    char err[ERR_SIZE] = "";
    const char *text = run_file_text("", TWO_RUNS);
    size_t size = strlen(text);
    memcpy(buffer, text, size);
    memcpy(buffer + size, "garbage", 7);  // no NUL anywhere after the document
    CHECK(runfile_parse(buffer, size, "mem.json", &f, err, sizeof err) == 0, "bounded parse: %s", err);
    runfile_free(&f);
    CHECK(runfile_parse(buffer, size + 7, "mem.json", &f, err, sizeof err) == -1 &&
          strstr(err, "mem.json: not valid JSON"), "text after the document: %s", err);
    CHECK(runfile_parse(buffer, 0, "mem.json", &f, err, sizeof err) == -1 && strstr(err, "empty"),
          "empty: %s", err);
}

// What the writer writes, the reader reads.
static void test_read_back_written(void) {
    char path[256], err[ERR_SIZE] = "";
    snprintf(path, sizeof path, "%s/roundtrip.json", tmp_dir);
    cJSON *header = cJSON_CreateObject();
    cJSON_AddStringToObject(header, "variant", "airbench94-muon");
    RunFileWriter *w = runfile_begin(path, header, err, sizeof err);
    CHECK(w != NULL, "runfile_begin: %s", err);
    if (!w) return;
    runfile_add_run(w, run_json(7, 0.941, 1.25), err, sizeof err);
    RunFile f;
    CHECK(runfile_load(path, &f, err, sizeof err) == 0 && f.complete == 0 && f.n == 1,
          "a file being written reads as incomplete with its runs so far: %s", err);
    runfile_free(&f);
    runfile_end(w, NULL, err, sizeof err);
    CHECK(runfile_load(path, &f, err, sizeof err) == 0, "load: %s", err);
    CHECK(f.complete == 1 && f.n == 1 && f.seed[0] == 7 && f.accuracy[0] == 0.941 &&
          !strcmp(f.variant, "airbench94-muon"), "the ended file reads back");
    runfile_free(&f);
}

// Every mistyped or out-of-range field is refused with a message that names it.
static void test_read_refuses_bad_fields(void) {
    static const struct {
        const char *fields, *runs, *says;
    } cases[] = {
        {"\"complete\": \"yes\",", TWO_RUNS, "\"complete\" must be true or false"},
        {"\"incomplete_reason\": 3,", TWO_RUNS, "\"incomplete_reason\" must be a string"},
        {"\"git_dirty\": \"no\",", TWO_RUNS, "\"git_dirty\" must be true or false"},
        {"\"git_diff_sha256\": [],", TWO_RUNS, "\"git_diff_sha256\" must be a string"},
        {"\"gpu\": \"H100\",", TWO_RUNS, "\"gpu\" must be an object"},
        {"\"gpu\": {\"name\": 7},", TWO_RUNS, "\"gpu.name\" must be a string"},
        {"\"target_accuracy\": 94,", TWO_RUNS, "\"target_accuracy\" must be a fraction"},
        {"\"config\": [],", TWO_RUNS, "\"config\" must be an object"},
        {"\"config\": {\"batch_size\": 1e300},", TWO_RUNS, "config.batch_size = 1e+300 is not a whole number"},
        {"\"config\": {\"batch_size\": 2.5},", TWO_RUNS, "config.batch_size = 2.5 is not a whole number"},
        {"\"config\": {\"batch_size\": 0},", TWO_RUNS, "config.batch_size = 0 is not a whole number from 1"},
        {"\"config\": {\"epochs\": -1},", TWO_RUNS, "config.epochs = -1 must be positive"},
        {"\"config\": {\"epochs\": 1e999},", TWO_RUNS, "\"config.epochs\" is not a finite number"},
        {"\"config\": {\"translate_mode\": 1},", TWO_RUNS, "\"config.translate_mode\" must be a string"},
        {"\"config\": {\"overrides\": 3},", TWO_RUNS, "\"config.overrides\" must be an object"},
        {"", "{}", "no \"runs\" array"},
        {"", "[3]", "runs[0] is not an object"},
        {"", "[{\"seed\": 1.5, \"accuracy\": 0.9, \"time_s\": 1}]", "runs[0].seed = 1.5 is not a whole number"},
        {"", "[{\"seed\": 1e300, \"accuracy\": 0.9, \"time_s\": 1}]", "runs[0].seed = 1e+300 is not a whole"},
        {"", "[{\"accuracy\": 1e999, \"time_s\": 1}]", "runs[0].accuracy = inf is out of range"},
        {"", "[{\"accuracy\": 94.1, \"time_s\": 1}]", "accuracies are fractions"},
        {"", "[{\"accuracy\": 0.94, \"time_s\": -1}]", "runs[0].time_s = -1 is out of range"},
        {"", "[{\"accuracy\": 0.94}]", "runs[0] has no numeric \"time_s\""},
        {"", "[{\"diverged\": \"yes\"}]", "\"runs[0].diverged\" must be true or false"},
        {"", "[{\"diverged\": true, \"divergence\": 1}]", "\"runs[0].divergence\" must be a string"},
        {"", "[{\"diverged\": true, \"accuracy\": \"x\"}]", "\"runs[0].accuracy\" must be a number"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        RunFile f;
        char err[ERR_SIZE] = "";
        int status = parse(run_file_text(cases[i].fields, cases[i].runs), &f, err);
        CHECK(status == -1 && strstr(err, "mem.json: ") && strstr(err, cases[i].says),
              "fields '%s' runs '%s': status %d, want -1 and \"%s\", got \"%s\"", cases[i].fields,
              cases[i].runs, status, cases[i].says, err);
        if (status == 0) runfile_free(&f);
    }
    RunFile f;
    char err[ERR_SIZE] = "";
    CHECK(parse("{\"variant\": \"airbench94\"}", &f, err) == -1 && strstr(err, "no \"schema\""),
          "no schema: %s", err);
    CHECK(parse("{\"schema\": \"airbench.c/run-v1\", \"runs\": []}", &f, err) == -1 &&
          strstr(err, "no \"variant\""), "no variant: %s", err);
}

// Every prefix of a valid file parses or fails cleanly (under the sanitizers: no read past
// the prefix, no leak).
static void test_read_every_prefix(void) {
    const char *text = run_file_text(
        "\"complete\": true, \"gpu\": {\"name\": \"G\", \"driver_version\": \"1\"}, "
        "\"config\": {\"batch_size\": 1024, \"overrides\": {\"lr\": 11, \"widths\": [1, 2]}},",
        "[{\"seed\": 0, \"accuracy\": 0.94, \"time_s\": 1.5, \"epochs\": [{\"epoch\": 1}]}, "
        "{\"seed\": 1, \"diverged\": true, \"divergence\": \"x\\\"y\"}]");
    size_t size = strlen(text);
    int failures = 0;
    for (size_t length = 0; length < size; length++) {
        char *copy = malloc(length ? length : 1);  // exactly length bytes: ASan sees overreads
        memcpy(copy, text, length);
        RunFile f;
        char err[ERR_SIZE] = "";
        if (runfile_parse(copy, length, "prefix", &f, err, sizeof err) == 0) failures++;
        if (!err[0]) failures++;
        runfile_free(&f);
        free(copy);
    }
    CHECK(failures == 0, "%d prefixes parsed or failed without a message", failures);
    RunFile f;
    char err[ERR_SIZE] = "";
    CHECK(runfile_parse(text, size, "whole", &f, err, sizeof err) == 0, "the whole text: %s", err);
    runfile_free(&f);
}

int main(void) {
    if (!mkdtemp(tmp_dir)) {
        printf("FAIL: cannot create a temporary folder: %s\n", strerror(errno));
        return 1;
    }
    test_file_after_each_step();
    test_incomplete_and_diverged();
    test_failed_write_keeps_previous();
    test_unwritable();
    test_env_values();
    test_divergence_guard();
    test_signals();
    test_read_old_file();
    test_read_new_fields();
    test_read_buffer_bounds();
    test_read_back_written();
    test_read_refuses_bad_fields();
    test_read_every_prefix();
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", tmp_dir);
    if (system(command) != 0) printf("note: could not remove %s\n", tmp_dir);
    return test_finish("test_runfile");
}
