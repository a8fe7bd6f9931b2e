// fake_trainer.c: a stand-in for build/airbenchXX in the harness tests (bench.sh's sandbox
// and the fault-injection test). It takes the trainer's flags, "trains" each run by sleeping,
// and writes its run file through the real writer (airbench/runfile.c), watching signals
// the way the trainer does: checked between steps, the file ended as incomplete with the
// reason, the signal re-raised. Nothing touches a GPU.
//
// Environment (all optional):
//   FAKE_TRAINER_RUN_MS       milliseconds per run and for the warm-up (default 0)
//   FAKE_TRAINER_TIME_S       base of the recorded time_s (default 2.9); run with seed S
//                             records BASE + 0.01 * (S % 5)
//   FAKE_TRAINER_DIVERGE_AT   run K (1-based) diverges: recorded with "diverged": true,
//                             the file ended with the reason, exit 1
//   FAKE_TRAINER_FAIL_WRITE_AT  writing run K fails (PATH.tmp is made a directory, so the
//                             rewrite cannot open it): the error is printed, exit 1
//   FAKE_TRAINER_FAIL         exit with this status at once, writing nothing
//   FAKE_TRAINER_ONLY         FAKE_TRAINER_RUN_MS, _DIVERGE_AT, _FAIL_WRITE_AT and _FAIL
//                             apply only when argv[0] contains this text (one side of
//                             bench.sh --against)
//   FAKE_TRAINER_LOG          a file to which one line is appended at the start,
//                             "trainer pid=P ARGV0 ARGS...", and one per finished run,
//                             "finished pid=P seed=S" ("diverged ..." for a diverged one)
//   FAKE_TRAINER_ARGV_DIR     a folder in which each start writes its command line to
//                             <pid>.argv, one argument a line (to replay it against the
//                             real trainer: tests/test_gpu_check.sh)
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runfile.h"

#define MAX_ENV 32
#define STEPS_PER_RUN 10

typedef struct {
    const char *json_path, *env[MAX_ENV];
    long runs, seed;
    int n_env, warmup;
} Options;

static const char *program;
static FILE *log_file;

__attribute__((format(printf, 2, 3), noreturn))
static void die(int status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "%s: ", program);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    exit(status);
}

// An integer environment variable; fallback when unset, or when FAKE_TRAINER_ONLY names
// another program.
static long fault_setting(const char *name, long fallback) {
    const char *only = getenv("FAKE_TRAINER_ONLY");
    const char *value = getenv(name);
    if (!value || (only && *only && !strstr(program, only))) return fallback;
    return strtol(value, NULL, 10);
}

static long parse_long(const char *flag, const char *value, long lo, long hi) {
    char *end;
    errno = 0;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || errno || end == value || *end || v < lo || v > hi)
        die(2, "bad value '%s' for %s: expected an integer in %ld..%ld", value ? value : "(missing)", flag, lo, hi);
    return v;
}

// The trainer's flags: the ones the fake uses, and the others taken and ignored.
static Options parse_args(int argc, char **argv) {
    Options o = {.runs = 1, .warmup = 1};
    const char *ignored[] = {"--data", "--tta", "--batch", "--epochs", "--conv-algo", "--set",
                             "--test-images", "--widths", "--translate-mode", "--variant",
                             "--stats-blocks", "--graphs", "--wgrad-stream", "--muon-streams", "--fused-bn",
                             "--conv-cache", "--conv-graph", "--warmup-epochs", "--lr-scaling", "--bn-group",
                             "--bn-wd"};
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(flag, "--quiet")) continue;
        if (!strcmp(flag, "--no-warmup")) {
            o.warmup = 0;
            continue;
        }
        int known = 0;
        for (size_t k = 0; k < sizeof ignored / sizeof *ignored; k++) known |= !strcmp(flag, ignored[k]);
        if (!strcmp(flag, "--json")) o.json_path = value;
        else if (!strcmp(flag, "--runs")) o.runs = parse_long(flag, value, 1, 100000);
        else if (!strcmp(flag, "--seed")) o.seed = parse_long(flag, value, 0, 2000000000);
        else if (!strcmp(flag, "--env")) {
            if (!value || !strchr(value, '=') || o.n_env == MAX_ENV) die(2, "bad value for --env: expected KEY=VALUE");
            o.env[o.n_env++] = value;
        } else if (!known) die(2, "unknown flag '%s'", flag);
        if (!value) die(2, "%s needs a value", flag);
        i++;
    }
    if (!o.json_path) die(2, "--json FILE is required");
    return o;
}

static cJSON *header_json(const Options *o, int argc, char **argv) {
    cJSON *header = cJSON_CreateObject();
    const char *slash = strrchr(argv[0], '/');
    cJSON_AddStringToObject(header, "variant", slash ? slash + 1 : argv[0]);
    cJSON_AddNumberToObject(header, "target_accuracy", 0.94);
    cJSON_AddStringToObject(header, "git_commit", "0000000000000000000000000000000000000000");
    cJSON_AddBoolToObject(header, "git_dirty", 0);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(header, "gpu"), "name", "NVIDIA H100 80GB HBM3");
    char command[4096] = "";
    for (int i = 0, used = 0; i < argc && used < (int)sizeof command; i++)
        used += snprintf(command + used, sizeof command - used, i ? " %s" : "%s", argv[i]);
    cJSON_AddStringToObject(header, "command", command);
    cJSON *env = cJSON_AddObjectToObject(header, "environment");
    for (int i = 0; i < o->n_env; i++) {
        const char *eq = strchr(o->env[i], '=');
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->env[i]), o->env[i]);
        cJSON_AddItemToObject(env, key, runfile_env_value(eq + 1));
    }
    cJSON *config = cJSON_AddObjectToObject(header, "config");  // as the trainer's, seed included
    cJSON_AddNumberToObject(config, "batch_size", 1024);
    cJSON_AddNumberToObject(config, "epochs", 9.9);
    cJSON_AddNumberToObject(config, "seed", (double)o->seed);
    return header;
}

