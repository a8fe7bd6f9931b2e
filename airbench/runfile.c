// runfile.c: writing (and reading) run files; see runfile.h and docs/run-file.md.
#include "runfile.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((format(printf, 3, 4)))
static void set_error(char *err, size_t err_size, const char *fmt, ...) {
    if (!err || !err_size) return;
    va_list args;
    va_start(args, fmt);
    vsnprintf(err, err_size, fmt, args);
    va_end(args);
}

// ---------------------------------------------------------------------------------------
// Writing.

struct RunFileWriter {
    char *path, *tmp_path;
    cJSON *root, *runs;
};

static char *tmp_path_for(const char *path) {
    size_t size = strlen(path) + sizeof ".tmp";
    char *tmp = malloc(size);
    if (tmp) snprintf(tmp, size, "%s.tmp", path);
    return tmp;
}

// Writes all of text to fd; 0 or -1 with errno set.
static int write_all(int fd, const char *text, size_t size) {
    while (size > 0) {
        ssize_t written = write(fd, text, size);
        if (written < 0 && errno == EINTR) continue;
        if (written <= 0) return -1;
        text += written;
        size -= (size_t)written;
    }
    return 0;
}

// Writes text to tmp_path, flushed to disk, and renames it over path: a reader sees the old
// file or the new one, never a mix. On failure nothing is left at tmp_path.
static int replace_file(const char *path, const char *tmp_path, const char *text, char *err,
                        size_t err_size) {
    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        set_error(err, err_size, "cannot write the run file %s: %s (does its directory exist?)",
                  path, strerror(errno));
        return -1;
    }
    int ok = write_all(fd, text, strlen(text)) == 0 && write_all(fd, "\n", 1) == 0 && fsync(fd) == 0;
    int saved_errno = errno;
    if (close(fd) != 0 && ok) ok = 0, saved_errno = errno;
    if (ok && rename(tmp_path, path) != 0) ok = 0, saved_errno = errno;
    if (!ok) {
        unlink(tmp_path);
        set_error(err, err_size, "cannot write the run file %s: %s", path, strerror(saved_errno));
        return -1;
    }
    return 0;
}

int runfile_check_writable(const char *path, char *err, size_t err_size) {
    char *tmp = tmp_path_for(path);
    int fd = tmp ? open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
    if (fd < 0) {
        set_error(err, err_size, "cannot write the run file %s: %s (does its directory exist?)", path,
                  tmp ? strerror(errno) : "out of memory");
        free(tmp);
        return -1;
    }
    close(fd);
    unlink(tmp);
    free(tmp);
    return 0;
}

static double number_or_nan(const cJSON *object, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    return cJSON_IsNumber(item) ? item->valuedouble : NAN;
}

// "summary": n, accuracy mean and sample std, time mean, min and max over the runs that
// did not diverge; n_diverged counts the others.
static cJSON *summary_json(const cJSON *runs) {
    int n = 0, n_diverged = 0;
    double acc_sum = 0.0, time_sum = 0.0, time_min = INFINITY, time_max = -INFINITY;
    const cJSON *run;
    cJSON_ArrayForEach(run, runs) {
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(run, "diverged"))) {
            n_diverged++;
            continue;
        }
        double time_s = number_or_nan(run, "time_s");
        n++;
        acc_sum += number_or_nan(run, "accuracy");
        time_sum += time_s;
        time_min = fmin(time_min, time_s);
        time_max = fmax(time_max, time_s);
    }
    double acc_mean = acc_sum / n, squares = 0.0;
    cJSON_ArrayForEach(run, runs) {
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(run, "diverged"))) continue;
        double deviation = number_or_nan(run, "accuracy") - acc_mean;
        squares += deviation * deviation;
    }
    cJSON *summary = cJSON_CreateObject();
    cJSON_AddNumberToObject(summary, "n", n);
    cJSON_AddNumberToObject(summary, "n_diverged", n_diverged);
    if (n > 0) {
        cJSON_AddNumberToObject(summary, "acc_mean", acc_mean);
        cJSON_AddNumberToObject(summary, "acc_std", n > 1 ? sqrt(squares / (n - 1)) : 0.0);
    }
    if (n > 0 && isfinite(time_sum)) {  // the CPU reference's runs have no GPU time
        cJSON_AddNumberToObject(summary, "time_mean", time_sum / n);
        cJSON_AddNumberToObject(summary, "time_min", time_min);
        cJSON_AddNumberToObject(summary, "time_max", time_max);
    }
    return summary;
}

static int write_root(RunFileWriter *w, char *err, size_t err_size) {
    cJSON_ReplaceItemInObjectCaseSensitive(w->root, "summary", summary_json(w->runs));
    char *text = cJSON_Print(w->root);
    if (!text) {
        set_error(err, err_size, "cannot write the run file %s: out of memory", w->path);
        return -1;
    }
    int status = replace_file(w->path, w->tmp_path, text, err, err_size);
    free(text);
    return status;
}

