// runfile.h: the run file, the JSON record of a benchmark (schema in docs/run-file.md).
//
// The trainers write it run by run, and benchstat reads it: one module, so the schema
// lives in one place. Writing is crash-safe: after every finished run the whole file is
// rewritten to a temporary sibling (PATH.tmp) and renamed over PATH, so PATH is valid JSON
// at every moment and holds every completed run. A file whose writer stopped early (a
// divergence, an error, a signal) says "complete": false with the reason.
#pragma once
#include <signal.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "recipe.h"

#define RUNFILE_SCHEMA "airbench.c/run-v1"

// ---- writing ----------------------------------------------------------------------------
typedef struct RunFileWriter RunFileWriter;

// Before any long work: fails (-1, message in err) unless PATH.tmp can be created in
// PATH's directory. Creates nothing that stays.
int runfile_check_writable(const char *path, char *err, size_t err_size);

// Starts the run file at path: header (taken over) holds the top-level fields; this adds
// "schema", "complete": false, an empty "runs" array, and writes the file. NULL (and err)
// when it cannot be written; header is freed then too.
RunFileWriter *runfile_begin(const char *path, cJSON *header, char *err, size_t err_size);

// Appends one run object (taken over), recomputes "summary" and rewrites the file.
// 0, or -1 with err: the file on disk then still holds the runs before this one.
int runfile_add_run(RunFileWriter *w, cJSON *run, char *err, size_t err_size);

// Ends the file: "complete": true when incomplete_reason is NULL, else "complete": false
// and "incomplete_reason". Rewrites the file and frees w. 0, or -1 with err.
int runfile_end(RunFileWriter *w, const char *incomplete_reason, char *err, size_t err_size);

// Adds every field of recipe r to the config object under its name (widths as an array,
// enum fields by name), and "overrides": the fields whose value differs from base (the
// named variant's recipe) with their new values.
void runfile_add_recipe(cJSON *config, const Recipe *r, const Recipe *base);

// The divergence guard: whether a run with these per-epoch mean training losses diverged,
// with the reason. A loss that is not finite, or a later epoch's loss above the first
// epoch's (a healthy run's stays below 0.81 of it: every run of 94, 94-muon, 95, 96 and
// batch 512-2048 measured on an H100 at 790450e; batch 4096 rose above it in 8 of 10 runs
// and 8192 in 10 of 10, ending at 48-65% and 19-22%). 1 and the reason, or 0.
int runfile_loss_diverged(const double *epoch_losses, int n_epochs, char *reason, size_t reason_size);

// Writes all size bytes of text to fd (retrying short writes); 0, or -1 with errno set.
int runfile_write_all(int fd, const char *text, size_t size);

// The value of a KEY=VALUE environment entry as JSON: a number when the whole text is a
// finite decimal number ("1980", "700.00"), true/false for "true"/"false", else a string.
cJSON *runfile_env_value(const char *text);

// ---- reading ----------------------------------------------------------------------------
// runfile_load reads a run file from disk and checks it; runfile_parse does the same on text
// in memory (the one entry point a fuzz target needs). Files of every age are read: the
// fields added later ("complete", "incomplete_reason", a run's "diverged" and "divergence",
// "config.overrides", "git_diff_sha256", the GPU's "driver_version", formerly "driver") are
// optional, and a file without "complete" predates it and counts as complete.
//
// What is checked: the schema; the type of every field read below; each run's accuracy
// (a fraction in [0, 1]) and time (finite, positive), except in a diverged run, where they
// may be missing or null; whole numbers (seeds, batch size) before any conversion. The
// number of runs is not checked: statistics need two, a merge or a plot fewer.

#define RUNFILE_MAX_BYTES (64 << 20)  // larger files are refused unread (no run file is near)

typedef struct {
    double seed;             // NAN when the run has none (the PyTorch peers draw their own)
    double accuracy;         // fraction of the test set; NAN in a diverged run without one
    double time_s;           // GPU seconds; NAN in a diverged run without one
    int diverged;            // 1: kept in the file, left out of every statistic
    const char *divergence;  // what went wrong, "" when the file does not say
} RunFileRun;

typedef struct {
    char *name;                   // the path or name that messages give
    cJSON *root;                  // the whole document; every string below points into it
    const char *variant;          // "airbench94", "pytorch-airbench94_compiled", ...
    const char *gpu_name;         // "" when not recorded (so below for every string)
    const char *gpu_driver;       // NVIDIA driver: gpu.driver_version, or gpu.driver in old files
    const char *git_commit;
    const char *git_diff_sha256;  // of the uncommitted changes the binary was built from
    int git_dirty;                // 1, 0, or -1 when not recorded
    double target_accuracy;       // fraction; NAN when the file has none
    int batch_size;               // config.batch_size; 0 when not recorded
    double epochs;                // config.epochs; NAN when not recorded
    const char *translate_mode;   // config.translate_mode
    char *overrides;              // config.overrides as "lr=11, label_smoothing=0.15"; "" if none
    int complete;                 // 0 when the writer stopped before ending the file
    const char *incomplete_reason;  // why, "" when the file does not say (a killed writer)
    int n_runs, n_diverged;       // every run in the file; the diverged ones among them
    RunFileRun *runs;             // n_runs, in file order
    int n;                        // the runs that count: those that did not diverge
    double *seed, *accuracy, *time_s;  // theirs, in file order (n each)
} RunFile;

// Reads and checks the run file at path. 0, or -1 with a message naming the file in err.
// Refuses, without blocking or reading, anything but a regular file (a FIFO, a device, a
// directory) and files above RUNFILE_MAX_BYTES.
int runfile_load(const char *path, RunFile *out, char *err, size_t err_size);

// The same on size bytes of text (no terminating NUL needed); name is for messages.
int runfile_parse(const char *text, size_t size, const char *name, RunFile *out, char *err,
                  size_t err_size);

// Frees what runfile_load or runfile_parse allocated (after either, success or not).
void runfile_free(RunFile *f);

// ---- signals ---------------------------------------------------------------------------
// A long benchmark is stopped by SIGINT, SIGTERM or SIGHUP (Ctrl-C, `timeout`, a CI cancel).
// runfile_watch_signals installs handlers that only record the signal; the program checks
// runfile_pending_signal() between steps, ends its run file as incomplete, and calls
// runfile_exit_for_signal, which re-raises the signal with its default action so that the
// caller sees the usual "killed by signal" status.
void runfile_watch_signals(void);
int runfile_pending_signal(void);  // 0 when none arrived
void runfile_exit_for_signal(int signal_number);
