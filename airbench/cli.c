// cli.c: the trainer's command line and its run-file records (cli.h).
#include "cli.h"

#include <cuda_runtime.h>
#include <cudnn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu.h"
#include "kernels.h"
#include "version.h"

#define MAX_KERNEL_CHANNELS 2048  // kernels.h: channel counts are multiples of 8, at most 2048

static const char *program = "airbench";  // argv[0]'s last part, for messages

static const char *program_name(void) { return program; }

static void usage(FILE *f, const Options *o) {
    fprintf(f,
            "usage: %s [--variant 94|95|96|94-muon|94-record|96-filter] [--set NAME=VALUE]... [--runs N]\n"
            "       [--seed S] [--data DIR] [--json FILE] [--env KEY=VALUE]... [--quiet] [--no-warmup]\n"
            "       [--test-images N] [--conv-algo cached|find|heuristic] [--conv-cache FILE]\n"
            "       [--conv-graph off|on|always] [--graphs on|off] [--wgrad-stream on|off]\n"
            "       [--muon-streams on|off] [--fused-bn on|off] [--stats-blocks N]\n"
            "       [--widths A,B,C] [--depth D] [--epochs E] [--batch B] [--tta 0|1|2]\n"
            "       [--translate-mode random|derandomized] [--warmup-epochs E]\n"
            "       [--lr-scaling linear|sqrt|none] [--bn-group N] [--bn-wd 0|1]\n"
            "Trains a recipe on the GPU N times (seeds S..S+N-1) after one untimed warm-up run, and\n"
            "prints each run's TTA accuracy and time (GPU time of whitening init + training + final\n"
            "TTA) with their mean. The variant defaults to the one in the program's name\n"
            "(airbench94-muon -> 94-muon), else 94.\n"
            "  --set NAME=VALUE   change one recipe field (list below); recorded in the run file\n"
            "  --widths, --depth, --epochs, --batch, --tta, --translate-mode, --warmup-epochs,\n"
            "  --lr-scaling, --bn-group, --bn-wd\n"
            "                     shorthands for --set widths=, depth=, epochs=, batch_size=,\n"
            "                     tta_level=, translate_mode=, warmup_epochs=, lr_scaling=,\n"
            "                     bn_group=, bn_wd=. lr and weight_decay are per 1024 examples, so\n"
            "                     --batch scales the step by the linear scaling rule (lr_scaling)\n"
            "  --runs N           timed runs (default 1)          --seed S   first seed (default 0)\n"
            "  --data DIR         the CIFAR-10 binary files (default data/cifar10)\n"
            "  --json FILE        the run file, rewritten after every run (checked to be writable first)\n"
            "  --env KEY=VALUE    an entry of the run file's environment object (bench.sh fills these)\n"
            "  --quiet            no per-epoch table\n"
            "  --no-warmup        skip the warm-up run (e.g. under compute-sanitizer)\n"
            "  --test-images N    evaluate on the first N test images (default: all 10000)\n"
            "  --conv-algo C      cached (default): the algorithm cache's choice, timing and recording\n"
            "                     shapes it lacks; find: time every cuDNN algorithm now and record it;\n"
            "                     heuristic: cuDNN's heuristic pick, no timing, no cache\n"
            "  --conv-cache FILE  the algorithm cache (default: conv_algos.txt beside the program)\n"
            "  --conv-graph C     off (default); on: each training conv's forward, input and filter\n"
            "                     gradient as the fastest of its legacy algorithm and cuDNN's graph-API\n"
            "                     engines that compute the same to fp16 rounding (timed at start-up,\n"
            "                     cached like the algorithms; other rounding); always: the fastest\n"
            "                     graph engine even where the legacy call is faster (to measure them);\n"
            "                     not with --conv-algo heuristic; recorded in the run file\n"
            "  --graphs on|off    replay each training step as a CUDA graph (default off): the same\n"
            "                     kernels and arguments, fewer launch gaps; recorded in the run file\n"
            "  --wgrad-stream on|off  compute the convolutions' filter gradients on a second stream,\n"
            "                     beside the rest of the backward pass (default off): the same\n"
            "                     convolutions, ordered by events; recorded in the run file\n"
            "  --muon-streams on|off  run each Muon group's Newton-Schulz on a stream of its own\n"
            "                     (default off; Muon recipes only): the same products side by side,\n"
            "                     ordered by events; recorded in the run file\n"
            "  --fused-bn on|off  each conv's input gradient and the BatchNorm backward's reduction of\n"
            "                     the layer below it as one cuDNN graph (default off; depth 2, one BN\n"
            "                     group, no data filtering): one memory pass fewer a layer, kernels\n"
            "                     compiled at start-up, other rounding; recorded in the run file\n"
            "  --stats-blocks N   at most N blocks in each per-channel reduction (BatchNorm statistics\n"
            "                     and their gradients; default 256, up to 2048): a kernel tuning\n"
            "                     knob for A/B timing, recorded in the run file\n"
            "Exit status: 0 fine; 1 a runtime failure (CUDA, cuDNN or cuBLAS error with file and line,\n"
            "out of GPU memory, unreadable data) or a diverged run (recorded as such in the run file);\n"
            "2 a bad flag, no GPU or an unsupported one, or a run file that cannot be written;\n"
            "128+N killed by signal N (the run file keeps the finished runs, marked incomplete).\n"
            "Recipe fields of %s (NAME, value, meaning):\n",
            program_name(), o->variant->recipe->name);
    recipe_print_fields(f, &o->recipe);
}

