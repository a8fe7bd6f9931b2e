// airbench_ref.c: the program build/airbench-ref, a CPU training with the reference.
//
// Trains the reference network (reference.c) at any widths and depth on a slice of
// CIFAR-10 with a variant's recipe and the shared step schedule, reports per-epoch
// loss/accuracy and the final TTA accuracy, and writes a run file like the GPU trainer's.
// Meant for small trainings (narrow widths, a slice of the data): at full size the CPU is slow.
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"
#include "runfile.h"

typedef struct {
    const char *data_dir, *json_path;
    const Variant *variant;
    Recipe recipe;
    int n_train, n_test;
    uint64_t seed;
    char command[4096];
} RefOptions;

static double wall_seconds(void) { return omp_get_wtime(); }

// Accuracy of logits (n x 10) against labels.
static double accuracy(const float *logits, const uint8_t *labels, int n) {
    int correct = 0;
    for (int b = 0; b < n; b++) {
        const float *z = logits + (size_t)b * NET_CLASSES;
        int best = 0;
        for (int k = 1; k < NET_CLASSES; k++)
            if (z[k] > z[best]) best = k;
        correct += best == labels[b];
    }
    return (double)correct / n;
}

// Test accuracy: the recipe's evaluation, or the plain view (level 0) for the per-epoch rows.
static double evaluate(RefNet *net, const float *test_images, const uint8_t *labels, int n, const Recipe *recipe,
                       int plain) {
    Recipe view = *recipe;
    if (plain) view.tta_level = 0;
    float *logits = ref_calloc((size_t)n * NET_CLASSES, sizeof(float));
    ref_evaluate_logits(net, test_images, n, &view, logits);
    double acc = accuracy(logits, labels, n);
    free(logits);
    return acc;
}

// ----------------------------------------------------------------------------
// The run file: written through runfile.h when the run ends, or ended as incomplete when
// a signal stops it.

static RunFileWriter *begin_run_file(const RefOptions *o) {
    const Recipe *r = &o->recipe;
    cJSON *header = cJSON_CreateObject();
    cJSON_AddStringToObject(header, "variant", "airbench-ref");
    cJSON_AddNumberToObject(header, "target_accuracy", o->variant->target_accuracy);
    cJSON_AddStringToObject(header, "command", o->command);
    cJSON *config = cJSON_AddObjectToObject(header, "config");
    cJSON_AddStringToObject(config, "recipe", r->name);
    runfile_add_recipe(config, r, o->variant->recipe);
    cJSON_AddNumberToObject(config, "n_train", o->n_train);
    cJSON_AddNumberToObject(config, "n_test", o->n_test);
    cJSON_AddNumberToObject(config, "seed", (double)o->seed);
    char err[1024];
    RunFileWriter *w = runfile_begin(o->json_path, header, err, sizeof err);
    if (!w) fprintf(stderr, "airbench-ref: %s\n", err);
    return w;
}

typedef struct {
    double train_loss, train_acc, test_acc, seconds;
} EpochRow;

static cJSON *run_json(const RefOptions *o, double tta_acc, double seconds, const EpochRow *rows, int n_epochs,
                       const char *divergence) {
    cJSON *run = cJSON_CreateObject();
    cJSON_AddNumberToObject(run, "seed", (double)o->seed);
    cJSON_AddNumberToObject(run, "accuracy", tta_acc);
    cJSON_AddNumberToObject(run, "wall_s", seconds);
    if (divergence) {
        cJSON_AddTrueToObject(run, "diverged");
        cJSON_AddStringToObject(run, "divergence", divergence);
    }
    cJSON *epochs = cJSON_AddArrayToObject(run, "epochs");
    for (int e = 0; e < n_epochs; e++) {
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "epoch", e + 1);
        cJSON_AddNumberToObject(row, "train_loss", rows[e].train_loss);
        cJSON_AddNumberToObject(row, "train_acc", rows[e].train_acc);
        cJSON_AddNumberToObject(row, "test_acc", rows[e].test_acc);
        cJSON_AddNumberToObject(row, "time_s", rows[e].seconds);
        cJSON_AddItemToArray(epochs, row);
    }
    return run;
}

// ----------------------------------------------------------------------------
// Training.

typedef struct {
    double tta_acc;
    EpochRow *rows;
    int n_epochs;
    char divergence[160];  // "" unless the divergence guard (runfile.h) fired
    int signal;            // the signal that stopped training early, or 0
} TrainResult;

