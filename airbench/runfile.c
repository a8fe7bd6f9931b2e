// runfile.c: writing and reading run files; see runfile.h and docs/run-file.md.
#include "runfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

int runfile_write_all(int fd, const char *text, size_t size) {
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
    int ok = runfile_write_all(fd, text, strlen(text)) == 0 && runfile_write_all(fd, "\n", 1) == 0 && fsync(fd) == 0;
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
// Reading.

// What a path that is not a regular file is, for the message that refuses it.
static const char *file_kind(mode_t mode) {
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a plain file";
}

static int refuse_too_large(const char *path, long long size, char *err, size_t err_size) {
    set_error(err, err_size, "%s: larger than the %d MiB a run file may have (%lld bytes); is "
              "this a run file?", path, RUNFILE_MAX_BYTES >> 20, size);
    return -1;
}

// Reads the open regular file fd to its end, at most RUNFILE_MAX_BYTES (it may grow while
// it is read): NUL-terminated text of *size bytes, or NULL and err.
static char *read_to_end(int fd, const char *path, size_t expected, size_t *size, char *err,
                         size_t err_size) {
    size_t capacity = expected + 1, used = 0;  // one byte more than expected shows growth
    char *text = malloc(capacity + 1);
    while (text) {
        ssize_t got = read(fd, text + used, capacity - used);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            set_error(err, err_size, "%s: cannot read: %s", path, strerror(errno));
            free(text);
            return NULL;
        }
        if (got == 0) break;
        used += (size_t)got;
        if (used < capacity) continue;
        if (capacity > RUNFILE_MAX_BYTES) {
            refuse_too_large(path, (long long)used, err, err_size);
            free(text);
            return NULL;
        }
        capacity = capacity * 2 < RUNFILE_MAX_BYTES + 1u ? capacity * 2 : RUNFILE_MAX_BYTES + 1u;
        char *bigger = realloc(text, capacity + 1);
        if (!bigger) free(text);
        text = bigger;
    }
    if (!text) {
        set_error(err, err_size, "%s: cannot read: out of memory", path);
        return NULL;
    }
    text[used] = '\0';
    *size = used;
    return text;
}

// Reads the regular file at path whole. The open does not block (a FIFO with no writer
// would block a plain open forever) and anything but a regular file is refused before a
// byte is read, as is a file above RUNFILE_MAX_BYTES. NULL and err on failure.
static char *read_regular_file(const char *path, size_t *size, char *err, size_t err_size) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        set_error(err, err_size, "%s: cannot open: %s (check the path; bench.sh writes run files "
                  "under runs/)", path, strerror(errno));
        return NULL;
    }
    struct stat info;
    char *text = NULL;
    if (fstat(fd, &info) != 0)
        set_error(err, err_size, "%s: cannot read: %s", path, strerror(errno));
    else if (!S_ISREG(info.st_mode))
        set_error(err, err_size, "%s: not a regular file (%s); give the path of a run file",
                  path, file_kind(info.st_mode));
    else if (info.st_size > RUNFILE_MAX_BYTES)
        refuse_too_large(path, (long long)info.st_size, err, err_size);
    else
        text = read_to_end(fd, path, (size_t)info.st_size, size, err, err_size);
    close(fd);
    return text;
}

// Whether text ends inside an unclosed string, object or array: the mark of a file cut
// short (a writer killed mid-write before writes became atomic, a partial copy).
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

static int only_whitespace(const char *text, const char *end) {
    for (; text < end; text++)
        if (!strchr(" \t\r\n", *text)) return 0;
    return 1;
}

// The parsed document, or NULL and a message with the line and column of the first error.
static cJSON *parse_document(const char *text, size_t size, const char *name, char *err,
                             size_t err_size) {
    if (size == 0) {
        set_error(err, err_size, "%s: the file is empty (the trainer may have stopped before "
                  "writing it); rerun the benchmark", name);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, size, &end, 0);
    if (root && only_whitespace(end, text + size)) return root;
    cJSON_Delete(root);  // a document followed by more than whitespace is no document
    int line = 1, column = 1;
    for (const char *p = text; end && p < end && p < text + size; p++) {
        if (*p == '\n') line++, column = 1;
        else column++;
    }
    set_error(err, err_size, "%s: not valid JSON (parse error at line %d, column %d): %s", name,
              line, column,
              json_is_unclosed(text, size)
                  ? "the text ends inside an unclosed string, object or array, so the file "
                    "looks truncated; rerun the benchmark or restore the file"
                  : "is this an airbench.c run file?");
    return NULL;
}