static int bad_value(const char *flag, const char *value, const char *expected) {
    fprintf(stderr, "%s: bad value '%s' for %s: expected %s (see --help)\n", program_name(),
            value ? value : "(missing)", flag, expected);
    return -1;
}

static int parse_long(const char *value, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || errno || end == value || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_choice(const char *value, const char *const *choices, int *out) {
    for (int i = 0; value && choices[i]; i++)
        if (!strcmp(value, choices[i])) return *out = i, 0;
    return -1;
}

// The algorithm cache's default place: beside the executable (build/conv_algos.txt).
static const char *default_conv_cache(void) {
    static char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
    if (n <= 0) return NULL;
    path[n] = '\0';
    char *slash = strrchr(path, '/');
    strcpy(slash ? slash + 1 : path, "conv_algos.txt");
    return path;
}

// One trainer flag and its value; 0 if applied, -1 after printing an error.
static int parse_flag(Options *o, const char *flag, const char *value) {
    long v;
    if (!strcmp(flag, "--data")) {
        if (!value) return bad_value(flag, value, "a directory");
        o->data_dir = value;
    } else if (!strcmp(flag, "--json")) {
        if (!value) return bad_value(flag, value, "a file name");
        o->json_path = value;
    } else if (!strcmp(flag, "--conv-cache")) {
        if (!value) return bad_value(flag, value, "a file name");
        o->conv_cache = value;
    } else if (!strcmp(flag, "--runs")) {
        if (parse_long(value, 1, 100000, &v)) return bad_value(flag, value, "an integer in 1..100000");
        o->runs = (int)v;
    } else if (!strcmp(flag, "--seed")) {
        if (parse_long(value, 0, 2000000000, &v)) return bad_value(flag, value, "an integer in 0..2000000000");
        o->seed = (uint64_t)v;
    } else if (!strcmp(flag, "--test-images")) {
        if (parse_long(value, 1, 10000, &v)) return bad_value(flag, value, "an integer in 1..10000");
        o->test_images = (int)v;
    } else if (!strcmp(flag, "--conv-algo")) {
        int choice;
        if (parse_choice(value, CONV_ALGO_CHOICES, &choice)) return bad_value(flag, value, "cached, find or heuristic");
        o->conv_algo = (ConvAlgoChoice)choice;
    } else if (!strcmp(flag, "--conv-graph")) {
        if (parse_choice(value, CONV_GRAPH_CHOICES, &o->conv_graph)) return bad_value(flag, value, "off, on or always");
    } else if (!strcmp(flag, "--graphs")) {
        static const char *const on_off[] = {"off", "on", NULL};
        if (parse_choice(value, on_off, &o->graphs)) return bad_value(flag, value, "on or off");
    } else if (!strcmp(flag, "--wgrad-stream")) {
        static const char *const on_off[] = {"off", "on", NULL};
        if (parse_choice(value, on_off, &o->wgrad_stream)) return bad_value(flag, value, "on or off");
    } else if (!strcmp(flag, "--muon-streams")) {
        static const char *const on_off[] = {"off", "on", NULL};
        if (parse_choice(value, on_off, &o->muon_streams)) return bad_value(flag, value, "on or off");
    } else if (!strcmp(flag, "--fused-bn")) {
        static const char *const on_off[] = {"off", "on", NULL};
        if (parse_choice(value, on_off, &o->fused_bn)) return bad_value(flag, value, "on or off");
    } else if (!strcmp(flag, "--stats-blocks")) {
        _Static_assert(STATS_MAX_BLOCKS == 2048 && STATS_DEFAULT_BLOCKS == 256, "--help and this message name them");
        if (parse_long(value, 1, STATS_MAX_BLOCKS, &v)) return bad_value(flag, value, "an integer in 1..2048");
        o->stats_blocks = (int)v;
    } else if (!strcmp(flag, "--env")) {
        if (!value || !strchr(value, '=') || value[0] == '=' || strchr(value, '=') - value >= 127)
            return bad_value(flag, value, "KEY=VALUE");
        if (o->n_env == MAX_ENV) return bad_value(flag, value, "at most 32 --env entries");
        o->env[o->n_env++] = value;
    } else {
        fprintf(stderr, "%s: unknown flag '%s' (see --help)\n", program_name(), flag);
        return -1;
    }
    return 0;
}

// Whether widths suit the GPU kernels (kernels.h); prints why not, naming the field and
// the flags that set it.
static int check_widths(const int widths[3], const char *field, const char *flags) {
    for (int i = 0; i < 3; i++)
        if (widths[i] % 8 || widths[i] < 8 || widths[i] > MAX_KERNEL_CHANNELS) {
            fprintf(stderr, "%s: bad %s %d,%d,%d (%s): the GPU kernels need multiples of 8 in 8..%d\n",
                    program_name(), field, widths[0], widths[1], widths[2], flags, MAX_KERNEL_CHANNELS);
            return -1;
        }
    return 0;
}

// What the GPU kernels need beyond the recipe's own bounds (kernels.h): channel counts and
// batches (the kept examples' too) in multiples of 8.
static int check_kernel_shapes(const Recipe *r) {
    if (check_widths(r->widths, "widths", "--widths or --set widths") ||
        (r->filter_keep && check_widths(r->proxy_widths, "proxy_widths", "--set proxy_widths")))
        return -1;
    if (r->batch_size % 8) {
        fprintf(stderr, "%s: bad batch size %d (--batch or --set batch_size): the GPU kernels need a multiple of 8\n",
                program_name(), r->batch_size);
        return -1;
    }
    if (r->filter_keep % 8) {
        fprintf(stderr, "%s: bad filter_keep %d (--set filter_keep): the GPU kernels need a multiple of 8\n",
                program_name(), r->filter_keep);
        return -1;
    }
    return 0;
}

static const Variant *variant_from_program_name(void) {
    const Variant *v = recipe_variant(program_name());
    return v ? v : recipe_variant("94");
}

int parse_args(int argc, char **argv, Options *o) {
    const char *slash = strrchr(argv[0], '/');
    program = slash ? slash + 1 : argv[0];
    gpu_set_program_name(program);
    *o = (Options){.data_dir = "data/cifar10", .runs = 1, .warmup = 1, .stats_blocks = STATS_DEFAULT_BLOCKS,
                   .conv_algo = CONV_ALGO_CACHED, .conv_cache = default_conv_cache()};
    size_t used = 0;
    for (int i = 0; i < argc && used < sizeof o->command; i++)
        used += snprintf(o->command + used, sizeof o->command - used, i ? " %s" : "%s", argv[i]);
    char err[1024];
    if (recipe_variant_from_args(argc, argv, &o->variant, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", program_name(), err);
        return -1;
    }
    if (!o->variant) o->variant = variant_from_program_name();
    o->recipe = *o->variant->recipe;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            usage(stdout, o);
            return 1;
        }
        if (!strcmp(flag, "--quiet")) {
            o->quiet = 1;
            continue;
        }
        if (!strcmp(flag, "--no-warmup")) {
            o->warmup = 0;
            continue;
        }
        int applied = recipe_apply_flag(&o->recipe, flag, value, err, sizeof err);
        if (applied < 0) fprintf(stderr, "%s: %s (see --help)\n", program_name(), err);
        if (applied < 0 || (!applied && parse_flag(o, flag, value))) return -1;
        i++;  // every other flag takes one value
    }
    if (o->conv_graph && o->conv_algo == CONV_ALGO_HEURISTIC) {
        fprintf(stderr, "%s: --conv-graph %s times cuDNN's engines, --conv-algo heuristic times nothing: use one "
                "(see --help)\n", program_name(), CONV_GRAPH_CHOICES[o->conv_graph]);
        return -1;
    }
    // Refused here rather than after the GPU's start-up (muon.c and trainer.c check again)
    char why[512];
    if ((o->muon_streams && recipe_refuses_muon_streams(&o->recipe, why, sizeof why)) ||
        (o->fused_bn && recipe_refuses_fused_bn(&o->recipe, why, sizeof why))) {
        fprintf(stderr, "%s: %s\n", program_name(), why);
        return -1;
    }
    return check_kernel_shapes(&o->recipe);
}