// Closes the epoch's row: mean loss and accuracy over its steps, unaugmented test accuracy.
static void end_epoch(EpochRow *row, double loss_sum, int correct_sum, int n_seen, RefNet *net, const Recipe *recipe,
                      const float *test_images, const Cifar10 *data, int n_test, double seconds) {
    row->train_loss = loss_sum / n_seen;
    row->train_acc = (double)correct_sum / n_seen;
    row->test_acc = evaluate(net, test_images, data->test.labels, n_test, recipe, 1);
    row->seconds = seconds;
}

// Data filtering (filter_keep > 0): the proxy network (recipe_proxy) trains first on the
// run's batches, scoring every batch and stepping on every proxy_step_every-th on the loss
// of the examples it keeps, its filter_keep highest-loss ones. Returns their rows, total x
// filter_keep; a signal stops it early (into *signal).
static int *train_proxy(const RefOptions *o, const Cifar10 *data, const float *whiten_images, int n_whiten,
                        int *signal) {
    const Recipe *r = &o->recipe;
    Recipe proxy_recipe = recipe_proxy(r);
    int spe = recipe_steps_per_epoch(r, o->n_train), total = recipe_total_steps(r, o->n_train);
    int n = r->batch_size, keep = r->filter_keep;
    RefNet *proxy = ref_net_create(&proxy_recipe);
    ref_net_init(proxy, &proxy_recipe, recipe_proxy_seed(o->seed), whiten_images, n_whiten);
    int *kept = ref_calloc((size_t)total * keep, sizeof(int));
    float *batch = ref_calloc((size_t)n * CIFAR10_IMAGE_BYTES, sizeof(float)), *losses = ref_calloc(n, sizeof(float));
    uint8_t *labels = ref_calloc(n, 1);
    double start = wall_seconds();
    for (int step = 0; step < total && !*signal; step++) {
        int *step_kept = kept + (size_t)step * keep;
        ref_train_batch(batch, labels, &data->train, o->n_train, r, o->seed, recipe_batch_first(r, step, o->n_train),
                        NULL, n);
        ref_proxy_score(proxy, batch, labels, n, (float)r->label_smoothing, losses);
        ref_select_highest(step_kept, losses, n, keep);
        if (step % r->proxy_step_every == 0) {
            StepPlan plan = recipe_step_plan(&proxy_recipe, step, total, spe);
            ref_proxy_step(proxy, &proxy_recipe, &plan, batch, labels, n, step_kept, keep);
        }
        *signal = runfile_pending_signal();
    }
    printf("proxy: widths %d,%d,%d depth %d scored %d batches, kept %d of %d each (%.1f s)\n", proxy_recipe.widths[0],
           proxy_recipe.widths[1], proxy_recipe.widths[2], proxy_recipe.depth, total, keep, n, wall_seconds() - start);
    ref_net_free(proxy);
    free(batch);
    free(losses);
    free(labels);
    return kept;
}