// The state of one parse: the file being filled in and where a message goes.
typedef struct {
    RunFile *file;
    char *err;
    size_t err_size;
} Reader;

__attribute__((format(printf, 2, 3)))
static int reader_fail(Reader *r, const char *fmt, ...) {
    int used = snprintf(r->err, r->err_size, "%s: ", r->file->name);
    if (used >= 0 && (size_t)used < r->err_size) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(r->err + used, r->err_size - (size_t)used, fmt, args);
        va_end(args);
    }
    return -1;
}

// The member key of obj, NULL when obj is NULL or the member is absent or null (a writer
// writes null for what it does not know).
static const cJSON *member(const cJSON *obj, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(item) ? NULL : item;
}

// The field readers below leave their default when the member is absent or null, and fail
// when it has another type. `where` prefixes key in messages: "gpu.", "runs[3].".
static int object_field(Reader *r, const cJSON *obj, const char *where, const char *key,
                        const cJSON **out) {
    *out = member(obj, key);
    if (*out && !cJSON_IsObject(*out))
        return reader_fail(r, "\"%s%s\" must be an object", where, key);
    return 0;
}

static int string_field(Reader *r, const cJSON *obj, const char *where, const char *key,
                        const char **out) {
    const cJSON *item = member(obj, key);
    if (item && !cJSON_IsString(item))
        return reader_fail(r, "\"%s%s\" must be a string", where, key);
    if (item) *out = item->valuestring;
    return 0;
}

static int bool_field(Reader *r, const cJSON *obj, const char *where, const char *key, int *out) {
    const cJSON *item = member(obj, key);
    if (item && !cJSON_IsBool(item))
        return reader_fail(r, "\"%s%s\" must be true or false", where, key);
    if (item) *out = cJSON_IsTrue(item);
    return 0;
}

// A finite number (cJSON reads 1e999 as infinity).
static int number_field(Reader *r, const cJSON *obj, const char *where, const char *key,
                        double *out) {
    const cJSON *item = member(obj, key);
    if (item && !cJSON_IsNumber(item))
        return reader_fail(r, "\"%s%s\" must be a number", where, key);
    if (item && !isfinite(item->valuedouble))
        return reader_fail(r, "\"%s%s\" is not a finite number", where, key);
    if (item) *out = item->valuedouble;
    return 0;
}

// A whole number in [min, max]: checked before anyone converts it to an integer type.
static int whole_number_field(Reader *r, const cJSON *obj, const char *where, const char *key,
                              double min, double max, double *out) {
    if (number_field(r, obj, where, key, out)) return -1;
    if (!isnan(*out) && (*out != floor(*out) || *out < min || *out > max))
        return reader_fail(r, "%s%s = %g is not a whole number from %.0f to %.0f", where, key,
                           *out, min, max);
    return 0;
}

// Appends text to the growing string *buffer (used bytes so far in *used). -1 without memory.
static int append(char **buffer, size_t *used, const char *text) {
    size_t length = strlen(text);
    char *bigger = realloc(*buffer, *used + length + 1);
    if (!bigger) return -1;
    memcpy(bigger + *used, text, length + 1);
    *buffer = bigger;
    *used += length;
    return 0;
}

// An override's value as a user would type it after --set NAME=: 11, 0.15, random, true.
static char *override_value(const cJSON *value) {
    char number[32];
    if (cJSON_IsNumber(value)) {
        snprintf(number, sizeof number, "%g", value->valuedouble);
        return strdup(number);
    }
    if (cJSON_IsString(value)) return strdup(value->valuestring);
    return cJSON_PrintUnformatted(value);  // true, false, [64,256,256]
}