void print_setup(const Options *o, const char *gpu_name, int major, int minor, int n_train, int n_test) {
    const Recipe *r = &o->recipe;
    printf("%s on %s (sm_%d%d): widths %d/%d/%d, batch %d, %.2f epochs (%d steps), TTA level %d, %s translation, "
           "%s conv algorithms, %d test images%s\n", r->name, gpu_name, major, minor, r->widths[0], r->widths[1],
           r->widths[2], r->batch_size, r->epochs, recipe_total_steps(r, n_train), r->tta_level,
           RECIPE_TRANSLATE_MODES[r->translate_mode], CONV_ALGO_CHOICES[o->conv_algo], n_test,
           o->graphs ? ", training steps as CUDA graphs" : "");
    if (o->wgrad_stream) printf("filter gradients on a second stream\n");
    if (o->muon_streams) printf("each Muon group's Newton-Schulz on a stream of its own\n");
    if (o->fused_bn) printf("BatchNorm backward reductions fused into the input-gradient convolutions (cuDNN graphs)\n");
    if (o->conv_graph)
        printf("convolutions: cuDNN's graph-API engines timed beside the legacy algorithms (--conv-graph %s)\n",
               CONV_GRAPH_CHOICES[o->conv_graph]);
    if (o->stats_blocks != STATS_DEFAULT_BLOCKS)
        printf("per-channel reductions in at most %d blocks (default %d)\n", o->stats_blocks, STATS_DEFAULT_BLOCKS);
    if (r->filter_keep)
        printf("data filtering: each step trains on the %d of its %d examples of highest loss under a proxy of "
               "widths %d/%d/%d, depth %d, that trains first (stepping on batches 0, %d, %d, ...); %s batches\n",
               r->filter_keep, r->batch_size, r->proxy_widths[0], r->proxy_widths[1], r->proxy_widths[2],
               r->proxy_depth, r->proxy_step_every, 2 * r->proxy_step_every, RECIPE_BATCH_MODES[r->batch_mode]);
}