static void writer_free(RunFileWriter *w) {
    cJSON_Delete(w->root);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

RunFileWriter *runfile_begin(const char *path, cJSON *header, char *err, size_t err_size) {
    RunFileWriter *w = calloc(1, sizeof *w);
    cJSON *root = cJSON_CreateObject();
    if (!w || !root || !(w->path = strdup(path)) || !(w->tmp_path = tmp_path_for(path))) {
        set_error(err, err_size, "cannot write the run file %s: out of memory", path);
        cJSON_Delete(header);
        cJSON_Delete(root);
        if (w) free(w->path);
        free(w);
        return NULL;
    }
    w->root = root;
    cJSON_AddStringToObject(root, "schema", RUNFILE_SCHEMA);
    while (header && header->child) {  // the header's fields, in their order, after "schema"
        cJSON *field = cJSON_DetachItemViaPointer(header, header->child);
        cJSON_AddItemToObject(root, field->string, field);
    }
    cJSON_Delete(header);
    cJSON_AddBoolToObject(root, "complete", 0);
    w->runs = cJSON_AddArrayToObject(root, "runs");
    cJSON_AddNullToObject(root, "summary");
    if (write_root(w, err, err_size)) {
        writer_free(w);
        return NULL;
    }
    return w;
}

int runfile_add_run(RunFileWriter *w, cJSON *run, char *err, size_t err_size) {
    cJSON_AddItemToArray(w->runs, run);
    return write_root(w, err, err_size);
}

int runfile_end(RunFileWriter *w, const char *incomplete_reason, char *err, size_t err_size) {
    cJSON_ReplaceItemInObjectCaseSensitive(w->root, "complete", cJSON_CreateBool(!incomplete_reason));
    if (incomplete_reason) cJSON_AddStringToObject(w->root, "incomplete_reason", incomplete_reason);
    int status = write_root(w, err, err_size);
    writer_free(w);
    return status;
}

static cJSON *recipe_field_json(const Recipe *r, const RecipeField *f) {
    const void *at = (const char *)r + f->offset;
    switch (f->kind) {
    case RECIPE_INT: return cJSON_CreateNumber(*(const int *)at);
    case RECIPE_DOUBLE: return cJSON_CreateNumber(*(const double *)at);
    case RECIPE_WIDTHS: return cJSON_CreateIntArray((const int *)at, 3);
    case RECIPE_ENUM: return cJSON_CreateString(f->choices[*(const int *)at]);
    }
    return cJSON_CreateNull();
}

void runfile_add_recipe(cJSON *config, const Recipe *r, const Recipe *base) {
    cJSON *overrides = cJSON_CreateObject();
    for (int i = 0; i < RECIPE_N_FIELDS; i++) {
        const RecipeField *f = &RECIPE_FIELD_TABLE[i];
        cJSON_AddItemToObject(config, f->name, recipe_field_json(r, f));
        if (!recipe_fields_equal(r, base, f)) cJSON_AddItemToObject(overrides, f->name, recipe_field_json(r, f));
    }
    cJSON_AddItemToObject(config, "overrides", overrides);
}

int runfile_loss_diverged(const double *loss, int n, char *reason, size_t reason_size) {
    for (int e = 0; e < n; e++) {
        if (!isfinite(loss[e])) {
            set_error(reason, reason_size, "the training loss is %g in epoch %d", loss[e], e + 1);
            return 1;
        }
        if (e > 0 && loss[e] > loss[0]) {
            set_error(reason, reason_size, "the training loss rose above its first-epoch level (%.4f) to %.4f in "
                      "epoch %d", loss[0], loss[e], e + 1);
            return 1;
        }
    }
    return 0;
}

cJSON *runfile_env_value(const char *text) {
    if (!strcmp(text, "true") || !strcmp(text, "false")) return cJSON_CreateBool(text[0] == 't');
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    // strtod also takes hex, "inf" and "nan": only plain decimal text becomes a number.
    int decimal = *text && strspn(text, "+-0123456789.eE") == strlen(text);
    if (decimal && end != text && !*end && !errno && isfinite(value)) return cJSON_CreateNumber(value);
    return cJSON_CreateString(text);
}

// ---------------------------------------------------------------------------------------
// Signals.

static volatile sig_atomic_t pending_signal;

static void record_signal(int signal_number) { pending_signal = signal_number; }

void runfile_watch_signals(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = record_signal;
    sigemptyset(&action.sa_mask);
    const int signals[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) sigaction(signals[i], &action, NULL);
}

int runfile_pending_signal(void) { return pending_signal; }

void runfile_exit_for_signal(int signal_number) {
    signal(signal_number, SIG_DFL);
    raise(signal_number);
    _exit(128 + signal_number);  // not reached unless the default action was ignored
}