// config.overrides, {"lr": 11, "label_smoothing": 0.15}, as "lr=11, label_smoothing=0.15".
static int read_overrides(Reader *r, const cJSON *config) {
    const cJSON *overrides, *item;
    if (object_field(r, config, "config.", "overrides", &overrides)) return -1;
    size_t used = 0;
    int failed = append(&r->file->overrides, &used, "");
    cJSON_ArrayForEach(item, overrides) {
        char *value = override_value(item);
        failed = failed || !value || (used && append(&r->file->overrides, &used, ", ")) ||
                 append(&r->file->overrides, &used, item->string) ||
                 append(&r->file->overrides, &used, "=") ||
                 append(&r->file->overrides, &used, value);
        free(value);
    }
    return failed ? reader_fail(r, "out of memory") : 0;
}

// The config's settings that reports show: batch size, epochs, translation, overrides.
static int read_config(Reader *r, const cJSON *root) {
    RunFile *f = r->file;
    const cJSON *config;
    double batch_size = NAN;
    if (object_field(r, root, "", "config", &config) ||
        whole_number_field(r, config, "config.", "batch_size", 1, INT_MAX, &batch_size) ||
        number_field(r, config, "config.", "epochs", &f->epochs) ||
        string_field(r, config, "config.", "translate_mode", &f->translate_mode))
        return -1;
    if (!isnan(f->epochs) && !(f->epochs > 0))
        return reader_fail(r, "config.epochs = %g must be positive", f->epochs);
    f->batch_size = isnan(batch_size) ? 0 : (int)batch_size;
    return read_overrides(r, config);
}

static int read_schema(Reader *r, const cJSON *root) {
    if (!cJSON_IsObject(root))
        return reader_fail(r, "the top level is not a JSON object; expected an %s run file",
                           RUNFILE_SCHEMA);
    const char *schema = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "schema"));
    if (!schema)
        return reader_fail(r, "no \"schema\" string; expected \"%s\" (not a run file written by "
                           "the trainer, bench.sh or dev/run_peer.py?)", RUNFILE_SCHEMA);
    if (strcmp(schema, RUNFILE_SCHEMA) != 0)
        return reader_fail(r, "schema is \"%s\", but this program reads \"%s\"", schema,
                           RUNFILE_SCHEMA);
    return 0;
}

// The top-level fields: what ran where, from which source, whether the file is complete.
static int read_header(Reader *r, const cJSON *root) {
    RunFile *f = r->file;
    const cJSON *gpu;
    if (string_field(r, root, "", "variant", &f->variant)) return -1;
    if (!f->variant[0]) return reader_fail(r, "no \"variant\" string (e.g. \"airbench94\")");
    if (object_field(r, root, "", "gpu", &gpu) ||
        string_field(r, gpu, "gpu.", "name", &f->gpu_name) ||
        string_field(r, gpu, "gpu.", "driver", &f->gpu_driver) ||  // the name in older files
        string_field(r, gpu, "gpu.", "driver_version", &f->gpu_driver) ||
        string_field(r, root, "", "git_commit", &f->git_commit) ||
        string_field(r, root, "", "git_diff_sha256", &f->git_diff_sha256) ||
        bool_field(r, root, "", "git_dirty", &f->git_dirty) ||
        number_field(r, root, "", "target_accuracy", &f->target_accuracy) ||
        bool_field(r, root, "", "complete", &f->complete) ||
        string_field(r, root, "", "incomplete_reason", &f->incomplete_reason))
        return -1;
    if (!isnan(f->target_accuracy) && !(f->target_accuracy > 0 && f->target_accuracy < 1))
        return reader_fail(r, "\"target_accuracy\" must be a fraction in (0, 1) such as 0.94");
    return read_config(r, root);
}

// A run's accuracy or time: present, a finite number in [min, max].
static int run_measurement(Reader *r, const cJSON *item, int i, const char *key, double min,
                           double max, const char *hint, double *out) {
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(item, key);
    if (!cJSON_IsNumber(value)) return reader_fail(r, "runs[%d] has no numeric \"%s\"", i, key);
    *out = value->valuedouble;
    if (!isfinite(*out) || *out < min || *out > max)
        return reader_fail(r, "runs[%d].%s = %g is out of range (%s)", i, key, *out, hint);
    return 0;
}