// ---------------------------------------------------------------------------------------
// The run file's records.

// The NVIDIA driver's version ("580.159.04") from /proc/driver/nvidia/version, or "".
static void nvidia_driver_version(char *out, size_t out_size) {
    out[0] = '\0';
    FILE *f = fopen("/proc/driver/nvidia/version", "r");
    char line[512], version[64];
    if (!f) return;
    const char *p = fgets(line, sizeof line, f) ? strstr(line, "Kernel Module") : NULL;
    if (p && sscanf(p, "Kernel Module %63s", version) == 1) snprintf(out, out_size, "%s", version);
    fclose(f);
}

static cJSON *gpu_json(void) {
    struct cudaDeviceProp prop;
    int driver = 0, runtime = 0;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    CUDA_CHECK(cudaDriverGetVersion(&driver));
    CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
    size_t cudnn = cudnnGetVersion();
    char text[64];
    cJSON *gpu = cJSON_CreateObject();
    cJSON_AddStringToObject(gpu, "name", prop.name);
    snprintf(text, sizeof text, "%d.%d", prop.major, prop.minor);
    cJSON_AddStringToObject(gpu, "compute_capability", text);
    nvidia_driver_version(text, sizeof text);
    if (text[0]) cJSON_AddStringToObject(gpu, "driver_version", text);
    snprintf(text, sizeof text, "%d.%d", driver / 1000, driver % 1000 / 10);
    cJSON_AddStringToObject(gpu, "cuda_driver", text);
    snprintf(text, sizeof text, "%d.%d", runtime / 1000, runtime % 1000 / 10);
    cJSON_AddStringToObject(gpu, "cuda_runtime", text);
    snprintf(text, sizeof text, "%zu.%zu.%zu", cudnn / 10000, cudnn % 10000 / 100, cudnn % 100);
    cJSON_AddStringToObject(gpu, "cudnn", text);
    return gpu;
}

