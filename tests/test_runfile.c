// test_runfile.c: the run-file writer (airbench/runfile.c). After every step the file on disk
// is valid JSON holding every finished run, no temporary file stays behind, a failed write
// keeps the previous contents, the end marks the file complete or incomplete with its
// reason, environment values get their JSON types, and a watched signal is recorded and
// re-raised.
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
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", tmp_dir);
    if (system(command) != 0) printf("note: could not remove %s\n", tmp_dir);
    return test_finish("test_runfile");
}