// One run's record, with an epoch log so that the file grows by about 1 KB a run, as the
// trainer's does (the full-disk test relies on it).
static cJSON *run_json(long seed, int diverged) {
    static const double accuracies[5] = {0.9412, 0.9398, 0.9405, 0.9391, 0.9420};
    cJSON *run = cJSON_CreateObject();
    cJSON_AddNumberToObject(run, "seed", (double)seed);
    cJSON_AddNumberToObject(run, "accuracy", diverged ? 0.1 : accuracies[seed % 5]);
    const char *base = getenv("FAKE_TRAINER_TIME_S");
    cJSON_AddNumberToObject(run, "time_s", (base ? atof(base) : 2.9) + 0.01 * (double)(seed % 5));
    if (diverged) cJSON_AddTrueToObject(run, "diverged");
    cJSON *epochs = cJSON_AddArrayToObject(run, "epochs");
    for (int e = 1; e <= 10; e++) {
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "epoch", e);
        cJSON_AddNumberToObject(row, "train_loss", 1.0 / e);
        cJSON_AddNumberToObject(row, "test_acc", 0.094 * e);
        cJSON_AddItemToArray(epochs, row);
    }
    return run;
}

static const char *signal_name(int signal_number) {
    return signal_number == SIGINT ? "SIGINT" : signal_number == SIGTERM ? "SIGTERM" : "SIGHUP";
}

// Ends the file as interrupted and dies of the signal, as the trainer does.
static void stop_if_signalled(RunFileWriter *w, long done, long total) {
    int signal_number = runfile_pending_signal();
    if (!signal_number) return;
    char reason[128], err[1024];
    snprintf(reason, sizeof reason, "interrupted by %s after %ld of %ld runs", signal_name(signal_number), done, total);
    if (runfile_end(w, reason, err, sizeof err)) fprintf(stderr, "%s: %s\n", program, err);
    runfile_exit_for_signal(signal_number);
}

// Sleeps FAKE_TRAINER_RUN_MS in STEPS_PER_RUN steps, checking for a signal between them.
static void train(RunFileWriter *w, long done, long total) {
    long step_ns = fault_setting("FAKE_TRAINER_RUN_MS", 0) * 1000000 / STEPS_PER_RUN;
    for (int step = 0; step < STEPS_PER_RUN; step++) {
        stop_if_signalled(w, done, total);
        struct timespec pause = {step_ns / 1000000000, step_ns % 1000000000};
        while (nanosleep(&pause, &pause) && errno == EINTR && !runfile_pending_signal()) {}
    }
    stop_if_signalled(w, done, total);
}

static void add_run(RunFileWriter *w, const Options *o, long index, int diverged) {
    char err[1024];
    if (index + 1 == fault_setting("FAKE_TRAINER_FAIL_WRITE_AT", 0)) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", o->json_path);
        mkdir(tmp, 0755);  // the rewrite cannot open PATH.tmp now
    }
    if (runfile_add_run(w, run_json(o->seed + index, diverged), err, sizeof err)) die(1, "%s", err);
    if (log_file) fprintf(log_file, "%s pid=%d seed=%ld\n", diverged ? "diverged" : "finished", (int)getpid(), o->seed + index);
}

static void save_argv(int argc, char **argv) {
    const char *dir = getenv("FAKE_TRAINER_ARGV_DIR");
    if (!dir || !*dir) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%d.argv", dir, (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f) die(1, "cannot write %s: %s", path, strerror(errno));
    for (int i = 0; i < argc; i++) fprintf(f, "%s\n", argv[i]);
    if (fclose(f)) die(1, "cannot write %s: %s", path, strerror(errno));
}

int main(int argc, char **argv) {
    runfile_watch_signals();
    program = argv[0];
    save_argv(argc, argv);
    const char *log_path = getenv("FAKE_TRAINER_LOG");
    if (log_path && (log_file = fopen(log_path, "a"))) {
        setvbuf(log_file, NULL, _IOLBF, 0);
        fprintf(log_file, "trainer pid=%d", (int)getpid());
        for (int i = 0; i < argc; i++) fprintf(log_file, " %s", argv[i]);
        fputc('\n', log_file);
    }
    Options o = parse_args(argc, argv);
    long fail = fault_setting("FAKE_TRAINER_FAIL", 0);
    if (fail) die((int)fail, "failing on purpose (FAKE_TRAINER_FAIL=%ld)", fail);
    char err[1024];
    RunFileWriter *w = runfile_begin(o.json_path, header_json(&o, argc, argv), err, sizeof err);
    if (!w) die(1, "%s", err);
    if (o.warmup) train(w, 0, o.runs);
    long diverge_at = fault_setting("FAKE_TRAINER_DIVERGE_AT", 0);
    for (long i = 0; i < o.runs; i++) {
        train(w, i, o.runs);
        if (i + 1 == diverge_at) {
            add_run(w, &o, i, 1);
            char reason[128];
            snprintf(reason, sizeof reason, "training diverged in run %ld (seed %ld)", i + 1, o.seed + i);
            if (runfile_end(w, reason, err, sizeof err)) die(1, "%s", err);
            die(1, "%s", reason);
        }
        add_run(w, &o, i, 0);
        printf("run %4ld  seed %6ld\n", i, o.seed + i);
        fflush(stdout);
    }
    if (runfile_end(w, NULL, err, sizeof err)) die(1, "%s", err);
    return 0;
}