// Trains one network with the schedule's step plans (after the proxy, with data
// filtering), then measures its TTA accuracy.
static TrainResult train(const RefOptions *o, const Cifar10 *data) {
    const Recipe *r = &o->recipe;
    int spe = recipe_steps_per_epoch(r, o->n_train), total = recipe_total_steps(r, o->n_train);
    int n_whiten = o->n_train < r->whiten_images ? o->n_train : r->whiten_images;
    float *test_images = ref_calloc((size_t)o->n_test * CIFAR10_IMAGE_BYTES, sizeof(float));
    float *whiten_images = ref_calloc((size_t)n_whiten * CIFAR10_IMAGE_BYTES, sizeof(float));
    float *batch = ref_calloc((size_t)r->batch_size * CIFAR10_IMAGE_BYTES, sizeof(float));
    uint8_t *labels = ref_calloc(r->batch_size, 1);
    ref_normalize_images(test_images, data->test.images, o->n_test);
    ref_normalize_images(whiten_images, data->train.images, n_whiten);

    RefNet *net = ref_net_create(r);
    ref_net_init(net, r, o->seed, whiten_images, n_whiten);
    TrainResult result = {.rows = ref_calloc((size_t)total / spe + 2, sizeof(EpochRow))};
    double start = wall_seconds(), loss_sum = 0.0;
    int *kept = r->filter_keep ? train_proxy(o, data, whiten_images, n_whiten, &result.signal) : NULL;
    int correct_sum = 0, steps_in_epoch = 0, n = recipe_train_batch(r);
    int stop = 0;
    printf("| epoch | train_loss | train_acc | test_acc | seconds |\n");
    for (int step = 0; step < total && !stop && !result.signal; step++) {
        ref_train_batch(batch, labels, &data->train, o->n_train, r, o->seed, recipe_batch_first(r, step, o->n_train),
                        kept ? kept + (size_t)step * n : NULL, n);
        StepPlan plan = recipe_step_plan(r, step, total, spe);
        int correct = 0;
        loss_sum += ref_train_step(net, r, &plan, batch, labels, n, &correct);
        correct_sum += correct;
        steps_in_epoch++;
        stop = !isfinite(loss_sum);  // nothing more to learn from this run
        result.signal = runfile_pending_signal();
        if ((step + 1) % spe && step + 1 < total && !stop) continue;
        EpochRow *row = &result.rows[result.n_epochs++];
        end_epoch(row, loss_sum, correct_sum, steps_in_epoch * n, net, r, test_images, data, o->n_test,
                  wall_seconds() - start);
        printf("| %5d | %10.4f | %9.4f | %8.4f | %7.1f |\n", result.n_epochs, row->train_loss, row->train_acc,
               row->test_acc, row->seconds);
        fflush(stdout);
        loss_sum = 0.0;
        correct_sum = steps_in_epoch = 0;
    }
    double losses[result.n_epochs + 1];
    for (int e = 0; e < result.n_epochs; e++) losses[e] = result.rows[e].train_loss;
    runfile_loss_diverged(losses, result.n_epochs, result.divergence, sizeof result.divergence);
    if (!result.signal) {
        result.tta_acc = evaluate(net, test_images, data->test.labels, o->n_test, r, 0);
        printf("final TTA (level %d) test accuracy: %.4f  (%.1f s)\n", r->tta_level, result.tta_acc,
               wall_seconds() - start);
    }
    ref_net_free(net);
    free(kept);
    free(test_images);
    free(whiten_images);
    free(batch);
    free(labels);
    return result;
}

// ----------------------------------------------------------------------------
// Command line.

static void usage(FILE *f, const Recipe *r) {
    fprintf(f,
            "usage: airbench-ref [--variant 94|95|96|94-muon|94-record|96-filter] [--set NAME=VALUE]...\n"
            "                    [--data DIR] [--train-subset N] [--test-subset N] [--seed S] [--json FILE]\n"
            "                    [--widths A,B,C] [--depth 2|3] [--epochs E] [--batch B] [--tta 0|1|2]\n"
            "                    [--translate-mode random|derandomized] [--warmup-epochs E]\n"
            "                    [--lr-scaling linear|sqrt|none] [--bn-group N] [--bn-wd 0|1]\n"
            "Trains the airbench network with the CPU reference (fp32, OpenMP) and prints a per-epoch\n"
            "table and the final test-time-augmented accuracy. Defaults: the 94 recipe, seed 0, all\n"
            "50,000 training and 10,000 test images in data/cifar10: that takes hours on a CPU; for a\n"
            "quick check use e.g. --widths 16,32,32 --train-subset 5000 --test-subset 1000 --epochs 3\n"
            "--batch 250 (about a minute on 2 cores). Recipe flags as in the GPU trainer (--set, and\n"
            "the shorthands for widths, depth, epochs, batch_size, tta_level, translate_mode,\n"
            "warmup_epochs, lr_scaling, bn_group, bn_wd).\n"
            "--json writes the run file (schema in docs/run-file.md).\n"
            "Exit status: 0 fine; 1 unreadable data, a run file that cannot be written, or a diverged\n"
            "run; 2 a bad flag; 128+N killed by signal N (the run file says incomplete).\n"
            "Recipe fields of %s (NAME, value, meaning):\n", r->name);
    recipe_print_fields(f, r);
}

static int fail(const char *message) {
    fprintf(stderr, "airbench-ref: %s (see --help)\n", message);
    return -1;
}

static int fail_flag(const char *flag, const char *value, const char *why) {
    char message[512];
    snprintf(message, sizeof message, "bad value '%s' for %s: %s", value ? value : "(missing)", flag, why);
    return fail(message);
}

static int parse_int_flag(const char *flag, const char *value, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || errno || end == value || *end || v < lo || v > hi) {
        char why[96];
        snprintf(why, sizeof why, "expected an integer in %ld..%ld", lo, hi);
        return fail_flag(flag, value, why);
    }
    *out = (int)v;
    return 0;
}

