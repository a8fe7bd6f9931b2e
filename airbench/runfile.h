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

// The value of a KEY=VALUE environment entry as JSON: a number when the whole text is a
// finite decimal number ("1980", "700.00"), true/false for "true"/"false", else a string.
cJSON *runfile_env_value(const char *text);

// ---- signals ---------------------------------------------------------------------------
// A long benchmark is stopped by SIGINT, SIGTERM or SIGHUP (Ctrl-C, `timeout`, a CI cancel).
// runfile_watch_signals installs handlers that only record the signal; the program checks
// runfile_pending_signal() between steps, ends its run file as incomplete, and calls
// runfile_exit_for_signal, which re-raises the signal with its default action so that the
// caller sees the usual "killed by signal" status.
void runfile_watch_signals(void);
int runfile_pending_signal(void);  // 0 when none arrived
void runfile_exit_for_signal(int signal_number);