// The git state the binary was built from (version.h): commit, dirty flag, and for a dirty
// tree the hash of the uncommitted changes and the files they touch.
static void add_git_state(cJSON *root) {
    cJSON_AddStringToObject(root, "git_commit", GIT_COMMIT);
    cJSON_AddBoolToObject(root, "git_dirty", GIT_DIRTY);
    if (!GIT_DIRTY) return;
    cJSON_AddStringToObject(root, "git_diff_sha256", GIT_DIFF_SHA256);
    cJSON *files = cJSON_AddArrayToObject(root, "git_changed_files");
    char names[] = GIT_CHANGED_FILES;
    for (char *name = strtok(names, " "); name; name = strtok(NULL, " "))
        cJSON_AddItemToArray(files, cJSON_CreateString(name));
}

cJSON *run_file_header(const Options *o, int conv_deterministic) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "variant", o->recipe.name);
    cJSON_AddNumberToObject(root, "target_accuracy", o->variant->target_accuracy);
    add_git_state(root);
    cJSON_AddItemToObject(root, "gpu", gpu_json());
    cJSON_AddStringToObject(root, "command", o->command);
    cJSON *env = cJSON_AddObjectToObject(root, "environment");
    for (int i = 0; i < o->n_env; i++) {
        const char *eq = strchr(o->env[i], '=');
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->env[i]), o->env[i]);
        cJSON_AddItemToObject(env, key, runfile_env_value(eq + 1));
    }
    cJSON *config = cJSON_AddObjectToObject(root, "config");
    runfile_add_recipe(config, &o->recipe, o->variant->recipe);
    cJSON_AddNumberToObject(config, "seed", (double)o->seed);
    cJSON_AddBoolToObject(config, "warmup", o->warmup);
    cJSON_AddNumberToObject(config, "test_images", o->test_images ? o->test_images : 10000);
    cJSON_AddStringToObject(config, "conv_algo", CONV_ALGO_CHOICES[o->conv_algo]);
    cJSON_AddBoolToObject(config, "conv_deterministic", conv_deterministic);
    cJSON_AddBoolToObject(config, "graphs", o->graphs);
    cJSON_AddBoolToObject(config, "wgrad_stream", o->wgrad_stream);
    cJSON_AddBoolToObject(config, "muon_streams", o->muon_streams);
    cJSON_AddBoolToObject(config, "fused_bn", o->fused_bn);
    cJSON_AddStringToObject(config, "conv_graph", CONV_GRAPH_CHOICES[o->conv_graph]);
    cJSON_AddNumberToObject(config, "stats_blocks", o->stats_blocks);
    return root;
}

cJSON *run_json(const RunResult *run) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "seed", (double)run->seed);
    cJSON_AddNumberToObject(j, "accuracy", run->accuracy);
    cJSON_AddNumberToObject(j, "time_s", run->time_s);
    cJSON_AddNumberToObject(j, "wall_s", run->wall_s);
    if (run->divergence[0]) {
        cJSON_AddTrueToObject(j, "diverged");
        cJSON_AddStringToObject(j, "divergence", run->divergence);
    }
    cJSON *epochs = cJSON_AddArrayToObject(j, "epochs");
    for (int e = 0; e < run->n_epochs; e++) {
        const EpochLog *log = &run->epochs[e];
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "epoch", log->epoch);
        cJSON_AddNumberToObject(row, "train_loss", log->train_loss);
        cJSON_AddNumberToObject(row, "train_acc", log->train_acc);
        cJSON_AddNumberToObject(row, "test_acc", log->test_acc);
        cJSON_AddNumberToObject(row, "time_s", log->time_s);
        cJSON_AddItemToArray(epochs, row);
    }
    return j;
}