// One of the program's own flags; 0 if applied, -1 after an error message.
static int parse_flag(RefOptions *o, const char *flag, const char *value) {
    int seed;
    if (!strcmp(flag, "--data")) return value ? (o->data_dir = value, 0) : fail_flag(flag, value, "expected a directory");
    if (!strcmp(flag, "--json")) return value ? (o->json_path = value, 0) : fail_flag(flag, value, "expected a file name");
    if (!strcmp(flag, "--train-subset")) return parse_int_flag(flag, value, 1, 50000, &o->n_train);
    if (!strcmp(flag, "--test-subset")) return parse_int_flag(flag, value, 1, 10000, &o->n_test);
    if (!strcmp(flag, "--seed")) {
        if (parse_int_flag(flag, value, 0, 2000000000, &seed)) return -1;
        o->seed = (uint64_t)seed;
        return 0;
    }
    char message[256];
    snprintf(message, sizeof message, "unknown flag '%s'", flag);
    return fail(message);
}

// Parses argv into o. Returns 0, 1 for --help, or -1 on a bad flag (message printed).
static int parse_args(int argc, char **argv, RefOptions *o) {
    *o = (RefOptions){.data_dir = "data/cifar10", .n_train = 50000, .n_test = 10000};
    size_t used = 0;
    for (int i = 0; i < argc && used < sizeof o->command; i++)
        used += snprintf(o->command + used, sizeof o->command - used, i ? " %s" : "%s", argv[i]);
    char err[1024];
    if (recipe_variant_from_args(argc, argv, &o->variant, err, sizeof err)) return fail(err);
    if (!o->variant) o->variant = recipe_variant("94");
    o->recipe = *o->variant->recipe;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            usage(stdout, &o->recipe);
            return 1;
        }
        int applied = recipe_apply_flag(&o->recipe, flag, value, err, sizeof err);
        if (applied < 0) return fail(err);
        if (!applied && parse_flag(o, flag, value)) return -1;
        i++;  // every flag takes one value
    }
    if (recipe_validate(&o->recipe, o->n_train, err, sizeof err)) return fail(err);
    return 0;
}

// Records the run (or the reason it stopped) and ends the run file; the exit status.
static int finish(const RefOptions *o, RunFileWriter *w, const TrainResult *result, double seconds) {
    char err[1024], reason[160];
    int status = result->divergence[0] ? 1 : 0;
    if (result->divergence[0]) fprintf(stderr, "airbench-ref: training diverged: %s\n", result->divergence);
    if (result->signal) {
        snprintf(reason, sizeof reason, "interrupted by signal %d (%s) during training", result->signal,
                 strsignal(result->signal));
        fprintf(stderr, "airbench-ref: %s\n", reason);
    }
    if (w && !result->signal &&
        runfile_add_run(w, run_json(o, result->tta_acc, seconds, result->rows, result->n_epochs,
                                    result->divergence[0] ? result->divergence : NULL), err, sizeof err)) {
        fprintf(stderr, "airbench-ref: %s\n", err);
        status = 1;
    }
    if (w && runfile_end(w, result->signal ? reason : NULL, err, sizeof err)) {
        fprintf(stderr, "airbench-ref: %s\n", err);
        status = 1;
    }
    if (result->signal) runfile_exit_for_signal(result->signal);
    return status;
}

int main(int argc, char **argv) {
    RefOptions o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc > 0 ? 0 : 2;
    char err[1024];
    if (o.json_path && runfile_check_writable(o.json_path, err, sizeof err)) {
        fprintf(stderr, "airbench-ref: %s\n", err);
        return 1;
    }
    Cifar10 data;
    if (cifar10_load(&data, o.data_dir, err, sizeof err)) {
        fprintf(stderr, "airbench-ref: %s\n", err);
        return 1;
    }
    const Recipe *r = &o.recipe;
    printf("airbench-ref: %s recipe, widths %d,%d,%d depth %d, batch %d, %.2f epochs (%d steps), "
           "%d train / %d test images, seed %llu, %d threads\n",
           r->name, r->widths[0], r->widths[1], r->widths[2], r->depth, r->batch_size, r->epochs,
           recipe_total_steps(r, o.n_train), o.n_train, o.n_test, (unsigned long long)o.seed, omp_get_max_threads());
    if (o.n_train > 10000)
        printf("airbench-ref: note: %d training images on the CPU take a long time (hours for the full recipe); "
               "see --help for a quick check\n", o.n_train);
    RunFileWriter *w = o.json_path ? begin_run_file(&o) : NULL;
    if (o.json_path && !w) return 1;
    runfile_watch_signals();
    double start = wall_seconds();
    TrainResult result = train(&o, &data);
    int status = finish(&o, w, &result, wall_seconds() - start);
    free(result.rows);
    cifar10_free(&data);
    return status;
}