// One run. A diverged run needs no accuracy or time (the writer may have none to give).
static int read_run(Reader *r, const cJSON *item, int i, RunFileRun *run) {
    char where[32];
    snprintf(where, sizeof where, "runs[%d].", i);
    *run = (RunFileRun){.seed = NAN, .accuracy = NAN, .time_s = NAN, .divergence = ""};
    if (!cJSON_IsObject(item)) return reader_fail(r, "runs[%d] is not an object", i);
    if (bool_field(r, item, where, "diverged", &run->diverged) ||
        string_field(r, item, where, "divergence", &run->divergence) ||
        whole_number_field(r, item, where, "seed", -9007199254740992.0, 9007199254740992.0,
                           &run->seed))
        return -1;
    if (run->diverged)
        return number_field(r, item, where, "accuracy", &run->accuracy) ||
               number_field(r, item, where, "time_s", &run->time_s) ? -1 : 0;
    if (run_measurement(r, item, i, "accuracy", 0.0, 1.0, "accuracies are fractions: 0.94, not 94",
                        &run->accuracy) ||
        run_measurement(r, item, i, "time_s", 1e-9, INFINITY, "a time in seconds must be positive",
                        &run->time_s))
        return -1;
    return 0;
}

// Every run, then the seeds, accuracies and times of those that did not diverge.
static int read_runs(Reader *r, const cJSON *root) {
    RunFile *f = r->file;
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(root, "runs"), *item;
    if (!cJSON_IsArray(runs)) return reader_fail(r, "no \"runs\" array");
    f->n_runs = cJSON_GetArraySize(runs);
    size_t count = f->n_runs > 0 ? (size_t)f->n_runs : 1;  // malloc(0) may return NULL
    f->runs = malloc(count * sizeof *f->runs);
    f->seed = malloc(count * sizeof *f->seed);
    f->accuracy = malloc(count * sizeof *f->accuracy);
    f->time_s = malloc(count * sizeof *f->time_s);
    if (!f->runs || !f->seed || !f->accuracy || !f->time_s) return reader_fail(r, "out of memory");
    int i = 0;
    cJSON_ArrayForEach(item, runs) {
        RunFileRun *run = &f->runs[i];
        if (read_run(r, item, i++, run)) return -1;
        if (run->diverged) {
            f->n_diverged++;
            continue;
        }
        f->seed[f->n] = run->seed;
        f->accuracy[f->n] = run->accuracy;
        f->time_s[f->n++] = run->time_s;
    }
    return 0;
}

int runfile_parse(const char *text, size_t size, const char *name, RunFile *out, char *err,
                  size_t err_size) {
    static const char none[] = "";
    *out = (RunFile){.name = strdup(name), .variant = none, .gpu_name = none,
                     .gpu_driver = none, .git_commit = none, .git_diff_sha256 = none,
                     .git_dirty = -1, .target_accuracy = NAN, .epochs = NAN,
                     .translate_mode = none, .complete = 1, .incomplete_reason = none};
    if (!out->name) {
        set_error(err, err_size, "%s: out of memory", name);
        return -1;
    }
    Reader r = {.file = out, .err = err, .err_size = err_size};
    out->root = parse_document(text, size, name, err, err_size);
    int status = out->root ? 0 : -1;
    if (status == 0) status = read_schema(&r, out->root);
    if (status == 0) status = read_header(&r, out->root);
    if (status == 0) status = read_runs(&r, out->root);
    if (status) runfile_free(out);
    return status;
}

int runfile_load(const char *path, RunFile *out, char *err, size_t err_size) {
    size_t size = 0;
    char *text = read_regular_file(path, &size, err, err_size);
    if (!text) {
        *out = (RunFile){0};
        return -1;
    }
    int status = runfile_parse(text, size, path, out, err, err_size);
    free(text);
    return status;
}

void runfile_free(RunFile *f) {
    cJSON_Delete(f->root);
    free(f->name);
    free(f->overrides);
    free(f->runs);
    free(f->seed);
    free(f->accuracy);
    free(f->time_s);
    *f = (RunFile){0};
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
